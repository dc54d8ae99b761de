"""End to end: a short run on a built-in task must raise held-out accuracy, and a run killed
after a checkpoint must resume to exactly the same result as an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from prorl.config import load_config
from prorl.trainer.controller import train
from prorl.trainer.metrics import read_metrics

SORT_RUN = [
    "data.builtin_tasks=[sort]", "data.builtin_val_size=32", "validation.every=12", "validation.n=4",
    "actor.train_batch_size=8", "actor.ppo_mini_batch_size=4", "rollout.n=8", "trainer.save_every=0",
    "trainer.tensorboard=false", "trainer.progress_bar=false", "trainer.threads=2", "trainer.max_minutes=0",
]


def _val(metrics: list[dict], step: int, source: str = "builtin/sort") -> float:
    return next(m[f"val-core/{source}/acc/mean@4"] for m in metrics if m["step"] == step and f"val-core/{source}/acc/mean@4" in m)


def test_short_run_raises_heldout_accuracy(tmp_path):
    """12 RL steps on sorting from the warm start. A flipped loss sign drives accuracy down instead."""
    cfg = load_config(None, SORT_RUN + [f"trainer.run_dir={tmp_path}", "trainer.total_steps=12"])
    train(cfg, log=lambda *_: None)
    metrics = read_metrics(tmp_path)
    before, after = _val(metrics, 0), _val(metrics, 12)
    assert after >= before + 0.15, f"held-out accuracy {before:.3f} -> {after:.3f}: not learning"
    train_scores = [m["critic/score/mean"] for m in metrics if "critic/score/mean" in m]
    assert sum(train_scores[-4:]) / 4 > sum(train_scores[:4]) / 4
    # the checkpoint is a plain HF model
    from transformers import AutoModelForCausalLM

    final = tmp_path / "checkpoints" / "step_12"
    assert (final / "model.safetensors").exists()
    AutoModelForCausalLM.from_pretrained(final)


RESUME_RUN = SORT_RUN + ["trainer.threads=1", "validation.every=3", "trainer.save_every=3", "trainer.total_steps=6",
                         "trainer.keep_checkpoints=5"]


def _run_cli(run_dir: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "prorl.cli", "train", *RESUME_RUN, f"trainer.run_dir={run_dir}", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_kill_and_resume_matches_uninterrupted_run(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    p = _run_cli(full)
    assert p.wait(timeout=600) == 0, p.stderr.read().decode()[-2000:]

    p = _run_cli(killed)
    deadline = time.time() + 600
    while not (killed / "checkpoints" / "step_3" / "COMPLETE").exists():
        assert p.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (killed / "checkpoints" / "step_6").exists(), "the kill came too late to test resume"
    p = _run_cli(killed, "--resume")
    assert p.wait(timeout=600) == 0, p.stderr.read().decode()[-2000:]

    m_full, m_killed = read_metrics(full), read_metrics(killed)
    assert [m["step"] for m in m_full] == [m["step"] for m in m_killed], "steps lost or repeated"
    for a, b in zip(m_full, m_killed):
        for key in ("critic/score/mean", "actor/pg_loss", "response_length/mean", "val-core/builtin/sort/acc/mean@4"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["step"], key)
    from safetensors.torch import load_file

    wa = load_file(full / "checkpoints" / "step_6" / "model.safetensors")
    wb = load_file(killed / "checkpoints" / "step_6" / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k])
    state = json.loads((killed / "checkpoints" / "step_6" / "trainer_state.json").read_text())
    assert state["step"] == 6


MATH_TRAIN = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "math_train" / "simplelr_math_level3to5_train.parquet"


@pytest.mark.skipif(not MATH_TRAIN.exists(), reason="shared data absent")
def test_one_step_on_real_math_parquet_through_the_verifier_pool(tmp_path):
    """The real verl-format MATH file trains as is: rows validated, chat-templated, math-verify in
    worker processes. (The tiny model cannot solve MATH; this checks the plumbing, not learning.)"""
    cfg = load_config(None, [
        f"data.train_files=[{MATH_TRAIN}]", "data.max_prompt_length=4096", "rollout.n=2", "rollout.max_response_length=4",
        "actor.train_batch_size=2", "actor.ppo_mini_batch_size=2", "algo.dynamic_sampling=false", "validation.every=0",
        "trainer.total_steps=1", "trainer.save_every=0", "trainer.tensorboard=false", "trainer.progress_bar=false",
        f"trainer.run_dir={tmp_path}"])
    train(cfg, log=lambda *_: None)
    (m,) = read_metrics(tmp_path)
    assert m["dynamic_sampling/generated_groups"] == 2 and "actor/pg_loss" in m
    assert m["reward/status/no_answer"] + m["reward/status/wrong"] == pytest.approx(1.0)
