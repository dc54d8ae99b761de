"""The controller's public API: step / validate / reset / save / export_policy driven by hand, and
callbacks that watch and stop a run (what benchmarks and experiments use instead of patching)."""

from __future__ import annotations

import json
from pathlib import Path

from prorl.config import load_config
from prorl.trainer.controller import Trainer
from prorl.trainer.metrics import read_metrics

TINY = [
    "data.builtin_tasks=[sort]", "data.builtin_val_size=8", "validation.n=2", "validation.every=1",
    "actor.train_batch_size=4", "actor.ppo_mini_batch_size=4", "rollout.n=4", "trainer.tensorboard=false",
    "trainer.progress_bar=false", "trainer.threads=1", "trainer.max_minutes=0", "algo.kl_coef=0.1",
    "actor.lr=1e-3", "algo.dynamic_sampling=false", "trainer.total_steps=5", "trainer.save_every=0",
]


def _cfg(run_dir: Path, *extra: str):
    return load_config(None, TINY + [f"trainer.run_dir={run_dir}", *extra])


def test_callbacks_see_every_step_and_can_stop_the_run(tmp_path):
    class Watch:
        def __init__(self):
            self.steps, self.validations = [], []

        def on_step_end(self, step, metrics):
            self.steps.append((step, metrics["critic/score/mean"]))

        def on_validation(self, step, results):
            self.validations.append(step)

        def should_stop(self):
            return len(self.steps) >= 2

    watch = Watch()
    Trainer(_cfg(tmp_path), log=lambda *a: None, callbacks=[watch]).fit()
    assert [s for s, _ in watch.steps] == [1, 2]
    assert watch.validations == [0, 1, 2]
    assert [m["step"] for m in read_metrics(tmp_path) if "timing_s/step" in m] == [1, 2]
    assert json.loads((tmp_path / "final_validation.json").read_text())["builtin/sort"]["num_prompts"] == 8


def test_driven_by_hand_step_reset_validate_save_export(tmp_path):
    trainer = Trainer(_cfg(tmp_path / "run"), log=lambda *a: None)
    try:
        trainer.step()
        before = trainer.step()
        assert trainer.state.step == 2 and before["actor/kl_loss"] > 1e-6  # the policy has moved
        trainer.reset("manual: test")  # counted at the next step: KL to the fresh reference is 0 there
        after = trainer.step()
        assert after["actor/kl_loss"] < 1e-7
        results = trainer.validate()
        assert 0.0 <= results["builtin/sort"]["pass@1"] <= 1.0
        path = trainer.save()
        trainer.export_policy(tmp_path / "policy")
    finally:
        trainer.close()
    assert path.name == "step_3" and (path / "COMPLETE").exists()
    assert json.loads((path / "trainer_state.json").read_text())["resets"] == [{"step": 3, "cause": "manual: test"}]
    events = [json.loads(x) for x in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert [(e["step"], e["type"], e["cause"]) for e in events] == [(3, "reset", "manual: test")]
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "policy").num_parameters() > 0
    # a resumed trainer continues from the checkpoint, at step 4
    resumed = Trainer(_cfg(tmp_path / "run"), resume=True, log=lambda *a: None)
    try:
        assert resumed.state.step == 3 and resumed.step() is not None and resumed.state.step == 4
    finally:
        resumed.close()


def test_save_best_checkpoints_the_best_validation_and_names_it(tmp_path):
    """With validation.save_best the best checkpoint is the best validation's even when no
    save_every step falls on it; best_checkpoint.json names it (without, the best is only ever a
    validation that coincides with a save)."""
    from prorl.trainer.checkpoint import list_checkpoints

    trainer = Trainer(_cfg(tmp_path, "validation.save_best=true", "trainer.total_steps=6", "trainer.keep_checkpoints=1"),
                      log=lambda *a: None)
    trainer.fit()
    history, steps = trainer.state.blended_val_history, trainer.state.val_steps
    best_step = steps[history.index(max(history))]  # the first maximum: a tie does not replace the best
    assert best_step > 0, "this seed's policy should beat its start on sort at some validation"
    best = json.loads((tmp_path / "best_checkpoint.json").read_text())
    assert best["step"] == best_step and best["validation"] == max(history)
    assert Path(best["checkpoint"]).name == f"step_{best_step}" and Path(best["checkpoint"]).exists()
    assert [s for s, _ in list_checkpoints(tmp_path)] == sorted({best_step, 6})  # newest 1 + the best


def test_without_save_best_a_best_between_checkpoints_is_named_not_faked(tmp_path):
    """Checkpoints only at the end: unless the last validation is the best, no best checkpoint
    exists, so no best_checkpoint.json; the log says which validation was lost and how to keep it."""
    lines: list[str] = []
    trainer = Trainer(_cfg(tmp_path, "trainer.total_steps=6"), log=lambda *a: lines.append(" ".join(map(str, a))))
    trainer.fit()
    history, steps = trainer.state.blended_val_history, trainer.state.val_steps
    best_step = steps[history.index(max(history))]
    assert 0 < best_step < 6, "this seed's best validation should fall between the start and the end"
    assert not (tmp_path / "best_checkpoint.json").exists()
    assert any(f"at step {best_step} was not checkpointed" in ln for ln in lines), lines[-3:]


def test_best_checkpoint_json_gives_the_checkpoints_own_validation(tmp_path):
    """The best checkpoint is at step 2, a higher validation at step 3 fell between checkpoints: the
    file names step 2 with step 2's scores (not the later best's), and the log names step 3."""
    lines: list[str] = []
    trainer = Trainer(_cfg(tmp_path), log=lambda *a: lines.append(" ".join(map(str, a))))
    try:
        s, ckpt = trainer.state, tmp_path / "checkpoints" / "step_2"
        ckpt.mkdir(parents=True)
        for step, score in ((1, 0.5), (2, 0.6), (3, 0.7)):
            s.record_validation(step, {"builtin/sort": score})
        s.best_ckpt, s.best_ckpt_step = str(ckpt), 2
        trainer._write_best()
    finally:
        trainer.close()
    best = json.loads((tmp_path / "best_checkpoint.json").read_text())
    assert best["step"] == 2 and best["validation"] == 0.6 and best["scores"] == {"builtin/sort": 0.6}
    assert any("at step 3 was not checkpointed" in ln for ln in lines), lines[-3:]
