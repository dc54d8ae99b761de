"""A verifier whose worker dies during a simulated reward outage, importable by name in verifier
worker processes (pytest puts this folder on ``sys.path`` and the pool forwards it to workers)."""

from __future__ import annotations

import os
from pathlib import Path

from prorl.verifiers.base import Status, Verdict

DOMAIN = "t_outage"
DOOMED = "[doomed]"  # a response carrying this kills its worker while the outage file exists


def verify_outage(response: str, ground_truth, extra_info: dict) -> Verdict:
    """Correct iff the response boxes the gold answer; during the outage (``extra_info["outage"]``
    names an existing file) a doomed response SIGKILLs the worker, on every retry."""
    if DOOMED in response and Path(extra_info["outage"]).exists():
        os.kill(os.getpid(), 9)
    ok = f"\\boxed{{{ground_truth}}}" in response
    return Verdict(1.0 if ok else 0.0, Status.CORRECT if ok else Status.WRONG, "outage test verifier")


def register() -> None:
    from prorl.verifiers.base import register as register_domain

    register_domain(DOMAIN, f"{__name__}:verify_outage")
