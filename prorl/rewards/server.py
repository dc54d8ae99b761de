"""The HTTP reward service behind ``prorl serve-rewards`` (aiohttp, one event-loop thread).

``POST /score`` with ``{"items": [...]}`` answers ``{"results": [verdict dicts]}`` in item order.
``GET /health``: the process is alive (always 200, with workers, queue and counters).
``GET /ready``: 200 only while workers are up and the server is not draining (load balancers).
``GET /metrics``: Prometheus text (:mod:`prorl.rewards.metrics`).

Why aiohttp rather than the standard library's ``ThreadingHTTPServer``: a request here is waiting
on the verifier pool, not computing, so an event loop serves any number of connections without a
thread each (a slow or idle client holds no thread), with HTTP/1.1 keep-alive, a body-size limit
and a time limit on idle connections and on request heads built in. The pool's ``Future`` is
awaited directly (``asyncio.wrap_future``).

Protection, in the order a request meets it: the bearer token (401, before anything is read or
queued; ``/health`` and ``/ready`` are open for probes), draining (503 + ``Retry-After``), the body
size (413), the whole body within ``request_timeout_s`` (408, so a client sending a byte a second
is cut off), valid JSON (400), the items-per-request limit (413) and the pool's bounded queue
(503 + ``Retry-After``). Every error is a JSON object with an ``error`` reason.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
import time
from typing import Any, Awaitable, Callable

from aiohttp import web

from prorl.rewards.guard import ServerLimits, bearer_ok, refuse_insecure_bind
from prorl.rewards.metrics import ServiceMetrics
from prorl.rewards.pool import PoolClosed, PoolOverloaded, VerifierPool
from prorl.verifiers.base import resolve_domain

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health", "/ready"})  # probes need no token
KNOWN_PATHS = frozenset({"/health", "/ready", "/metrics", "/score"})


class InsecureBind(ValueError):
    """Refused to listen on a non-loopback address without a token."""


def _json(code: int, obj: dict, headers: dict | None = None) -> web.Response:
    return web.Response(status=code, body=json.dumps(obj).encode(), content_type="application/json",
                        headers=headers)


def _domain(item: dict) -> str:
    """The item's verifier domain for the metrics' labels ("unknown" when it has none)."""
    try:
        return resolve_domain(item.get("data_source"), item.get("ability"))
    except Exception:
        return "unknown"


class RewardServer:
    """Serve ``pool`` over HTTP on ``host:port`` (port 0 picks a free one; see :attr:`url`).

    Listening starts in the constructor (an unusable address fails there, with ``OSError``);
    requests are served from a background event-loop thread until :meth:`shutdown`.
    """

    def __init__(self, pool: VerifierPool, host: str = "127.0.0.1", port: int = 0, *, token: str | None = None,
                 insecure: bool = False, limits: ServerLimits = ServerLimits(), retry_after_s: int = 1,
                 verbose: bool = False) -> None:
        why = refuse_insecure_bind(host, token, insecure)
        if why is not None:
            raise InsecureBind(why)
        self.pool = pool
        self.limits = limits
        self.retry_after_s = int(retry_after_s)
        self.verbose = verbose
        self.started = time.time()
        self.metrics = ServiceMetrics()
        self._token = token
        self._counters: collections.Counter = collections.Counter()
        self._draining = False
        self._inflight_requests = 0  # touched only on the event-loop thread
        self._inflight_items = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="prorl-reward-http", daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None
        try:
            self._call(self._astart(host, port))
        except BaseException:
            self._stop_loop()
            raise

    # ------------------------------------------------------------------ lifecycle

    def _call(self, coro: Awaitable[Any], timeout: float | None = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    async def _astart(self, host: str, port: int) -> None:
        app = web.Application(client_max_size=self.limits.max_body_bytes, middlewares=[self._guard])
        app.router.add_get("/health", self._health)
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/score", self._score)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5.0,
                                     access_log=logging.getLogger("prorl.rewards.access") if self.verbose else None,
                                     keepalive_timeout=self.limits.request_timeout_s)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=1024, reuse_address=True)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        self._address = sock.getsockname()[:2]

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()

    @property
    def address(self) -> tuple[str, int]:
        return str(self._address[0]), int(self._address[1])

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    @property
    def draining(self) -> bool:
        return self._draining

    def start(self) -> "RewardServer":
        """Kept for symmetry: the server already serves once constructed."""
        return self

    def drain(self, timeout_s: float) -> bool:
        """Stop accepting (503 + ``Retry-After``; ``/ready`` 503) and wait until every accepted request
        is answered; False when some are still in flight after ``timeout_s``."""
        self._draining = True
        deadline = time.monotonic() + timeout_s
        while self._inflight_requests and time.monotonic() < deadline:
            time.sleep(0.02)
        return self._inflight_requests == 0

    @property
    def inflight_requests(self) -> int:
        return self._inflight_requests

    def shutdown(self) -> None:
        """Close the listening socket and all connections, stop the loop (not the pool)."""
        if self._loop.is_closed():
            return
        if self._runner is not None:
            try:
                self._call(self._runner.cleanup(), timeout=30)
            except Exception:  # never let a failed close hide the caller's own error
                log.exception("reward server cleanup failed")
        self._stop_loop()

    def __enter__(self) -> "RewardServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # ------------------------------------------------------------------ state

    def count(self, key: str, n: int = 1) -> None:
        self._counters[key] += n

    def ready(self) -> tuple[bool, str]:
        st = self.pool.stats()
        if self._draining:
            return False, "draining"
        if st["closed"]:
            return False, "the verifier pool is closed"
        if st["alive"] < 1:
            return False, "no verifier worker is up yet"
        return True, "ok"

    def health(self) -> dict:
        st = self.pool.stats()
        status = ("draining" if self._draining else "closed" if st["closed"] else
                  "ok" if st["alive"] > 0 else "starting")
        c = dict(self._counters)
        return {
            "status": status,
            "workers_alive": st["alive"],
            "queue_depth": st["pending"],
            "inflight_requests": self._inflight_requests,
            "uptime_s": round(time.time() - self.started, 3),
            "server": {k: c.get(k, 0) for k in ("requests", "items", "overloaded", "bad_requests")},
            "pool": st,
        }

    def metrics_text(self) -> str:
        st = self.pool.stats()
        ok, _ = self.ready()
        gauges = {
            "prorl_reward_queue_depth": ("items queued, waiting for a worker", st["queue_depth"]),
            "prorl_reward_pending_items": ("items accepted and not yet answered (queued or being scored)",
                                           st["pending"]),
            "prorl_reward_inflight_items": ("items of requests in flight", self._inflight_items),
            "prorl_reward_inflight_requests": ("POST /score requests in flight", self._inflight_requests),
            "prorl_reward_workers_alive": ("verifier worker processes up", st["alive"]),
            "prorl_reward_workers_configured": ("verifier worker processes configured", st["workers"]),
            "prorl_reward_ready": ("1 when /ready answers 200", int(ok)),
            "prorl_reward_draining": ("1 while draining after SIGTERM", int(self._draining)),
            "prorl_reward_uptime_seconds": ("seconds since start", round(time.time() - self.started, 3)),
        }
        counters = {
            "prorl_reward_worker_restarts_total": ("verifier workers replaced (timeouts, deaths, memory cap)",
                                                   st["restarts"]),
            "prorl_reward_worker_crashes_total": ("verifier workers that died", st["crashes"]),
            "prorl_reward_worker_recycles_total": ("verifier workers replaced after hitting the memory cap",
                                                   st["recycled"]),
            "prorl_reward_item_timeouts_total": ("items over the per-item hard limit", st["timeouts"]),
            "prorl_reward_item_retries_total": ("items retried after their worker died", st["retried"]),
        }
        return self.metrics.render(gauges, counters)

    # ------------------------------------------------------------------ handlers

    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """Authentication first (nothing is read or queued without the token), JSON errors, response counts."""
        try:
            if (self._token is not None and request.path not in OPEN_PATHS
                    and not bearer_ok(request.headers.get("Authorization"), self._token)):
                resp: web.StreamResponse = _json(401, {"error": "missing or wrong bearer token "
                                                                "(send 'Authorization: Bearer <token>')"},
                                                 {"WWW-Authenticate": 'Bearer realm="prorl-reward"'})
            else:
                resp = await handler(request)
        except web.HTTPException as e:  # 404, 405 from the router
            resp = _json(e.status, {"error": f"{e.reason}: {request.method} {request.path}"})
        self.metrics.count_response(request.path if request.path in KNOWN_PATHS else "other", resp.status)
        return resp

    async def _health(self, request: web.Request) -> web.Response:
        return _json(200, self.health())

    async def _ready(self, request: web.Request) -> web.Response:
        ok, why = self.ready()
        return _json(200 if ok else 503, {"ready": ok, "reason": why})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics_text(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    def _retry_later(self, why: str) -> web.Response:
        return _json(503, {"error": why, "retry_after_s": self.retry_after_s}, {"Retry-After": str(self.retry_after_s)})

    async def _score(self, request: web.Request) -> web.Response:
        if self._draining:
            return self._retry_later("draining: this replica is shutting down; send the batch to another")
        self.count("requests")
        self._inflight_requests += 1  # from here on, drain() waits for this request's answer
        try:
            return await self._score_accepted(request)
        finally:
            self._inflight_requests -= 1

    async def _score_accepted(self, request: web.Request) -> web.Response:
        lim = self.limits
        n = request.content_length
        if n is not None and n > lim.max_body_bytes:
            self.count("bad_requests")
            return _json(413, {"error": f"request body of {n} bytes exceeds the limit of {lim.max_body_bytes} bytes "
                                        f"(--max-body-mb {lim.max_body_mb:g}); split the batch",
                               "limit_bytes": lim.max_body_bytes})
        try:
            body = await asyncio.wait_for(request.read(), lim.request_timeout_s)
        except asyncio.TimeoutError:
            self.count("bad_requests")
            resp = _json(408, {"error": f"request body not received within {lim.request_timeout_s:g}s"})
            resp.force_close()
            return resp
        except web.HTTPRequestEntityTooLarge:
            self.count("bad_requests")
            return _json(413, {"error": f"request body exceeds the limit of {lim.max_body_bytes} bytes "
                                        f"(--max-body-mb {lim.max_body_mb:g}); split the batch",
                               "limit_bytes": lim.max_body_bytes})
        try:
            payload = json.loads(body or b"null")
            items = payload["items"]
            if not isinstance(items, list):
                raise TypeError("'items' must be a list")
            bad = next((i for i, it in enumerate(items) if not isinstance(it, dict)), None)
            if bad is not None:
                raise TypeError(f"item {bad} is not an object")
        except (ValueError, KeyError, TypeError) as e:
            self.count("bad_requests")
            return _json(400, {"error": f"expected a JSON object {{\"items\": [...]}}: {type(e).__name__}: {e}"})
        if len(items) > lim.max_items:
            self.count("bad_requests")
            return _json(413, {"error": f"{len(items)} items exceed the limit of {lim.max_items} per request "
                                        f"(--max-items); split the batch", "limit_items": lim.max_items})
        t0 = time.perf_counter()
        try:
            fut = self.pool.submit(items)
        except PoolOverloaded as e:
            self.count("overloaded")
            if e.retryable:
                return self._retry_later(str(e))
            return _json(413, {"error": str(e)})
        except PoolClosed as e:
            return self._retry_later(f"shutting down: {e}")
        self._inflight_items += len(items)
        try:
            verdicts = await asyncio.wrap_future(fut)
        finally:
            self._inflight_items -= len(items)
        self.count("items", len(items))
        self.metrics.count_items([_domain(it) for it in items], [v.status.value for v in verdicts])
        self.metrics.observe_latency(time.perf_counter() - t0)
        return _json(200, {"results": [v.to_dict() for v in verdicts]})
