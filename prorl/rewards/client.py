"""HTTP client for one or several ``prorl serve-rewards`` replicas (stdlib only).

Items are sent in batches of ``batch_size``, spread round-robin over the replicas and sent
concurrently. A batch that fails on a replica (connection refused or reset, a time-out, HTTP 5xx,
503 overload or draining) is sent to the next replica; once every replica has failed it in a
round, the client backs off (exponentially, at least the server's ``Retry-After``) and goes
round again, ``retries`` times in all. A replica that just failed is skipped for a few seconds
while another is up. Items a replica answers ``infra_error`` (its workers died on them) are
retried on another replica in the same way.

An infrastructure failure is never a verdict on the response: an item that could not be scored
after all attempts gets ``infra_error`` (the trainer excludes it), never a 0 that looks like a wrong
answer. A request the service rejects as wrong (401 bad token, 400, 404) raises
:class:`RewardServiceError`: retrying cannot help and the run's configuration must be fixed. A
413 (over the service's per-request limits) splits the batch and tries again.

Connections are kept alive per thread and replica. The bearer token is sent with every request
and never appears in an error message.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from prorl.rewards.guard import load_token
from prorl.verifiers.base import Status, Verdict

REPLICA_COOLDOWN_S = 5.0  # skip a replica this long after it failed, while another one is up


class _HTTPConnection(http.client.HTTPConnection):
    """``HTTPConnection`` with ``TCP_NODELAY``: http.client sends the head and the body in two writes,
    and on a kept-alive connection Nagle's algorithm plus the server's delayed ACK would hold the
    body back for tens of milliseconds."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _HTTPSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class RewardServiceError(RuntimeError):
    """The reward service rejected a request in a way retrying cannot fix (bad token, bad request)."""


class _Transient(Exception):
    """This attempt failed for a reason another replica or a later attempt may not have."""

    def __init__(self, why: str, retry_after: float = 0.0) -> None:
        super().__init__(why)
        self.retry_after = retry_after


class _TooLarge(Exception):
    """HTTP 413: the batch is over the service's per-request limits."""


def parse_urls(urls: str | Sequence[str]) -> list[str]:
    """A URL, a comma-separated string of URLs, or a list of them -> a list without trailing slashes."""
    parts = urls.split(",") if isinstance(urls, str) else list(urls)
    out = [u.strip().rstrip("/") for u in parts if u and u.strip()]
    for u in out:
        if urllib.parse.urlsplit(u).scheme not in ("http", "https"):
            raise ValueError(f"reward service URL {u!r} must start with http:// or https://")
    if not out:
        raise ValueError("no reward service URL given")
    return out


class RewardClient:
    """Score items through reward-service replicas at ``urls`` (e.g. ``http://10.0.0.5:8765``)."""

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        token: str | None = None,
        token_file: str | None = None,
        timeout_s: float = 600.0,
        retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        batch_size: int = 256,
        parallel: int | None = None,
    ) -> None:
        self.urls = parse_urls(urls)
        self._token = token if token is not None else load_token(token_file)
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.batch_size = max(1, int(batch_size))
        self.parallel = int(parallel) if parallel else 2 * len(self.urls)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._down_until = [0.0] * len(self.urls)
        self._next = 0
        self._executor: ThreadPoolExecutor | None = None

    @property
    def url(self) -> str:
        """The first replica's URL."""
        return self.urls[0]

    # ------------------------------------------------------------------ public API

    def health(self, timeout_s: float = 5.0, replica: int = 0) -> dict:
        """``GET /health`` of one replica (no retries)."""
        status, _, data = self._request(self.urls[replica], "GET", "/health", None, timeout_s)
        if status != 200:
            raise RewardServiceError(f"reward service at {self.urls[replica]} /health answered HTTP {status}")
        return json.loads(data)

    def score(self, items: list[dict]) -> list[Verdict]:
        """One verdict per item, in order; batches go to the replicas concurrently."""
        batches = [items[i : i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        with self._lock:
            first, self._next = self._next, self._next + len(batches)
        starts = [(first + k) % len(self.urls) for k in range(len(batches))]
        if len(batches) <= 1:
            parts = [self._score_batch(b, s) for b, s in zip(batches, starts)]
        else:
            parts = list(self._pool().map(self._score_batch, batches, starts))
        return [v for part in parts for v in part]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        for c in getattr(self._local, "conns", {}).values():
            c.close()

    def __enter__(self) -> "RewardClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ batches and replicas

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.parallel, thread_name_prefix="prorl-reward-client")
            return self._executor

    def _pick(self, start: int, attempt: int) -> int:
        """The replica for this attempt: round-robin from ``start``, skipping ones that just failed."""
        n = len(self.urls)
        now = time.monotonic()
        for k in range(n):
            idx = (start + attempt + k) % n
            if self._down_until[idx] <= now:
                return idx
        return (start + attempt) % n

    def _score_batch(self, batch: list[dict], start: int) -> list[Verdict]:
        """Verdicts for ``batch``; every item gets exactly one (``infra_error`` when nothing worked)."""
        results: list[Verdict | None] = [None] * len(batch)
        todo = list(range(len(batch)))
        n = len(self.urls)
        last = ""
        attempt = 0
        while todo and attempt <= self.retries:
            idx = self._pick(start, attempt)
            url = self.urls[idx]
            attempt += 1
            wait = 0.0
            try:
                verdicts = self._post_items(url, [batch[i] for i in todo])
            except _TooLarge:
                if len(todo) == 1:
                    raise RewardServiceError(f"reward service at {url} rejected a single item as too large "
                                             f"(HTTP 413); raise its --max-body-mb") from None
                half = len(todo) // 2
                for part in (todo[:half], todo[half:]):
                    for i, v in zip(part, self._score_batch([batch[i] for i in part], idx)):
                        results[i] = v
                return results  # type: ignore[return-value]
            except _Transient as e:
                last = f"{url}: {e}"
                self._down_until[idx] = time.monotonic() + REPLICA_COOLDOWN_S
                wait = e.retry_after
            else:
                still = []
                for i, v in zip(todo, verdicts):
                    results[i] = v
                    if v.status is Status.INFRA_ERROR:  # our failure there: try another replica
                        still.append(i)
                if still:
                    last = f"{url}: {len(still)} items not scored there ({verdicts[todo.index(still[0])].reason})"
                todo = still
            if todo and attempt <= self.retries and attempt % n == 0:  # every replica failed this round
                rnd = attempt // n - 1
                time.sleep(min(self.max_backoff_s, max(wait, self.backoff_s * (2**rnd))))
        for i in todo:
            if results[i] is None:
                results[i] = Verdict(0.0, Status.INFRA_ERROR,
                                     f"not scored: the reward service failed {attempt} attempts over {n} "
                                     f"replica(s); last error: {last}"[:2000])
        return results  # type: ignore[return-value]

    def _post_items(self, url: str, items: list[dict]) -> list[Verdict]:
        body = json.dumps({"items": items}, default=_json_default).encode()
        try:
            status, headers, data = self._request(url, "POST", "/score", body, self.timeout_s)
        except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out, garbled
            raise _Transient(f"{type(e).__name__}: {e}") from None
        if status == 200:
            try:
                results = json.loads(data)["results"]
                if len(results) != len(items):
                    raise ValueError(f"{len(results)} results for {len(items)} items")
                return [Verdict.from_dict(d) for d in results]
            except (ValueError, KeyError, TypeError) as e:
                raise _Transient(f"bad response: {type(e).__name__}: {e}") from None
        detail = _error_detail(data)
        if status == 413:
            raise _TooLarge(detail)
        if status >= 500 or status == 408:
            try:
                retry_after = float(headers.get("retry-after") or 0.0)
            except ValueError:
                retry_after = 0.0
            raise _Transient(f"HTTP {status}: {detail}", retry_after)
        hint = " (check reward.server_token_file / --token-file)" if status == 401 else ""
        raise RewardServiceError(f"reward service at {url} rejected the request: HTTP {status}: {detail}{hint}")

    # ------------------------------------------------------------------ HTTP

    def _connection(self, url: str, timeout_s: float) -> http.client.HTTPConnection:
        conns = self._local.__dict__.setdefault("conns", {})
        c = conns.get(url)
        if c is None:
            u = urllib.parse.urlsplit(url)
            cls = _HTTPSConnection if u.scheme == "https" else _HTTPConnection
            c = conns[url] = cls(u.hostname, u.port, timeout=timeout_s)
        c.timeout = timeout_s
        if c.sock is not None:
            c.sock.settimeout(timeout_s)
        return c

    def _request(self, url: str, method: str, path: str, body: bytes | None,
                 timeout_s: float) -> tuple[int, dict, bytes]:
        """One request over this thread's kept-alive connection (a stale one is replaced once)."""
        headers = {"Content-Type": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        full = urllib.parse.urlsplit(url).path.rstrip("/") + path
        for fresh in (False, True):
            c = self._connection(url, timeout_s)
            reused = c.sock is not None
            try:
                c.request(method, full, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
                if r.will_close:
                    c.close()
                return r.status, {k.lower(): v for k, v in r.getheaders()}, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                c.close()
                if reused and not fresh:  # the server closed an idle keep-alive connection: reconnect
                    continue
                raise
            except BaseException:
                c.close()
                raise
        raise AssertionError("unreachable")


def _error_detail(data: bytes) -> str:
    try:
        obj = json.loads(data or b"{}")
        return str(obj.get("error") or obj)[:500]
    except Exception:
        return data[:200].decode("utf-8", "replace")


def _json_default(o: object) -> object:
    """Make numpy scalars/arrays (from parquet rows) JSON-serialisable."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")

