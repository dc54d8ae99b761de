"""Fault injection for the crash-consistency tests: ``PRORL_FAULT=PHASE@STEP`` makes the trainer
SIGKILL itself when it reaches ``point(PHASE)`` during step ``STEP`` (a kill -9 at a chosen place,
reproducibly). Unset, every point is a dictionary look-up and nothing else."""

from __future__ import annotations

import os
import signal

PHASES = ("generation", "scoring", "update", "validation", "event", "metrics",
          "checkpoint:actor", "checkpoint:rng", "checkpoint:state", "checkpoint:rename")
_step = 0


def set_step(step: int) -> None:
    global _step
    _step = step


def point(phase: str) -> None:
    spec = os.environ.get("PRORL_FAULT")
    if spec and spec == f"{phase}@{_step}":
        os.kill(os.getpid(), signal.SIGKILL)
