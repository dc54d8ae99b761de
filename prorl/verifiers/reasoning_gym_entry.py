"""What the logic verifier needs to score a Reasoning Gym row: the lossless entry codec, the scorer
cache and the rebuilding of an entry from a row. A leaf module: :mod:`prorl.data.reasoning_gym_tasks`
builds the rows with the codec below, and verifiers never import ``prorl.data``.

Why the entry is stored as a *tagged* JSON string (``extra_info["entry"]``): many tasks' metadata
hold tuples, sets or dicts with int keys (``graph_color``'s edges and colourings, ARC's grids) and
their ``score_answer`` compares against them with ``==``, so a plain JSON round trip silently turns
correct answers into wrong ones. The tagged codec restores those types exactly. A string also keeps
the parquet schema flat and identical across tasks (nested metadata differs per task).

``reasoning_gym`` is imported lazily: importing it takes seconds.
"""

from __future__ import annotations

import json
from typing import Any

# --------------------------------------------------------------------------------------------
# type-preserving JSON codec (safe: no pickle, only plain containers and scalars)
# --------------------------------------------------------------------------------------------
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
