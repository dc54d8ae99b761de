"""``experiments/async_learning.py`` (issue 18): the arms are valid configs, the run summary reads the
clock and validations from metrics.jsonl, and the report (tables, RESULTS.md section) comes from the
JSON; ``--quick`` trains every arm for real (slow)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import async_learning as al  # noqa: E402


def test_arms_are_valid_configs():
    from prorl.config import load_config, validate

    for arm in al.ARMS:
        cfg = load_config(None, al.overrides(arm, 1, Path("/tmp/x"), minutes=3, val_n=8, val_every=10, quick=False),
                          preset=False)
        validate(cfg)
        assert cfg.data.builtin_tasks == [al.LEVEL] and cfg.trainer.max_minutes == 3 and cfg.trainer.seed == 1
        assert cfg.validation.n == 8 and cfg.validation.every == 10 and cfg.algo.dynamic_sampling
        assert cfg.rollout.mode == ("sync" if arm == "sync" else "async")
    assert load_config(None, al.ARMS["sync"], preset=False).trainer.threads == 2
    assert load_config(None, al.ARMS["async_k2"], preset=False).rollout.max_staleness == 2


def _fake_run(run_dir: Path, *, async_: bool) -> None:
    run_dir.mkdir(parents=True)
    key, pk = f"val-core/builtin/{al.LEVEL}/acc/mean@8", f"val-core/builtin/{al.LEVEL}/pass@8"
    lines = [{"step": 0, key: 0.05, pk: 0.3, "timing_s/validate": 5.0}]
    for s in range(1, 21):
        m = {"step": s, "timing_s/step": 9.0, "actor/entropy": 0.3 - 0.01 * s, "critic/score/mean": 0.02 * s,
             "dynamic_sampling/kept_groups": 16, "dynamic_sampling/generated_groups": 32, "response_length/mean": 20.0}
        if async_:
            m |= {"async/staleness_mean": 1.0, "async/staleness_max": 1.0, "async/stale_token_fraction": 0.9,
                  "async/dropped_stale": 0.0, "rollout_corr/abs_logp_diff_mean": 0.01, "rollout_corr/abs_logp_diff_max": 0.5,
                  "rollout_corr/ratio_min": 0.6, "rollout_corr/ratio_max": 1.5, "timing_s/wait_rollouts": 0.5}
        lines.append(m)
        if s % 10 == 0:
            lines.append({"step": s, key: 0.05 * s, pk: 0.5 + 0.01 * s, "timing_s/validate": 6.0})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))


def test_summary_clock_marks_and_report(tmp_path):
    out = tmp_path / "runs"
    for arm in al.ARMS:
        _fake_run(out / arm / "seed0" / "run", async_=arm != "sync")
        s = al.summarise_run(out / arm / "seed0" / "run", arm=arm, seed=0, val_n=8, trainer_threads=1)
        (out / arm / "seed0" / "summary.json").write_text(json.dumps(s | {"exit_code": 0}))
    s = json.loads((out / "sync" / "seed0" / "summary.json").read_text())
    assert s["steps"] == 20 and s["kept_groups"] == 320 and s["generated_groups"] == 640
    # the clock: 9 s per step; the step-10 validation (6 s) counts, the start one does not
    assert [round(v["minutes"] * 60, 6) for v in s["validations"]] == [0.0, 90.0, 186.0]
    assert s["train_minutes"] == pytest.approx((180 + 12) / 60)
    assert al.at_mark(s["validations"], 1.0)["step"] == 0 and al.at_mark(s["validations"], 2.0)["step"] == 10
    assert al.at_mark(s["validations"], 3.1)["step"] == 20
    assert s["corr_abs_mean"] is None and s["entropy_start"] == pytest.approx(0.27)
    a = json.loads((out / "async_k1" / "seed0" / "summary.json").read_text())
    assert a["corr_ratio_min"] == 0.6 and a["staleness_max"] == 1.0 and a["wait_s_mean"] == 0.5

    class Args:
        minutes, mark_every, val_n, val_every, quick = 3.0, 1.0, 8, 10, False

    res = al.gather(out, Args)
    assert len(res["runs"]) == 3
    md, rdir = tmp_path / "RESULTS.md", tmp_path / "async_results"
    md.write_text("# Results\n\nbefore\n")
    al.write_report(out, md, rdir)
    al.write_report(out, md, rdir)  # replaced, not appended twice
    text = md.read_text()
    assert text.startswith("# Results") and text.count(al.BEGIN) == 1 and text.count(al.END) == 1
    assert "# Asynchronous training (issue 18)" in text and "| `async_k2` | 1 |" in text
    assert "0.500 / 0.600" in text  # the 2-minute mark: the step-10 validation
    assert "curves" not in json.loads((rdir / "results.json").read_text())["runs"][0]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_mode_trains_every_arm(tmp_path):
    out, md, rdir = tmp_path / "runs", tmp_path / "RESULTS.md", tmp_path / "async_results"
    assert al.main(["--quick", "--out", str(out), "--report", "--results-md", str(md), "--results-dir", str(rdir)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["quick"] and {r["arm"] for r in res["runs"]} == set(al.ARMS)
    for r in res["runs"]:
        assert r["exit_code"] == 0 and r["steps"] >= 1 and r["validations"]
        if r["arm"] != "sync":
            assert r["staleness_max"] <= int(r["arm"][-1])
    assert al.BEGIN in md.read_text()
