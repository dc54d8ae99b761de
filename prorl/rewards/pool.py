"""A pool of verifier worker processes with hard wall-clock limits enforced from outside.

Why processes and an outside limit: sympy can sit for minutes inside C code on an expression bomb
(``9^{9^{9^{9}}}``), and a verifier may loop forever; no signal or thread can stop that reliably.
So each worker runs in its own process group, a dispatcher thread in the parent watches every
item's deadline, and a late (or dead) worker is killed with its whole group and replaced. A late
item gets a ``timeout`` verdict (the response's fault: it is scored). A worker that *dies* (killed
from outside, out of memory, a crashing verifier) is our failure, not a judgement of the response:
its item is retried on another worker, up to ``max_item_retries`` times, and then gets an
``infra_error`` verdict, which the trainer excludes. The rest of a batch is re-queued. No item is
ever lost and a caller never waits longer than the per-item limit (times the retries) allows.

Workers are persistent (started once from the ``forkserver`` with the verifiers preloaded) and
receive items in batches; they look verifiers up by name through
:func:`prorl.verifiers.base.verify_one`. Registrations made in the parent with
:func:`prorl.verifiers.base.register` (and the parent's ``sys.path``) are forwarded to the
workers, so a verifier only has to live in an importable module.

The pool is thread-safe: any thread may call :meth:`VerifierPool.submit`/:meth:`map`.
"""

from __future__ import annotations

import atexit
import collections
import logging
import math
import multiprocessing as mp
import multiprocessing.util  # noqa: F401 - its atexit hook must be registered before ours (runs after)
import os
import signal
import threading
import time
import weakref
from concurrent.futures import Future
from multiprocessing.connection import wait as mp_wait
from multiprocessing.reduction import ForkingPickler

from prorl.rewards.handles import Job, WorkerHandle, forkserver_context, kill_worker, registry_snapshot
from prorl.rewards.worker import MAX_REASON as _MAX_REASON
from prorl.rewards.worker import worker_main
from prorl.verifiers.base import Status, Verdict

log = logging.getLogger(__name__)

DEFAULT_PRELOAD: tuple[str, ...] = ("prorl.verifiers.base", "prorl.verifiers.math", "prorl.rewards.warmup")


class PoolOverloaded(RuntimeError):
    """Too many items are pending; ``retryable`` is False when the batch alone exceeds the bound."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class PoolClosed(RuntimeError):
    """The pool was closed."""


# ----------------------------------------------------------------------------- parent side


_LIVE_POOLS: "weakref.WeakSet[VerifierPool]" = weakref.WeakSet()


@atexit.register
def _close_all_pools() -> None:
    for pool in list(_LIVE_POOLS):
        try:
            pool.close()
        except Exception:
            pass


class VerifierPool:
    """N persistent verifier processes; every item is scored within ``timeout_s`` or gets a verdict saying why not.

    ``max_pending`` bounds the items queued or in flight (``None``: unbounded); :meth:`submit` raises
    :class:`PoolOverloaded` beyond it. ``max_memory_mb`` optionally caps each worker's address space
    (an item that hits the cap gets a verdict saying so and the worker is replaced).
    ``max_item_retries`` bounds how often an item whose worker died is tried again on another one.
    """

    def __init__(
        self,
        num_workers: int = 2,
        timeout_s: float = 10.0,
        *,
        strip_think: bool = True,
        max_pending: int | None = None,
        max_batch: int = 32,
        preload: tuple[str, ...] = DEFAULT_PRELOAD,
        startup_timeout_s: float = 60.0,
        max_memory_mb: int | None = None,
        max_item_retries: int = 2,
        context: str = "forkserver",
    ) -> None:
        if num_workers < 1:
            raise ValueError("num_workers must be >= 1")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.num_workers = int(num_workers)
        self.timeout_s = float(timeout_s)
        self.strip_think = strip_think
        self.max_pending = max_pending
        self.max_batch = max(1, int(max_batch))
        self.preload = tuple(preload)
        self.startup_timeout_s = float(startup_timeout_s)
        self.max_memory_mb = max_memory_mb
        self.max_item_retries = max(0, int(max_item_retries))
        self._ctx = forkserver_context(self.preload) if context == "forkserver" else mp.get_context(context)

        self._lock = threading.Lock()
        self._queue: collections.deque = collections.deque()  # (gid, job, pos)
        self._pending = 0  # items submitted and not yet answered
        self._gid = 0
        self._closing = False
        self._workers: list[WorkerHandle] = []
        self._start_failures = 0
        self._last_start_error = ""
        self.counters = collections.Counter()
        r, w = os.pipe()
        os.set_blocking(w, False)
        self._wake_r, self._wake_w = r, w
        self._thread = threading.Thread(target=self._run, name="prorl-verifier-pool", daemon=True)
        self._thread.start()
        _LIVE_POOLS.add(self)

    # ------------------------------------------------------------------ public API

    def submit(self, items: list[dict]) -> "Future[list[Verdict]]":
        """Queue ``items``; the future resolves to their verdicts in input order."""
        items = list(items)
        fut: Future = Future()
        if not items:
            fut.set_result([])
            return fut
        job = Job(items, registry_snapshot(), fut, [None] * len(items), len(items))
        with self._lock:
            if self._closing:
                raise PoolClosed("the verifier pool is closed")
            n = len(items)
            if self.max_pending is not None:
                if n > self.max_pending:
                    raise PoolOverloaded(
                        f"batch of {n} items exceeds the queue bound of {self.max_pending}; split it",
                        retryable=False,
                    )
                if self._pending + n > self.max_pending:
                    self.counters["rejected_batches"] += 1
                    raise PoolOverloaded(
                        f"overloaded: {self._pending} items pending, bound {self.max_pending}, batch {n}"
                    )
            for pos in range(n):
                self._queue.append((self._gid, job, pos))
                self._gid += 1
            self._pending += n
            self.counters["submitted"] += n
        self._wake()
        return fut

    def map(self, items: list[dict], timeout: float | None = None) -> list[Verdict]:
        """Score ``items`` and wait for all verdicts (same order)."""
        return self.submit(items).result(timeout)

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Block until all ``num_workers`` workers have started (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            workers = list(self._workers)
            if len(workers) == self.num_workers and all(w.ready for w in workers):
                return True
            time.sleep(0.02)
        return False

    def worker_pids(self) -> list[int]:
        """Pids of the live, started workers (e.g. to kill one in a test)."""
        return [w.pid for w in list(self._workers) if w.pid is not None and w.proc.is_alive()]

    def stats(self) -> dict:
        """Workers alive, queue depth and counters, for health checks."""
        workers = list(self._workers)
        with self._lock:
            c = dict(self.counters)
            pending, queued = self._pending, len(self._queue)
        return {
            "workers": self.num_workers,
            "alive": sum(1 for w in workers if w.ready and w.proc.is_alive()),
            "busy": sum(1 for w in workers if w.batch),
            "pids": [w.pid for w in workers if w.pid is not None],
            "busy_pids": [w.pid for w in workers if w.pid is not None and w.batch],  # holding items now
            "queue_depth": queued,
            "pending": pending,
            "max_pending": self.max_pending,
            "timeout_s": self.timeout_s,
            "closed": self._closing,
            "last_start_error": self._last_start_error,
            **{k: c.get(k, 0) for k in ("submitted", "completed", "timeouts", "crashes", "restarts", "recycled",
                                        "retried", "infra_errors", "rejected_batches")},
        }

    def close(self, timeout: float = 10.0) -> None:
        """Stop the workers; items not yet scored get an ``infra_error`` verdict (callers never hang)."""
        with self._lock:
            if self._closing:
                already = True
            else:
                already, self._closing = False, True
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        if not already:
            _LIVE_POOLS.discard(self)

    def __enter__(self) -> "VerifierPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ dispatcher thread

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def _run(self) -> None:
        try:
            while not self._closing:
                self._spawn_missing()
                self._assign()
                self._wait_and_handle()
        except Exception as e:  # never leave callers waiting on a dead dispatcher
            log.exception("verifier pool dispatcher failed")
            self._fail_everything(f"verifier pool dispatcher failed: {type(e).__name__}: {e}")
        finally:
            self._shutdown_workers()
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _spawn_missing(self) -> None:
        with self._lock:
            need = self._pending > 0 or self._start_failures < 3
        if not need:  # gave up starting workers; try again when there is work
            return
        while len(self._workers) < self.num_workers and not self._closing:
            parent, child = self._ctx.Pipe(duplex=True)
            proc = self._ctx.Process(
                target=worker_main,
                args=(child, self.preload, self.strip_think, self.max_memory_mb),
                name="prorl-verifier-worker",
            )
            try:
                proc.start()
            except Exception as e:
                parent.close()
                child.close()
                self._start_failed(f"could not start a worker: {type(e).__name__}: {e}")
                return
            child.close()
            self._workers = self._workers + [WorkerHandle(proc, parent, time.monotonic())]

    def _start_failed(self, why: str) -> None:
        self._start_failures += 1
        self._last_start_error = why
        log.warning("verifier worker failed to start (%d in a row): %s", self._start_failures, why)
        if self._start_failures >= 3 and not any(w.ready for w in self._workers):
            self._fail_queued(f"no verifier worker could start: {why}")
            time.sleep(0.5)  # back off before the next attempt

    def _assign(self) -> None:
        for w in self._workers:
            if not w.ready or w.batch:
                continue
            with self._lock:
                if not self._queue:
                    return
                share = math.ceil(len(self._queue) / (2 * self.num_workers))
                take = max(1, min(self.max_batch, share))
                first_job = self._queue[0][1]
                batch = []
                while self._queue and len(batch) < take and self._queue[0][1] is first_job:
                    batch.append(self._queue.popleft())
            config = batch[0][1].config
            payload = [(gid, job.items[pos]) for gid, job, pos in batch]
            send_config = None if config == w.config else config
            try:
                data = ForkingPickler.dumps((send_config, payload))
            except Exception:  # some item holds an object that cannot cross a process boundary
                self._reject_unpicklable(batch)
                continue
            w.batch.extend(batch)
            w.item_started = time.monotonic()
            w.acked = False
            try:
                w.conn.send_bytes(data)
                w.config = config
            except (OSError, ValueError) as e:
                self._worker_died(w, f"could not send work to the worker: {e}")

    def _reject_unpicklable(self, batch: list) -> None:
        """Give each unpicklable item an error verdict and put the others back in the queue."""
        keep = []
        for entry in batch:
            _, job, pos = entry
            try:
                ForkingPickler.dumps(job.items[pos])
                keep.append(entry)
            except Exception as e:
                self._resolve(job, pos, Verdict(0.0, Status.ERROR, f"item cannot be sent to a worker: "
                                                                   f"{type(e).__name__}: {e}"[:_MAX_REASON]))
        if len(keep) == len(batch):  # each item alone is fine but not the batch: give up on them
            for _, job, pos in keep:
                self._resolve(job, pos, Verdict(0.0, Status.ERROR, "batch cannot be sent to a worker"))
            return
        with self._lock:
            self._queue.extendleft(reversed(keep))

    def _wait_and_handle(self) -> None:
        now = time.monotonic()
        deadlines = []
        for w in self._workers:
            if w.batch:
                deadlines.append(w.item_started + self.timeout_s)
            elif not w.ready:
                deadlines.append(w.started_at + self.startup_timeout_s)
        wait_s = max(0.0, min(deadlines) - now) if deadlines else None
        waitables: list = [self._wake_r]
        for w in self._workers:
            waitables += [w.conn, w.proc.sentinel]
        ready = mp_wait(waitables, timeout=wait_s)
        if self._wake_r in ready:
            try:
                os.read(self._wake_r, 4096)
            except OSError:
                pass
        for w in list(self._workers):
            if w.conn in ready or w.proc.sentinel in ready:
                self._drain(w)
        now = time.monotonic()
        for w in list(self._workers):
            if w not in self._workers:
                continue
            if w.batch and now >= w.item_started + self.timeout_s:
                self._drain(w)  # an answer may have arrived right at the deadline
                if w in self._workers and w.batch and time.monotonic() >= w.item_started + self.timeout_s:
                    self._worker_timed_out(w)
            elif not w.ready and now >= w.started_at + self.startup_timeout_s:
                self._remove(w)
                self._start_failed(f"worker not ready after {self.startup_timeout_s:g}s")

    def _drain(self, w: WorkerHandle) -> None:
        """Read every message the worker has sent; handle its death if the pipe is closed."""
        try:
            while w.conn.poll():
                self._on_message(w, w.conn.recv())
        except (EOFError, OSError):
            pass
        if not w.proc.is_alive():
            try:
                while w.conn.poll():
                    self._on_message(w, w.conn.recv())
            except (EOFError, OSError):
                pass
            self._worker_died(w, None)

    def _on_message(self, w: WorkerHandle, msg: tuple) -> None:
        if msg[0] == "ready":
            w.ready, w.pid = True, int(msg[1])
            self._start_failures = 0
            return
        if msg[0] == "ack":
            w.acked = True
            return
        if msg[0] == "recycle":  # it hit its memory cap and exits: the rest of its batch goes elsewhere
            self._requeue(w)
            self._remove(w)
            with self._lock:
                self.counters["recycled"] += 1
                self.counters["restarts"] += 1
            return
        gid, score, status, reason = msg
        if not w.batch or w.batch[0][0] != gid:
            log.error("verifier worker %s answered unexpected item %s; ignored", w.pid, gid)
            return
        _, job, pos = w.batch.popleft()
        w.item_started = time.monotonic()
        self._resolve(job, pos, Verdict(score, Status(status), reason))

    def _resolve(self, job: Job, pos: int, verdict: Verdict) -> None:
        if job.results[pos] is not None:
            return
        job.results[pos] = verdict
        job.remaining -= 1
        with self._lock:
            self._pending -= 1
            self.counters["completed"] += 1
            if verdict.status is Status.TIMEOUT:
                self.counters["timeouts"] += 1
            elif verdict.status is Status.INFRA_ERROR:
                self.counters["infra_errors"] += 1
        if job.remaining == 0 and not job.future.done():
            job.future.set_result(list(job.results))

    def _worker_timed_out(self, w: WorkerHandle) -> None:
        _, job, pos = w.batch.popleft()
        kill_worker(w)
        self._requeue(w)
        self._remove(w)
        with self._lock:
            self.counters["restarts"] += 1
        self._resolve(job, pos, Verdict(0.0, Status.TIMEOUT, f"verifier exceeded the {self.timeout_s:g}s hard limit; worker killed"))

    def _worker_died(self, w: WorkerHandle, why: str | None) -> None:
        """A worker died: retry the item it held on another worker (bounded), requeue the rest."""
        if w not in self._workers:
            return
        kill_worker(w)
        code = w.proc.exitcode
        if why is None:
            why = f"verifier worker died (exit code {code})" if code is None or code >= 0 else (
                f"verifier worker killed by signal {signal.Signals(-code).name}")
        lost = w.batch.popleft() if w.batch else None
        if lost is not None:
            _, job, pos = lost
            job.deaths[pos] = job.deaths.get(pos, 0) + 1
            if job.deaths[pos] <= self.max_item_retries:
                w.batch.appendleft(lost)  # first in line again, for a fresh worker
                lost = None
                with self._lock:
                    self.counters["retried"] += 1
        self._requeue(w)
        self._remove(w)
        with self._lock:
            self.counters["crashes"] += 1
            self.counters["restarts"] += 1
        if lost is not None:
            n = lost[1].deaths[lost[2]]
            self._resolve(lost[1], lost[2], Verdict(0.0, Status.INFRA_ERROR,
                                                    f"not scored: {n} verifier workers died holding this item "
                                                    f"(last: {why})"))
        if not w.ready:
            self._start_failed(why)

    def _requeue(self, w: WorkerHandle) -> None:
        if w.batch:
            with self._lock:
                self._queue.extendleft(reversed(w.batch))
            w.batch.clear()

    def _remove(self, w: WorkerHandle) -> None:
        kill_worker(w)
        self._workers = [x for x in self._workers if x is not w]
        try:
            w.conn.close()
        except OSError:
            pass

    def _fail_queued(self, why: str) -> None:
        """Answer every queued item ``infra_error``: the pool, not the response, failed."""
        with self._lock:
            queued = list(self._queue)
            self._queue.clear()
        for _, job, pos in queued:
            self._resolve(job, pos, Verdict(0.0, Status.INFRA_ERROR, why))

    def _fail_everything(self, why: str) -> None:
        for w in list(self._workers):
            while w.batch:
                _, job, pos = w.batch.popleft()
                self._resolve(job, pos, Verdict(0.0, Status.INFRA_ERROR, why))
        self._fail_queued(why)

    def _shutdown_workers(self) -> None:
        with self._lock:
            self._closing = True
        self._fail_everything("verifier pool closed before the item was scored")
        workers, self._workers = self._workers, []
        for w in workers:
            try:
                w.conn.send(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 2.0
        for w in workers:
            w.proc.join(max(0.0, deadline - time.monotonic()))
            kill_worker(w)
            try:
                w.conn.close()
            except OSError:
                pass
