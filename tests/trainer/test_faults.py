"""Crash consistency: the trainer is SIGKILLed at each phase (generation, scoring, update,
validation, a metrics or event write, each stage of a checkpoint write), then resumed. Every line
of metrics.jsonl, events.jsonl and TensorBoard must appear exactly once, and the metrics, events and
final weights must equal an uninterrupted run's exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from prorl.trainer.faults import PHASES

RUN = ["data.builtin_tasks=[sort]", "data.builtin_val_size=8", "validation.n=2", "validation.every=2",
       "actor.train_batch_size=4", "actor.ppo_mini_batch_size=4", "rollout.n=4", "trainer.progress_bar=false",
       "trainer.threads=1", "trainer.max_minutes=0", "trainer.save_every=2", "trainer.total_steps=4",
       "trainer.keep_checkpoints=5", "algo.kl_coef=0.1", "reset.steps=[3]", "trainer.tensorboard=true"]
# (phase, step): kills before the first checkpoint, between checkpoints, and inside each checkpoint stage
KILLS = [("generation", 3), ("scoring", 3), ("update", 3), ("metrics", 3), ("event", 3), ("validation", 4),
         ("checkpoint:actor", 2), ("checkpoint:rng", 4), ("checkpoint:state", 4), ("checkpoint:rename", 2)]
QUICK = {("event", 3), ("checkpoint:state", 4)}  # in the default suite; all of them under -m slow


def train(run_dir: Path, *extra: str, fault: str | None = None) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PRORL_FAULT", None)
    if fault:
        env["PRORL_FAULT"] = fault
    cmd = [sys.executable, "-m", "prorl", "train", *RUN, f"trainer.run_dir={run_dir}", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, timeout=600).returncode


def lines(run_dir: Path, name: str) -> list[dict]:
    return [json.loads(x) for x in (run_dir / name).read_text().splitlines()]


def without_timing(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if not k.startswith("timing_s/")} for m in metrics]


def tensorboard_steps(run_dir: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("full")
    assert train(d) == 0
    return d


def _params():
    return [pytest.param(p, s, marks=() if (p, s) in QUICK else pytest.mark.slow, id=f"{p}@{s}") for p, s in KILLS]


def test_every_phase_has_a_kill_case():
    assert {p for p, _ in KILLS} == set(PHASES)


@pytest.mark.parametrize("phase,step", _params())
def test_kill_then_resume_writes_everything_exactly_once(uninterrupted, tmp_path, phase, step):
    assert train(tmp_path, fault=f"{phase}@{step}") == -signal.SIGKILL, "the fault point was never reached"
    assert train(tmp_path, "--resume") == 0
    assert without_timing(lines(tmp_path, "metrics.jsonl")) == without_timing(lines(uninterrupted, "metrics.jsonl"))
    assert lines(tmp_path, "events.jsonl") == lines(uninterrupted, "events.jsonl")
    assert tensorboard_steps(tmp_path, "critic/score/mean") == [1, 2, 3, 4]
    assert tensorboard_steps(tmp_path, "val-core/builtin/sort/acc/mean@2") == [0, 2, 4]
    a = load_file(tmp_path / "checkpoints" / "step_4" / "model.safetensors")
    b = load_file(uninterrupted / "checkpoints" / "step_4" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), "weights differ from the uninterrupted run"
