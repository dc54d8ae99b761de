"""The README's main job: `prorl train` on the built-in preset must raise held-out pass@1 by at
least 20 points on every built-in task within its 10-minute budget (slow: ~5 minutes on 2 cores)."""

from __future__ import annotations

import pytest

from prorl.config import load_config
from prorl.trainer.controller import train
from prorl.trainer.metrics import read_metrics


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_default_preset_learns(tmp_path):
    cfg = load_config(None, [f"trainer.run_dir={tmp_path}", "trainer.progress_bar=false"])
    assert cfg.trainer.max_minutes <= 10
    train(cfg, log=print)
    metrics = read_metrics(tmp_path)
    for task in cfg.data.builtin_tasks:
        key = f"val-core/builtin/{task}/acc/mean@{cfg.validation.n}"
        curve = [m[key] for m in metrics if key in m]
        assert len(curve) >= 3
        assert curve[-1] - curve[0] >= 0.20, f"{task}: {curve[0]:.3f} -> {curve[-1]:.3f}"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_default_preset_learns_in_async_mode(tmp_path):
    """``prorl train rollout.mode=async`` (one worker process, K = 1, the preset's 150 steps): the mean
    of the last three validations at least +15 points above step 0 on every built-in task. Async runs
    differ from run to run even on one seed, and one validation moves by several points, so the
    statistic is a tail mean. Measured (experiments/async_preset.py, 7 runs): add +0.254 +- 0.028
    (min +0.211), sort +0.501 (min +0.457); with the trainer's recompute as the old policy (the
    default before) add +0.189 +- 0.049, 2 of 8 runs under +0.15 (one CI run of 100 steps ended at
    +0.117 on its last validation)."""
    cfg = load_config(None, [f"trainer.run_dir={tmp_path}", "trainer.progress_bar=false", "rollout.mode=async"])
    assert cfg.trainer.total_steps == 150
    train(cfg, log=print)
    metrics = read_metrics(tmp_path)
    assert max(m["async/staleness_max"] for m in metrics if "async/staleness_max" in m) <= cfg.rollout.max_staleness
    for task in cfg.data.builtin_tasks:
        key = f"val-core/builtin/{task}/acc/mean@{cfg.validation.n}"
        curve = [m[key] for m in metrics if key in m]
        assert len(curve) >= 6, f"{task}: only {len(curve)} validations (the run stopped early)"
        tail = sum(curve[-3:]) / 3
        assert tail - curve[0] >= 0.15, f"{task}: {curve[0]:.3f} -> {tail:.3f} (mean of the last 3 of {curve})"
