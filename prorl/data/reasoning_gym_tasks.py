"""Reasoning Gym tasks as verl-schema rows.

The lossless entry codec, the scorer cache and the rebuilding of an entry from a row (what the
logic verifier needs) live in :mod:`prorl.verifiers.reasoning_gym_entry`: verifiers do not import
data. ``reasoning_gym`` is imported lazily: importing it takes seconds.
"""

from __future__ import annotations

import re
import zlib
from typing import Iterable

from prorl.verifiers.reasoning_gym_entry import config_key, dumps_entry

ANSWER_INSTRUCTION = (
    "Think the problem through, then give only your final answer inside <answer></answer> tags, "
    "in exactly the format the question asks for, for example <answer>your answer here</answer>."
)

# --------------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------------
def available_tasks() -> list[str]:
    """Names of every registered Reasoning Gym task (``composite`` excluded: it needs a spec)."""
    from reasoning_gym.factory import DATASETS

    return sorted(n for n in DATASETS if n != "composite")


def derive_seed(seed: int, task: str, split: str) -> int:
    """A stable per-(task, split) dataset seed, so train and validation draw different puzzles."""
    return zlib.crc32(f"prorl:{task}:{split}:{int(seed)}".encode()) & 0x7FFFFFFF


def _key(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def make_prompt(question: str) -> list[dict]:
    """The chat prompt of one puzzle: the task's question plus the ``<answer>`` tag instruction."""
    return [{"role": "user", "content": f"{question.rstrip()}\n\n{ANSWER_INSTRUCTION}"}]


def make_row(task: str, entry: dict, *, index: int, seed: int, split: str, config: dict | None = None) -> dict:
    """One verl-schema row from a Reasoning Gym entry; ``extra_info`` alone suffices to score it."""
    answer = entry.get("answer")
    return {
        "data_source": f"reasoning_gym/{task}",
        "prompt": make_prompt(str(entry["question"])),
        "ability": "logic",
        "reward_model": {"ground_truth": None if answer is None else str(answer), "style": "rule"},
        "extra_info": {
            "task": task,
            "split": split,
            "index": int(index),
            "seed": int(seed),
            "config": config_key(config),
            "entry": dumps_entry(entry),
        },
    }


def _split_sizes(total: int, n: int) -> list[int]:
    base, extra = divmod(total, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def generate_rows(
    task_names: list[str],
    size: int,
    seed: int,
    split: str,
    *,
    config: dict[str, dict] | None = None,
    exclude: Iterable[str] | None = None,
    max_tries_factor: int = 4,
) -> list[dict]:
    """``size`` rows in total, split evenly over ``task_names`` and interleaved round-robin.

    Each task draws from its own dataset seeded by ``derive_seed(seed, task, split)``. Rows are
    de-duplicated by prompt text within the split and against ``exclude`` (prompt texts, e.g. the
    training prompts when building validation); a task whose question space is too small to fill its
    quota raises ``ValueError``. ``config`` maps a task name to extra config fields for
    ``reasoning_gym.create_dataset``. ``hitori`` (not in reasoning-gym 0.1.25) is served by
    :mod:`prorl.data.hitori` with ``data_source="reasoning_gym/hitori"``.
    """
    import reasoning_gym

    if not task_names:
        raise ValueError("no task names given")
    known = set(available_tasks()) | {"hitori"}
    unknown = [t for t in task_names if t not in known]
    if unknown:
        raise ValueError(f"unknown reasoning-gym task(s) {unknown}; known: {', '.join(sorted(known))}")
    seen = {_key(p) for p in (exclude or ())}
    per_task: list[list[dict]] = []
    for task, quota in zip(task_names, _split_sizes(size, len(task_names))):
        if task == "hitori":
            from prorl.data import hitori

            hrows = hitori.generate_rows(quota, seed, split, exclude=seen, data_source="reasoning_gym/hitori",
                                         **dict((config or {}).get(task, {})))
            seen.update(_key(r["prompt"][-1]["content"]) for r in hrows)
            per_task.append(hrows)
            continue
        overrides = dict((config or {}).get(task, {}))
        ds_seed = derive_seed(seed, task, split)
        limit = max(quota * max_tries_factor, quota + 16)
        ds = reasoning_gym.create_dataset(task, **overrides, seed=ds_seed, size=limit)
        rows: list[dict] = []
        idx = 0
        while len(rows) < quota and idx < limit:
            entry = ds[idx]
            row = make_row(task, entry, index=idx, seed=ds_seed, split=split, config=overrides)
            key = _key(row["prompt"][-1]["content"])
            if key not in seen:
                seen.add(key)
                rows.append(row)
            idx += 1
        if len(rows) < quota:
            raise ValueError(
                f"reasoning-gym task {task!r} gave only {len(rows)} distinct new questions in {limit} "
                f"draws (wanted {quota}); ask for fewer rows or a harder config"
            )
        per_task.append(rows)
    out: list[dict] = []
    for i in range(max((len(r) for r in per_task), default=0)):
        out.extend(r[i] for r in per_task if i < len(r))
    return out


def generate_splits(
    task_names: list[str], train_size: int, val_size: int, seed: int, *, config: dict[str, dict] | None = None
) -> tuple[list[dict], list[dict]]:
    """Train and validation rows with no prompt in common (different seeds, then a duplicate check)."""
    train = generate_rows(task_names, train_size, seed, "train", config=config)
    train_prompts = [r["prompt"][-1]["content"] for r in train]
    val = generate_rows(task_names, val_size, seed, "val", config=config, exclude=train_prompts)
    return train, val
