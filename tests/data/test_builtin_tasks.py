"""Tests of the built-in procedural tasks (prorl/data/builtin_tasks.py) and their verifier."""

from __future__ import annotations

import random
import re

import pytest

from prorl.data.builtin_tasks import (
    ORIGINAL_TASKS,
    format_answer,
    generate_problems,
    generate_rows,
    teacher_response,
)
from prorl.data.dataset import validate_row
from prorl.verifiers.base import Status, resolve_domain, verify_one
from prorl.verifiers.builtin import last_boxed, verify_builtin


def solve(question: str) -> str:
    """Independent solver: parse the question text and compute the answer."""
    m = re.fullmatch(r"What is (\d+)\+(\d+)\?", question)
    if m:
        return str(int(m.group(1)) + int(m.group(2)))
    m = re.fullmatch(r"Sort ascending: ([\d ]+)", question)
    assert m, question
    return " ".join(map(str, sorted(int(x) for x in m.group(1).split())))


def question_of(r: dict) -> str:
    return r["prompt"][0]["content"].split(" Put the final answer")[0]


@pytest.mark.parametrize("task", ORIGINAL_TASKS)  # chains: tests/data/test_chain_tasks.py
def test_rows_are_valid_and_answers_correct(task):
    rows = generate_rows(task, 300, seed=0, split="train")
    assert len(rows) == 300
    for i, r in enumerate(rows):
        validate_row(r)
        assert r["data_source"] == f"builtin/{task}"
        assert resolve_domain(r["data_source"], r["ability"]) == "builtin"
        assert r["extra_info"] == {"split": "train", "index": i, "task": task}
        assert "\\boxed{}" in r["prompt"][0]["content"]
        assert r["reward_model"]["ground_truth"] == solve(question_of(r))
    assert len({question_of(r) for r in rows}) == 300  # distinct problems


@pytest.mark.parametrize("task", ORIGINAL_TASKS)  # chains: tests/data/test_chain_tasks.py
def test_train_and_val_disjoint(task):
    train = {p.key for p in generate_problems(task, 2000, seed=0, split="train")}
    val = {p.key for p in generate_problems(task, 200, seed=0, split="val")}
    assert len(train) == 2000 and len(val) == 200
    assert not train & val
    # also across seeds: a problem's split is a function of the problem, not of the seed
    val_other_seed = {p.key for p in generate_problems(task, 200, seed=5, split="val")}
    assert not train & val_other_seed


@pytest.mark.parametrize("task", ORIGINAL_TASKS)  # chains: tests/data/test_chain_tasks.py
def test_seeded_reproducibility(task):
    a = generate_rows(task, 50, seed=1, split="val")
    assert a == generate_rows(task, 50, seed=1, split="val")
    assert a != generate_rows(task, 50, seed=2, split="val")
    # a larger request extends the smaller one (same stream)
    assert generate_rows(task, 80, seed=1, split="val")[:50] == a


def test_generate_errors():
    with pytest.raises(KeyError, match="mul"):
        generate_problems("mul", 1, 0, "train")
    with pytest.raises(ValueError, match="split"):
        generate_problems("add", 1, 0, "test")


@pytest.mark.parametrize("task", ORIGINAL_TASKS)  # chains: tests/data/test_chain_tasks.py
@pytest.mark.parametrize("prob", [0.0, 0.3, 0.7, 1.0])
def test_teacher_correct_with_given_probability(task, prob):
    problems = generate_problems(task, 400, seed=0, split="train")
    rng = random.Random(123)
    n, correct = 0, 0
    for _ in range(3):  # 1200 responses
        for p in problems:
            resp = teacher_response(task, p.answer, rng, prob)
            v = verify_builtin(resp, p.answer, {})
            assert v.status in (Status.CORRECT, Status.WRONG)  # always a boxed answer
            assert (v.score == 1.0) == (last_boxed(resp) == p.answer)  # wrong answers really are wrong
            correct += v.score == 1.0
            n += 1
    # binomial sd at n=1200 is <= .0145; 5 sd = .07
    assert correct / n == pytest.approx(prob, abs=0.07)
    if prob in (0.0, 1.0):
        assert correct / n == prob


def test_teacher_mistakes_are_systematic_and_wrong():
    rng = random.Random(0)
    for p in generate_problems("add", 500, seed=0, split="train"):
        wrong = last_boxed(teacher_response("add", p.answer, rng, 0.0))
        assert wrong != p.answer and abs(int(wrong) - int(p.answer)) == 10  # tens digit off by one
        assert int(wrong) >= 0
    for p in generate_problems("sort", 500, seed=0, split="train"):
        wrong = last_boxed(teacher_response("sort", p.answer, rng, 0.0))
        assert wrong != p.answer
        xs, ys = wrong.split(), p.answer.split()
        if len(set(ys)) > 1:  # one adjacent pair of distinct values swapped: same multiset
            assert sorted(xs, key=int) == ys
            diff = [i for i in range(len(xs)) if xs[i] != ys[i]]
            assert len(diff) == 2 and diff[1] == diff[0] + 1
    # degenerate inputs the generator can produce: all-equal lists and answers below 10
    for ans in ("0 0 0", "7 7 7 7 7"):
        assert last_boxed(teacher_response("sort", ans, rng, 0.0)) != ans
    for ans in ("0", "5", "9"):
        assert last_boxed(teacher_response("add", ans, rng, 0.0)) == str(int(ans) + 10)


# --------------------------------------------------------------------------- verify_builtin

@pytest.mark.parametrize(
    "response, truth, status",
    [
        ("\\boxed{42}", "42", Status.CORRECT),
        ("The answer is \\boxed{ 42 }.", "42", Status.CORRECT),
        ("\\boxed{41} no wait \\boxed{42}", "42", Status.CORRECT),  # the last box counts
        ("\\boxed{42} no wait \\boxed{41}", "42", Status.WRONG),
        ("\\boxed{1 2 3}", "1 2 3", Status.CORRECT),
        ("\\boxed{1, 2, 3}", "1 2 3", Status.CORRECT),  # commas as separators
        ("\\boxed{1  2\n3}", "1 2 3", Status.CORRECT),
        ("\\boxed{1 3 2}", "1 2 3", Status.WRONG),
        ("\\boxed{123}", "1 2 3", Status.WRONG),
        ("\\boxed{420}", "42", Status.WRONG),
        ("42", "42", Status.NO_ANSWER),
        ("\\boxed{}", "42", Status.WRONG),
        ("", "42", Status.NO_ANSWER),
        ("\\boxed{42}", 42, Status.CORRECT),  # non-string ground truth
    ],
)
def test_verify_builtin(response, truth, status):
    v = verify_builtin(response, truth, {})
    assert v.status == status
    assert v.score == (1.0 if status == Status.CORRECT else 0.0)


def test_verify_one_routes_builtin_rows():
    r = generate_rows("add", 1, seed=0, split="val")[0]
    truth = r["reward_model"]["ground_truth"]
    ok = verify_one(r["data_source"], r["ability"], f"<think>hmm \\boxed{{0}}</think> {format_answer(truth)}", truth, {})
    assert ok.status == Status.CORRECT
    # the box inside the thinking is not the answer
    bad = verify_one(r["data_source"], r["ability"], f"<think>{format_answer(truth)}</think> no idea", truth, {})
    assert bad.status == Status.NO_ANSWER
