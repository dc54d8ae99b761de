"""IFEval verifier: the 25 verifiable instruction types, strict and loose, written from scratch.

``verify_ifeval`` is the reward function (domain ``ifeval`` in :mod:`prorl.verifiers.base`);
``follow_strict`` / ``follow_loose`` give per-instruction booleans; ``evaluate_responses``
computes the official prompt-level and instruction-level accuracies of a responses file.
"""

from __future__ import annotations

from typing import Any

from prorl.verifiers.base import Status, Verdict
from prorl.verifiers.ifeval.evaluation import evaluate_responses, ifeval_to_rows
from prorl.verifiers.ifeval.registry import (
    INSTRUCTION_IDS,
    INSTRUCTIONS,
    check_instruction,
    follow,
    follow_loose,
    follow_strict,
    loose_variants,
    parse_spec,
)


def verify_ifeval(response: str, ground_truth: Any, extra_info: dict | None = None) -> Verdict:
    """Score = fraction of the row's instructions that ``response`` follows.

    The instruction list and kwargs come from ``ground_truth`` (a dict or its JSON string with
    ``instruction_id_list`` and ``kwargs``) or from ``extra_info``. The mode is
    ``extra_info["ifeval_mode"]``: ``"strict"`` (default) or ``"loose"``. Status is
    ``correct`` when all are followed, ``no_answer`` for an empty response, else ``wrong``;
    the reason lists the failed instruction ids.
    """
    extra = dict(extra_info or {})
    ids, kwargs = parse_spec(ground_truth, extra)
    mode = str(extra.get("ifeval_mode") or "strict").lower()
    if not ids:
        raise ValueError("IFEval row has an empty instruction_id_list")
    flags = follow(response or "", ids, kwargs, mode=mode)
    score = sum(flags) / len(flags)
    failed = [iid for iid, ok in zip(ids, flags) if not ok]
    if not failed:
        return Verdict(1.0, Status.CORRECT, f"{mode}: all {len(ids)} instructions followed")
    if not (response or "").strip():
        return Verdict(0.0, Status.NO_ANSWER, f"{mode}: empty response")
    return Verdict(score, Status.WRONG,
                   f"{mode}: {len(failed)}/{len(ids)} not followed: {', '.join(failed)}")


__all__ = [
    "INSTRUCTION_IDS",
    "INSTRUCTIONS",
    "check_instruction",
    "evaluate_responses",
    "follow",
    "follow_loose",
    "follow_strict",
    "ifeval_to_rows",
    "loose_variants",
    "parse_spec",
    "verify_ifeval",
]
