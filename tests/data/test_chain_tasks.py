"""Tests of the counting-chain task family (prorl/data/chain_tasks.py): generation, splits,
verification, the noisy step-wise teacher, and that difficulty raises the response length."""

from __future__ import annotations

import random
import re

import pytest

from prorl.config import ConfigError, load_config
from prorl.data.builtin_tasks import TASKS, generate_problems, generate_rows, teacher_response, usable_size
from prorl.data.chain_tasks import LEVELS, chain_count, parse_key, teacher_text
from prorl.data.dataset import validate_row
from prorl.verifiers.base import Status, verify_one
from prorl.verifiers.builtin import last_boxed, verify_builtin

QUESTION = re.compile(r"Count up from (\d+) in steps of (\d) until you reach (\d+) or more\.")


def solve(question: str) -> list[int]:
    """Independent solver: the numbers reached, read from the question text."""
    m = QUESTION.fullmatch(question)
    assert m, question
    start, step, target = map(int, m.groups())
    return list(range(start + step, target + step, step))


def question_of(row: dict) -> str:
    return row["prompt"][0]["content"].split(" Put the final answer")[0]


def test_every_level_is_registered_and_named_in_a_config():
    assert {"add", "sort"} | {f"chain{k}" for k in range(2, 10)} <= set(TASKS) and LEVELS == tuple(range(2, 10))
    cfg = load_config(None, ["data.builtin_tasks=[chain2,chain8]"])
    assert cfg.data.builtin_tasks == ["chain2", "chain8"]
    with pytest.raises(ConfigError, match="chain10"):
        load_config(None, ["data.builtin_tasks=[chain10]"])


@pytest.mark.parametrize("level", [2, 3, 6, 9])
def test_rows_valid_and_answers_correct(level):
    task = f"chain{level}"
    rows = generate_rows(task, 300, seed=0, split="train")
    assert len({question_of(r) for r in rows}) == 300
    for r in rows:
        validate_row(r)
        assert r["data_source"] == f"builtin/{task}" and r["ability"] == "builtin"
        numbers = solve(question_of(r))
        assert len(numbers) == level  # exactly `level` steps
        assert r["reward_model"]["ground_truth"] == " ".join(map(str, numbers))
        assert max(numbers) < 100
    assert len({solve(question_of(r))[1] - solve(question_of(r))[0] for r in rows}) > 1  # several step sizes


@pytest.mark.parametrize("task", [f"chain{k}" for k in LEVELS])
def test_train_and_val_disjoint_and_reproducible(task):
    n_train = usable_size(task, 4000)
    train = {p.key for p in generate_problems(task, n_train, seed=0, split="train")}
    val = {p.key for p in generate_problems(task, 64, seed=0, split="val")}
    assert len(train) == n_train and len(val) == 64 and not train & val
    assert not train & {p.key for p in generate_problems(task, 64, seed=7, split="val")}
    assert generate_rows(task, 20, 1, "val") == generate_rows(task, 20, 1, "val") != generate_rows(task, 20, 2, "val")


def test_level_capacity():
    assert chain_count(9) == 36 * (2 + 3 + 4 + 5 + 6 + 7) and usable_size("chain9", 4000) < 0.9 * chain_count(9)
    assert usable_size("add", 4000) == 4000
    with pytest.raises(ValueError, match="chain key"):
        parse_key("23+7")


@pytest.mark.parametrize("task", ["chain3", "chain8"])
def test_verifier_accepts_right_and_rejects_wrong_answers(task):
    for r in generate_rows(task, 50, seed=3, split="val"):
        truth = r["reward_model"]["ground_truth"]
        numbers = truth.split()
        good = f"\\boxed{{{truth}}}"
        assert verify_builtin(good, truth, {}).status == Status.CORRECT
        assert verify_builtin(f"\\boxed{{{', '.join(numbers)}}}", truth, {}).status == Status.CORRECT
        assert verify_one(r["data_source"], r["ability"], good, truth, {}).score == 1.0
        assert verify_builtin(f"\\boxed{{{' '.join(numbers[:-1])}}}", truth, {}).status == Status.WRONG  # stopped early
        assert verify_builtin(f"\\boxed{{{numbers[-1]}}}", truth, {}).status == Status.WRONG  # last number only
        one_off = numbers[:1] + [str(int(x) + 1) for x in numbers[1:]]
        assert verify_builtin(f"\\boxed{{{' '.join(one_off)}}}", truth, {}).status == Status.WRONG
        assert verify_builtin(truth, truth, {}).status == Status.NO_ANSWER


def test_teacher_slips_are_systematic_and_carried_on():
    rng = random.Random(0)
    for p in generate_problems("chain5", 200, seed=0, split="train"):
        assert teacher_text(p.key, rng, 1.0) == f"\\boxed{{{p.answer}}}"
        start, step, target = parse_key(p.key)
        wrong = last_boxed(teacher_response("chain5", p.answer, rng, 0.0, key=p.key)).split()
        assert wrong != p.answer.split()
        # every step one too low: start + k (step - 1), until the target is reached (so more steps)
        assert wrong == [str(start + k * (step - 1)) for k in range(1, len(wrong) + 1)]
        assert int(wrong[-1]) >= target > int(wrong[-2]) and len(wrong) >= 5
    with pytest.raises(ValueError, match="key"):
        teacher_response("chain3", "1 2 3", rng, 0.5)


@pytest.mark.parametrize("q", [0.45, 0.8])
def test_teacher_success_falls_geometrically_with_level(q):
    rng = random.Random(1)
    for level in (2, 6):
        problems = generate_problems(f"chain{level}", 400, seed=0, split="train")
        hits = sum(last_boxed(teacher_text(p.key, rng, q)) == p.answer for _ in range(3) for p in problems)
        assert hits / 1200 == pytest.approx(q ** level, abs=0.05)  # one slip makes the list wrong


def test_difficulty_raises_response_length():
    from prorl.models.tiny import build_tokenizer

    tok = build_tokenizer(tasks=["chain2", "chain3", "chain4"])
    mean_len = {}
    for level in (2, 4, 6, 9):
        answers = [f"\\boxed{{{p.answer}}}" for p in generate_problems(f"chain{level}", 50, seed=0, split="val")]
        mean_len[level] = sum(len(tok(a)["input_ids"]) for a in answers) / len(answers)
    assert mean_len[2] < mean_len[4] < mean_len[6] < mean_len[9]
    assert mean_len[9] - mean_len[2] >= 7 * 2.5  # about 3 tokens per step
    ids = tok.apply_chat_template(generate_rows("chain9", 1, 0, "val")[0]["prompt"], tokenize=True,
                                  add_generation_prompt=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert len(ids) + mean_len[9] + 8 < 256  # fits the tiny model's positions


def test_shipped_chain_warmstart_tokenizer_is_rebuilt_exactly():
    import json
    from pathlib import Path

    from prorl.models.tiny import build_tokenizer

    shipped = Path(__file__).resolve().parents[2] / "prorl" / "assets" / "chain-warmstart" / "tokenizer.json"
    rebuilt = json.loads(build_tokenizer(tasks=["chain2", "chain3", "chain4"]).backend_tokenizer.to_str())
    assert rebuilt["model"] == json.loads(shipped.read_text())["model"]


@pytest.mark.parametrize("level", [2, 3, 4, 7])
def test_coverage_problems_reach_large_numbers_outside_every_split(level):
    from prorl.data.builtin_tasks import generate_problems
    from prorl.data.chain_tasks import START_RANGE, coverage_problem

    rng = random.Random(level)
    problems = [coverage_problem(level, rng) for _ in range(300)]
    split_keys = {p.key for s in ("train", "val") for p in generate_problems(f"chain{level}", 30, 0, s)}
    for question, answer, key in problems:
        start, step, target = parse_key(key)
        numbers = [int(x) for x in answer.split()]
        assert start > START_RANGE[1] and max(numbers) <= 99
        assert len(numbers) == level and numbers == solve(question)
        assert key not in split_keys and f"from {start} in steps of {step}" in question
    assert max(max(int(x) for x in a.split()) for _, a, _ in problems) >= 90
