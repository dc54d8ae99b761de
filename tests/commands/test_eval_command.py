"""`prorl eval` end to end on the tiny warm start, and its pass@k JSON feeding `prorl plot --passk`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prorl.cli import main

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def test_eval_builtin_writes_passk_json_and_plot(tmp_path, capsys):
    out = tmp_path / "base.json"
    rc = main(["eval", "builtin:tiny", "builtin:add", "builtin:sort", "-k", "4", "--max-prompts", "12",
               "--max-new-tokens", "16", "--temperature", "0.6", "-o", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())["results"]
    assert set(res) == {"builtin/add", "builtin/sort", "all"}
    for r in res.values():
        assert r["samples_per_prompt"] == 4
        assert 0.0 <= r["pass@1"] <= r["pass@2"] <= r["pass@4"] <= 1.0
        assert "maj@4" in r and 0 <= r["truncation_rate"] <= 1
        assert r["infra_errors"] == 0 and r["num_scored"] == 4 * r["num_prompts"]
    assert res["builtin/add"]["num_prompts"] == 12
    # the warm start is right some of the time, not always: pass@1 strictly inside (0, 1)
    assert 0.0 < res["all"]["pass@1"] < 1.0
    assert "pass@4" in capsys.readouterr().out
    png = tmp_path / "passk.png"
    assert main(["plot", "--passk", str(out), str(out), "--labels", "a", "b", "-o", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.skipif(not (SHARED / "math" / "aime24.jsonl").exists(), reason="shared data absent")
def test_eval_reads_raw_benchmark_files():
    from prorl.commands.eval import dataset_rows

    rows = dataset_rows(str(SHARED / "math" / "aime24.jsonl"), 0)
    assert len(rows) == 30 and rows[0]["data_source"] == "aime24" and rows[0]["ability"] == "math"
    amc = dataset_rows(str(SHARED / "math" / "amc23.jsonl"), 0)
    assert amc[0]["reward_model"]["ground_truth"] == "27"  # 27.0 in the file


def test_eval_rejects_missing_dataset(tmp_path, capsys):
    assert main(["eval", "builtin:tiny", str(tmp_path / "nope.jsonl")]) == 2
    assert "not found" in capsys.readouterr().err


def test_maj_answers_use_the_verifiers_extractors():
    from prorl.trainer.evaluate import extract_answer

    assert extract_answer("so \\boxed{\\frac{1}{\\sqrt{2}}} done") == "\\frac{1}{\\sqrt{2}}"  # nested braces
    assert extract_answer("<think>\\boxed{1}</think> <answer> 4  5 </answer>") == "4 5"
    assert extract_answer("\\boxed{3} then \\boxed{4") is None  # an unclosed last box is no answer
    assert extract_answer("no answer here") is None
