"""The watchdog after a rollback: the restored checkpoint's score is the level to defend, a relapse
fires again (after the cooldown), and repeated failed recoveries stop the run with a clear event."""

from __future__ import annotations

import json

from prorl.config import load_config
from prorl.trainer.controller import train
from prorl.trainer.state import RunState


def test_trigger_histories_start_from_the_restored_scores_after_a_rollback():
    s = RunState()
    for step, v in [(2, 0.6), (4, 0.8), (6, 0.1), (8, 0.0)]:
        s.record_validation(step, {"a": v})
    s.record_reset(9, "val_degradation")
    s.record_rollback()
    assert s.defended == {"a": 0.8} and s.failed_recoveries == 0
    s.record_validation(10, {"a": 0.0})
    val, blended, n = s.trigger_histories()
    assert val == {"a": [0.8, 0.0]} and blended == [0.8, 0.0] and n == 2
    s.record_reset(11, "val_degradation")
    s.record_rollback()  # the previous rollback never recovered
    assert s.failed_recoveries == 1
    s.check_recovery({"a": 0.7}, margin=0.05)
    assert s.failed_recoveries == 1 and s.defended is not None, "0.7 is not within 0.05 of 0.8"
    s.check_recovery({"a": 0.76}, margin=0.05)
    assert s.failed_recoveries == 0 and s.defended is None
    assert RunState.from_json(json.loads(json.dumps(s.to_json()))) == s


def test_watchdog_keeps_acting_while_the_cause_persists_then_stops(tmp_path):
    """30x the learning rate from step 5 on collapses the policy after every rollback."""
    cfg = load_config(None, [
        "data.builtin_tasks=[sort]", "data.builtin_val_size=16", "validation.n=2", "validation.every=1",
        "actor.train_batch_size=4", "actor.ppo_mini_batch_size=4", "rollout.n=4", "trainer.tensorboard=false",
        "trainer.progress_bar=false", "trainer.threads=1", "trainer.max_minutes=0", "trainer.save_every=1",
        "trainer.total_steps=30", "trainer.keep_checkpoints=3", "reset.auto=true", "reset.triggers=[val_degradation]",
        "reset.rollback_to_best=true", "reset.val_patience=1", "reset.val_margin=0.2", "reset.min_steps_between_resets=2",
        "reset.max_failed_recoveries=2",
        "stages=[{name: normal, until_step: 4}, {name: broken, overrides: {actor.lr: 0.3}}]",
        f"trainer.run_dir={tmp_path}"])
    train(cfg, log=lambda *_: None)
    events = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    resets = [e for e in events if e["type"] == "reset"]
    assert len(resets) >= 3 and all("rolled back" in e["cause"] for e in resets), resets
    assert events[-1]["type"] == "stop" and "rollbacks in a row" in events[-1]["cause"]
    assert events[-1]["step"] < 30, "the run stops instead of training a dead policy to the end"
