"""Tiny verifiers for the reward-plumbing tests, importable by name in worker processes
(pytest puts this folder on ``sys.path`` and the pool forwards ``sys.path`` to its workers)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from prorl.verifiers.base import Status, Verdict

MODULE = "rewards_testverifiers"


def verify_echo(response: str, ground_truth, extra_info: dict) -> Verdict:
    """Correct iff the response equals the gold; the reason names the item id and the worker pid."""
    ok = response.strip() == str(ground_truth)
    return Verdict(1.0 if ok else 0.0, Status.CORRECT if ok else Status.WRONG,
                   f"id={extra_info.get('id')} pid={os.getpid()}")


def verify_sleep(response: str, ground_truth, extra_info: dict) -> Verdict:
    time.sleep(float(extra_info.get("sleep", 0.0)))
    return Verdict(1.0, Status.CORRECT, f"id={extra_info.get('id')} slept")


def verify_hang(response: str, ground_truth, extra_info: dict) -> Verdict:
    while True:  # an infinite loop in pure Python
        pass


def verify_crash(response: str, ground_truth, extra_info: dict) -> Verdict:
    os._exit(7)


def verify_die_once(response: str, ground_truth, extra_info: dict) -> Verdict:
    """SIGKILL our own worker the first time (a marker file remembers), then judge normally."""
    marker = Path(extra_info["marker"])
    if not marker.exists():
        marker.write_text("died")
        os.kill(os.getpid(), 9)
    return verify_echo(response, ground_truth, extra_info)


def verify_hog(response: str, ground_truth, extra_info: dict) -> Verdict:
    """Allocate ``extra_info["mb"]`` MB in 8 MB pieces; when ``swallow``, hide a MemoryError (as
    some libraries do) and answer ``wrong``."""
    chunks = []
    try:
        for _ in range(int(extra_info["mb"]) // 8):
            chunks.append(bytearray(8 << 20))
    except MemoryError:
        if extra_info.get("swallow"):
            chunks.clear()
            return Verdict(0.0, Status.WRONG, "gave up")
        raise
    return Verdict(1.0, Status.CORRECT, f"allocated {extra_info['mb']} MB")


def verify_raise(response: str, ground_truth, extra_info: dict) -> Verdict:
    raise ValueError("boom from a broken verifier")


def verify_spawn_and_hang(response: str, ground_truth, extra_info: dict) -> Verdict:
    """Start a grandchild process, record its pid, then hang: the pool must kill both."""
    child = subprocess.Popen(["sleep", "300"])
    Path(extra_info["pidfile"]).write_text(str(child.pid))
    while True:
        time.sleep(0.05)


def register_all() -> None:
    """Register the test domains ``t_echo``, ``t_sleep``, ``t_hang``, ``t_crash``, ``t_raise``, ``t_spawn``,
    ``t_die_once``, ``t_hog``."""
    from prorl.verifiers.base import register

    for dom, fn in [("t_echo", "verify_echo"), ("t_sleep", "verify_sleep"), ("t_hang", "verify_hang"),
                    ("t_crash", "verify_crash"), ("t_raise", "verify_raise"), ("t_spawn", "verify_spawn_and_hang"),
                    ("t_die_once", "verify_die_once"), ("t_hog", "verify_hog")]:
        register(dom, f"{MODULE}:{fn}")


def item(domain: str, response: str = "x", gold="x", **extra) -> dict:
    return {"data_source": domain, "ability": None, "response": response, "ground_truth": gold, "extra_info": extra}
