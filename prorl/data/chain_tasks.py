"""Addition chains: the built-in task family with a difficulty knob (``chain2`` ... ``chain9``).

A level-``K`` problem adds ``K`` distinct single-digit numbers to a two-digit start, e.g.
``Compute 23+4+7 +1.`` (the spacing between terms is random). The worked solution writes every
partial sum before the answer, ``23+4=27 27+7=34 34+1=35 \\boxed{35}``, so a level-``K`` response
is about ``8K`` tokens: harder levels need longer responses. Only the final ``\\boxed{}`` is
verified (the built-in verifier). Stopping early never gives the answer (every term is positive),
so the answer cannot be guessed from a shorter chain. The terms are distinct and their positions in
the prompt jitter, so a model can only find the next term by *content* (the term after the one it
just added), the mechanism that carries over to longer chains.

The noisy teacher (used by ``prorl sft --builtin --tasks chain2 chain3 ...`` to build a warm start
on the easy levels) writes each step correctly with probability ``correct_prob`` and otherwise
makes one *systematic* slip, a partial sum one too high, and carries on from it. A model that
copies it at ``correct_prob < 0.5`` prefers the slip at every step, so its chance of a correct
level-``K`` answer falls geometrically with ``K``: easy levels are solved within a few samples,
the hardest ones essentially never; the per-step skill is there but unreliable.
"""

from __future__ import annotations

import math
import random
import re

MIN_LEVEL, MAX_LEVEL = 2, 9
LEVELS = tuple(range(MIN_LEVEL, MAX_LEVEL + 1))
START_RANGE = (10, 49)
_TERM = re.compile(r"([+-])(\d)")


def task_name(level: int) -> str:
    return f"chain{level}"


def chain_count(level: int) -> int:
    """How many distinct level-``level`` chains there are: 40 starts times ordered distinct terms."""
    return (START_RANGE[1] - START_RANGE[0] + 1) * math.perm(9, level)


def chain_problem(level: int, rng: random.Random) -> tuple[str, str, str]:
    """A random level-``level`` chain: (question, answer, key); the key is the expression without spaces."""
    v = rng.randint(*START_RANGE)
    terms = rng.sample(range(1, 10), level)
    key = str(v) + "".join(f"+{d}" for d in terms)
    shown = str(v) + "".join(f"{rng.choice(('', ' '))}+{d}" for d in terms)
    return f"Compute {shown}.", str(v + sum(terms)), key


def parse_expr(expr: str) -> tuple[int, list[tuple[str, int]]]:
    """``"23+4-5"`` -> ``(23, [("+", 4), ("-", 5)])`` (spaces ignored)."""
    expr = expr.replace(" ", "")
    m = re.match(r"\d+", expr)
    assert m, expr
    return int(m.group(0)), [(op, int(d)) for op, d in _TERM.findall(expr[m.end():])]


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
