"""Bad data stops a run before any model is loaded, with the file and row named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prorl.cli import main
from prorl.config import load_config
from prorl.data.dataset import DataError, load_rows, read_rows
from prorl.trainer.controller import train


def test_malformed_row_stops_before_the_model_loads(tmp_path):
    bad = tmp_path / "train.jsonl"
    good = {"data_source": "builtin/add", "ability": "builtin", "prompt": [{"role": "user", "content": "1+1?"}],
            "reward_model": {"ground_truth": "2"}}
    bad.write_text(json.dumps(good) + "\n" + json.dumps({**good, "prompt": "not a list"}) + "\n")
    # the model path does not exist: if the data were read after the model, this would fail differently
    cfg = load_config(None, [f"data.train_files=[{bad}]", "model.path=/nonexistent/model", f"trainer.run_dir={tmp_path / 'run'}"])
    with pytest.raises(DataError, match=r"train\.jsonl: row 2: 'prompt' must be a non-empty list"):
        train(cfg, log=lambda *_: None)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_cli_reports_data_errors_with_exit_code_2(tmp_path, capsys):
    missing = tmp_path / "nope.parquet"
    assert main(["train", f"data.train_files=[{missing}]", f"trainer.run_dir={tmp_path / 'run'}"]) == 2
    assert "nope.parquet: file not found" in capsys.readouterr().err


# --------------------------------------------------------------------------- undecodable and empty files (issue 10 §4)

GOOD_ROW = {"data_source": "builtin/add", "ability": "builtin", "prompt": [{"role": "user", "content": "1+1?"}],
            "reward_model": {"ground_truth": "2"}}


def _non_utf8_file(path: Path, row: int) -> Path:
    """A JSONL file of three rows whose ``row``-th (1-based) holds a byte that is not UTF-8."""
    lines = [json.dumps(GOOD_ROW).encode()] * 3
    lines[row - 1] = json.dumps({**GOOD_ROW, "prompt": [{"role": "user", "content": "caf\u00e9"}]},
                                ensure_ascii=False).encode("latin-1")  # e-acute as the single byte 0xe9
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert b"\xe9" in path.read_bytes()
    return path


@pytest.mark.parametrize("row", [1, 2, 3])
def test_non_utf8_row_names_file_and_row(tmp_path, row):
    p = _non_utf8_file(tmp_path / "latin1.jsonl", row)
    with pytest.raises(DataError) as e:
        load_rows([p])
    msg = str(e.value)
    assert msg.startswith(f"{p}: row {row}: not UTF-8") and "\n" not in msg


def test_non_utf8_json_array_names_the_line(tmp_path):
    p = tmp_path / "rows.json"
    p.write_bytes(b'[\n{"data_source": "builtin/add",\n "x": "\xff"}]\n')
    with pytest.raises(DataError, match=r"rows\.json: line 3: not UTF-8"):
        read_rows(p)


def test_rows_are_split_at_newlines_only(tmp_path):
    """U+2028 and a byte-order mark are valid inside a UTF-8 JSONL file (json.dumps(ensure_ascii=False)
    writes U+2028 raw); they must neither split a row nor break the first one."""
    p = tmp_path / "u2028.jsonl"
    rows = [{**GOOD_ROW, "prompt": [{"role": "user", "content": "a\u2028b\u0085c\x1cd"}]}, GOOD_ROW]
    p.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows).encode())
    got = load_rows([p])
    assert [r["prompt"] for r in got] == [r["prompt"] for r in rows]


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_file_is_named(tmp_path, content):
    p = tmp_path / "empty.jsonl"
    p.write_bytes(content)
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(GOOD_ROW) + "\n")
    with pytest.raises(DataError, match=r"empty\.jsonl: the file holds no rows"):
        load_rows([good, p])


def _cli_error(capsys, args: list[str]) -> str:
    """Run ``prorl`` with ``args``; it must exit 2 with exactly one line on stderr, which is returned."""
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_cli_non_utf8_row_is_one_line(tmp_path, capsys):
    p = _non_utf8_file(tmp_path / "latin1.jsonl", 2)
    line = _cli_error(capsys, ["train", f"data.train_files=[{p}]", "model.path=/nonexistent/model",
                               f"trainer.run_dir={tmp_path / 'run'}"])
    assert line.startswith(f"prorl train: data error: {p}: row 2: not UTF-8")


def test_cli_empty_training_file_is_named_before_the_model_loads(tmp_path, capsys):
    p = tmp_path / "empty.jsonl"
    p.write_text("")
    # the model path does not exist: the file must be rejected before any model is looked at
    line = _cli_error(capsys, ["train", f"data.train_files=[{p}]", "model.path=/nonexistent/model",
                               f"trainer.run_dir={tmp_path / 'run'}"])
    assert line == f"prorl train: data error: {p}: the file holds no rows"


def test_cli_empty_validation_file_is_named(tmp_path, capsys):
    good, empty = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    good.write_text(json.dumps(GOOD_ROW) + "\n")
    empty.write_text("\n")
    line = _cli_error(capsys, ["train", f"data.train_files=[{good}]", f"data.val_files=[{empty}]",
                               "model.path=/nonexistent/model", f"trainer.run_dir={tmp_path / 'run'}"])
    assert line == f"prorl train: data error: {empty}: the file holds no rows"


def test_jsonl_rows_are_numbered_by_line_like_an_editor(tmp_path):
    """Blank lines count: a schema error and a decoding error on the same line give the same row."""
    bad_schema = json.dumps({**GOOD_ROW, "prompt": "not a list"}).encode()
    for bad, match in [(bad_schema, "'prompt' must be"), (b'{"x": "\xff"}', "not UTF-8"), (b"{oops", "invalid JSON")]:
        p = tmp_path / "gaps.jsonl"
        p.write_bytes(b"\n".join([json.dumps(GOOD_ROW).encode(), b"", b"   ", bad]) + b"\n")
        with pytest.raises(DataError, match=match) as e:
            load_rows([p])
        assert str(e.value).startswith(f"{p}: row 4: "), str(e.value)


# --------------------------------------------------------------------------- a failed start changes nothing (issue 10 §3)

def test_failed_resume_leaves_the_existing_run_untouched(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("original: config\n")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    bad = tmp_path / "train.jsonl"
    bad.write_text(json.dumps({**GOOD_ROW, "prompt": "not a list"}) + "\n")
    cfg = load_config(None, [f"data.train_files=[{bad}]", f"trainer.run_dir={run}"])
    with pytest.raises(DataError):
        train(cfg, resume=True, log=lambda *_: None)
    assert (run / "config.yaml").read_text() == "original: config\n"
    assert (run / "metrics.jsonl").read_text() == '{"step": 1}\n'
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "metrics.jsonl"]


def test_resume_without_a_checkpoint_says_so_first(tmp_path):
    lines: list[str] = []
    cfg = load_config(None, ["data.builtin_tasks=[sort]", "data.builtin_val_size=4", "validation.every=0",
                             "actor.train_batch_size=2", "actor.ppo_mini_batch_size=2", "rollout.n=2",
                             "trainer.total_steps=1", "trainer.tensorboard=false", "trainer.progress_bar=false",
                             "trainer.threads=1", f"trainer.run_dir={tmp_path}"])
    train(cfg, resume=True, log=lines.append)
    assert lines[0].startswith("--resume: no complete checkpoint in") and "starting from scratch" in lines[0]
