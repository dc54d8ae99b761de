"""Parent-side handles of :mod:`prorl.rewards.pool`: a job, a worker process, and how to start and kill one."""

from __future__ import annotations

import collections
import multiprocessing as mp
import os
import signal
import sys
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from prorl.verifiers.base import Verdict


@dataclass
class Job:
    """One submitted batch: its items, the registry to apply, and the verdicts as they arrive."""

    items: list[dict]
    config: tuple
    future: Future
    results: list[Verdict | None]
    remaining: int
    deaths: dict = field(default_factory=dict)  # pos -> workers that died holding it (infrastructure, retried)


@dataclass
class WorkerHandle:
    """A worker process, its pipe, and the items it holds (the first is being scored)."""

    proc: Any
    conn: Any
    started_at: float
    ready: bool = False
    pid: int | None = None
    batch: collections.deque = field(default_factory=collections.deque)  # (gid, job, pos)
    item_started: float = 0.0
    acked: bool = False
    killed: bool = False
    config: tuple | None = None


def registry_snapshot() -> tuple:
    """The parent's sys.path and verifier registry, forwarded to workers with each batch."""
    from prorl.verifiers import base

    return (tuple(sys.path), dict(base._DOMAINS), dict(base._SOURCE_ALIASES))


def forkserver_context(preload: tuple[str, ...]) -> Any:
    """The forkserver context, preloading the verifiers once (children inherit the warm state)."""
    ctx = mp.get_context("forkserver")
    try:
        from multiprocessing import forkserver

        if getattr(forkserver._forkserver, "_forkserver_pid", None) is None:
            ctx.set_forkserver_preload(list(preload))
    except Exception:  # preloading is only an optimisation
        pass
    return ctx


def kill_worker(w: WorkerHandle) -> None:
    """SIGKILL the worker's whole process group (never our own, and only once), then reap it."""
    pid = w.pid or w.proc.pid
    if pid is not None and not w.killed:
        w.killed = True
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            pass
    try:
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join(5)
    except (OSError, ValueError, AssertionError):
        pass
