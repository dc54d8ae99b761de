"""Hitori puzzles: a seeded generator, a small solver and a prompt renderer.

The rules, the answer format and the verifier live in :mod:`prorl.verifiers.hitori` (verifiers do
not import data).

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

from prorl.verifiers.hitori import Grid, Mask, connected, neighbours


# --------------------------------------------------------------------------------------------
# the solver's extra rule
# --------------------------------------------------------------------------------------------
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
            if connected(mask) and _shading_is_needed(puzzle, mask):
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
        if not any(mask[a][b] for a, b in neighbours(r, c, n)):  # try shaded
            mask[r][c] = True
            if connected(mask):
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
        if any(mask[a][b] for a, b in neighbours(r, c, n)):
            continue
        mask[r][c] = True
        if connected(mask):
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
