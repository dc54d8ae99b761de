"""Synthetic examples for the PromptSampler tests (test_dataset.py, test_retirement.py)."""

from __future__ import annotations

from prorl.data.dataset import Example


def examples(counts: dict[str, int]) -> list[Example]:
    """``counts[source]`` examples per data_source; each row's ``i`` is its position."""
    out = []
    for src, n in counts.items():
        out += [Example({"data_source": src, "i": len(out) + k}, [len(out) + k]) for k in range(n)]
    return out


def ids(exs: list[Example]) -> list[int]:
    return [e.row["i"] for e in exs]
