"""Verifier of the built-in tasks: exact match of the last ``\\boxed{...}`` against the answer."""

from __future__ import annotations

import re
from typing import Any

from prorl.verifiers.base import Status, Verdict

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (no nested braces), or None."""
    found = _BOXED.findall(text)
    return found[-1] if found else None


def _normalise(s: str) -> str:
    return " ".join(s.replace(",", " ").split())


def verify_builtin(response: str, ground_truth: Any, extra_info: dict) -> Verdict:
    answer = last_boxed(response)
    if answer is None:
        return Verdict(0.0, Status.NO_ANSWER, "no \\boxed{} answer")
    if _normalise(answer) == _normalise(str(ground_truth)):
        return Verdict(1.0, Status.CORRECT, "exact match")
    return Verdict(0.0, Status.WRONG, f"got {answer!r}, expected {str(ground_truth)!r}")
