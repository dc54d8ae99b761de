"""``RewardScorer``: what the trainer calls to turn responses into rewards.

Cheap trusted domains (``builtin`` by default) are scored in this process; everything else goes
to a :class:`~prorl.rewards.pool.VerifierPool` (started lazily, on first need) whose workers
enforce a hard wall-clock limit per item, or, when ``server_url`` is set (one URL or several
replicas), to the HTTP reward service (``prorl serve-rewards``) through
:class:`~prorl.rewards.client.RewardClient`. Items that could not be scored because of an
infrastructure failure come back with status ``infra_error``, never as a scored 0.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from prorl.rewards.client import RewardClient
from prorl.rewards.pool import VerifierPool
from prorl.verifiers.base import Status, Verdict, resolve_domain, verify_one


class RewardScorer:
    """Score items ``{"data_source", "ability", "response", "ground_truth", "extra_info"}``."""

    @classmethod
    def from_config(cls, reward) -> "RewardScorer":
        """The scorer a run's ``reward`` config section describes (in-process workers or the service)."""
        return cls(**cls.settings(reward))

    @staticmethod
    def settings(reward) -> dict:
        """The constructor arguments the ``reward`` section gives (a stage that changes them gets a new scorer)."""
        return dict(num_workers=reward.num_workers, timeout_s=reward.timeout_s, server_url=reward.server_url or None,
                    strip_think=reward.strip_think, server_token_file=reward.server_token_file or None,
                    max_memory_mb=reward.worker_memory_mb or None)

    def __init__(
        self,
        *,
        num_workers: int = 2,
        timeout_s: float = 10.0,
        server_url: str | Sequence[str] | None = None,
        server_token_file: str | None = None,
        strip_think: bool = True,
        inprocess_domains: tuple[str, ...] = ("builtin",),
        client_retries: int = 5,
        client_timeout_s: float = 600.0,
        max_memory_mb: int | None = None,
    ) -> None:
        self.num_workers = num_workers
        self.timeout_s = timeout_s
        self.server_url = server_url
        self.strip_think = strip_think
        self.inprocess_domains = tuple(inprocess_domains)
        self.max_memory_mb = max_memory_mb
        self._pool: VerifierPool | None = None
        self._client = (
            RewardClient(server_url, token_file=server_token_file, retries=client_retries,
                         timeout_s=client_timeout_s) if server_url else None
        )
        self._lock = threading.Lock()
        self._closed = False

    @property
    def pool(self) -> VerifierPool:
        """The worker pool (started on first use)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("RewardScorer is closed")
            if self._pool is None:
                self._pool = VerifierPool(self.num_workers, self.timeout_s, strip_think=self.strip_think,
                                          max_memory_mb=self.max_memory_mb)
            return self._pool

    def score(self, items: list[dict]) -> list[Verdict]:
        """One verdict per item, in the same order. Raises only if the reward service rejects the
        requests as wrong (bad token or request): an unreachable service gives ``infra_error`` verdicts."""
        results: list[Verdict | None] = [None] * len(items)
        local: list[int] = []
        remote: list[int] = []
        for i, it in enumerate(items):
            if not isinstance(it, dict):
                results[i] = Verdict(0.0, Status.ERROR, f"item is a {type(it).__name__}, not a dict")
                continue
            try:
                domain = resolve_domain(it.get("data_source"), it.get("ability"))
            except KeyError as e:
                if self._client is None:  # the service may know domains we do not
                    results[i] = Verdict(0.0, Status.ERROR, str(e.args[0] if e.args else e)[:500])
                    continue
                domain = None
            (local if domain in self.inprocess_domains else remote).append(i)

        future = None
        if remote and self._client is None:
            future = self.pool.submit([_clean(items[i]) for i in remote])
        for i in local:  # meanwhile, the cheap ones here
            it = items[i]
            results[i] = verify_one(it.get("data_source"), it.get("ability"), it.get("response"),
                                    it.get("ground_truth"), it.get("extra_info"), strip_think=self.strip_think)
        if remote:
            verdicts = future.result() if future is not None else self._client.score([_clean(items[i]) for i in remote])
            for i, v in zip(remote, verdicts):
                results[i] = v
        return results  # type: ignore[return-value]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> "RewardScorer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _clean(item: dict) -> dict:
    """Only the fields a verifier needs (smaller pickles/JSON)."""
    return {k: item.get(k) for k in ("data_source", "ability", "response", "ground_truth", "extra_info")}


def item_from_row(row: dict, response: str | None = None) -> dict:
    """Build a scoring item from a verl-schema row (``reward_model.ground_truth``) and a response."""
    rm = row.get("reward_model") or {}
    gt = rm.get("ground_truth") if isinstance(rm, dict) else None
    if gt is None:
        gt = row.get("ground_truth")
    return {
        "data_source": row.get("data_source"),
        "ability": row.get("ability"),
        "response": row.get("response") if response is None else response,
        "ground_truth": gt,
        "extra_info": row.get("extra_info") or {},
    }
