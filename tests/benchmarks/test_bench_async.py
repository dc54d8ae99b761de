"""benchmarks/bench_async.py: its --smoke mode runs the three arms (sync, async K=1, K=2) end to end;
the summary and the overlap arithmetic on fixed numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/bench_async.py", "bench_async")


@pytest.mark.slow
def test_smoke_runs_all_three_arms(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_async.py"), "--smoke", "--cache",
                        str(tmp_path / "cache"), "--workdir", str(tmp_path / "runs"), "--json", str(out)],
                       env=env, capture_output=True, text=True, timeout=900, cwd=str(REPO))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["shape"] == "longtail" and res["steps"] == 2
    for arm in ("sync", "async_k1", "async_k2"):
        rep, runs = res["report"][arm], res["raw"][arm]
        for key in ("s_per_step", "updates_per_s", "samples_per_s", "samples_per_s_total", "len_mean", "process_s"):
            assert rep[key] > 0, (arm, key, rep[key])
        assert len(runs) == 1 and len(runs[0]["steps"]) == 2
        assert sum(s["gen_tokens"] for s in runs[0]["steps"]) > 0  # something was generated and counted
        assert all(s["trained_samples"] == 2 * 4 for s in runs[0]["steps"])  # 2 prompts x 4 samples, every step
    assert res["raw"]["sync"][0]["trainer_threads"] == 2
    assert res["report"]["async_k1"]["async"]["async/staleness_max"] <= 1
    assert res["report"]["async_k2"]["async"]["async/staleness_max"] <= 2
    dist = res["length_distribution"]
    assert 0 < dist["mean"] <= 16 and dist["max"] <= 16 and dist["samples"] == 16
    assert res["report"]["arithmetic"]["ideal_overlap_dedicated"] >= 1.0


def test_summary_and_arithmetic(bench):
    def step(s, gen, upd, **kw):
        return {"step": 0, "step_s": s, "trained_samples": 128.0, "gen_groups": 8.0, "gen_tokens": 8 * 16 * 20.0,
                "len_mean": 20.0, "len_max": 128.0, "at_limit": 0.04, "gen": gen, "reward": 0.0, "wait_rollouts": 0.0,
                "old_log_prob": 0.0, "update_actor": upd, "weight_sync": 0.0, **kw}

    sync = {"process_s": 30.0, "steps": [step(20.0, 15.0, 4.0), step(10.0, 6.0, 4.0), step(12.0, 8.0, 4.0)]}
    out = bench.summarise([sync])
    assert out["steps"] == 2 and out["s_per_step"] == 11.0  # step 1 skipped
    assert out["samples_per_s"] == pytest.approx(128 / 11.0, rel=0.05)
    assert out["gen_tokens_per_s"] == pytest.approx(2 * 8 * 16 * 20.0 / 22.0)
    assert out["phases"]["gen"] == 7.0 and out["phases"]["other"] == 0.0
    a = {"async/staleness_mean": 1.0}
    asy = {"process_s": 30.0, "steps": [step(20.0, 9.0, 5.0, wait_rollouts=15.0, **a), step(6.0, 9.0, 5.0, wait_rollouts=1.0, **a),
                                       step(6.0, 9.0, 5.0, wait_rollouts=1.0, **a)]}
    ra = bench.summarise([asy])
    assert ra["phases"]["trainer_busy"] == 5.0 and ra["phases"]["other"] == 0.0
    ar = bench.overlap_arithmetic({"sync": out, "async_k1": ra})
    assert ar["sync_t_gen"] == 7.0 and ar["sync_t_train"] == 4.0
    assert ar["ideal_overlap_dedicated"] == pytest.approx(11.0 / 7.0)
    assert ar["sync_useful_decode_fraction"] == pytest.approx(20 / 128)
    assert ar["async_k1_predicted_s_per_step"] == 9.0
