"""``experiments/widen.py --quick`` (issue 22 section 2): every arm trains through the real
controller, the final checkpoints and the warm start get pass@k for every k, and the report
(table, section-3 verdict, figures, RESULTS.md section) is generated from the JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import widen  # noqa: E402


def test_arms_are_valid_configs_of_the_preset():
    from prorl.config import load_config

    for arm in widen.ARMS:
        cfg = load_config(None, widen.overrides(arm, 0, Path("/tmp/x"), False, 150))
        assert cfg.trainer.total_steps == 150 and cfg.trainer.threads == 1
        assert cfg.data.builtin_tasks == ["add", "sort"] and cfg.rollout.n == 8
    w = load_config(None, widen.ARMS["w_reinforce"])
    assert w.algo.adv_estimator == "w_reinforce" and w.algo.positive_weight == 0.1 and not w.algo.dynamic_sampling


@pytest.mark.timeout(600)  # ~13 s on an idle 2-core machine
def test_quick_mode_writes_the_json_and_the_report(tmp_path):
    out, md, fig = tmp_path / "runs", tmp_path / "RESULTS.md", tmp_path / "fig"
    md.write_text("# Results\n\nsomething before\n")
    arms = ["none", "w_reinforce", "passk4", "kl_cov_r0.02"]
    argv = ["--quick", "--out", str(out), "--jobs", "1", "--arms", *arms, "--report", "--results-md", str(md),
            "--figures", str(fig)]
    assert widen.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["quick"] and res["steps"] == 3 and list(res["arms"]) == arms
    k = widen.QUICK_EVAL["samples"]
    for t in ("add", "sort"):
        ws = res["warmstart"]["eval"][t]
        assert all(0 <= ws[f"pass@{i}"] <= 1 for i in range(1, k + 1))
        assert all(ws[f"pass@{i}"] <= ws[f"pass@{i + 1}"] + 1e-12 for i in range(1, k))  # pass@k is monotone
    for arm, runs in res["arms"].items():
        assert len(runs) == 1
        r = runs[0]
        assert r["arm"] == arm and r["seed"] == 0 and r["steps"] == 3
        assert set(r["eval"]) == {"add", "sort"} and all(f"pass@{k}" in e for e in r["eval"].values())
        assert sorted(map(int, r["curves"]["actor/entropy"])) == [1, 2, 3]
        assert len(r["curves"]["response_length/mean"]) == 3 and r["sec_per_step"] > 0
    assert res["arms"]["kl_cov_r0.02"][0]["kl_cov_fraction_mean"] > 0
    assert res["arms"]["none"][0]["kl_cov_fraction_mean"] is None
    # the report: the table, the section-3 verdicts, the figures, the section replaced in RESULTS.md
    text = md.read_text()
    assert text.startswith("# Results") and text.count(widen.BEGIN) == 1
    assert "| warm start |" in text and "| `passk4` | 1 |" in text and "Issue 22 section 3" in text
    assert text.count(" (1 seeds): ") == len(arms)
    for name in ("widen_passk.png", "widen_curves.png"):
        assert (fig / name).stat().st_size > 10_000
    assert json.loads((fig / "results.json").read_text()) == res and (fig / "table.md").exists()
    # a second run trains nothing and the report replaces its own section
    before = {p: p.stat().st_mtime for p in out.rglob("summary.json")}
    assert widen.main(argv) == 0
    assert {p: p.stat().st_mtime for p in out.rglob("summary.json")} == before
    assert md.read_text().count(widen.BEGIN) == 1
