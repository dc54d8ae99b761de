"""The experiment plan's scripts (``experiments/plan``): every experiment's ``--quick`` mode runs
end to end through real training, branch arms really continue the source run from its plateau
with the reset they name, and the report is generated from the JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

PLAN = Path(__file__).resolve().parents[2] / "experiments" / "plan"
sys.path.insert(0, str(PLAN))

import common  # noqa: E402


def test_plateau_step_finds_the_first_stall_and_falls_back_to_the_midpoint():
    rising = {0: 0.1, 10: 0.4, 20: 0.6, 30: 0.8, 40: 0.9, 50: 1.0}
    assert common.plateau_step(rising) == (30, False)  # never stalls: the midpoint, flagged
    stalls = {0: 0.1, 10: 0.5, 20: 0.6, 30: 0.61, 40: 0.59, 50: 0.6, 60: 0.7, 70: 0.7}
    # best 0.6 at step 20; steps 30, 40, 50 add < 0.02: the plateau is declared at 50
    assert common.plateau_step(stalls, patience=3, min_delta=0.02) == (50, True)
    assert common.plateau_step(stalls, patience=2, min_delta=0.02) == (40, True)


@pytest.mark.parametrize("legacy", [False, True])
def test_summaries_keep_the_two_lower_clip_fractions_apart(tmp_path, legacy):
    # a run logged before the rename had pg_clipfrac_lower = r < 1 - eps_low (A < 0) and no
    # pg_clipfrac_below_low_bound; now pg_clipfrac_lower is verl's dual-clip fraction
    rows = []
    for s in (1, 2):
        m = {"step": s, "critic/score/mean": 0.5, "actor/pg_clipfrac_lower": 0.04 if legacy else 0.001}
        if not legacy:
            m["actor/pg_clipfrac_below_low_bound"] = 0.04
        rows.append(json.dumps(m) + "\n")
    (tmp_path / "metrics.jsonl").write_text("".join(rows))
    summary = common.summarise_run(tmp_path)
    assert summary["clipfrac_below_low_bound_mean"] == pytest.approx(0.04)
    assert summary["clipfrac_dual_mean"] == (None if legacy else pytest.approx(0.001))
    assert "clipfrac_lower_mean" not in summary  # the ambiguous old key is no longer written
    from report import _value

    assert _value(summary, "clipfrac_below_low_bound_mean") == pytest.approx(0.04)
    # results.json files written before the rename: their clipfrac_lower_mean had this meaning
    assert _value({"clipfrac_lower_mean": 0.03}, "clipfrac_below_low_bound_mean") == 0.03


def test_slug_keeps_arm_directories_apart():
    names = ["0.2/0.4", "0.4/0.2", "(a) hard reset", "T=0.6", "fixed, every 30 steps"]
    assert len({common.slug(n) for n in names}) == len(names)
    assert all("/" not in common.slug(n) and " " not in common.slug(n) for n in names)


@pytest.mark.timeout(600)
def test_quick_modes_run_every_experiment_and_generate_the_report(tmp_path):
    import run_all
    from report import write_report

    out = tmp_path / "plan"
    assert run_all.main(run_all.EXPERIMENTS, ["--out", str(out), "--quick", "--jobs", "1"]) == 0
    results = {e.name: json.loads((out / e.name / "results.json").read_text()) for e in run_all.EXPERIMENTS}
    assert set(results) == {"temperature", "clip", "reset_plateau", "reset_timing", "long_response"}
    for res in results.values():
        for arm, runs in res["arms"].items():
            assert len(runs) == 1, arm
            run = runs[0]
            assert run["steps"] == 4 and run["eval"], arm
            assert all("pass@1" in t for t in run["eval"].values())

    # the temperature arms sample differently: not the same run three times
    temps = [r[0]["curves"]["critic/score/mean"] for r in results["temperature"]["arms"].values()]
    assert temps[0] != temps[2]
    # branch arms: the no-reset run's checkpoints up to the plateau, then the named reset one step later
    plateau = results["reset_plateau"]["arms"]["(b) no reset"][0]
    assert plateau["resets"] == []
    for arm, ref, opt in (("(a) hard reset", True, True), ("(c) optimizer only", False, True),
                          ("(d) reference only", True, False)):
        run = results["reset_plateau"]["arms"][arm][0]
        assert run["branched_at"] == plateau["plateau_step"]
        assert [e["step"] for e in run["resets"]] == [plateau["plateau_step"] + 1]
        events = [json.loads(x) for x in (common.run_dir(out, common_exp("reset_plateau"), arm, 0) / "run" /
                                          "events.jsonl").read_text().splitlines() if x.strip()]
        reset = [e for e in events if e["type"] == "reset"]
        assert len(reset) == 1 and reset[0]["reference"] is ref and reset[0]["optimizer"] is opt
        # the steps before the branch are the source run's, logged once
        src = {int(s): v for s, v in plateau["curves"]["critic/score/mean"].items()}
        mine = {int(s): v for s, v in run["curves"]["critic/score/mean"].items()}
        assert sorted(mine) == [1, 2, 3, 4]
        assert all(mine[s] == src[s] for s in src if s <= plateau["plateau_step"])
    # the reused arm is the plateau experiment's no-reset run
    timing = results["reset_timing"]["arms"]["no resets"][0]
    assert timing["same_as"] == ["reset_plateau", "(b) no reset"] and timing["curves"] == plateau["curves"]

    md = write_report(out, tmp_path / "RESULTS.md", tmp_path / "figures")
    assert "Not run yet" not in md
    for name in results:
        assert (tmp_path / "figures" / f"plan_{name}.png").stat().st_size > 10_000
    assert md.count("| arm | seeds |") == 5
    # a second run finds every summary and trains nothing (resume / skip)
    before = {p: p.stat().st_mtime for p in out.rglob("summary.json")}
    assert run_all.main(run_all.EXPERIMENTS, ["--out", str(out), "--quick", "--jobs", "1"]) == 0
    assert {p: p.stat().st_mtime for p in out.rglob("summary.json")} == before


def common_exp(name: str):
    import run_all

    return next(e for e in run_all.EXPERIMENTS if e.name == name)
