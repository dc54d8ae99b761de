"""Hitori: generator, solver, renderer and the rule-checking verifier."""

from __future__ import annotations

import itertools
import random

import pytest

from prorl.data import hitori
from prorl.verifiers import hitori as rules
from prorl.verifiers.base import Status


def _brute_force(puzzle) -> list:
    """Every rule-valid shading of a tiny puzzle in which each shaded cell repeats an unshaded number."""
    n = len(puzzle)
    sols = []
    for bits in itertools.product([False, True], repeat=n * n):
        mask = [list(bits[r * n:(r + 1) * n]) for r in range(n)]
        if not rules.rule_violations(puzzle, mask) and hitori._shading_is_needed(puzzle, mask):
            sols.append(mask)
    return sols


def _answer(puzzle, mask) -> str:
    return f"<answer>\n{hitori.render_grid(puzzle, mask)}\n</answer>"


def test_rules_on_a_hand_made_puzzle():
    puzzle = [[1, 1, 2], [2, 3, 1], [3, 2, 2]]
    good = [[True, False, False], [False, False, False], [False, False, True]]
    assert rules.rule_violations(puzzle, good) == []
    assert any("row 1" in p for p in rules.rule_violations(puzzle, [[False] * 3] * 3))
    adjacent = [[True, False, False], [False, False, False], [False, True, True]]
    assert any("touch" in p for p in rules.rule_violations(puzzle, adjacent))
    cut = [[False, True, False], [True, False, False], [False, False, False]]  # isolates the corner
    assert any("connected" in p for p in rules.rule_violations(puzzle, cut))
    assert hitori.solve(puzzle, limit=5) == _brute_force(puzzle)


@pytest.mark.parametrize("n, count", [(3, 4), (4, 1)])
def test_solver_agrees_with_brute_force(n, count):
    rng = random.Random(n)
    for _ in range(count):
        puzzle, mask = hitori.generate_puzzle(n, rng)
        brute = _brute_force(puzzle)
        assert brute == [mask]
        assert hitori.solve(puzzle, limit=10) == brute


@pytest.mark.parametrize("n", [4, 5, 6, 7])
def test_generated_puzzles_are_uniquely_solvable(n):
    rng = random.Random(100 + n)
    for _ in range(5):
        puzzle, mask = hitori.generate_puzzle(n, rng)
        assert len(puzzle) == n and all(len(r) == n and set(r) <= set(range(1, n + 1)) for r in puzzle)
        assert any(any(r) for r in mask)  # something to do
        assert hitori.solve(puzzle, limit=2) == [mask]
        assert not rules.rule_violations(puzzle, mask)


def test_rows_reproduce_and_splits_differ():
    a = hitori.generate_rows(6, seed=1, split="train")
    assert a == hitori.generate_rows(6, seed=1, split="train")
    assert a != hitori.generate_rows(6, seed=2, split="train")
    train, val = hitori.generate_splits(40, 15, seed=1, min_size=4, max_size=4)
    assert len(train) == 40 and len(val) == 15
    prompts = [r["prompt"][0]["content"] for r in train + val]
    assert len(set(prompts)) == len(prompts)
    assert {r["extra_info"]["split"] for r in val} == {"val"}
    sizes = {r["extra_info"]["size"] for r in hitori.generate_rows(30, seed=3, split="train", min_size=5, max_size=6)}
    assert sizes == {5, 6}


def test_row_schema_and_prompt():
    row = hitori.generate_rows(1, seed=0, split="train")[0]
    assert row["data_source"] == "hitori" and row["ability"] == "logic"
    assert row["reward_model"]["style"] == "rule"
    text = row["prompt"][0]["content"]
    assert row["prompt"][0]["role"] == "user"
    assert hitori.render_grid(row["extra_info"]["puzzle"]) in text and "<answer>" in text and "#" in text
    assert rules.parse_grid(hitori.render_grid(row["extra_info"]["puzzle"])) == row["extra_info"]["puzzle"]


@pytest.fixture(scope="module")
def case():
    row = hitori.generate_rows(1, seed=42, split="train", min_size=6, max_size=6)[0]
    puzzle = row["extra_info"]["puzzle"]
    mask = hitori.solve(puzzle)[0]
    return row, puzzle, mask


def _verify(row, text, **extra):
    return rules.verify_hitori(text, row["reward_model"]["ground_truth"], dict(row["extra_info"], **extra))


def test_stored_solution_verifies(case):
    row, puzzle, mask = case
    assert row["reward_model"]["ground_truth"] == hitori.render_grid(puzzle, mask)
    v = _verify(row, "thinking...\n" + _answer(puzzle, mask))
    assert (v.score, v.status) == (1.0, Status.CORRECT)
    # other spellings of the same grid
    compact = "\n".join("".join("#" if m else str(x) for x, m in zip(pr, mr)) for pr, mr in zip(puzzle, mask))
    assert _verify(row, f"<answer>{compact}</answer>").status == Status.CORRECT
    starred = hitori.render_grid(puzzle, mask).replace("#", "*")
    assert _verify(row, f"<answer>\n{starred}\n</answer>").status == Status.CORRECT


def test_any_valid_shading_is_accepted():
    """The verifier checks rules, not equality with the stored solution."""
    for seed in range(20):
        row = hitori.generate_rows(1, seed=seed, split="train")[0]
        puzzle = row["extra_info"]["puzzle"]
        mask = hitori.solve(puzzle)[0]
        n = len(puzzle)
        for r, c in itertools.product(range(n), range(n)):
            extra = [row_[:] for row_ in mask]
            if extra[r][c]:
                continue
            extra[r][c] = True
            if not rules.rule_violations(puzzle, extra):  # an unneeded but legal extra shade
                assert extra != mask
                assert _verify(row, _answer(puzzle, extra)).status == Status.CORRECT
                return
    raise AssertionError("no puzzle with a legal extra shade in 20 seeds")


def test_corrupted_solutions_fail(case):
    row, puzzle, mask = case
    n = len(puzzle)
    shaded = [(r, c) for r in range(n) for c in range(n) if mask[r][c]]
    # unshade one shaded cell: its duplicate comes back
    m1 = [r[:] for r in mask]
    m1[shaded[0][0]][shaded[0][1]] = False
    v = _verify(row, _answer(puzzle, m1))
    assert (v.score, v.status) == (0.0, Status.WRONG) and "repeats" in v.reason
    # shade a neighbour of a shaded cell
    r, c = shaded[0]
    nb = next(rules.neighbours(r, c, n))
    m2 = [x[:] for x in mask]
    m2[nb[0]][nb[1]] = True
    v = _verify(row, _answer(puzzle, m2))
    assert v.status == Status.WRONG and "touch" in v.reason
    # wall off a corner with a diagonal of shaded cells
    m3 = [[False] * n for _ in range(n)]
    m3[0][1] = m3[1][0] = True
    v = _verify(row, _answer(puzzle, m3))
    assert v.status == Status.WRONG and "connected" in v.reason
    # change a number of an unshaded cell
    text = hitori.render_grid(puzzle, mask).split("\n")
    toks = text[0].split()
    j = next(i for i, t in enumerate(toks) if t != "#")
    toks[j] = str(puzzle[0][j] % n + 1)
    text[0] = " ".join(toks)
    assert _verify(row, "<answer>" + "\n".join(text) + "</answer>").status == Status.WRONG
    # wrong shape, no tags
    assert _verify(row, "<answer>1 2\n3 4</answer>").status == Status.WRONG
    assert _verify(row, hitori.render_grid(puzzle, mask)).status == Status.NO_ANSWER


def test_partial_credit_is_opt_in_and_not_free(case):
    row, puzzle, mask = case
    unshaded = hitori.render_grid(puzzle)
    assert _verify(row, f"<answer>{unshaded}</answer>", partial_credit=True).score == 0.0
    n = len(puzzle)
    shaded = [(r, c) for r in range(n) for c in range(n) if mask[r][c]]
    m1 = [r[:] for r in mask]
    m1[shaded[0][0]][shaded[0][1]] = False  # one conflict left
    assert _verify(row, _answer(puzzle, m1)).score == 0.0
    v = _verify(row, _answer(puzzle, m1), partial_credit=True)
    assert v.status == Status.WRONG and 0.25 < v.score < 0.5


def test_puzzle_from_numpy_like_extra_info(case):
    """verl loads parquet via pandas, turning nested lists into arrays."""
    np = pytest.importorskip("numpy")
    row, puzzle, mask = case
    info = dict(row["extra_info"], puzzle=np.array([np.array(r) for r in puzzle], dtype=object))
    assert rules.verify_hitori(_answer(puzzle, mask), None, info).status == Status.CORRECT
