"""Tests of verl-schema dataset loading and the resumable prompt sampler (prorl/data/dataset.py)."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from prorl.data.dataset import (
    DataError,
    PromptSampler,
    build_examples,
    encode_prompt,
    load_rows,
    read_rows,
    validate_row,
)
from sampler_examples import examples, ids

REPO = Path(__file__).resolve().parents[2]
MATH_TRAIN = REPO / ".." / "shared" / "data" / "math_train" / "simplelr_math_level3to5_train.parquet"
TINY = REPO / "prorl" / "assets" / "tiny-warmstart"


def row(i: int = 0, source: str = "builtin/add", content: str | None = None, **kw) -> dict:
    r = {
        "data_source": source,
        "prompt": [{"role": "user", "content": content if content is not None else f"What is {i}+1?"}],
        "ability": "builtin",
        "reward_model": {"ground_truth": str(i + 1), "style": "rule"},
        "extra_info": {"index": i},
    }
    r.update(kw)
    return r


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


# --------------------------------------------------------------------------- reading

def test_jsonl_and_parquet_read_the_same_rows(tmp_path):
    rows = [row(i) for i in range(5)]
    rows[2]["extra_info"] = None  # optional
    a = load_rows([write_jsonl(tmp_path / "d.jsonl", rows)])
    b = load_rows([write_parquet(tmp_path / "d.parquet", rows)])
    assert len(a) == len(b) == 5
    for x, y, r in zip(a, b, rows):
        assert x["prompt"] == y["prompt"] == r["prompt"]
        assert x["reward_model"]["ground_truth"] == y["reward_model"]["ground_truth"] == r["reward_model"]["ground_truth"]
        assert isinstance(x["extra_info"], dict) and isinstance(y["extra_info"], dict)
    assert a[2]["extra_info"] == {}  # None becomes an empty dict


def test_multiple_files_concatenate_in_order(tmp_path):
    f1 = write_jsonl(tmp_path / "a.jsonl", [row(0), row(1)])
    f2 = write_parquet(tmp_path / "b.parquet", [row(2)])
    assert [r["extra_info"]["index"] for r in load_rows([f1, f2])] == [0, 1, 2]


def test_read_rows_file_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_rows(tmp_path / "missing.jsonl")
    (tmp_path / "d.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="d.csv.*unsupported"):
        read_rows(tmp_path / "d.csv")
    (tmp_path / "bad.parquet").write_bytes(b"not a parquet file at all")
    with pytest.raises(DataError, match="bad.parquet.*parquet"):
        read_rows(tmp_path / "bad.parquet")


def test_blank_jsonl_lines_skipped(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(row(0)) + "\n\n   \n" + json.dumps(row(1)) + "\n")
    assert len(load_rows([p])) == 2


# --------------------------------------------------------------------------- malformed rows: file and 1-based row

BAD_ROWS = [
    ("bad json", '{"data_source": "builtin/add", "prompt": [', "invalid JSON"),
    ("missing data_source", {k: v for k, v in row().items() if k != "data_source"}, "data_source"),
    ("empty data_source", row(source=""), "data_source"),
    ("prompt not a list", row(prompt="What is 1+1?"), "prompt"),
    ("empty prompt", row(prompt=[]), "prompt"),
    ("message without content", row(prompt=[{"role": "user"}]), r"prompt\[0\].*content"),
    ("second message bad", row(prompt=[{"role": "system", "content": "x"}, {"role": "user", "content": 3}]), r"prompt\[1\]"),
    ("unknown role", row(prompt=[{"role": "robot", "content": "x"}]), "role"),
    ("missing reward_model", {k: v for k, v in row().items() if k != "reward_model"}, "ground_truth"),
    ("missing ground_truth", row(reward_model={"style": "rule"}), "ground_truth"),
    ("extra_info not a dict", row(extra_info=[1]), "extra_info"),
    ("ability not a string", row(ability=3), "ability"),
    ("row not an object", [1, 2], "object"),
    ("unknown data_source, no ability", row(source="my_private_set", ability=None), "my_private_set"),
]


@pytest.mark.parametrize("name, bad, match", BAD_ROWS, ids=[b[0] for b in BAD_ROWS])
@pytest.mark.parametrize("position", [1, 3])
def test_malformed_jsonl_row_named_with_file_and_row(tmp_path, name, bad, match, position):
    rows = [row(0), row(1), row(2)]
    rows.insert(position - 1, bad)
    p = write_jsonl(tmp_path / "train_set.jsonl", rows)
    with pytest.raises(DataError, match=match) as e:
        load_rows([p])
    assert f"train_set.jsonl: row {position}:" in str(e.value)


def test_malformed_parquet_rows_named_with_file_and_row(tmp_path):
    cases = [
        (row(source=None), "data_source"),  # null in a parquet column
        (row(reward_model={"ground_truth": None, "style": "rule"}), "ground_truth"),
        (row(source="my_private_set", ability=None), "my_private_set"),
        (row(prompt=[{"role": "user", "content": None}]), "content"),
    ]
    for k, (bad, match) in enumerate(cases):
        p = write_parquet(tmp_path / f"part{k}.parquet", [row(0), row(1), bad, row(3)])
        with pytest.raises(DataError, match=match) as e:
            load_rows([p])
        assert f"part{k}.parquet: row 3:" in str(e.value)


def test_error_names_the_second_file(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [row(0)] * 4)
    bad = write_jsonl(tmp_path / "other.jsonl", [row(0), row(source="")])
    with pytest.raises(DataError, match=r"other\.jsonl: row 2:"):
        load_rows([good, bad])


def test_data_source_resolved_through_ability():
    validate_row(row(source="my_private_set", ability="math"))  # unknown source, known ability: fine
    validate_row(row(source="simplelr_qwen", ability=None))


def test_broken_json_array_is_a_data_error(tmp_path):
    p = tmp_path / "d.json"
    p.write_text('[{"data_source": "builtin/add",')
    with pytest.raises(DataError, match="d.json"):
        read_rows(p)


# --------------------------------------------------------------------------- the real training file

def test_real_math_train_parquet_loads():
    if not MATH_TRAIN.exists():
        pytest.skip(f"{MATH_TRAIN} absent")
    rows = load_rows([MATH_TRAIN])
    assert len(rows) == 8523
    from prorl.verifiers.base import resolve_domain

    assert {resolve_domain(r["data_source"], r.get("ability")) for r in rows} == {"math"}
    assert all(r["prompt"] and r["reward_model"]["ground_truth"] is not None for r in rows)
    # the file as published has two rows with an empty ground truth (rows 5055 and 5159, 1-based):
    # they load, and can never be scored correct (dynamic sampling drops them as all-wrong groups)
    assert [i + 1 for i, r in enumerate(rows) if r["reward_model"]["ground_truth"] == ""] == [5055, 5159]


# --------------------------------------------------------------------------- build_examples

@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TINY))


def test_build_examples_drops_overlong_prompts(tokenizer):
    rows = [row(0, content="1+1"), row(1, content="What is " + "9 " * 40 + "?"), row(2, content="2+2")]
    lengths = [len(encode_prompt(tokenizer, r["prompt"])) for r in rows]
    assert lengths[1] > lengths[0] and lengths[1] > lengths[2]
    limit = max(lengths[0], lengths[2])
    examples, dropped = build_examples(rows, tokenizer, max_prompt_length=limit)  # boundary: == limit kept
    assert dropped == 1
    assert [e.row["extra_info"]["index"] for e in examples] == [0, 2]
    assert examples[0].prompt_ids == encode_prompt(tokenizer, rows[0]["prompt"])
    assert examples[0].data_source == "builtin/add"
    examples, dropped = build_examples(rows, tokenizer, max_prompt_length=limit - 1)
    assert dropped == 3 - sum(n <= limit - 1 for n in lengths) and len(examples) == 3 - dropped


def test_encode_prompt_ends_with_assistant_turn(tokenizer):
    ids = encode_prompt(tokenizer, [{"role": "user", "content": "What is 2+3?"}])
    assert all(isinstance(i, int) for i in ids)
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n")


# --------------------------------------------------------------------------- PromptSampler

def test_sampler_rejects_empty_and_unknown_weights():
    with pytest.raises(DataError):
        PromptSampler([], seed=0)
    ex = examples({"a": 3, "b": 2})
    with pytest.raises(DataError, match="zzz"):
        PromptSampler(ex, seed=0, weights={"a": 1.0, "zzz": 1.0})
    with pytest.raises(DataError, match="positive"):
        PromptSampler(ex, seed=0, weights={"a": 0.0})
    s = PromptSampler(ex, seed=0)
    with pytest.raises(DataError, match="zzz"):
        s.set_weights({"zzz": 1.0})


def test_epochs_cover_every_example_once():
    ex = examples({"a": 7, "b": 4})  # N = 11
    s = PromptSampler(ex, seed=3)
    drawn = ids(s.take(33))
    epochs = [drawn[i:i + 11] for i in (0, 11, 22)]
    for ep in epochs:
        assert sorted(ep) == list(range(11))
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]  # reshuffled each epoch
    assert ids(PromptSampler(ex, seed=3, shuffle=False).take(22)) == list(range(11)) * 2


def test_sampler_deterministic_by_seed():
    ex = examples({"a": 20, "b": 20})
    assert ids(PromptSampler(ex, seed=1).take(50)) == ids(PromptSampler(ex, seed=1).take(50))
    assert ids(PromptSampler(ex, seed=1).take(50)) != ids(PromptSampler(ex, seed=2).take(50))
    w = {"a": 1.0, "b": 2.0}
    assert ids(PromptSampler(ex, seed=1, weights=w).take(50)) == ids(PromptSampler(ex, seed=1, weights=w).take(50))


@pytest.mark.parametrize("weights", [None, {"a": 1.0, "b": 3.0}, {"a": 1.0, "b": 1.0, "c": 0.5}])
@pytest.mark.parametrize("k", [0, 1, 5, 13, 40])
def test_sampler_resumes_exactly(weights, k):
    ex = examples({"a": 5, "b": 8, "c": 3})
    original = PromptSampler(ex, seed=7, weights=weights)
    original.take(k)
    state = json.loads(json.dumps(original.state_dict()))  # what a checkpoint stores
    resumed = PromptSampler(ex, seed=7, weights=weights)
    resumed.load_state_dict(state)
    assert ids(resumed.take(30)) == ids(original.take(30))


def test_state_dict_is_a_snapshot():
    s = PromptSampler(examples({"a": 5}), seed=0)
    s.take(2)
    state = s.state_dict()
    s.take(3)
    fresh = PromptSampler(examples({"a": 5}), seed=0)
    fresh.load_state_dict(state)
    replay = PromptSampler(examples({"a": 5}), seed=0)
    replay.take(2)
    assert ids(fresh.take(10)) == ids(replay.take(10))


def test_weights_pick_sources_in_proportion():
    ex = examples({"a": 10, "b": 50, "c": 5})
    s = PromptSampler(ex, seed=0, weights={"a": 3.0, "b": 1.0})  # c unnamed: never drawn
    drawn = s.take(4000)
    c = Counter(e.data_source for e in drawn)
    assert c["c"] == 0
    assert c["a"] / 4000 == pytest.approx(0.75, abs=0.03)  # sd sqrt(.75 * .25 / 4000) = .007
    # within a source, epochs still cover each of its examples once
    a_ids = [e.row["i"] for e in drawn if e.data_source == "a"]
    for start in range(0, len(a_ids) - 10, 10):
        assert sorted(a_ids[start:start + 10]) == list(range(10))


def test_set_weights_changes_the_mix_midway():
    ex = examples({"a": 10, "b": 10})
    s = PromptSampler(ex, seed=0, weights={"a": 1.0})
    assert {e.data_source for e in s.take(20)} == {"a"}
    s.set_weights({"b": 1.0})
    assert {e.data_source for e in s.take(20)} == {"b"}


def test_sampler_draw_cost_does_not_grow_with_dataset():
    s = PromptSampler(examples({"a": 100_000}), seed=0)
    s.next()  # the first draw of an epoch may shuffle once
    t0 = time.perf_counter()
    s.take(30)
    assert time.perf_counter() - t0 < 0.6  # cached: ~1e-4 s; per-draw shuffle: ~2 s
