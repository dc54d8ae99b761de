"""``experiments/widen_boundary.py --quick`` (issue 22 section 2, chain part): each objective trains the
boundary recipe through the real controller, the final checkpoints and the warm start get pass@k on
chain9 and the easy levels, and the report is generated from the JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import widen_boundary as wb  # noqa: E402


def test_arms_are_valid_recipe_configs_with_the_objective_and_the_pinned_precision(tmp_path):
    from prorl.config import load_config

    for arm, extra in wb.ARMS.items():
        cfg = load_config(str(wb.bx.RECIPE), wb.overrides(arm, 1, tmp_path, tmp_path / "w", False))
        assert cfg.trainer.total_steps == 300 and len(cfg.stages) == 4 and cfg.trainer.seed == 1
        assert cfg.model.autocast == "none" and cfg.rollout.dtype == "float32"
        assert cfg.actor.max_tokens_per_micro_batch == 0 and cfg.trainer.max_minutes == 0
    assert load_config(str(wb.bx.RECIPE), wb.overrides("passk4", 0, tmp_path, tmp_path, False)).algo.adv_estimator == "passk"
    assert load_config(str(wb.bx.RECIPE), wb.overrides("clip_cov", 0, tmp_path, tmp_path, False)).algo.policy_loss == "clip_cov"


@pytest.mark.timeout(900)  # ~1-2 min on an idle 2-core machine (the warm start is built)
def test_quick_mode_writes_the_json_and_the_report(tmp_path):
    out, md, fig = tmp_path / "runs", tmp_path / "RESULTS.md", tmp_path / "fig"
    md.write_text("# Results\n\nsomething before\n")
    arms = ["none", "entropy_top0.2"]
    argv = ["--quick", "--out", str(out), "--jobs", "1", "--arms", *arms, "--report", "--results-md", str(md),
            "--figures", str(fig)]
    assert wb.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["quick"] and list(res["arms"]) == arms
    ws = res["warmstart"]["eval"]
    assert set(ws) == {"chain2", "chain3", "chain4", "chain9"}
    assert [f"pass@{k}" in ws["chain9"] for k in (1, 2, 4, 8)] == [True] * 4
    for arm, runs in res["arms"].items():
        (r,) = runs
        assert r["arm"] == arm and r["seed"] == 0 and r["steps"] == 6
        assert sorted(map(int, r["curves"]["actor/entropy"])) == list(range(1, 7))
        assert r["resets"] and r["resets"][0]["step"] == 4  # the recipe's reset on entering the quick hard stage
        assert 0 <= r["eval"]["chain9"]["pass@1"] <= r["eval"]["chain9"]["pass@8"] <= 1
    assert res["arms"]["entropy_top0.2"][0]["curves"]["actor/entropy_mask_fraction"]
    assert not res["arms"]["none"][0]["curves"]["actor/entropy_mask_fraction"]
    text = md.read_text()
    assert text.startswith("# Results") and text.count(wb.BEGIN) == 1 and "| warm start |" in text
    assert "| `entropy_top0.2` | 1 |" in text
    for name in ("widen_boundary_passk.png", "widen_boundary_curves.png"):
        assert (fig / name).stat().st_size > 10_000
