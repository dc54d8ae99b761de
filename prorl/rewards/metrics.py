"""Counters of the reward service and their Prometheus text exposition (``GET /metrics``).

Hand-written rather than ``prometheus_client``: a dozen series, one process, and the exposition
format is a stable plain-text spec; a registry library would add a global registry (awkward with
several servers in one test process) for no gain. Names follow Prometheus conventions
(``_total`` counters, ``_seconds`` histograms, base units).
"""

from __future__ import annotations

import bisect
import collections
import threading

# request latency buckets (seconds): a trivial item takes ~1 ms, a code item seconds, a timeout 10 s+
LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                                      120.0, 300.0)


def _label(v: object) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class ServiceMetrics:
    """Thread-safe counters: items by domain and status, responses by code, ``/score`` latency."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: collections.Counter = collections.Counter()  # (domain, status) -> n
        self.responses: collections.Counter = collections.Counter()  # (path, code) -> n
        self._bucket_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0
        self._latency_n = 0

    def count_items(self, domains: list[str], statuses: list[str]) -> None:
        with self._lock:
            for d, s in zip(domains, statuses):
                self.items[(d, s)] += 1

    def count_response(self, path: str, code: int) -> None:
        with self._lock:
            self.responses[(path, int(code))] += 1

    def observe_latency(self, seconds: float) -> None:
        with self._lock:
            self._bucket_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self._latency_sum += seconds
            self._latency_n += 1

    def code_count(self, code: int) -> int:
        """Responses with this status code, all paths together."""
        with self._lock:
            return sum(n for (_, c), n in self.responses.items() if c == code)

    def render(self, gauges: dict[str, tuple[str, float]], counters: dict[str, tuple[str, float]]) -> str:
        """The exposition text: our series plus the given ``name -> (help, value)`` gauges and counters."""
        with self._lock:
            items = sorted(self.items.items())
            responses = sorted(self.responses.items())
            buckets, total, n = list(self._bucket_counts), self._latency_sum, self._latency_n
        out: list[str] = []

        def head(name: str, kind: str, doc: str) -> None:
            out.append(f"# HELP {name} {doc}")
            out.append(f"# TYPE {name} {kind}")

        head("prorl_reward_items_total", "counter", "items scored, by verifier domain and verdict status")
        for (d, s), v in items:
            out.append(f'prorl_reward_items_total{{domain="{_label(d)}",status="{_label(s)}"}} {v}')
        head("prorl_reward_http_responses_total", "counter", "HTTP responses by path and status code (401/413/503 ...)")
        for (p, c), v in responses:
            out.append(f'prorl_reward_http_responses_total{{path="{_label(p)}",code="{c}"}} {v}')
        head("prorl_reward_request_seconds", "histogram", "latency of accepted POST /score requests")
        cum = 0
        for le, b in zip(LATENCY_BUCKETS, buckets):
            cum += b
            out.append(f'prorl_reward_request_seconds_bucket{{le="{le:g}"}} {cum}')
        out.append(f'prorl_reward_request_seconds_bucket{{le="+Inf"}} {n}')
        out.append(f"prorl_reward_request_seconds_sum {total:.6f}")
        out.append(f"prorl_reward_request_seconds_count {n}")
        for kind, series in (("gauge", gauges), ("counter", counters)):
            for name, (doc, value) in series.items():
                head(name, kind, doc)
                out.append(f"{name} {value:g}")
        return "\n".join(out) + "\n"
