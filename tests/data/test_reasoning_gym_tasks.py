"""Reasoning Gym rows: schema, seeding, split separation, and the lossless entry codec."""

from __future__ import annotations

import json

import pytest

from prorl.data import reasoning_gym_tasks as rg
from prorl.verifiers import reasoning_gym_entry as rge


def test_codec_restores_python_types():
    value = {
        "edges": [(0, 1), (2, 3)],
        "colouring": {0: 1, 1: 2},
        "grid": ((1, 2), (3, 4)),
        "tags": {"a", "b"},
        "nested": {"__tuple__": "a key that looks like a tag"},
        "plain": [1, 2.5, "x", None, True],
    }
    text = rge.dumps_entry(value)
    json.loads(text)  # JSON-serialisable
    back = rge.loads_entry(text)
    assert back == value
    assert isinstance(back["edges"][0], tuple) and isinstance(back["grid"], tuple)
    assert list(back["colouring"]) == [0, 1] and isinstance(back["tags"], set)
    assert rge.loads_entry(json.dumps(json.loads(text))) == value  # survives a second JSON pass


def test_rows_schema_and_reproducibility():
    rows = rg.generate_rows(["graph_color", "sudoku", "countdown", "arc_1d"], 10, seed=0, split="train")
    assert len(rows) == 10
    assert [r["extra_info"]["task"] for r in rows[:4]] == ["graph_color", "sudoku", "countdown", "arc_1d"]
    counts = {t: sum(r["extra_info"]["task"] == t for r in rows) for t in ("graph_color", "sudoku", "countdown", "arc_1d")}
    assert counts == {"graph_color": 3, "sudoku": 3, "countdown": 2, "arc_1d": 2}
    for r in rows:
        assert set(r) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
        assert r["data_source"] == f"reasoning_gym/{r['extra_info']['task']}" and r["ability"] == "logic"
        assert r["prompt"][0]["role"] == "user" and "<answer></answer>" in r["prompt"][0]["content"]
        entry = rge.loads_entry(r["extra_info"]["entry"])
        assert r["prompt"][0]["content"].startswith(entry["question"].rstrip())
        assert r["reward_model"] == {"ground_truth": entry["answer"], "style": "rule"}
        json.dumps(r)
    assert rows == rg.generate_rows(["graph_color", "sudoku", "countdown", "arc_1d"], 10, seed=0, split="train")
    assert rows != rg.generate_rows(["graph_color", "sudoku", "countdown", "arc_1d"], 10, seed=1, split="train")


def test_entries_are_the_library_entries():
    import reasoning_gym

    row = rg.generate_rows(["countdown"], 3, seed=5, split="train")[2]
    info = row["extra_info"]
    ds = reasoning_gym.create_dataset("countdown", seed=info["seed"], size=info["index"] + 1)
    assert rge.loads_entry(info["entry"]) == ds[info["index"]]


def test_train_and_val_do_not_overlap():
    train, val = rg.generate_splits(["basic_arithmetic", "word_sorting"], 60, 20, seed=0)
    assert len(train) == 60 and len(val) == 20
    tp = {r["prompt"][0]["content"] for r in train}
    vp = {r["prompt"][0]["content"] for r in val}
    assert len(tp) == 60 and len(vp) == 20 and not tp & vp
    assert {r["extra_info"]["split"] for r in val} == {"val"}
    assert {r["extra_info"]["seed"] for r in train}.isdisjoint({r["extra_info"]["seed"] for r in val})


def test_exclude_forces_new_questions():
    first = rg.generate_rows(["coin_flip"], 4, seed=0, split="train")
    again = rg.generate_rows(["coin_flip"], 4, seed=0, split="train",
                             exclude=[r["prompt"][0]["content"] for r in first[:2]])
    assert again[:2] == first[2:]  # the excluded ones are skipped, the next draws fill in


def test_small_question_space_and_unknown_task_raise():
    with pytest.raises(ValueError, match="unknown"):
        rg.generate_rows(["no_such_task"], 2, seed=0, split="train")
    with pytest.raises(ValueError, match="distinct"):  # 1..2-digit gcd space is far smaller than this
        rg.generate_rows(["gcd"], 200, seed=0, split="train",
                         config={"gcd": {"min_numbers": 2, "max_numbers": 2, "min_value": 1, "max_value": 3}})


def test_config_overrides_reach_dataset_and_verifier():
    from prorl.verifiers.base import Status, verify_one

    cfg = {"basic_arithmetic": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}}
    rows = rg.generate_rows(["basic_arithmetic"], 3, seed=0, split="train", config=cfg)
    for r in rows:
        assert json.loads(r["extra_info"]["config"]) == cfg["basic_arithmetic"]
        q = rge.loads_entry(r["extra_info"]["entry"])["metadata"]["expression"]
        assert sum(ch.isdigit() for ch in q) == 2
        gt = r["reward_model"]["ground_truth"]
        assert verify_one(r["data_source"], "logic", f"<answer>{gt}</answer>", gt, r["extra_info"]).status == Status.CORRECT


def test_hitori_inside_a_mixture():
    rows = rg.generate_rows(["hitori", "sudoku"], 4, seed=0, split="train")
    assert [r["data_source"] for r in rows] == ["reasoning_gym/hitori", "reasoning_gym/sudoku"] * 2
