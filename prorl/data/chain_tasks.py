"""Counting chains: the built-in task family with a difficulty knob (``chain2`` ... ``chain9``).

A level-``K`` problem counts up from a start in fixed steps until a target is reached, and takes
exactly ``K`` steps: ``Count up from 23 in steps of 7 until you reach 60 or more.`` The answer is
every number reached, ``\\boxed{30 37 44 51 58 65}``, so a level-``K`` response is about ``3K``
tokens and harder levels need longer responses. It is verified by the built-in verifier (exact
match of the last ``\\boxed{}``, whitespace-normalised); a list cannot be guessed, and one wrong
step makes every later number wrong. Each step is local (the last number plus the step size from
the prompt, then a comparison with the target), so the same skill applies at every length; only
the reliability it needs grows with ``K``. The step size times ``K`` is at most 63 and numbers
stay below 100.

The noisy teacher (used by ``prorl sft --builtin --tasks chain2 chain3 chain4`` to build a warm start
on the easy levels) writes each step correctly with probability ``correct_prob`` and otherwise
makes one *systematic* slip, a number one too low, and counts on from it until the target is
reached. A model that copies it at ``correct_prob < 0.5`` prefers the slip at every step, so its
chance of a correct level-``K`` answer falls geometrically with ``K``: easy levels are solved within
a few samples, the hardest essentially never; the skill is there but unreliable. (Slipped counts
need more steps to reach the target, so the easy levels' teacher responses run longer than their
level, up to about 8 numbers: the warm start sees that the target, not a count, ends the list.)
"""

from __future__ import annotations

import random
import re

MIN_LEVEL, MAX_LEVEL = 2, 9
LEVELS = tuple(range(MIN_LEVEL, MAX_LEVEL + 1))
START_RANGE = (1, 36)
MAX_SPAN = 63  # step size x level
_KEY = re.compile(r"(\d+)\+(\d+)>=(\d+)")


def task_name(level: int) -> str:
    return f"chain{level}"


def step_sizes(level: int) -> range:
    return range(2, min(9, MAX_SPAN // level) + 1)


def chain_count(level: int) -> int:
    """How many distinct level-``level`` problems there are (start x step x target)."""
    return (START_RANGE[1] - START_RANGE[0] + 1) * sum(step_sizes(level))


def chain_problem(level: int, rng: random.Random) -> tuple[str, str, str]:
    """A random level-``level`` problem: (question, answer, key); the key is ``start+step>=target``."""
    step = rng.choice(step_sizes(level))
    start = rng.randint(*START_RANGE)
    target = rng.randint(start + (level - 1) * step + 1, start + level * step)
    key = f"{start}+{step}>={target}"
    return (f"Count up from {start} in steps of {step} until you reach {target} or more.",
            " ".join(worked_solution(key)), key)


def coverage_problem(level: int, rng: random.Random, max_number: int = 99) -> tuple[str, str, str]:
    """A level-``level`` problem whose start lies *above* ``START_RANGE`` (so it belongs to no split of
    any chain task) and whose numbers stay <= ``max_number``. A warm start fine-tuned on the easy
    levels only never writes the large numbers that hard levels reach (start + step x level up to
    99); a few such easy problems in its fine-tuning data show it those numbers without adding a
    single training or held-out problem. (question, answer, key) like :func:`chain_problem`."""
    lo = START_RANGE[1] + 1
    steps = [s for s in step_sizes(level) if lo + level * s <= max_number]
    if not steps:
        raise ValueError(f"no level-{level} chain starts above {START_RANGE[1]} and stays <= {max_number}")
    step = rng.choice(steps)
    start = rng.randint(lo, max_number - level * step)
    target = rng.randint(start + (level - 1) * step + 1, start + level * step)
    key = f"{start}+{step}>={target}"
    return (f"Count up from {start} in steps of {step} until you reach {target} or more.",
            " ".join(worked_solution(key)), key)


def parse_key(key: str) -> tuple[int, int, int]:
    """``"23+7>=60"`` -> ``(23, 7, 60)``."""
    m = _KEY.fullmatch(key)
    if not m:
        raise ValueError(f"not a chain key: {key!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def worked_solution(key: str, rng: random.Random | None = None, correct_prob: float = 1.0) -> list[str]:
    """The numbers reached; with ``rng`` each step is right with probability ``correct_prob`` and
    otherwise one too low (the teacher's systematic slip), and counting goes on from there."""
    v, step, target = parse_key(key)
    out = []
    while v < target:
        v += step
        if rng is not None and rng.random() >= correct_prob:
            v -= 1
        out.append(str(v))
    return out


def teacher_text(key: str, rng: random.Random, correct_prob: float) -> str:
    """The noisy teacher's full response to the problem ``key``."""
    return f"\\boxed{{{' '.join(worked_solution(key, rng, correct_prob))}}}"
