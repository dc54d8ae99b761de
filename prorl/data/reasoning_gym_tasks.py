"""Reasoning Gym tasks as verl-schema rows, and the helpers the logic verifier needs to score them.

Why the entry is stored as a *tagged* JSON string (``extra_info["entry"]``): many tasks' metadata
hold tuples, sets or dicts with int keys (``graph_color``'s edges and colourings, ARC's grids) and
their ``score_answer`` compares against them with ``==``, so a plain JSON round trip silently turns
correct answers into wrong ones. The tagged codec restores those types exactly. A string also keeps
the parquet schema flat and identical across tasks (nested metadata differs per task).

``reasoning_gym`` is imported lazily: importing it takes seconds.
"""

from __future__ import annotations

import json
import re
import zlib
from typing import Any, Iterable

ANSWER_INSTRUCTION = (
    "Think the problem through, then give only your final answer inside <answer></answer> tags, "
    "in exactly the format the question asks for, for example <answer>your answer here</answer>."
)

# --------------------------------------------------------------------------------------------
# type-preserving JSON codec (safe: no pickle, only plain containers and scalars)
# --------------------------------------------------------------------------------------------
_TAGS = ("__tuple__", "__set__", "__dict__", "__repr__")


def encode_value(obj: Any) -> Any:
    """Turn ``obj`` into JSON-able data, tagging tuples, sets and dicts with non-string keys."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, tuple):
        return {"__tuple__": [encode_value(x) for x in obj]}
    if isinstance(obj, list):
        return [encode_value(x) for x in obj]
    if isinstance(obj, (set, frozenset)):
        items = [encode_value(x) for x in obj]
        return {"__set__": sorted(items, key=lambda v: json.dumps(v, sort_keys=True))}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: encode_value(v) for k, v in obj.items()}
        return {"__dict__": [[encode_value(k), encode_value(v)] for k, v in obj.items()]}
    item = getattr(obj, "item", None)  # numpy scalars
    if callable(item):
        try:
            return encode_value(item())
        except (TypeError, ValueError):
            pass
    tolist = getattr(obj, "tolist", None)  # numpy arrays
    if callable(tolist):
        return encode_value(tolist())
    return {"__repr__": repr(obj)}  # lossy last resort; scorers comparing to it will not match


def decode_value(obj: Any) -> Any:
    """Inverse of :func:`encode_value`."""
    if isinstance(obj, list):
        return [decode_value(x) for x in obj]
    if isinstance(obj, dict):
        if len(obj) == 1:
            (key, val), = obj.items()
            if key == "__tuple__":
                return tuple(decode_value(x) for x in val)
            if key == "__set__":
                return {_hashable(decode_value(x)) for x in val}
            if key == "__dict__":
                return {_hashable(decode_value(k)): decode_value(v) for k, v in val}
            if key == "__repr__":
                return val
        return {k: decode_value(v) for k, v in obj.items()}
    return obj


def _hashable(x: Any) -> Any:
    if isinstance(x, list):
        return tuple(_hashable(v) for v in x)
    if isinstance(x, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in x.items()))
    return x


def dumps_entry(entry: dict) -> str:
    """Serialise a Reasoning Gym entry (question, answer, metadata) losslessly to a JSON string."""
    return json.dumps(encode_value(dict(entry)), ensure_ascii=False)


def loads_entry(text: str) -> dict:
    """Inverse of :func:`dumps_entry`."""
    return decode_value(json.loads(text))


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


def config_key(config: dict | None) -> str:
    """Canonical JSON of a task's config overrides (the verifier caches datasets by it)."""
    return json.dumps(config or {}, sort_keys=True)


_SCORERS: dict[tuple[str, str], Any] = {}
_MAX_SCORERS = 256


def get_scorer(task: str, config_json: str = "{}") -> Any:
    """A dataset object of ``task`` (with the row's config overrides) whose ``score_answer`` scores.

    Cached per (task, config) in this process: some tasks load files or build tables on creation.
    """
    key = (task, config_json or "{}")
    ds = _SCORERS.get(key)
    if ds is None:
        import reasoning_gym

        kwargs = json.loads(key[1])
        kwargs.pop("seed", None)
        kwargs.pop("size", None)
        ds = reasoning_gym.create_dataset(task, **kwargs)
        if len(_SCORERS) >= _MAX_SCORERS:
            _SCORERS.pop(next(iter(_SCORERS)))
        _SCORERS[key] = ds
    return ds


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


def entry_from_row(task: str, ground_truth: Any, extra_info: dict) -> dict:
    """Rebuild the Reasoning Gym entry that ``score_answer`` expects from a row's data.

    Tries, in order: our lossless ``entry`` string; a ``metadata`` dict or JSON string (rows made by
    other tools; types may be lossy); regenerating it from ``seed`` and ``index``.
    """
    raw = extra_info.get("entry")
    if isinstance(raw, str) and raw:
        return loads_entry(raw)
    if isinstance(raw, dict):
        return decode_value(raw)
    meta = extra_info.get("metadata")
    if isinstance(meta, str):
        meta = json.loads(meta)
    if isinstance(meta, dict):
        return {"question": extra_info.get("question", ""), "answer": ground_truth, "metadata": meta}
    if extra_info.get("seed") is not None and extra_info.get("index") is not None:
        import reasoning_gym

        cfg = json.loads(extra_info.get("config") or "{}")
        cfg.pop("seed", None)
        cfg.pop("size", None)
        index = int(extra_info["index"])
        ds = reasoning_gym.create_dataset(task, **cfg, seed=int(extra_info["seed"]), size=index + 1)
        return ds[index]
    raise ValueError(f"row of task {task!r} has no entry, metadata or seed/index in extra_info")
