"""``experiments/async_preset.py``: every arm is a valid preset config whose old policy is the one the
arm names, runs are found with their seeds and repeats, and the summary's tail mean is the mean of
the last three validations."""

from __future__ import annotations

import json
import sys
from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import async_preset as ap  # noqa: E402


def test_arms_are_valid_configs_with_the_old_policy_they_name():
    from prorl.config import load_config, old_logprobs_from_rollout, validate

    behaviour = {}
    for arm, overrides in ap.ARMS.items():
        cfg = load_config(None, [*overrides, "trainer.seed=3", f"trainer.total_steps={ap.STEPS}"])
        validate(cfg)
        assert cfg.rollout.mode == ("sync" if arm == "sync" else "async")
        behaviour[arm] = old_logprobs_from_rollout(cfg)
    assert behaviour == {"sync": False, "async_k0": False, "async_k1": False, "async_k1_tis": False,
                         "async_k1_behaviour": True}


def _write_run(path: Path, add: list[float], sort: list[float]) -> None:
    path.mkdir(parents=True)
    rows = [{"step": 10 * i, "val-core/builtin/add/acc/mean@4": a, "val-core/builtin/sort/acc/mean@4": s}
            for i, (a, s) in enumerate(zip(add, sort))]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_summary_gain_is_the_tail_mean_over_the_first_validation(tmp_path):
    n = ap.STEPS // 10 + 1
    add = [0.5] + [0.6] * (n - 4) + [0.7, 0.8, 0.9]
    _write_run(tmp_path / "async_k1" / "seed0_r2", add, [0.4] * n)
    _write_run(tmp_path / "async_k1" / "seed1", add[:5], [0.4] * 5)  # stopped early: not finished
    assert ap._seed_repeat("seed0_r2") == (0, 2) and ap._seed_repeat("seed11") == (11, 0)
    assert ap.finished(ap.curves(tmp_path / "async_k1" / "seed0_r2"))
    assert not ap.finished(ap.curves(tmp_path / "async_k1" / "seed1")) and not ap.finished(ap.curves(tmp_path / "none"))
    s = ap.summarise(ap.curves(tmp_path / "async_k1" / "seed0_r2"))
    assert abs(s["add"]["tail_mean"] - 0.8) < 1e-9 and abs(s["add"]["gain_tail"] - 0.3) < 1e-9
    assert abs(s["add"]["gain_last"] - 0.4) < 1e-9 and s["sort"]["gain_tail"] == 0.0


def test_stored_results_hold_what_the_readme_quotes():
    res = json.loads((EXPERIMENTS / "async_results" / "preset.json").read_text())
    gains = {arm: [r["add"]["gain_tail"] for r in res["runs"] if r["arm"] == arm] for arm in ap.ARMS}
    assert len(gains["async_k1_behaviour"]) == 7 and min(gains["async_k1_behaviour"]) > 0.2
    assert sum(g < 0.15 for g in gains["async_k1"]) == 2
    mean = {a: sum(g) / len(g) for a, g in gains.items()}
    assert mean["async_k1"] < mean["async_k1_tis"] < mean["async_k1_behaviour"] < mean["sync"]
