"""Logic-puzzle verifier: Reasoning Gym tasks (scored by each task's own ``score_answer``) and hitori.

The answer is the text inside the last ``<answer>...</answer>`` pair (none or empty: ``no_answer``).
The score is what the task returns (partial credit allowed), clamped to [0, 1]; the status is
``correct`` iff the score is 1. Everything needed is rebuilt from the row's JSON data, so this works
in a fresh worker process; the task's dataset object is cached per (task, config) in the process.
"""

from __future__ import annotations

import math
from typing import Any

from prorl.verifiers.answer_tags import extract_answer
from prorl.verifiers.base import Status, Verdict
from prorl.verifiers.hitori import verify_hitori
from prorl.verifiers.reasoning_gym_entry import entry_from_row, get_scorer

_HITORI_SOURCES = {"hitori", "reasoning_gym/hitori", "reasoning-gym/hitori"}


def task_of(extra_info: dict) -> str:
    """The puzzle's task name: ``extra_info["task"]``, else the part of ``data_source`` after ``/``."""
    task = extra_info.get("task")
    if task:
        return str(task)
    source = str(extra_info.get("data_source") or "")
    if source.lower() in _HITORI_SOURCES:
        return "hitori"
    if "/" in source:
        return source.split("/", 1)[1]
    raise ValueError(f"cannot tell the logic task of data_source={source!r} (no extra_info['task'])")


def verify_logic(response: str, ground_truth: Any, extra_info: dict) -> Verdict:
    """Score a logic-puzzle response (Reasoning Gym task or hitori)."""
    extra_info = dict(extra_info or {})
    task = task_of(extra_info)
    if task == "hitori":
        return verify_hitori(response, ground_truth, extra_info)
    answer = extract_answer(response)
    if not answer:
        return Verdict(0.0, Status.NO_ANSWER, "no <answer>...</answer> tags (or they are empty)")
    entry = entry_from_row(task, ground_truth, extra_info)
    scorer = get_scorer(task, str(extra_info.get("config") or "{}"))
    try:
        raw = scorer.score_answer(answer, entry)
    except Exception as e:  # the task's own scorer choked on this answer: the answer's fault
        return Verdict(0.0, Status.WRONG, f"{task} scorer rejected the answer ({type(e).__name__}: {e})"[:500])
    try:
        score = float(raw)
    except (TypeError, ValueError):
        score = 0.0
    if math.isnan(score):
        score = 0.0
    score = min(1.0, max(0.0, score))
    if score == 1.0:
        return Verdict(1.0, Status.CORRECT, f"{task}: correct")
    return Verdict(score, Status.WRONG, f"{task}: score {score:.3g}")
