"""Hitori puzzles: a seeded generator, a small solver, a prompt renderer and a rule-checking verifier.

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

Generation builds the solution first: a random Latin square (so the unshaded numbers never repeat),
a random shading (never adjacent, unshaded cells kept connected), then each shaded cell gets a number
that repeats an unshaded number in its row or column. The solver then checks that the puzzle has
exactly one solution in which every shaded cell repeats an unshaded number of its row or column
(the usual "shade only what you must" reading); puzzles that fail are redrawn.
"""

from __future__ import annotations

import random
import re
from typing import Any, Iterable

from prorl.verifiers.base import Status, Verdict
from prorl.verifiers.logic import extract_answer

Grid = list[list[int]]
Mask = list[list[bool]]
SHADE_CHARS = "#*■Xx"


# --------------------------------------------------------------------------------------------
# rules
# --------------------------------------------------------------------------------------------
def _neighbours(r: int, c: int, n: int) -> Iterable[tuple[int, int]]:
    for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        rr, cc = r + dr, c + dc
        if 0 <= rr < n and 0 <= cc < n:
            yield rr, cc


def _connected(mask: Mask) -> bool:
    """Whether the unshaded cells (False in ``mask``) form one orthogonally connected region."""
    n = len(mask)
    cells = [(r, c) for r in range(n) for c in range(n) if not mask[r][c]]
    if not cells:
        return False
    seen = {cells[0]}
    stack = [cells[0]]
    while stack:
        r, c = stack.pop()
        for nb in _neighbours(r, c, n):
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
    if not _connected(mask):
        problems.append("unshaded cells are not all connected")
    return problems


def is_solution(puzzle: Grid, mask: Mask) -> bool:
    return not rule_violations(puzzle, mask)


def _shading_is_needed(puzzle: Grid, mask: Mask) -> bool:
    """Every shaded cell repeats an unshaded number of its row or column."""
    n = len(puzzle)
    for r in range(n):
        for c in range(n):
            if mask[r][c]:
                v = puzzle[r][c]
                if not any(puzzle[r][k] == v and not mask[r][k] for k in range(n)) and not any(
                    puzzle[k][c] == v and not mask[k][c] for k in range(n)
                ):
                    return False
    return True


# --------------------------------------------------------------------------------------------
# solver
# --------------------------------------------------------------------------------------------
def solve(puzzle: Grid, limit: int = 2) -> list[Mask]:
    """Up to ``limit`` solutions in which every shaded cell repeats an unshaded number in its line.

    Backtracking over the cells that repeat a number in their row or column (the only candidates),
    with adjacency, duplicate and connectivity pruning. Fine for the sizes generated here (≤ 9).
    """
    n = len(puzzle)
    cand = [
        (r, c)
        for r in range(n)
        for c in range(n)
        if sum(puzzle[r][k] == puzzle[r][c] for k in range(n)) > 1
        or sum(puzzle[k][c] == puzzle[r][c] for k in range(n)) > 1
    ]
    candset = set(cand)
    mask = [[False] * n for _ in range(n)]
    row_used: list[set[int]] = [set() for _ in range(n)]
    col_used: list[set[int]] = [set() for _ in range(n)]
    for r in range(n):
        for c in range(n):
            if (r, c) not in candset:  # fixed unshaded; their numbers are unique in their lines
                row_used[r].add(puzzle[r][c])
                col_used[c].add(puzzle[r][c])
    out: list[Mask] = []

    def rec(i: int) -> None:
        if len(out) >= limit:
            return
        if i == len(cand):
            if _connected(mask) and _shading_is_needed(puzzle, mask):
                out.append([row[:] for row in mask])
            return
        r, c = cand[i]
        v = puzzle[r][c]
        if v not in row_used[r] and v not in col_used[c]:  # try unshaded
            row_used[r].add(v)
            col_used[c].add(v)
            rec(i + 1)
            row_used[r].discard(v)
            col_used[c].discard(v)
        if not any(mask[a][b] for a, b in _neighbours(r, c, n)):  # try shaded
            mask[r][c] = True
            if _connected(mask):
                rec(i + 1)
            mask[r][c] = False

    rec(0)
    return out


# --------------------------------------------------------------------------------------------
# generator
# --------------------------------------------------------------------------------------------
def _latin_square(n: int, rng: random.Random) -> Grid:
    rows = list(range(n))
    cols = list(range(n))
    syms = list(range(1, n + 1))
    rng.shuffle(rows)
    rng.shuffle(cols)
    rng.shuffle(syms)
    return [[syms[(rows[r] + cols[c]) % n] for c in range(n)] for r in range(n)]


def _random_mask(n: int, rng: random.Random) -> Mask:
    mask = [[False] * n for _ in range(n)]
    target = rng.randint(max(1, n * n // 5), max(1, n * n // 3))
    cells = [(r, c) for r in range(n) for c in range(n)]
    rng.shuffle(cells)
    shaded = 0
    for r, c in cells:
        if shaded >= target:
            break
        if any(mask[a][b] for a, b in _neighbours(r, c, n)):
            continue
        mask[r][c] = True
        if _connected(mask):
            shaded += 1
        else:
            mask[r][c] = False
    return mask


def generate_puzzle(n: int, rng: random.Random, max_tries: int = 500) -> tuple[Grid, Mask]:
    """One n×n puzzle with a unique solution (see module doc) and that solution's mask."""
    if not 2 <= n <= 9:
        raise ValueError("hitori sizes 2..9 are supported")
    for _ in range(max_tries):
        grid = _latin_square(n, rng)
        mask = _random_mask(n, rng)
        for r in range(n):
            for c in range(n):
                if mask[r][c]:
                    choices = {grid[r][k] for k in range(n) if not mask[r][k]}
                    choices |= {grid[k][c] for k in range(n) if not mask[k][c]}
                    grid[r][c] = rng.choice(sorted(choices))
        sols = solve(grid, limit=2)
        if len(sols) == 1 and sols[0] == mask:
            return grid, mask
    raise RuntimeError(f"no unique {n}x{n} hitori found in {max_tries} tries")


def render_grid(puzzle: Grid, mask: Mask | None = None) -> str:
    """Rows of space-separated numbers; shaded cells (if a mask is given) as ``#``."""
    return "\n".join(
        " ".join("#" if mask is not None and mask[r][c] else str(v) for c, v in enumerate(row))
        for r, row in enumerate(puzzle)
    )


def render_prompt(puzzle: Grid) -> str:
    """The user message of a puzzle: rules, grid and the exact answer format."""
    n = len(puzzle)
    return (
        f"Solve this {n}x{n} Hitori puzzle.\n\n"
        "Rules: shade some cells so that\n"
        "1. no number appears more than once among the unshaded cells of any row or column;\n"
        "2. no two shaded cells are orthogonally adjacent (touching diagonally is fine);\n"
        "3. all unshaded cells form one orthogonally connected region.\n\n"
        f"Puzzle:\n{render_grid(puzzle)}\n\n"
        f"Give the whole {n}x{n} grid as your final answer inside <answer></answer> tags: one row per "
        "line, numbers separated by single spaces, and every shaded cell replaced by #. "
        "For example, a 3x3 answer looks like:\n<answer>\n1 # 3\n3 1 2\n# 2 1\n</answer>"
    )


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def generate_rows(
    size: int,
    seed: int,
    split: str,
    *,
    min_size: int = 4,
    max_size: int = 6,
    exclude: Iterable[str] | None = None,
    data_source: str = "hitori",
) -> list[dict]:
    """``size`` verl-schema hitori rows; puzzle ``i`` is drawn from ``Random(f"hitori:{seed}:{split}:{i}")``.

    A puzzle whose prompt text is in ``exclude`` (e.g. the training prompts when building validation)
    or earlier in this split is skipped and another drawn.
    """
    if min_size > max_size:
        raise ValueError("min_size > max_size")
    seen = {_norm(p) for p in (exclude or ())}
    rows: list[dict] = []
    i = 0
    while len(rows) < size:
        if i > 20 * size + 100:
            raise ValueError(f"could not draw {size} distinct hitori puzzles of sizes {min_size}..{max_size}")
        rng = random.Random(f"hitori:{seed}:{split}:{i}")
        n = rng.randint(min_size, max_size)
        puzzle, mask = generate_puzzle(n, rng)
        key = render_prompt(puzzle)
        if _norm(key) not in seen:
            seen.add(_norm(key))
            rows.append({
                "data_source": data_source,
                "prompt": [{"role": "user", "content": key}],
                "ability": "logic",
                "reward_model": {"ground_truth": render_grid(puzzle, mask), "style": "rule"},
                "extra_info": {"task": "hitori", "split": split, "index": i, "seed": int(seed),
                               "size": n, "puzzle": puzzle},
            })
        i += 1
    return rows


def generate_splits(size: int, val_size: int, seed: int, **kw: Any) -> tuple[list[dict], list[dict]]:
    """Train and validation rows drawn from different streams, with no puzzle in both."""
    train = generate_rows(size, seed, "train", **kw)
    exclude = [r["prompt"][-1]["content"] for r in train]
    return train, generate_rows(val_size, seed, "val", exclude=exclude, **kw)


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
