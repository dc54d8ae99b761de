"""pass@k and maj@k from per-sample correctness.

``pass@k`` uses the unbiased estimator from n samples of which c are correct,
``1 - C(n-c, k) / C(n, k)``, evaluated as the product ``prod_{i=n-c+1}^{n} (1 - k/i)`` so that
no huge binomial coefficients are formed. ``maj@k`` is the accuracy of the majority-voted
answer over the first k samples.
"""

from __future__ import annotations

from collections import Counter
from typing import Hashable, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) is correct."""
    n, c, k = int(n), int(c), int(k)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"c must be in [0, n={n}], got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k}")
    if n - c < k:  # every size-k subset contains a correct sample
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def _rows(correct: Sequence[Sequence[bool]] | np.ndarray) -> list[list[bool]]:
    rows = [[bool(x) for x in row] for row in correct]
    if not rows:
        raise ValueError("no prompts given")
    return rows


def pass_at_k_per_prompt(
    correct: Sequence[Sequence[bool]] | np.ndarray, ks: Sequence[int]
) -> dict[int, float]:
    """Mean over prompts of pass@k for each k in ``ks``.

    ``correct[i][j]`` says whether sample j of prompt i is correct; prompts may have
    different sample counts, but every k must be <= each prompt's count (else ValueError).
    """
    rows = _rows(correct)
    out: dict[int, float] = {}
    for k in ks:
        k = int(k)
        out[k] = float(np.mean([pass_at_k(len(r), sum(r), k) for r in rows]))
    return out


def default_ks(n: int) -> list[int]:
    """``[1, 2, 4, ...]`` (powers of two up to n) plus n itself if it is not a power of two."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    ks = []
    k = 1
    while k <= n:
        ks.append(k)
        k *= 2
    if ks[-1] != n:
        ks.append(n)
    return ks


def majority_answer(answers: Sequence[Hashable | None]) -> tuple[Hashable | None, int | None]:
    """The most frequent non-None answer and the index of its first occurrence.

    Ties are broken by first occurrence; ``(None, None)`` when no sample has an answer.
    """
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None, None
    first: dict[Hashable, int] = {}
    for i, a in enumerate(answers):
        if a is not None and a not in first:
            first[a] = i
    best = max(counts, key=lambda a: (counts[a], -first[a]))
    return best, first[best]


def maj_at_k(
    answers: Sequence[Sequence[Hashable | None]], correct: Sequence[Sequence[bool]], k: int
) -> float:
    """Fraction of prompts whose majority answer over the first k samples is correct.

    ``None`` answers (no extractable answer) do not vote; a prompt with no vote counts as
    wrong. The majority answer's correctness is read from its first sample in the window
    (samples with equal answers are assumed to share correctness).
    """
    if len(answers) != len(correct):
        raise ValueError(f"{len(answers)} answer rows but {len(correct)} correctness rows")
    if not answers:
        raise ValueError("no prompts given")
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    hits = 0
    for ans_row, cor_row in zip(answers, correct):
        if len(ans_row) != len(cor_row):
            raise ValueError("answers and correct rows must have equal lengths")
        if k > len(ans_row):
            raise ValueError(f"k={k} exceeds the {len(ans_row)} samples of a prompt")
        _, idx = majority_answer(list(ans_row[:k]))
        if idx is not None and bool(cor_row[idx]):
            hits += 1
    return hits / len(answers)
