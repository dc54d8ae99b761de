"""Arithmetic chains: the built-in task family with a difficulty knob (``chain2`` ... ``chain12``).

A level-``K`` problem is a chain of ``K`` single-digit additions and subtractions whose running value
stays in 0..9, e.g. ``Compute 4+3-5+2.`` The worked solution writes every step before the answer,
``4+3=7 7-5=2 2+2=4 \\boxed{4}``, so a level-``K`` response is about ``6K`` tokens: harder levels
need longer responses. Only the final ``\\boxed{}`` is verified (the built-in verifier).

The noisy teacher (used by ``prorl sft --builtin --tasks chain2 chain3 ...`` to build a warm start on
the easy levels) writes each step correctly with probability ``correct_prob`` and otherwise makes
one *systematic* slip, a result one too high, and carries on from the wrong value. A model that
copies it at ``correct_prob < 0.5`` prefers the slip at every step, so its chance of a correct
level-``K`` answer falls geometrically with ``K``: easy levels are solved within a few samples,
the hardest ones essentially never; the per-step skill is there but unreliable.
"""

from __future__ import annotations

import random
import re

MIN_LEVEL, MAX_LEVEL = 2, 12
LEVELS = tuple(range(MIN_LEVEL, MAX_LEVEL + 1))
_TERM = re.compile(r"([+-])(\d)")


def task_name(level: int) -> str:
    return f"chain{level}"


def chain_count(level: int) -> int:
    """How many distinct level-``level`` chains there are: 10 starts, then 9 valid steps from any value."""
    return 10 * 9 ** level


def chain_problem(level: int, rng: random.Random) -> tuple[str, str, str]:
    """A random level-``level`` chain: (question, answer, key); the key is the expression."""
    v = rng.randint(0, 9)
    expr = str(v)
    for _ in range(level):
        options = [("+", d) for d in range(1, 10) if v + d <= 9] + [("-", d) for d in range(1, 10) if v - d >= 0]
        op, d = rng.choice(options)
        v = v + d if op == "+" else v - d
        expr += f"{op}{d}"
    return f"Compute {expr}.", str(v), expr


def parse_expr(expr: str) -> tuple[int, list[tuple[str, int]]]:
    """``"4+3-5"`` -> ``(4, [("+", 3), ("-", 5)])``."""
    return int(expr[0]), [(op, int(d)) for op, d in _TERM.findall(expr[1:])]


def worked_solution(expr: str, rng: random.Random | None = None, correct_prob: float = 1.0) -> tuple[str, str]:
    """(step-by-step text without the box, final value written); with ``rng`` each step is right
    with probability ``correct_prob`` and otherwise one too high (the teacher's systematic slip)."""
    v, terms = parse_expr(expr)
    steps = []
    for op, d in terms:
        r = v + d if op == "+" else v - d
        if rng is not None and rng.random() >= correct_prob:
            r += 1
        steps.append(f"{v}{op}{d}={r}")
        v = r
    return " ".join(steps), str(v)


def teacher_text(expr: str, rng: random.Random, correct_prob: float) -> str:
    """The noisy teacher's full response to the chain ``expr``."""
    steps, final = worked_solution(expr, rng, correct_prob)
    return f"{steps} \\boxed{{{final}}}"
