"""``prorl data`` end to end through ``prorl.cli.main``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from prorl.cli import main
from prorl.data.dataset import read_rows
from prorl.data.io import write_rows
from prorl.verifiers.base import Status, verify_one

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _gold_verdicts(rows):
    return [
        verify_one(r["data_source"], r["ability"], f"<answer>\n{r['reward_model']['ground_truth']}\n</answer>",
                   r["reward_model"]["ground_truth"], r["extra_info"])
        for r in rows
    ]


def test_reasoning_gym_parquet(tmp_path, capsys):
    out = tmp_path / "rg"
    rc = main(["data", "reasoning-gym", "--tasks", "sudoku,countdown,graph_color", "--size", "12",
               "--val-size", "6", "--seed", "3", "-o", str(out)])
    assert rc == 0
    train, val = read_rows(out / "train.parquet"), read_rows(out / "val.parquet")
    assert len(train) == 12 and len(val) == 6
    assert "wrote 12 rows" in capsys.readouterr().out
    assert {r["data_source"] for r in train} == {"reasoning_gym/sudoku", "reasoning_gym/countdown",
                                               "reasoning_gym/graph_color"}
    assert not {r["prompt"][0]["content"] for r in train} & {r["prompt"][0]["content"] for r in val}
    for r, v in zip(train + val, _gold_verdicts(train + val)):
        if r["reward_model"]["ground_truth"] is None:  # graph_color: no single answer stored
            assert v.status == Status.WRONG
        else:
            assert v.status == Status.CORRECT, (r["data_source"], v)
    # same seed, same data
    out2 = tmp_path / "rg2"
    assert main(["data", "reasoning-gym", "--tasks", "sudoku,countdown,graph_color", "--size", "12",
                 "--val-size", "6", "--seed", "3", "-o", str(out2), "--format", "jsonl"]) == 0
    assert read_rows(out2 / "train.jsonl") == train


def test_hitori_jsonl(tmp_path):
    out = tmp_path / "h"
    assert main(["data", "hitori", "--size", "10", "--val-size", "4", "--seed", "1", "--min-size", "4",
                 "--max-size", "5", "-o", str(out), "--format", "jsonl"]) == 0
    train, val = read_rows(out / "train.jsonl"), read_rows(out / "val.jsonl")
    assert len(train) == 10 and len(val) == 4
    assert {len(r["extra_info"]["puzzle"]) for r in train + val} <= {4, 5}
    assert all(v.status == Status.CORRECT for v in _gold_verdicts(train + val))
    assert main(["data", "hitori", "--size", "3", "--val-size", "0", "-o", str(tmp_path / "h2")]) == 0
    assert len(read_rows(tmp_path / "h2" / "train.parquet")) == 3
    assert not (tmp_path / "h2" / "val.parquet").exists()


def test_errors_and_listing(tmp_path, capsys):
    assert main(["data", "reasoning-gym", "--tasks", "no_such_task", "-o", str(tmp_path / "x")]) == 2
    assert "unknown" in capsys.readouterr().err
    assert main(["data", "reasoning-gym", "--list"]) == 0
    names = capsys.readouterr().out.split()
    assert {"sudoku", "graph_color", "arc_1d", "countdown"} <= set(names)
    assert main(["data", "hitori", "--size", "2", "--min-size", "6", "--max-size", "4", "-o", str(tmp_path / "y")]) == 2


def test_write_rows_formats(tmp_path):
    rows = [{"a": 1, "b": {"c": [1, 2]}, "e": {}}, {"a": 2, "b": {"c": []}, "e": {}}]
    write_rows(rows, tmp_path / "deep" / "x.jsonl")
    assert read_rows(tmp_path / "deep" / "x.jsonl") == rows
    write_rows(rows, tmp_path / "x.parquet")
    back = read_rows(tmp_path / "x.parquet")
    assert [r["b"] for r in back] == [r["b"] for r in rows] and back[0]["e"] is None
    with pytest.raises(ValueError):
        write_rows([{"a": 1}, {"a": "text"}], tmp_path / "bad.parquet")
    assert not list(tmp_path.glob(".*tmp*"))


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.skipif(not _have("prorl.data.builtin_tasks"), reason="built-in tasks not written yet")
def test_builtin(tmp_path):
    path = tmp_path / "add.jsonl"
    assert main(["data", "builtin", "--task", "add", "--size", "5", "--seed", "0", "-o", str(path)]) == 0
    assert len(read_rows(path)) == 5


@pytest.mark.parametrize("cmd, module, src", [
    ("humaneval", "prorl.data.converters", "code/HumanEval.jsonl"),
    ("mbpp", "prorl.data.converters", "code/sanitized-mbpp.json"),
    ("ifeval", "prorl.verifiers.ifeval", "ifeval/input_data.jsonl"),
])
def test_converters(tmp_path, cmd, module, src):
    if not (SHARED / src).exists():
        pytest.skip(f"{src} not present")
    if not _have(module):
        pytest.skip(f"{module} not written yet")
    path = tmp_path / f"{cmd}.jsonl"
    try:
        rc = main(["data", cmd, "--input", str(SHARED / src), "-o", str(path)])
    except (ImportError, AttributeError) as e:  # the other engineer's function may not exist yet
        pytest.skip(f"converter not ready: {e}")
    assert rc == 0
    rows = read_rows(path)
    assert rows and all({"data_source", "prompt", "reward_model"} <= set(r) for r in rows)
