"""Math verifier: the response's last ``\\boxed{}`` answer against the gold answer.

The comparison is done by ``math-verify`` (sympy) with its signal-based timeouts *disabled*
(``parsing_timeout=None`` / ``timeout_seconds=None``): ``signal.alarm`` only works on the main
thread, and an expression bomb (``9^{9^{9^{9}}}``, ``1000000!``) can sit inside C code where no
signal reaches it anyway. The hard wall-clock limit is enforced from outside by the worker pool
(:mod:`prorl.rewards.pool`), which kills the worker and reports ``timeout``.

Cheap exact paths run first (identical canonical strings, plain integers) so that the common
cases never touch sympy; gold answers are parsed once per process (LRU cache) because in GRPO the
same gold is checked against every sample of its group.
"""

from __future__ import annotations

import logging
import numbers
import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from prorl.verifiers.base import Status, Verdict

# math-verify warns once that its timeouts are off; we know, the pool enforces them.
logging.getLogger("math_verify").setLevel(logging.ERROR)
logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)

_BOX_CMDS = ("\\boxed", "\\fbox")
_SPACING = re.compile(r"\\left(?![a-zA-Z])|\\right(?![a-zA-Z])|\\[!,;: ]|\\quad|\\qquad|\s+")
_INT = re.compile(r"[+-]?\d+")
_DEC = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")


def _box_content_at(text: str, start: int) -> str | None:
    """Content of the box command whose name ends at ``start``; None if it is not closed."""
    i = start
    while i < len(text) and text[i] in " \t":
        i += 1
    if i >= len(text):
        return None
    if text[i] != "{":  # "\boxed 5" form: one token
        m = re.match(r"[^\s$]+", text[i:])
        return m.group(0) if m else None
    depth = 0
    j = i
    while j < len(text):
        c = text[j]
        if c == "\\":  # skip escaped characters such as \{ and \}
            j += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
        j += 1
    return None


def last_boxed(text: str) -> tuple[str | None, str]:
    """Return ``(content, why)`` for the last ``\\boxed{...}``/``\\fbox{...}`` in ``text``.

    ``content`` is None when there is no box or the last one is not closed (a truncated response
    is not rewarded for an earlier, intermediate box)."""
    best = -1
    name = ""
    for cmd in _BOX_CMDS:
        pos = text.rfind(cmd)
        while pos >= 0 and pos + len(cmd) < len(text) and text[pos + len(cmd)].isalpha():
            pos = text.rfind(cmd, 0, pos)  # e.g. "\boxedfoo" is another macro
        if pos > best:
            best, name = pos, cmd
    if best < 0:
        return None, "no \\boxed{} answer in the response"
    content = _box_content_at(text, best + len(name))
    if content is None:
        return None, "the last \\boxed{ is not closed"
    return content, ""


def _unwrap(s: str) -> str:
    """Strip whitespace, surrounding ``$``, a trailing period and nested box commands."""
    s = s.strip()
    for _ in range(4):
        s = s.strip().strip("$").strip()
        if s.endswith(".") and not _DEC.fullmatch(s):
            s = s[:-1].rstrip()
        for cmd in _BOX_CMDS:
            if s.startswith(cmd):
                inner = _box_content_at(s, len(cmd))
                if inner is not None and s[len(cmd):].strip() == "{" + inner + "}":  # the box is all of it
                    s = inner
    return s


def canonical(s: str) -> str:
    """A spacing-insensitive form of a LaTeX answer, for exact comparisons only."""
    s = _SPACING.sub("", _unwrap(s))
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    if _INT.fullmatch(s):  # AIME's zero padding: "025" -> "25"
        s = str(int(s))
    return s


def gold_to_text(ground_truth: Any) -> list[str]:
    """Gold answers as LaTeX strings: ints, floats (``27.0`` -> ``27``), strings, or a list of them."""
    if ground_truth is None:
        return []
    if isinstance(ground_truth, (list, tuple)) or type(ground_truth).__name__ == "ndarray":
        out: list[str] = []
        for g in list(ground_truth):
            out += gold_to_text(g)
        return out
    if isinstance(ground_truth, bool):
        return [str(ground_truth)]
    if isinstance(ground_truth, numbers.Integral):
        return [str(int(ground_truth))]
    if isinstance(ground_truth, numbers.Real):
        f = float(ground_truth)
        return [str(int(f))] if f.is_integer() else [repr(f)]
    s = str(ground_truth).strip()
    if any(cmd in s for cmd in _BOX_CMDS):  # a gold given as a boxed solution
        content, _ = last_boxed(s)
        if content is not None:
            s = content
    s = _unwrap(s)
    if _DEC.fullmatch(s) and "." in s:  # "27.0" -> "27"
        try:
            d = Decimal(s)
            if d == d.to_integral_value():
                s = str(int(d))
        except InvalidOperation:
            pass
    return [s] if s else []


def _fast_compare(gold: str, pred: str) -> bool | None:
    """Exact decisions that need no sympy: True/False, or None when undecided."""
    g, p = canonical(gold), canonical(pred)
    if g == p and g:
        return True
    if _INT.fullmatch(g) and _INT.fullmatch(p):
        return int(g) == int(p)
    if _DEC.fullmatch(g) and _DEC.fullmatch(p):
        try:
            if Decimal(g) == Decimal(p):
                return True
        except InvalidOperation:
            pass
    return None


@lru_cache(maxsize=1)
def _configs() -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    return [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]


def _parse_boxed(answer: str) -> list:
    from math_verify import parse

    return parse("\\boxed{" + answer + "}", extraction_config=_configs(), parsing_timeout=None)


@lru_cache(maxsize=8192)
def _parse_gold(gold: str) -> tuple:
    return tuple(_parse_boxed(gold))


def sympy_equal(gold: str, pred: str) -> bool:
    """math-verify's equivalence of two LaTeX answers (no internal timeout: run it in the pool)."""
    from math_verify import verify

    g = list(_parse_gold(gold))
    p = _parse_boxed(pred)
    if not g or not p:
        return canonical(gold) == canonical(pred) and bool(canonical(gold))
    return bool(verify(g, p, timeout_seconds=None))


@lru_cache(maxsize=16384)
def answers_match(gold: str, pred: str) -> bool:
    """Fast exact paths first, then math-verify. Cached: in GRPO a group's samples often agree."""
    fast = _fast_compare(gold, pred)
    return fast if fast is not None else sympy_equal(gold, pred)


def verify_math(response: str, ground_truth: Any, extra_info: dict) -> Verdict:
    """Score 1 if the last ``\\boxed{}`` of ``response`` equals the gold answer, else 0."""
    golds = gold_to_text(ground_truth)
    if not golds:
        return Verdict(0.0, Status.ERROR, f"empty or missing ground truth: {ground_truth!r}"[:300])
    content, why = last_boxed(response or "")
    if content is None:
        return Verdict(0.0, Status.NO_ANSWER, why)
    pred = _unwrap(content)
    if not pred:
        return Verdict(0.0, Status.NO_ANSWER, "empty \\boxed{}")
    for g in golds:
        if answers_match(g, pred):
            return Verdict(1.0, Status.CORRECT, f"answer {pred[:80]!r} matches gold {g[:80]!r}")
    return Verdict(0.0, Status.WRONG, f"answer {pred[:80]!r} != gold {golds[0][:80]!r}")
