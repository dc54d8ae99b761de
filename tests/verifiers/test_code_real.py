"""Real benchmark data: every HumanEval canonical solution and every sanitized-MBPP reference
solution scores 1.0; deliberately broken versions do not. The default suite checks a fixed
sample of 30 problems from each set; the full sets run under ``-m slow``."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from prorl.data.converters import humaneval_to_rows, mbpp_to_rows
from prorl.verifiers.base import Status, verify_one

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "code"
HUMANEVAL = DATA / "HumanEval.jsonl"
MBPP = DATA / "sanitized-mbpp.json"

pytestmark = [
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed"),
    pytest.mark.skipif(not (HUMANEVAL.exists() and MBPP.exists()), reason="shared data absent"),
]
# generous: these checks are about correctness, not speed (MBPP/123's reference needs ~4-7 s)
EXTRA = {"timeout_s": 30.0}
SAMPLE = 30


def _rows(which: str) -> list[dict]:
    return humaneval_to_rows(HUMANEVAL) if which == "humaneval" else mbpp_to_rows(MBPP)


SLOW_TASKS = {123}  # MBPP/123's reference alone needs 4-7 s of CPU: full (slow) run only


def _sample(rows: list[dict]) -> list[dict]:
    """A fixed, evenly spread sample of SAMPLE rows (skipping the few very slow tasks)."""
    rows = [r for r in rows if r["extra_info"]["task_id"] not in SLOW_TASKS]
    step = len(rows) / SAMPLE
    return [rows[int(i * step)] for i in range(SAMPLE)]


def _score(row: dict, code: str):
    response = "Here is my solution.\n```python\n" + code + "\n```\n"
    return verify_one(row["data_source"], row["ability"], response,
                      row["reward_model"]["ground_truth"], {**row["extra_info"], **EXTRA})


def _broken(row: dict) -> str:
    """The reference with every solution function replaced by one returning None."""
    names = [row["extra_info"]["entry_point"]] if row["data_source"] == "humaneval" \
        else row["extra_info"]["entry_points"]
    stubs = "".join(f"\n\ndef {n}(*args, **kwargs):\n    return None\n" for n in names)
    return row["extra_info"]["reference"] + stubs


def _check(rows: list[dict]) -> None:
    failures = []
    t = time.perf_counter()
    for row in rows:
        v = _score(row, row["extra_info"]["reference"])
        if v.score != 1.0 or v.status != Status.CORRECT:
            failures.append((row["extra_info"]["task_id"], v))
    print(f"\n{len(rows)} reference solutions in {time.perf_counter() - t:.1f}s")
    assert failures == []


def _check_broken(rows: list[dict]) -> None:
    passing = []
    for row in rows:
        v = _score(row, _broken(row))
        if v.score >= 1.0:
            passing.append(row["extra_info"]["task_id"])
    assert passing == []


@pytest.mark.parametrize("which", ["humaneval", "mbpp"])
def test_reference_solutions_sample(which):
    _check(_sample(_rows(which)))


@pytest.mark.parametrize("which", ["humaneval", "mbpp"])
def test_broken_solutions_sample(which):
    _check_broken(_sample(_rows(which))[::3])


@pytest.mark.slow
@pytest.mark.parametrize("which", ["humaneval", "mbpp"])
def test_all_reference_solutions(which):
    rows = _rows(which)
    assert len(rows) == (164 if which == "humaneval" else 427)
    _check(rows)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["humaneval", "mbpp"])
def test_all_broken_solutions_fail(which):
    _check_broken(_rows(which))
