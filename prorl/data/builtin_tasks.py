"""Built-in procedurally generated tasks for CPU runs, in verl's row schema.

Each task is seeded and has disjoint train / validation splits (a problem's split is a pure
function of the problem, so the two can never overlap). Every task also has a *noisy teacher*
(:func:`teacher_response`) used by ``prorl sft`` to build the warm start: it answers correctly
only part of the time and otherwise makes a *systematic* mistake (a wrong tens digit, one swapped
pair). The warm-started model therefore already holds the skill but uses it unreliably, as a
distilled reasoning model does; RL must learn to prefer the correct behaviour.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Callable

SPLITS = ("train", "val")
ANSWER_INSTRUCTION = "Put the final answer in \\boxed{}."


@dataclass(frozen=True)
class Problem:
    question: str
    answer: str
    key: str  # canonical identity of the problem, used for the split


def _split_of(task: str, key: str, val_fraction: float = 0.1) -> str:
    """Deterministic split by hash, so train and val never share a problem."""
    h = int.from_bytes(hashlib.sha256(f"{task}:{key}".encode()).digest()[:8], "big")
    return "val" if (h % 10_000) < val_fraction * 10_000 else "train"


def _add(rng: random.Random) -> Problem:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    return Problem(f"What is {a}+{b}?", str(a + b), f"{a}+{b}")


def _sort(rng: random.Random) -> Problem:
    k = rng.randint(3, 5)
    xs = [rng.randint(0, 9) for _ in range(k)]
    return Problem(f"Sort ascending: {' '.join(map(str, xs))}", " ".join(map(str, sorted(xs))), " ".join(map(str, xs)))


def _add_wrong(answer: str, rng: random.Random) -> str:
    """The teacher's systematic arithmetic slip: the tens digit is off by one."""
    value = int(answer) + rng.choice((-10, 10))
    return str(value if value >= 0 else int(answer) + 10)


def _sort_wrong(answer: str, rng: random.Random) -> str:
    """The teacher's systematic sorting slip: one adjacent pair of distinct values left swapped."""
    xs = answer.split()
    pairs = [i for i in range(len(xs) - 1) if xs[i] != xs[i + 1]]
    if not pairs:
        return " ".join(xs[::-1] + ["0"]) if len(set(xs)) == 1 else answer
    i = rng.choice(pairs)
    xs[i], xs[i + 1] = xs[i + 1], xs[i]
    return " ".join(xs)


TASKS: dict[str, tuple[Callable[[random.Random], Problem], Callable[[str, random.Random], str]]] = {
    "add": (_add, _add_wrong),
    "sort": (_sort, _sort_wrong),
}


def format_answer(answer: str) -> str:
    return f"\\boxed{{{answer}}}"


def make_row(task: str, problem: Problem, split: str, index: int) -> dict:
    """One verl-schema row."""
    return {
        "data_source": f"builtin/{task}",
        "prompt": [{"role": "user", "content": f"{problem.question} {ANSWER_INSTRUCTION}"}],
        "ability": "builtin",
        "reward_model": {"ground_truth": problem.answer, "style": "rule"},
        "extra_info": {"split": split, "index": index, "task": task},
    }


def generate_problems(task: str, size: int, seed: int, split: str) -> list[Problem]:
    """``size`` distinct problems of ``task`` belonging to ``split`` (seeded, reproducible)."""
    if task not in TASKS:
        raise KeyError(f"unknown built-in task {task!r}; available: {', '.join(sorted(TASKS))}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    gen, _ = TASKS[task]
    rng = random.Random(f"{task}:{seed}:{split}")
    seen: set[str] = set()
    out: list[Problem] = []
    attempts = 0
    while len(out) < size:
        attempts += 1
        if attempts > 200 * size + 10_000:
            raise ValueError(f"task {task!r} has fewer than {size} distinct {split} problems")
        p = gen(rng)
        if p.key in seen or _split_of(task, p.key) != split:
            continue
        seen.add(p.key)
        out.append(p)
    return out


def generate_rows(task: str, size: int, seed: int, split: str) -> list[dict]:
    """``size`` verl-schema rows of built-in ``task`` for ``split`` ("train" or "val")."""
    return [make_row(task, p, split, i) for i, p in enumerate(generate_problems(task, size, seed, split))]


def teacher_response(task: str, answer: str, rng: random.Random, correct_prob: float) -> str:
    """The noisy teacher's response: correct with ``correct_prob``, else its systematic slip."""
    _, wrong = TASKS[task]
    return format_answer(answer if rng.random() < correct_prob else wrong(answer, rng))
