"""pass@k against brute-force subset enumeration; maj@k against hand-computed cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from prorl.algo.passk import default_ks, maj_at_k, majority_answer, pass_at_k, pass_at_k_per_prompt


def _brute_pass_at_k(flags: list[bool], k: int) -> float:
    """Fraction of all size-k subsets of the samples that contain a correct one."""
    subsets = list(itertools.combinations(range(len(flags)), k))
    return sum(any(flags[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_brute_force(n):
    for c in range(n + 1):
        flags = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(_brute_pass_at_k(flags, k), abs=1e-12), (n, c, k)


def test_pass_at_k_matches_combinatorial_formula_for_large_n():
    for n, c, k in [(64, 3, 8), (100, 50, 10), (1024, 7, 512), (200, 0, 200), (30, 29, 2)]:
        exact = 1.0 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12, abs=1e-15)


def test_pass_at_k_edges():
    assert pass_at_k(8, 0, 1) == 0.0
    assert pass_at_k(8, 0, 8) == 0.0
    assert pass_at_k(8, 8, 1) == 1.0
    assert pass_at_k(8, 1, 8) == 1.0  # k = n: any correct sample means success
    assert pass_at_k(8, 3, 1) == pytest.approx(3 / 8)  # pass@1 is the plain accuracy
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)  # 1 - C(2,2)/C(4,2)
    for bad in [(4, 1, 5), (4, 1, 0), (4, 5, 1), (4, -1, 1), (0, 0, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)


def test_pass_at_k_is_monotone_in_k_and_c():
    n = 16
    for c in range(n + 1):
        vals = [pass_at_k(n, c, k) for k in range(1, n + 1)]
        assert all(a <= b + 1e-15 for a, b in zip(vals, vals[1:]))
    for k in (1, 4, 16):
        vals = [pass_at_k(n, c, k) for c in range(n + 1)]
        assert all(a <= b + 1e-15 for a, b in zip(vals, vals[1:]))


def test_pass_at_k_per_prompt_means_over_prompts_and_accepts_arrays():
    rng = np.random.default_rng(0)
    correct = rng.random((5, 8)) < 0.3
    got = pass_at_k_per_prompt(correct, [1, 2, 8])
    for k in (1, 2, 8):
        expected = np.mean([_brute_pass_at_k(list(row), k) for row in correct])
        assert got[k] == pytest.approx(expected)
    assert got[1] == pytest.approx(correct.mean())
    # ragged rows are fine as long as k fits every prompt
    ragged = [[True, False], [False, False, False, True]]
    assert pass_at_k_per_prompt(ragged, [1, 2]) == pytest.approx({1: (0.5 + 0.25) / 2, 2: (1.0 + 0.5) / 2})
    with pytest.raises(ValueError):
        pass_at_k_per_prompt(ragged, [4])
    with pytest.raises(ValueError):
        pass_at_k_per_prompt([], [1])


def test_default_ks():
    assert default_ks(1) == [1]
    assert default_ks(2) == [1, 2]
    assert default_ks(8) == [1, 2, 4, 8]
    assert default_ks(10) == [1, 2, 4, 8, 10]
    assert default_ks(100) == [1, 2, 4, 8, 16, 32, 64, 100]
    with pytest.raises(ValueError):
        default_ks(0)


def test_majority_answer_ties_and_none():
    assert majority_answer(["a", "b", "b", "a"]) == ("a", 0)  # tie -> first occurrence
    assert majority_answer([None, "b", "a", "a", "b", None]) == ("b", 1)
    assert majority_answer([None, "x", "y", "y"]) == ("y", 2)
    assert majority_answer([None, None]) == (None, None)
    assert majority_answer([]) == (None, None)


def test_maj_at_k_hand_computed():
    answers = [
        ["4", "5", "4", "5", "5"],  # k=3: "4" (2 votes) correct; k=5: "5" (3 votes) wrong
        [None, None, "7", "7", "8"],  # k=2: no votes -> wrong; k=3,5: "7" correct
        ["1", "2", "3", "2", "1"],  # k=3: 3-way tie -> "1" (first) wrong; k=5: "1" vs "2" tie -> "1"
        ["9", None, None, None, None],  # "9" always the only vote, correct
    ]
    correct = [
        [True, False, True, False, False],
        [False, False, True, True, False],
        [False, True, False, True, False],
        [True, False, False, False, False],
    ]
    assert maj_at_k(answers, correct, 1) == pytest.approx(2 / 4)  # "4" ok, None, "1" wrong, "9" ok
    assert maj_at_k(answers, correct, 2) == pytest.approx(2 / 4)  # tie "4"/"5" -> "4"; none; "1"; "9"
    assert maj_at_k(answers, correct, 3) == pytest.approx(3 / 4)
    assert maj_at_k(answers, correct, 5) == pytest.approx(2 / 4)


def test_maj_at_k_validates_inputs():
    with pytest.raises(ValueError):
        maj_at_k([["a"]], [[True], [False]], 1)
    with pytest.raises(ValueError):
        maj_at_k([["a", "b"]], [[True]], 1)
    with pytest.raises(ValueError):
        maj_at_k([["a"]], [[True]], 2)
    with pytest.raises(ValueError):
        maj_at_k([["a"]], [[True]], 0)
    with pytest.raises(ValueError):
        maj_at_k([], [], 1)
