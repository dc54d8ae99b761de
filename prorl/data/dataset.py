"""Loading and validating verl-schema datasets (parquet or JSONL) and sampling prompts resumably.

A row: ``data_source`` (str), ``prompt`` (list of ``{"role", "content"}``), ``ability`` (str,
optional), ``reward_model.ground_truth``, ``extra_info`` (dict, optional). Every row is checked up
front; a malformed one is rejected with its file and row number before training starts.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from prorl.verifiers.base import resolve_domain


class DataError(ValueError):
    """A dataset file or row is malformed."""


@dataclass
class Example:
    """A validated row plus its tokenised prompt."""

    row: dict
    prompt_ids: list[int]

    @property
    def data_source(self) -> str:
        return self.row["data_source"]


def read_rows(path: str | Path) -> list[dict]:
    """All rows of a parquet or JSONL file (bad JSON lines raise with the line number)."""
    return [row for _, row in numbered_rows(path)]


def numbered_rows(path: str | Path) -> list[tuple[int, Any]]:
    """(1-based row number, row) for every row of a file; in JSONL the number is the line number
    (blank lines are skipped but counted), so an error points where an editor does."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return list(enumerate(pq.read_table(p).to_pylist(), start=1))
        except Exception as e:
            raise DataError(f"{p}: cannot read parquet: {e}") from e
    if p.suffix in (".jsonl", ".json"):
        try:
            data = p.read_bytes()
        except OSError as e:
            raise DataError(f"{p}: cannot read ({e.strerror or e})") from None
        if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark
            data = data[3:]
        if p.suffix == ".json" and data.lstrip().startswith(b"["):
            try:
                rows = json.loads(_decode(data, p))
            except json.JSONDecodeError as e:
                raise DataError(f"{p}: invalid JSON array (line {e.lineno}: {e.msg})") from None
            if not isinstance(rows, list):
                raise DataError(f"{p}: a .json file must hold an array of rows")
            return list(enumerate(rows, start=1))
        numbered = []
        # split on b"\n" only: str.splitlines() would also cut rows at U+2028 etc. inside JSON strings
        for i, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{p}: row {i}: not UTF-8 text (byte {e.start + 1} of the line: {e.reason})") from None
            try:
                numbered.append((i, json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataError(f"{p}: row {i}: invalid JSON ({e.msg})") from None
        return numbered
    raise DataError(f"{p}: unsupported file type {p.suffix!r} (use .parquet or .jsonl)")


def _decode(data: bytes, p: Path) -> str:
    """``data`` as UTF-8 text; undecodable bytes raise ``DataError`` naming the 1-based line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError(f"{p}: line {line}: not UTF-8 text ({e.reason})") from None


def validate_row(row: Any) -> None:
    """Raise ``DataError`` (without location) if ``row`` does not follow verl's schema."""
    if not isinstance(row, dict):
        raise DataError(f"row must be an object, got {type(row).__name__}")
    ds = row.get("data_source")
    if not isinstance(ds, str) or not ds:
        raise DataError("missing or empty 'data_source' (string)")
    prompt = row.get("prompt")
    if not isinstance(prompt, list) or not prompt:
        raise DataError("'prompt' must be a non-empty list of chat messages {role, content}")
    for j, m in enumerate(prompt):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"prompt[{j}] must be a message with string 'role' and 'content'")
        if m["role"] not in ("system", "user", "assistant", "tool"):
            raise DataError(f"prompt[{j}] has unknown role {m['role']!r}")
    rm = row.get("reward_model")
    if not isinstance(rm, dict) or rm.get("ground_truth") is None:
        raise DataError("missing 'reward_model.ground_truth'")
    ability = row.get("ability")
    if ability is not None and not isinstance(ability, str):
        raise DataError("'ability' must be a string")
    extra = row.get("extra_info")
    if extra is not None and not isinstance(extra, dict):
        raise DataError("'extra_info' must be an object")
    try:
        resolve_domain(ds, ability)
    except KeyError as e:
        raise DataError(str(e.args[0])) from None


def load_rows(paths: Iterable[str | Path]) -> list[dict]:
    """Read and validate every row of every file; errors name the file and the 1-based row (in
    JSONL, the line). A file without rows is an error too (an empty training or validation file)."""
    rows: list[dict] = []
    for path in paths:
        file_rows = numbered_rows(path)
        if not file_rows:
            raise DataError(f"{path}: the file holds no rows")
        for i, row in file_rows:
            try:
                validate_row(row)
            except DataError as e:
                raise DataError(f"{path}: row {i}: {e}") from None
            row = dict(row)
            row["extra_info"] = dict(row.get("extra_info") or {})
            rows.append(row)
    return rows


def encode_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of the chat-templated prompt, ending with the assistant turn's opening."""
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    if not isinstance(ids, list):  # newer transformers return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def build_examples(rows: list[dict], tokenizer, max_prompt_length: int) -> tuple[list[Example], int]:
    """Tokenise rows; prompts over ``max_prompt_length`` tokens are dropped (returned count)."""
    out, dropped = [], 0
    for row in rows:
        ids = encode_prompt(tokenizer, row["prompt"])
        if len(ids) > max_prompt_length:
            dropped += 1
            continue
        out.append(Example(row, ids))
    return out, dropped


class AllPromptsRetired(DataError):
    """Prompt retirement has removed every prompt the sampler may draw from."""


class PromptSampler:
    """Endless, resumable stream of training examples.

    Without weights: reshuffled epochs over all examples. With ``weights`` (per data_source):
    each draw first picks a data_source by weight, then that source's next example. The whole
    position lives in :meth:`state_dict`, so a resumed run continues with the exact next prompt.

    Prompt retirement (ScaleRL's "no positive resampling"): :meth:`record` adds a prompt's scored
    responses to its running pass rate (share of scores >= 1); once it has ``retire_min_samples``
    responses and a pass rate >= ``retire_pass_rate`` (0 = off) it is retired for good. Epoch
    permutations do not change: draws skip retired prompts, and a data_source whose prompts are
    all retired drops out of the weighted pick. Without retirement the stream is exactly as before.
    """

    def __init__(self, examples: list[Example], *, seed: int, shuffle: bool = True,
                 weights: dict[str, float] | None = None, retire_pass_rate: float = 0.0,
                 retire_min_samples: int = 16):
        if not examples:
            raise DataError("no training examples")
        self.examples = examples
        self.seed, self.shuffle = seed, shuffle
        self.by_source: dict[str, list[int]] = {}
        for i, ex in enumerate(examples):
            self.by_source.setdefault(ex.data_source, []).append(i)
        self.set_weights(weights or {})
        self.epoch: dict[str, int] = {}
        self.pos: dict[str, int] = {}
        self.draws = 0
        self._orders: dict[str, tuple[int, list[int]]] = {}
        self._index = {id(ex): i for i, ex in enumerate(examples)}
        self.stats: dict[int, list[int]] = {}  # example index -> [scored responses, passes]
        self.retired: set[int] = set()
        self._retired_by_source: dict[str, int] = {}
        self.set_retirement(retire_pass_rate, retire_min_samples)

    def set_weights(self, weights: dict[str, float]) -> None:
        unknown = set(weights) - set(self.by_source)
        if unknown:
            raise DataError(f"data.domain_weights names unknown data_source(s) {sorted(unknown)}; "
                            f"known: {sorted(self.by_source)}")
        if weights and sum(weights.values()) <= 0:
            raise DataError("data.domain_weights must have a positive sum")
        self.weights = dict(weights)

    # ------------------------------------------------------------------ retirement

    def set_retirement(self, pass_rate: float, min_samples: int) -> None:
        """(Re)configure retirement (e.g. when a stage changes it); prompts whose recorded history
        already qualifies retire now. Retirement is permanent: raising the bar retires no fewer."""
        if not 0.0 <= pass_rate <= 1.0 or min_samples < 1:
            raise DataError("retirement needs 0 <= retire_pass_rate <= 1 and retire_min_samples >= 1")
        self.retire_pass_rate, self.retire_min_samples = float(pass_rate), int(min_samples)
        for i in sorted(self.stats):
            self._maybe_retire(i)

    def _key(self, example: Example | int) -> int:
        if isinstance(example, int):
            if not 0 <= example < len(self.examples):
                raise DataError(f"example index {example} out of range (0..{len(self.examples) - 1})")
            return example
        try:
            return self._index[id(example)]
        except KeyError:
            raise DataError("record() needs an Example drawn from this sampler (or its index)") from None

    def _maybe_retire(self, i: int) -> None:
        n, passes = self.stats[i]
        if (self.retire_pass_rate > 0 and i not in self.retired and n >= self.retire_min_samples
                and passes >= self.retire_pass_rate * n):
            self.retired.add(i)
            src = self.examples[i].data_source
            self._retired_by_source[src] = self._retired_by_source.get(src, 0) + 1

    def index(self, example: Example) -> int:
        """The position of an example drawn from this sampler (the same on every rank)."""
        return self._key(example)

    def record(self, example: Example | int, scores: list[float]) -> bool:
        """Add a prompt's scored responses (pass = score >= 1) to its running pass rate; pass only
        the scores that count (not infrastructure failures). Returns whether it is now retired."""
        i = self._key(example)
        st = self.stats.setdefault(i, [0, 0])
        st[0] += len(scores)
        st[1] += sum(1 for s in scores if s >= 1.0)
        self._maybe_retire(i)
        return i in self.retired

    def pass_rate(self, example: Example | int) -> float | None:
        st = self.stats.get(self._key(example))
        return st[1] / st[0] if st and st[0] else None

    def metrics(self) -> dict[str, float]:
        """Counts for logging: ``data/retired_prompts`` and ``data/active_prompts``."""
        return {"data/retired_prompts": len(self.retired), "data/active_prompts": len(self.examples) - len(self.retired)}

    def _exhausted(self, stream: str) -> bool:
        if stream == "*":
            return len(self.retired) >= len(self.examples)
        return self._retired_by_source.get(stream, 0) >= len(self.by_source[stream])

    # ------------------------------------------------------------------ drawing

    def _order(self, stream: str, epoch: int) -> list[int]:
        cached = self._orders.get(stream)
        if cached is not None and cached[0] == epoch:
            return cached[1]
        idx = list(range(len(self.examples))) if stream == "*" else list(self.by_source[stream])
        if self.shuffle:
            random.Random(f"{self.seed}:{stream}:{epoch}").shuffle(idx)
        self._orders[stream] = (epoch, idx)  # the current epoch's permutation, per stream
        return idx

    def _next_from(self, stream: str) -> Example:
        if self.retired and self._exhausted(stream):
            raise AllPromptsRetired(f"every prompt of {'the training set' if stream == '*' else stream!r} has retired "
                                    f"(pass rate >= data.retire_pass_rate={self.retire_pass_rate})")
        while True:
            epoch, pos = self.epoch.get(stream, 0), self.pos.get(stream, 0)
            order = self._order(stream, epoch)
            if pos >= len(order):
                epoch, pos = epoch + 1, 0
                order = self._order(stream, epoch)
            self.epoch[stream], self.pos[stream] = epoch, pos + 1
            if order[pos] not in self.retired:
                return self.examples[order[pos]]

    def next(self) -> Example:
        self.draws += 1
        if not self.weights:
            return self._next_from("*")
        rng = random.Random(f"{self.seed}:pick:{self.draws}")
        sources = sorted(s for s, w in self.weights.items() if w > 0 and not (self.retired and self._exhausted(s)))
        if not sources:
            raise AllPromptsRetired("every prompt of the weighted data_sources has retired "
                                    f"(pass rate >= data.retire_pass_rate={self.retire_pass_rate})")
        src = rng.choices(sources, weights=[self.weights[s] for s in sources])[0]
        return self._next_from(src)

    def take(self, k: int) -> list[Example]:
        return [self.next() for _ in range(k)]

    def state_dict(self) -> dict:
        state: dict = {"epoch": dict(self.epoch), "pos": dict(self.pos), "draws": self.draws}
        if self.stats or self.retired:  # JSON-safe: string keys, sorted lists
            state["retire_stats"] = {str(i): list(self.stats[i]) for i in sorted(self.stats)}
            state["retired"] = sorted(self.retired)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos, self.draws = dict(state["epoch"]), dict(state["pos"]), int(state["draws"])
        stats = {int(k): [int(v[0]), int(v[1])] for k, v in state.get("retire_stats", {}).items()}
        retired = [int(i) for i in state.get("retired", [])]
        bad = [i for i in (*stats, *retired) if not 0 <= i < len(self.examples)]
        if bad:
            raise DataError(f"sampler state names prompt {bad[0]}, but there are {len(self.examples)}: not this dataset")
        self.stats, self.retired, self._retired_by_source = stats, set(), {}
        for i in retired:
            self.retired.add(i)
            src = self.examples[i].data_source
            self._retired_by_source[src] = self._retired_by_source.get(src, 0) + 1
        for i in sorted(self.stats):  # a stricter setting than the checkpoint's retires more now
            self._maybe_retire(i)
