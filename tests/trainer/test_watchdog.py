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


def test_a_rollback_leaves_the_discarded_validations_out_of_the_noise():
    """The look-to-look noise the measured test judges by spans resets but not the validations of a
    policy a rollback threw away (after the restored checkpoint's step), nor a drop that fired."""
    c = {"prompts": 16, "samples": 4, "scored": 64}
    s = RunState()
    for step, v in [(2, 0.6), (4, 0.8), (6, 0.1), (8, 0.0)]:
        s.record_validation(step, {"a": v}, {"a": c})
    s.best_ckpt, s.best_ckpt_step = "ckpt", 4
    s.record_reset(9, "val_degradation")
    s.record_rollback()
    s.record_validation(10, {"a": 0.7}, {"a": c})
    assert s.val_steps == [2, 4, 6, 8, 10] and s.noise_excluded == [2, 3]
    assert s.noise_histories() == {"a": ([0.6, 0.8, 0.7], [64, 64, 64])}
    s.exclude_from_noise([4])
    assert s.noise_histories()["a"][0] == [0.6, 0.8]
    assert RunState.from_json(json.loads(json.dumps(s.to_json()))) == s


def test_sample_counts_round_trip_and_old_states_still_load():
    """Each validation's sample counts are kept beside its score, follow the trigger histories
    (from the restored checkpoint's after a rollback), survive trainer_state.json, and a state
    saved before counts were kept loads with unknown (None) counts for its old validations."""
    c = {"a": {"prompts": 16, "samples": 4, "scored": 64}}
    s = RunState()
    for step, v in [(2, 0.6), (4, 0.8), (6, 0.1)]:
        s.record_validation(step, {"a": v}, {"a": dict(c["a"], scored=60 + step)})
    assert s.best_counts == {"a": {"prompts": 16, "samples": 4, "scored": 64}}
    s.record_reset(7, "val_degradation")
    s.record_rollback()
    s.record_validation(8, {"a": 0.2}, c)
    assert s.trigger_histories()[0] == {"a": [0.8, 0.2]} and s.trigger_counts() == {"a": [64, 64]}
    assert RunState.from_json(json.loads(json.dumps(s.to_json()))) == s

    old = {k: v for k, v in RunState(val_history={"a": [0.5, 0.6]}, blended_val_history=[0.5, 0.6]).to_json().items()
           if k not in ("val_counts", "best_counts", "defended_counts", "entropy_history")}
    s = RunState.from_json(json.loads(json.dumps(old)))
    assert s.val_counts == {"a": [None, None]} and s.entropy_history == []
    s.record_validation(10, {"a": 0.7}, c)
    assert s.trigger_counts() == {"a": [None, None, 64]}
    s.record_validation(12, {"a": 0.7})  # counts not given: unknown, still aligned
    assert s.trigger_counts() == {"a": [None, None, 64, None]}


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


def test_an_automatic_reset_logs_its_trigger_statistic_and_threshold(tmp_path):
    """A forced degradation (30x the learning rate from step 5) through the real loop with the
    default significance test: the reset event names the trigger and carries the test's statistic,
    threshold and p-value; the run state keeps each validation's sample counts; the dashboard
    labels the reset with its trigger."""
    from prorl.plotting import build_run_figure, read_jsonl

    cfg = load_config(None, [
        "data.builtin_tasks=[sort]", "data.builtin_val_size=16", "validation.n=2", "validation.every=1",
        "actor.train_batch_size=4", "actor.ppo_mini_batch_size=4", "rollout.n=4", "trainer.tensorboard=false",
        "trainer.progress_bar=false", "trainer.threads=1", "trainer.max_minutes=0", "trainer.save_every=1",
        "trainer.total_steps=9", "trainer.keep_checkpoints=20", "reset.auto=true", "reset.triggers=[val_degradation]",
        "reset.min_steps_between_resets=100",
        "stages=[{name: normal, until_step: 4}, {name: broken, overrides: {actor.lr: 0.3}}]",
        f"trainer.run_dir={tmp_path}"])
    assert cfg.reset.val_test == "significance" and cfg.reset.false_alarm_rate == 0.01
    train(cfg, log=lambda *_: None)
    events = read_jsonl(tmp_path / "events.jsonl")
    resets = [e for e in events if e["type"] == "reset"]
    assert len(resets) == 1, events
    e = resets[0]
    assert e["trigger"] == "val_degradation" and e["cause"].startswith("val_degradation[builtin/sort]:"), e
    assert e["statistic"] > e["threshold"] > 2 and 0 <= e["p_value"] <= cfg.reset.false_alarm_rate, e
    state = RunState.from_json(json.loads((tmp_path / "checkpoints" / "step_9" / "trainer_state.json").read_text()))
    counts = state.val_counts["builtin/sort"]
    assert len(counts) == len(state.val_history["builtin/sort"]) == 10  # steps 0..9
    assert all(c == {"prompts": 16, "samples": 2, "scored": 32} for c in counts), counts
    fig = build_run_figure(read_jsonl(tmp_path / "metrics.jsonl"), events)
    labels = [t.get_text() for ax in fig.axes for t in ax.texts if t.get_gid() == "event-label:reset"]
    assert labels and all("val_degradation[builtin/sort]" in t and ">" in t for t in labels), labels
