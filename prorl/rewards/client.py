"""HTTP client for ``prorl serve-rewards`` (stdlib only).

Transient failures (connection refused/reset, time-outs, HTTP 5xx, and 503 overload with its
``Retry-After``) are retried with exponential backoff; when a batch still fails, a
:class:`RewardServiceError` is raised. Scoring a batch 0 because the service was unreachable would
silently corrupt training, so that never happens here.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

from prorl.verifiers.base import Verdict


class RewardServiceError(RuntimeError):
    """The reward service could not score a batch (after retries, or a non-retryable answer)."""


class RewardClient:
    """Score items through a reward service at ``url`` (e.g. ``http://127.0.0.1:8765``)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 600.0,
        retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        batch_size: int = 256,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.batch_size = max(1, int(batch_size))

    def health(self, timeout_s: float = 5.0) -> dict:
        """``GET /health`` (no retries)."""
        with urllib.request.urlopen(self.url + "/health", timeout=timeout_s) as r:
            return json.loads(r.read())

    def score(self, items: list[dict]) -> list[Verdict]:
        """Verdicts for ``items`` in order, sent in batches of ``batch_size``."""
        out: list[Verdict] = []
        for i in range(0, len(items), self.batch_size):
            out += self._score_batch(items[i : i + self.batch_size])
        return out

    def _score_batch(self, batch: list[dict]) -> list[Verdict]:
        body = json.dumps({"items": batch}, default=_json_default).encode()
        last = ""
        for attempt in range(self.retries + 1):
            wait = min(self.max_backoff_s, self.backoff_s * (2**attempt))
            req = urllib.request.Request(
                self.url + "/score", data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                    payload = json.loads(r.read())
                results = payload["results"]
                if len(results) != len(batch):
                    raise RewardServiceError(
                        f"reward service at {self.url} returned {len(results)} results for {len(batch)} items"
                    )
                return [Verdict.from_dict(d) for d in results]
            except urllib.error.HTTPError as e:
                detail = _error_detail(e)
                last = f"HTTP {e.code}: {detail}"
                if e.code < 500:  # our request is wrong; retrying cannot help
                    raise RewardServiceError(f"reward service at {self.url} rejected the batch: {last}") from e
                retry_after = e.headers.get("Retry-After") if e.headers else None
                if retry_after:
                    try:
                        wait = min(self.max_backoff_s, max(wait, float(retry_after)))
                    except ValueError:
                        pass
            except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError, OSError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            except (ValueError, KeyError, TypeError) as e:  # garbled answer
                last = f"bad response: {type(e).__name__}: {e}"
            if attempt < self.retries:
                time.sleep(wait)
        raise RewardServiceError(
            f"reward service at {self.url} failed to score a batch of {len(batch)} items after "
            f"{self.retries + 1} attempts; last error: {last}"
        )


def _error_detail(e: urllib.error.HTTPError) -> str:
    try:
        data = json.loads(e.read() or b"{}")
        return str(data.get("error") or data)
    except Exception:
        return str(e.reason)


def _json_default(o: object) -> object:
    """Make numpy scalars/arrays (from parquet rows) JSON-serialisable."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
