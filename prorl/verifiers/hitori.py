"""Hitori rules and the rule-checking verifier (a leaf: :mod:`prorl.data.hitori` generates the puzzles).

Rules (as told to the model): shade some cells of an n×n grid of numbers so that
  1. no number appears more than once among the *unshaded* cells of any row or column,
  2. no two shaded cells are orthogonally adjacent,
  3. all unshaded cells form one orthogonally connected region.

Answer format: the whole grid inside ``<answer></answer>``, one row per line, numbers separated by
spaces, each shaded cell written as ``#`` (``*``, ``■``, ``X``/``x`` are accepted too). Unshaded cells
must keep the puzzle's number. The verifier checks the three rules on the submitted grid, so *any*
valid shading scores 1, not only the stored one (which stays in ``ground_truth`` for reference).

Partial credit is off by default; with ``extra_info["partial_credit"] = True`` a well-formed grid
that keeps rules 2 and 3 but still repeats numbers scores ``0.5 * resolved / conflicting``: the share
of the puzzle's rows and columns with repeated numbers that the shading makes repeat-free (status
``wrong``). Returning the puzzle unshaded therefore earns 0.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from prorl.verifiers.answer_tags import extract_answer
from prorl.verifiers.base import Status, Verdict

Grid = list[list[int]]
Mask = list[list[bool]]
SHADE_CHARS = "#*■Xx"


# --------------------------------------------------------------------------------------------
# rules
# --------------------------------------------------------------------------------------------
def neighbours(r: int, c: int, n: int) -> Iterable[tuple[int, int]]:
    """The orthogonal neighbours of cell (r, c) inside an n×n grid."""
    for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        rr, cc = r + dr, c + dc
        if 0 <= rr < n and 0 <= cc < n:
            yield rr, cc


def connected(mask: Mask) -> bool:
    """Whether the unshaded cells (False in ``mask``) form one orthogonally connected region."""
    n = len(mask)
    cells = [(r, c) for r in range(n) for c in range(n) if not mask[r][c]]
    if not cells:
        return False
    seen = {cells[0]}
    stack = [cells[0]]
    while stack:
        r, c = stack.pop()
        for nb in neighbours(r, c, n):
            if nb not in seen and not mask[nb[0]][nb[1]]:
                seen.add(nb)
                stack.append(nb)
    return len(seen) == len(cells)


def rule_violations(puzzle: Grid, mask: Mask) -> list[str]:
    """Human-readable list of broken rules for a shading ``mask`` (True = shaded) of ``puzzle``."""
    n = len(puzzle)
    problems: list[str] = []
    for r in range(n):
        vals = [puzzle[r][c] for c in range(n) if not mask[r][c]]
        dup = sorted({v for v in vals if vals.count(v) > 1})
        if dup:
            problems.append(f"row {r + 1} repeats unshaded {dup}")
    for c in range(n):
        vals = [puzzle[r][c] for r in range(n) if not mask[r][c]]
        dup = sorted({v for v in vals if vals.count(v) > 1})
        if dup:
            problems.append(f"column {c + 1} repeats unshaded {dup}")
    for r in range(n):
        for c in range(n):
            if mask[r][c] and ((r + 1 < n and mask[r + 1][c]) or (c + 1 < n and mask[r][c + 1])):
                problems.append(f"shaded cells touch at row {r + 1}, column {c + 1}")
    if not connected(mask):
        problems.append("unshaded cells are not all connected")
    return problems


# --------------------------------------------------------------------------------------------
# verifier
# --------------------------------------------------------------------------------------------
def parse_grid(text: str) -> Grid:
    """A puzzle grid from text (rows of numbers) or any nested sequence (e.g. numpy from parquet)."""
    if isinstance(text, str):
        return [[int(t) for t in re.findall(r"\d+", line)] for line in text.splitlines() if re.search(r"\d", line)]
    return [[int(v) for v in row] for row in text]


def parse_answer(text: str, n: int) -> list[list[str]] | None:
    """Rows of tokens (``"#"`` or digits) from an answer; None unless it is an n×n grid."""
    token = re.compile(r"[" + re.escape(SHADE_CHARS) + r"]|\d" if n <= 9 else r"[" + re.escape(SHADE_CHARS) + r"]|\d+")
    rows = []
    for line in text.strip().splitlines():
        toks = token.findall(line)
        if toks:
            rows.append(["#" if t in SHADE_CHARS else t for t in toks])
    if len(rows) != n or any(len(r) != n for r in rows):
        return None
    return rows


def _puzzle_of(ground_truth: Any, extra_info: dict) -> Grid:
    puzzle = extra_info.get("puzzle")
    if puzzle is not None and len(puzzle):
        return parse_grid(puzzle)
    raise ValueError("hitori row has no extra_info['puzzle']")


def _partial_credit(puzzle: Grid, mask: Mask, problems: list[str]) -> float:
    """0.5 × the share of the puzzle's conflicting lines that the shading resolves, if rules 2-3 hold."""
    if any("touch" in p or "connected" in p for p in problems):
        return 0.0
    n = len(puzzle)
    lines = [[(r, c) for c in range(n)] for r in range(n)] + [[(r, c) for r in range(n)] for c in range(n)]
    conflicting = resolved = 0
    for line in lines:
        vals = [puzzle[r][c] for r, c in line]
        if len(set(vals)) < n:
            conflicting += 1
            kept = [puzzle[r][c] for r, c in line if not mask[r][c]]
            resolved += len(set(kept)) == len(kept)
    return 0.5 * resolved / conflicting if conflicting else 0.0


def verify_hitori(response: str, ground_truth: Any, extra_info: dict) -> Verdict:
    """Score a hitori answer by the rules (any valid shading scores 1); see the module doc."""
    puzzle = _puzzle_of(ground_truth, extra_info)
    n = len(puzzle)
    answer = extract_answer(response)
    if not answer:
        return Verdict(0.0, Status.NO_ANSWER, "no <answer>...</answer> grid")
    rows = parse_answer(answer, n)
    if rows is None:
        return Verdict(0.0, Status.WRONG, f"answer is not a {n}x{n} grid of numbers and #")
    mask = [[t == "#" for t in row] for row in rows]
    for r in range(n):
        for c in range(n):
            if not mask[r][c] and int(rows[r][c]) != puzzle[r][c]:
                return Verdict(0.0, Status.WRONG, f"row {r + 1}, column {c + 1}: {rows[r][c]} is not "
                                                  f"the puzzle's {puzzle[r][c]}")
    problems = rule_violations(puzzle, mask)
    if not problems:
        return Verdict(1.0, Status.CORRECT, "all hitori rules hold")
    score = 0.0
    if extra_info.get("partial_credit"):
        score = _partial_credit(puzzle, mask, problems)
    return Verdict(score, Status.WRONG, "; ".join(problems)[:500])
