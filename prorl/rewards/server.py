"""The HTTP reward service behind ``prorl serve-rewards`` (stdlib ``ThreadingHTTPServer``).

``POST /score`` with ``{"items": [...]}`` answers ``{"results": [verdict dicts]}`` in item order.
``GET /health`` reports workers alive, queue depth and counters. The pool's bounded queue turns
overload into HTTP 503 with a JSON reason and ``Retry-After`` so clients back off; a batch larger
than the whole bound gets 413 (split it). Only items scored by the pool's hard-limited workers are
returned, so a hung or crashed verifier yields a ``timeout``/``error`` verdict, never a lost item.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prorl.rewards.pool import PoolClosed, PoolOverloaded, VerifierPool

MAX_BODY_BYTES = 256 * 1024 * 1024


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for in-flight requests: graceful shutdown
    block_on_close = True
    request_queue_size = 256  # many concurrent clients must not overflow the listen backlog
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], service: "RewardServer") -> None:
        self.service = service
        super().__init__(addr, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet by default
        if self.server.service.verbose:
            super().log_message(format, *args)

    def _send_json(self, code: int, obj: dict, headers: dict | None = None) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        if self.path.rstrip("/") == "/health":
            self._send_json(200, self.server.service.health())
        else:
            self._send_json(404, {"error": f"no such endpoint: GET {self.path}"})

    def do_POST(self) -> None:  # noqa: N802
        svc = self.server.service
        if self.path.rstrip("/") != "/score":
            self._send_json(404, {"error": f"no such endpoint: POST {self.path}"})
            return
        svc.count("requests")
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if n < 0 or n > MAX_BODY_BYTES:
            svc.count("bad_requests")
            self._send_json(413 if n > 0 else 400, {"error": f"bad Content-Length {self.headers.get('Content-Length')!r}"})
            return
        try:
            payload = json.loads(self.rfile.read(n) or b"null")
            items = payload["items"]
            if not isinstance(items, list):
                raise TypeError("'items' must be a list")
            bad = next((i for i, it in enumerate(items) if not isinstance(it, dict)), None)
            if bad is not None:
                raise TypeError(f"item {bad} is not an object")
        except (ValueError, KeyError, TypeError) as e:
            svc.count("bad_requests")
            self._send_json(400, {"error": f"expected a JSON object {{\"items\": [...]}}: {type(e).__name__}: {e}"})
            return
        try:
            fut = svc.pool.submit(items)
        except PoolOverloaded as e:
            svc.count("overloaded")
            if e.retryable:
                self._send_json(503, {"error": str(e), "retry_after_s": svc.retry_after_s},
                                {"Retry-After": str(svc.retry_after_s)})
            else:
                self._send_json(413, {"error": str(e)})
            return
        except PoolClosed as e:
            self._send_json(503, {"error": f"shutting down: {e}"}, {"Retry-After": str(svc.retry_after_s)})
            return
        verdicts = fut.result()
        svc.count("items", len(items))
        self._send_json(200, {"results": [v.to_dict() for v in verdicts]})


class RewardServer:
    """Serve ``pool`` over HTTP on ``host:port`` (port 0 picks a free one; see :attr:`url`)."""

    def __init__(self, pool: VerifierPool, host: str = "127.0.0.1", port: int = 0, *,
                 retry_after_s: int = 1, verbose: bool = False) -> None:
        self.pool = pool
        self.retry_after_s = int(retry_after_s)
        self.verbose = verbose
        self.started = time.time()
        self._counters: collections.Counter = collections.Counter()
        self._lock = threading.Lock()
        self._httpd = _HTTPServer((host, port), self)
        self._thread: threading.Thread | None = None
        self._serving = False

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counters[key] += n

    def health(self) -> dict:
        st = self.pool.stats()
        with self._lock:
            c = dict(self._counters)
        return {
            "status": "ok" if st["alive"] > 0 and not st["closed"] else ("closed" if st["closed"] else "starting"),
            "workers_alive": st["alive"],
            "queue_depth": st["pending"],
            "uptime_s": round(time.time() - self.started, 3),
            "server": {k: c.get(k, 0) for k in ("requests", "items", "overloaded", "bad_requests")},
            "pool": st,
        }

    def serve_forever(self) -> None:
        self._serving = True
        self._httpd.serve_forever(poll_interval=0.2)

    def start(self) -> "RewardServer":
        """Serve from a background thread."""
        self._serving = True
        self._thread = threading.Thread(target=self.serve_forever, name="prorl-reward-http", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop accepting, let in-flight requests finish, close the socket (not the pool)."""
        if self._serving:
            self._httpd.shutdown()
            self._serving = False
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> "RewardServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
