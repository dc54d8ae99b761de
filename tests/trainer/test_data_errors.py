"""Bad data stops a run before any model is loaded, with the file and row named."""

from __future__ import annotations

import json

import pytest

from prorl.cli import main
from prorl.config import load_config
from prorl.data.dataset import DataError
from prorl.trainer.loop import train


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
