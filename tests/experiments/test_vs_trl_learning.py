"""experiments/vs_trl_learning.py --quick end to end (slow, about a minute on 2 cores): prorl and TRL's
GRPOTrainer train side by side, both save a policy at each wall-clock mark and every policy is
evaluated. Needs the TRL venv (``benchmarks/.venv-trl``, which ``python benchmarks/vs_trl.py``
creates, or the directory named by $PRORL_TRL_VENV); skipped without it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TRL_VENV = Path(os.environ.get("PRORL_TRL_VENV", REPO / "benchmarks" / ".venv-trl"))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_run_trains_both_arms_and_evaluates_them(tmp_path, load_script):
    if not (TRL_VENV / "bin" / "python").exists():
        pytest.skip(f"no TRL venv at {TRL_VENV}: create it with `python benchmarks/vs_trl.py` or set PRORL_TRL_VENV")
    out = tmp_path / "out"
    load_script("experiments/vs_trl_learning.py", "vs_trl_learning").main(["--quick", "--out", str(out), "--trl-venv", str(TRL_VENV)])
    res = json.loads((out / "results.json").read_text())
    for arm in ("trl", "prorl"):
        marks = res["arms"][arm]["marks"]
        assert [m["minutes"] for m in marks] == [0.2, 0.4], marks
        assert all(m["steps"] > 0 for m in marks), marks
        assert marks[0]["steps"] <= marks[1]["steps"] and marks[0]["at_s"] >= 0.2 * 60, marks
        assert all((Path(m["path"]) / "model.safetensors").exists() for m in marks)
    rows = res["rows"]
    assert [(r["arm"], r["minutes"]) for r in rows] == [("warm start", 0.0), ("trl", 0.2), ("trl", 0.4),
                                                        ("prorl", 0.2), ("prorl", 0.4)]
    for r in rows:
        for col in ("chain5 pass@1", "chain5 pass@4", "chain6 pass@1", "chain6 pass@4"):
            assert 0.0 <= r[col] <= 1.0
    assert (out / "table.md").read_text().startswith("| arm | minutes | steps |")
    assert (out / "vs_trl_learning.png").stat().st_size > 0


def test_trl_rows_give_trl_the_mixture_prorl_samples(load_script):
    """TRL samples its dataset uniformly; prorl draws level i with probability w_i / sum(w). The boundary
    task's rows for TRL keep level counts proportional to the weights (as many as the scarcest level allows)."""
    m = load_script("experiments/vs_trl_learning.py", "vs_trl_learning")
    counts = {"chain3": 570, "chain7": 1140, "chain8": 699, "chain9": 699}
    rows = [{"data_source": f"builtin/{lvl}", "i": i} for lvl, c in counts.items() for i in range(c)]
    kept = m.trl_rows(rows, m.TASKS["boundary"])
    got = {lvl: sum(r["data_source"] == f"builtin/{lvl}" for r in kept) for lvl in counts}
    assert got == {"chain3": 350, "chain7": 699, "chain8": 699, "chain9": 699}
    assert kept[:3] == rows[:3]  # each level keeps its first rows, in order
    assert m.trl_rows(rows, m.TASKS["chains"]) is rows  # no weights: every row


def test_prorl_arm_config_matches_the_task(load_script, tmp_path):
    from prorl.config import load_config

    m = load_script("experiments/vs_trl_learning.py", "vs_trl_learning")
    cfg = load_config(None, m.prorl_overrides(m.Setting(task="boundary", seed=3), tmp_path / "run", tmp_path / "warm"))
    assert cfg.data.builtin_tasks == ["chain3", "chain7", "chain8", "chain9"] and cfg.trainer.seed == 3
    assert cfg.data.domain_weights == {"builtin/chain3": 0.5, "builtin/chain7": 1.0, "builtin/chain8": 1.0,
                                       "builtin/chain9": 1.0}
    assert cfg.rollout.max_response_length == 48 and cfg.model.path == str(tmp_path / "warm")
    cfg = load_config(None, m.prorl_overrides(m.Setting(), tmp_path / "run"))
    assert cfg.data.builtin_tasks == ["chain3", "chain4", "chain5", "chain6"] and not cfg.data.domain_weights
    assert cfg.rollout.max_response_length == 32
