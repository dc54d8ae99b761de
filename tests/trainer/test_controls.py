"""Prolonged-training controls through the real loop: resets, stages, resume in the middle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prorl.config import load_config
from prorl.trainer.controller import train
from prorl.trainer.setup import RESET_REQUEST
from prorl.trainer.metrics import read_metrics

TINY = [
    "data.builtin_tasks=[sort]", "data.builtin_val_size=8", "validation.n=2", "validation.every=2",
    "actor.train_batch_size=4", "actor.ppo_mini_batch_size=4", "rollout.n=4", "trainer.tensorboard=false",
    "trainer.progress_bar=false", "trainer.threads=1", "trainer.max_minutes=0", "algo.kl_coef=0.1",
    "actor.lr=1e-3", "trainer.keep_checkpoints=10",
]


def _train(run_dir: Path, *extra: str, resume: bool = False) -> list[dict]:
    cfg = load_config(None, TINY + [f"trainer.run_dir={run_dir}", *extra])
    train(cfg, resume=resume, log=lambda *_: None)
    return read_metrics(run_dir)


def _events(run_dir: Path) -> list[dict]:
    p = run_dir / "events.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def _by_step(metrics: list[dict], key: str) -> dict[int, float]:
    return {m["step"]: m[key] for m in metrics if key in m}


def test_scheduled_reset_zeroes_kl_and_refreshes_optimizer(tmp_path):
    m = _train(tmp_path, "reset.steps=[3]", "trainer.total_steps=4", "trainer.save_every=1")
    kl = _by_step(m, "actor/kl_loss")
    assert kl[2] > 0, "KL to the initial reference should be positive after two updates"
    assert kl[3] == pytest.approx(0.0, abs=1e-7), "right after a reset the policy equals the reference"
    ev = _events(tmp_path)
    assert [(e["step"], e["type"]) for e in ev] == [(3, "reset")] and "scheduled" in ev[0]["cause"]
    # one update per step: a fresh optimizer at step 3 has taken 2 steps by step 4, not 4
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(tmp_path / "checkpoints" / "step_4" / "optimizer", tmp_path / "optimizer.pt")
    opt = torch.load(tmp_path / "optimizer.pt", weights_only=False)["optim"]
    assert {int(s["step"]) for s in opt["state"].values()} == {2}
    state = json.loads((tmp_path / "checkpoints" / "step_4" / "trainer_state.json").read_text())
    assert state["resets"][0]["step"] == 3
    assert (tmp_path / "checkpoints" / "step_4" / "reference" / "model.safetensors").exists()


def test_resume_after_reset_keeps_the_reset_reference(tmp_path):
    # validate every step so that stopping at step 3 changes nothing but the stop itself
    args = ("reset.steps=[2]", "trainer.save_every=1", "validation.every=1")
    full = _train(tmp_path / "full", *args, "trainer.total_steps=4")
    _train(tmp_path / "part", *args, "trainer.total_steps=3")
    resumed = _train(tmp_path / "part", *args, "trainer.total_steps=4", resume=True)
    a, b = _by_step(full, "actor/kl_loss"), _by_step(resumed, "actor/kl_loss")
    assert a[4] == pytest.approx(b[4], rel=1e-5), "the resumed run must use the reset reference"
    assert [e["step"] for e in _events(tmp_path / "part")] == [2]


def test_manual_reset_request_file(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / RESET_REQUEST).write_text("operator saw a KL spike\n")
    _train(tmp_path, "trainer.total_steps=1", "trainer.save_every=0")
    ev = _events(tmp_path)
    assert ev and ev[0]["type"] == "reset" and "operator saw a KL spike" in ev[0]["cause"]
    assert not (tmp_path / RESET_REQUEST).exists()


STAGES = ["stages=[{name: a, until_step: 2}, {name: b, overrides: {rollout.max_response_length: 12, actor.lr: 1.0e-5}}]"]


def test_stage_transition_and_resume_mid_stage(tmp_path):
    full = _train(tmp_path / "full", *STAGES, "trainer.total_steps=5", "trainer.save_every=1")
    lr = _by_step(full, "actor/lr")
    assert lr[1] == lr[2] == pytest.approx(1e-3) and lr[3] == lr[5] == pytest.approx(1e-5)
    assert all(v <= 12 for s, v in _by_step(full, "response_length/max").items() if s >= 3)
    assert _by_step(full, "training/stage") == {1: 0, 2: 0, 3: 1, 4: 1, 5: 1}
    assert _by_step(full, "actor/pg_loss").keys() >= {3, 4, 5}, "stage b must still train"
    assert [(e["step"], e["type"]) for e in _events(tmp_path / "full")] == [(3, "stage")]

    _train(tmp_path / "part", *STAGES, "trainer.total_steps=4", "trainer.save_every=1")
    resumed = _train(tmp_path / "part", *STAGES, "trainer.total_steps=5", "trainer.save_every=1", resume=True)
    assert _by_step(resumed, "training/stage")[5] == 1
    assert _by_step(resumed, "critic/score/mean")[5] == pytest.approx(_by_step(full, "critic/score/mean")[5])
    assert [e["step"] for e in _events(tmp_path / "part")] == [3], "stage entry must not be repeated on resume"


def test_plot_from_a_real_run(tmp_path):
    from prorl.plotting import plot_run

    _train(tmp_path, "reset.steps=[2]", "trainer.total_steps=3", "trainer.save_every=0")
    png = plot_run(tmp_path)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_reset_can_roll_back_to_the_best_checkpoint(tmp_path):
    m = _train(tmp_path, "reset.steps=[4]", "reset.rollback_to_best=true", "validation.every=1",
               "trainer.save_every=1", "trainer.total_steps=4", "trainer.keep_checkpoints=1")
    (ev,) = _events(tmp_path)
    state = json.loads((tmp_path / "checkpoints" / "step_4" / "trainer_state.json").read_text())
    assert f"rolled back to best checkpoint, step {state['resets'][0]['cause'].split('step ')[-1]}" in ev["cause"]
    best = int(ev["cause"].rsplit("step ", 1)[1].rstrip(")"))
    val = _by_step(m, "val-core/builtin/sort/acc/mean@2")
    assert val[best] == max(v for s, v in val.items() if s < 4)
    assert (tmp_path / "checkpoints" / f"step_{best}").exists(), "the best checkpoint is kept despite keep_checkpoints=1"
    assert _by_step(m, "actor/kl_loss")[4] == pytest.approx(0.0, abs=1e-7)


def test_masked_truncated_responses_do_not_train(tmp_path):
    # 6 tokens cannot hold a sorted list in \boxed{}: every response is truncated
    m = _train(tmp_path, "rollout.max_response_length=6", "reward.mask_truncated=true", "algo.dynamic_sampling=false",
               "reward.truncation_penalty=0.5", "trainer.total_steps=1", "trainer.save_every=0", "validation.every=0")
    (step,) = [x for x in m if x["step"] == 1]
    assert step["response_length/clip_ratio"] == 1.0
    assert step["reward/truncation_penalty/mean"] == pytest.approx(-0.5)
    assert "actor/pg_loss" not in step, "a fully masked batch must not produce a policy-gradient update"


def test_every_rollout_samples_from_the_policy_the_actor_then_updates(tmp_path, monkeypatch):
    """The engine holds its own copy of the weights: after each update and after a rollback to the
    best checkpoint it must sample from exactly the actor's current policy."""
    import prorl.trainer.rollouts as loop  # where the synchronous source builds its engine
    from prorl.trainer.actor import Actor

    def checksum(params) -> float:
        return float(sum(p.detach().double().sum() for p in params))

    generated, updated = [], []
    real_make_engine, real_update = loop.make_engine, Actor.update

    def spy_engine(*a, **k):
        engine = real_make_engine(*a, **k)
        real_generate = engine.generate

        def generate(*ga, **gk):
            if gk["n"] == 4:  # training rollouts (validation samples 2)
                generated.append(checksum(engine.model.parameters()))
            return real_generate(*ga, **gk)

        engine.generate = generate
        return engine

    def spy_update(self, *a, **k):
        updated.append(checksum(self.model.parameters()))
        return real_update(self, *a, **k)

    monkeypatch.setattr(loop, "make_engine", spy_engine)
    monkeypatch.setattr(Actor, "update", spy_update)
    # step 3 runs at 300x the learning rate (validation collapses), so step 4 rolls back to step 2 or earlier
    # fp32 engine (model.autocast=none: rollout.dtype auto = model.dtype): its weights equal the actor's bit for bit
    _train(tmp_path, "model.autocast=none", "reset.steps=[4]", "reset.rollback_to_best=true", "validation.every=1",
           "trainer.save_every=1",
           "trainer.total_steps=5", "algo.dynamic_sampling=false",
           "stages=[{name: a, until_step: 2}, {name: broken, until_step: 3, overrides: {actor.lr: 0.3}}, {name: c}]")
    (reset,) = [e for e in _events(tmp_path) if e["type"] == "reset"]
    assert int(reset["cause"].rsplit("step ", 1)[1].rstrip(")")) <= 2, reset
    assert len(generated) == len(updated) == 5
    assert generated == pytest.approx(updated, rel=0, abs=1e-9), "a rollout came from stale engine weights"


def test_trigger_histories_hold_one_entry_per_step(tmp_path):
    """KL and entropy are recorded at every step (NaN where a step has none: here no KL term), so
    the reset triggers' window since the last reset, counted in steps, stays inside it."""
    import json
    import math

    _train(tmp_path, "algo.kl_coef=0", "trainer.total_steps=3", "validation.every=0", "algo.dynamic_sampling=false")
    state = json.loads((sorted((tmp_path / "checkpoints").glob("step_*"))[-1] / "trainer_state.json").read_text())
    assert len(state["kl_history"]) == len(state["entropy_history"]) == 3
    assert all(math.isnan(v) for v in state["kl_history"]) and all(math.isfinite(v) for v in state["entropy_history"])
