"""Tests of the arithmetic-chain task family (prorl/data/chain_tasks.py): generation, splits,
verification, the noisy step-wise teacher, and that difficulty raises the response length."""

from __future__ import annotations

import random
import re

import pytest

from prorl.config import ConfigError, load_config
from prorl.data.builtin_tasks import TASKS, generate_problems, generate_rows, teacher_response, usable_size
from prorl.data.chain_tasks import LEVELS, chain_count, parse_expr, teacher_text, worked_solution
from prorl.data.dataset import validate_row
from prorl.verifiers.base import Status, verify_one
from prorl.verifiers.builtin import last_boxed, verify_builtin

CHAINS = [f"chain{k}" for k in LEVELS]


def solve(question: str) -> tuple[int, list[int]]:
    """Independent solver: (value, terms after the start) of ``Compute 23+4 +7.``."""
    m = re.fullmatch(r"Compute ([0-9+ ]+)\.", question)
    assert m, question
    numbers = [int(x) for x in m.group(1).replace(" ", "").split("+")]
    return sum(numbers), numbers[1:]


def test_every_level_is_registered_and_named_in_a_config():
    assert {"add", "sort", "chain2", "chain3", "chain5", "chain8", "chain9"} <= set(TASKS)
    cfg = load_config(None, ["data.builtin_tasks=[chain2,chain8]"])
    assert cfg.data.builtin_tasks == ["chain2", "chain8"]
    with pytest.raises(ConfigError, match="chain10"):
        load_config(None, ["data.builtin_tasks=[chain10]"])


@pytest.mark.parametrize("task", ["chain2", "chain3", "chain6", "chain9"])
def test_rows_valid_answers_correct_terms_distinct(task):
    level = int(task[5:])
    rows = generate_rows(task, 200, seed=0, split="train")
    assert len({r["prompt"][0]["content"] for r in rows}) == 200
    for r in rows:
        validate_row(r)
        assert r["data_source"] == f"builtin/{task}" and r["ability"] == "builtin"
        q = r["prompt"][0]["content"].split(" Put the final answer")[0]
        value, terms = solve(q)
        assert len(terms) == level and r["reward_model"]["ground_truth"] == str(value)
        assert len(set(terms)) == level and all(1 <= d <= 9 for d in terms)  # distinct single digits
        start, parsed = parse_expr(q[len("Compute "):-1])
        assert 10 <= start <= 49 and parsed == [("+", d) for d in terms]
    assert len({r["prompt"][0]["content"].count(" ") for r in rows}) > 2  # the spacing jitters


@pytest.mark.parametrize("task", ["chain2", "chain4", "chain9"])
def test_train_and_val_disjoint_and_reproducible(task):
    n_train = usable_size(task, 2000)
    train = {p.key for p in generate_problems(task, n_train, seed=0, split="train")}
    val = {p.key for p in generate_problems(task, 64, seed=0, split="val")}
    assert len(train) == n_train and len(val) == 64 and not train & val
    assert not train & {p.key for p in generate_problems(task, 64, seed=7, split="val")}
    assert generate_rows(task, 20, 1, "val") == generate_rows(task, 20, 1, "val") != generate_rows(task, 20, 2, "val")


def test_small_level_capacity():
    assert chain_count(2) == 40 * 9 * 8 and usable_size("chain2", 4000) < 0.9 * chain_count(2)
    assert usable_size("chain5", 4000) == 4000
    generate_problems("chain2", usable_size("chain2", 4000), 0, "train")  # reachable without running out
    assert usable_size("add", 4000) == 4000


@pytest.mark.parametrize("task", ["chain3", "chain8"])
def test_verifier_accepts_the_worked_solution_and_rejects_wrong_ones(task):
    for r in generate_rows(task, 50, seed=3, split="val"):
        truth = r["reward_model"]["ground_truth"]
        expr = r["prompt"][0]["content"].split(" Put the")[0][len("Compute "):-1]
        steps, final = worked_solution(expr)
        assert final == truth
        good = f"{steps} \\boxed{{{final}}}"
        assert verify_builtin(good, truth, {}).status == Status.CORRECT
        assert verify_one(r["data_source"], r["ability"], good, truth, {}).score == 1.0
        assert verify_builtin(f"{steps} \\boxed{{{int(final) + 1}}}", truth, {}).status == Status.WRONG
        assert verify_builtin(steps, truth, {}).status == Status.NO_ANSWER  # steps without a box
        # a box in an intermediate step does not count: the last box is the answer
        assert verify_builtin(f"\\boxed{{{final}}} {steps} \\boxed{{{int(final) + 2}}}", truth, {}).score == 0.0


def test_teacher_slips_are_systematic_and_compound():
    rng = random.Random(0)
    for p in generate_problems("chain5", 200, seed=0, split="train"):
        steps, final = worked_solution(p.key)
        assert steps.count("=") == 5 and final == p.answer
        assert last_boxed(teacher_text(p.key, rng, 1.0)) == p.answer
        wrong = teacher_response("chain5", p.answer, rng, 0.0, key=p.key)
        assert int(last_boxed(wrong)) == int(p.answer) + 5  # every step one too high, carried on
    with pytest.raises(ValueError, match="key"):
        teacher_response("chain3", "4", rng, 0.5)


@pytest.mark.parametrize("q", [0.45, 0.8])
def test_teacher_success_falls_geometrically_with_level(q):
    rng = random.Random(1)
    for level in (2, 6):
        problems = generate_problems(f"chain{level}", 400, seed=0, split="train")
        hits = sum(last_boxed(teacher_text(p.key, rng, q)) == p.answer for _ in range(3) for p in problems)
        # q^level, plus a little for slips that land back on the answer (never: every slip adds +1)
        assert hits / 1200 == pytest.approx(q ** level, abs=0.05)


def test_difficulty_raises_response_length():
    from prorl.models.tiny import build_tokenizer

    tok = build_tokenizer(tasks=["chain2", "chain3", "chain4"])
    mean_len = {}
    for level in (2, 4, 8, 9):
        problems = generate_problems(f"chain{level}", 50, seed=0, split="val")
        lens = [len(tok(teacher_text(p.key, random.Random(0), 1.0))["input_ids"]) for p in problems]
        mean_len[level] = sum(lens) / len(lens)
    assert mean_len[2] < mean_len[4] < mean_len[8] < mean_len[9]
    assert mean_len[8] >= 1.8 * mean_len[4]  # about 8 tokens per step
    # a level-9 prompt plus its solution fits the tiny model's 256 positions
    p = generate_rows("chain9", 1, 0, "val")[0]
    ids = tok.apply_chat_template(p["prompt"], tokenize=True, add_generation_prompt=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert len(ids) + mean_len[9] + 8 < 256
