"""The worker-process side of :mod:`prorl.rewards.pool`: a loop that scores batches of items.

Kept apart from the pool so that a worker imports as little as possible; it runs in its own
process group (the pool kills the whole group on a timeout) and dies with a SIGKILLed trainer.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import Any

from prorl.verifiers.base import OUT_OF_MEMORY, Status

MAX_REASON = 2000
CAP_HIT_FRACTION = 0.95  # peak address space at this fraction of the cap counts as hitting it


def _apply_config(config: tuple) -> None:
    """Mirror the parent's sys.path and verifier registry in this worker."""
    from prorl.verifiers import base

    paths, domains, aliases = config
    for p in paths:
        if p not in sys.path:
            sys.path.append(p)
    for dom, target in domains.items():
        if base._DOMAINS.get(dom) != target:
            base.register(dom, target)
    base._SOURCE_ALIASES.update(aliases)


def _die_with_parent() -> None:
    """Make sure a worker stuck in a hung verifier cannot outlive a SIGKILLed trainer (no GIL needed).

    A forkserver child inherits the trainer's "alive" pipe, which keeps the forkserver running as
    long as any child lives; we drop that copy so the forkserver exits with the trainer, and ask
    the kernel (Linux ``PR_SET_PDEATHSIG``) to SIGKILL us when our parent (the forkserver) exits."""
    try:
        from multiprocessing import forkserver

        fd = getattr(forkserver._forkserver, "_forkserver_alive_fd", None)
        if fd is not None:
            os.close(fd)
            forkserver._forkserver._forkserver_alive_fd = None
    except Exception:
        pass
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _vm_peak_mb() -> float:
    """This process's peak address space (``VmPeak``), MB; 0 when /proc is unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmPeak:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def _cap_memory(max_memory_mb: int) -> None:
    """Cap this worker's address space (soft ``RLIMIT_AS``) so many workers cannot exhaust the machine.

    Only the soft limit is lowered: a sandboxed program started from here sets its own limit
    (which may be higher) and must still be able to."""
    import resource

    lim = int(max_memory_mb) * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (lim if hard == resource.RLIM_INFINITY else min(lim, hard), hard))


def worker_main(conn: Any, preload: tuple[str, ...], strip_think: bool, max_memory_mb: int | None) -> None:
    """Worker loop: receive ``(config, [(gid, item), ...])`` batches, send one result per item.

    When an item drives the worker to its memory cap, its verdict says so, and the worker sends
    ``("recycle",)`` and exits: the pool requeues the rest of the batch on a fresh worker."""
    try:
        os.setpgid(0, 0)  # own process group, so the parent can kill anything we start
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    _die_with_parent()
    if max_memory_mb:
        _cap_memory(max_memory_mb)
    for mod in preload:
        try:
            importlib.import_module(mod)
        except Exception:  # a missing optional verifier must not kill the worker
            pass
    from prorl.verifiers.base import verify_one

    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        if msg is None:
            break
        config, batch = msg
        conn.send(("ack",))  # the batch arrived: a death from now on is blamed on its current item
        if config is not None:
            try:
                _apply_config(config)
            except Exception:  # an odd registry entry fails its own items, not the worker
                pass
        for gid, item in batch:
            try:
                v = verify_one(
                    item.get("data_source"),
                    item.get("ability"),
                    item.get("response"),
                    item.get("ground_truth"),
                    item.get("extra_info"),
                    strip_think=strip_think,
                )
                score, status, reason = float(v.score), Status(v.status).value, str(v.reason)
            except BaseException as e:  # noqa: BLE001 - sys.exit() in a verifier is an error verdict too
                score, status, reason = 0.0, Status.ERROR.value, f"{type(e).__name__}: {e}"
            cap_hit = bool(max_memory_mb) and (reason.startswith(OUT_OF_MEMORY)
                                               or _vm_peak_mb() >= CAP_HIT_FRACTION * max_memory_mb)
            if cap_hit:
                reason = (f"verifier hit the worker memory cap of {max_memory_mb} MB "
                          f"(reward.worker_memory_mb / --max-memory-mb): {reason}")
            conn.send((gid, score, status, reason[:MAX_REASON]))
            if cap_hit:  # start afresh: the peak cannot be measured again, and the heap may be fragmented
                conn.send(("recycle",))
                return
