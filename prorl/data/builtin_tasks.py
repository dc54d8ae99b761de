"""Built-in procedurally generated tasks for CPU runs, in verl's row schema.

Each task is seeded and has disjoint train / validation splits (a problem's split is a pure
function of the problem, so the two can never overlap). Every task also has a *noisy teacher*
(:func:`teacher_response`) used by ``prorl sft`` to build the warm start: it answers correctly
only part of the time and otherwise makes a *systematic* mistake (a wrong tens digit, one swapped
pair). The warm-started model therefore already holds the skill but uses it unreliably, as a
distilled reasoning model does; RL must learn to prefer the correct behaviour.

Tasks: ``add`` (2-digit addition) and ``sort`` (the default run's), and the counting chains
``chain2`` ... ``chain9`` (:mod:`prorl.data.chain_tasks`), a family whose difficulty knob is the
number of steps, for the boundary-expansion experiment.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Callable

from prorl.data.chain_tasks import LEVELS as CHAIN_LEVELS
from prorl.data.chain_tasks import chain_count, chain_problem, task_name, teacher_text

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


def _chain_gen(level: int) -> Callable[[random.Random], Problem]:
    def gen(rng: random.Random) -> Problem:
        return Problem(*chain_problem(level, rng))
    return gen


def _chain_wrong(answer: str, rng: random.Random) -> str:
    """Answer-only form of the chain teacher's slip (the last number one too low); the step-wise
    teacher needs the key."""
    xs = answer.split()
    return " ".join(xs[:-1] + [str(int(xs[-1]) - 1)])


TASKS: dict[str, tuple[Callable[[random.Random], Problem], Callable[[str, random.Random], str]]] = {
    "add": (_add, _add_wrong),
    "sort": (_sort, _sort_wrong),
    # counting chains with a difficulty knob (prorl/data/chain_tasks.py): chain2 ... chain9
    **{task_name(k): (_chain_gen(k), _chain_wrong) for k in CHAIN_LEVELS},
}
ORIGINAL_TASKS = ("add", "sort")  # the default run's tasks (and the shipped tokenizer's corpus)


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


def is_chain(task: str) -> bool:
    return task.startswith("chain") and task in TASKS


def chain_level(task: str) -> int:
    """The level of a chain task: ``"chain7"`` -> 7."""
    return int(task[len("chain"):])


def usable_size(task: str, size: int) -> int:
    """``size``, capped for chain levels at 80% of the level's training split (chain9 has only
    36 x 27 = 972 distinct problems, about 875 of them in train)."""
    if is_chain(task):
        return min(size, int(0.8 * 0.9 * chain_count(chain_level(task))))
    return size


def teacher_response(task: str, answer: str, rng: random.Random, correct_prob: float, key: str | None = None) -> str:
    """The noisy teacher's response: correct with ``correct_prob``, else its systematic slip. Chain
    tasks need the problem's ``key`` (the expression): they write every step, each step right with
    ``correct_prob``."""
    if is_chain(task):
        if key is None:
            raise ValueError(f"teacher_response({task!r}) needs the problem's key")
        return teacher_text(key, rng, correct_prob)
    _, wrong = TASKS[task]
    return format_answer(answer if rng.random() < correct_prob else wrong(answer, rng))
