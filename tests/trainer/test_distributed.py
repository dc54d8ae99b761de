"""torchrun with 2 processes (gloo, FSDP2) on CPU: the update equals the 1-process update, a run
learns, a run resumes across a change of process count, and a reset request reaches both ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prorl.models.policy import load_policy
from prorl.trainer.metrics import read_metrics
from prorl.trainer.setup import BUILTIN_TINY, RESET_REQUEST

WORKER = Path(__file__).with_name("dist_update_worker.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def torchrun(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]


def run(cmd: list[str], timeout: int = 400) -> None:
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(cmd)} failed:\n{p.stderr[-4000:]}"


@pytest.fixture(scope="module")
def policy_with_distinct_reference(tmp_path_factory) -> Path:
    """A checkpoint-shaped directory: the tiny policy, and a perturbed reference (so KL matters)."""
    d = tmp_path_factory.mktemp("ckpt")
    model, tok = load_policy(BUILTIN_TINY)
    model.save_pretrained(d), tok.save_pretrained(d)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    model.save_pretrained(d / "reference"), tok.save_pretrained(d / "reference")
    return d


@pytest.mark.parametrize("optimizer,layout", [("sgd", "padded"), ("adamw", "padded"), ("sgd", "packed")])
def test_two_process_update_equals_one_process_update(policy_with_distinct_reference, tmp_path, optimizer, layout):
    """Same global batch, 1 vs 2 processes (each rank a share of the groups, uneven micro-batches):
    the same loss, gradient and parameters. SGD compares elementwise (the update is lr x gradient);
    AdamW's sign-like step turns float noise into a full step where a gradient is mathematically 0
    (e.g. the key bias, which softmax ignores), so it compares the whole parameter vector."""
    ck = str(policy_with_distinct_reference)
    run([sys.executable, str(WORKER), ck, str(tmp_path / "one.pt"), optimizer, layout])
    run(torchrun(2, str(WORKER), ck, str(tmp_path / "two.pt"), optimizer, layout))
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    start, _ = load_policy(policy_with_distinct_reference)
    moved = max(float((one["params"][k] - v.detach()).abs().max()) for k, v in start.named_parameters())
    assert moved > 1e-4, "the update must change the weights for the comparison to mean anything"
    if optimizer == "sgd":
        for k, a in one["params"].items():
            torch.testing.assert_close(two["params"][k], a, rtol=1e-5, atol=1e-7)
    a = torch.cat([v.flatten() for v in one["params"].values()])
    b = torch.cat([two["params"][k].flatten() for k in one["params"]])
    assert float((b - a).norm() / a.norm()) < 1e-5
    for k in ("actor/kl_loss", "actor/pg_loss", "actor/entropy", "actor/grad_norm"):
        assert two["metrics"][k] == pytest.approx(one["metrics"][k], rel=1e-4, abs=1e-6), k


SORT = ["data.builtin_tasks=[sort]", "data.builtin_val_size=32", "validation.n=4", "actor.train_batch_size=8",
        "actor.ppo_mini_batch_size=8", "rollout.n=8", "trainer.tensorboard=false", "trainer.progress_bar=false",
        "trainer.max_minutes=0"]


def prorl_train(run_dir: Path, nproc: int, *extra: str) -> list[str]:
    args = ["train", *SORT, f"trainer.run_dir={run_dir}", *extra]
    return torchrun(nproc, "-m", "prorl", *args) if nproc > 1 else [sys.executable, "-m", "prorl", *args]


def test_two_process_run_raises_heldout_accuracy(tmp_path):
    """FSDP2 on 2 processes with the padding-free (packed) update."""
    run(prorl_train(tmp_path, 2, "validation.every=12", "trainer.total_steps=12", "trainer.save_every=0",
                    "actor.max_tokens_per_micro_batch=256"))
    val = {m["step"]: m["val-core/builtin/sort/acc/mean@4"] for m in read_metrics(tmp_path)
           if "val-core/builtin/sort/acc/mean@4" in m}
    assert val[12] >= val[0] + 0.15, f"2-process run: held-out accuracy {val[0]:.3f} -> {val[12]:.3f}"
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoints" / "step_12")  # gathered full HF model


def test_resume_across_process_counts_and_reset_request_reaches_every_rank(tmp_path):
    """1 process for steps 1-2, a reset request, 2 processes for 3-4, 1 process again for 5 (with
    activation checkpointing, which must keep working under FSDP2)."""
    common = ("validation.every=0", "trainer.save_every=1", "algo.kl_coef=0.1", "actor.lr=1e-3", "model.gradient_checkpointing=true",
              "algo.dynamic_sampling=false", "trainer.keep_checkpoints=10")
    run(prorl_train(tmp_path, 1, *common, "trainer.total_steps=2"))
    (tmp_path / RESET_REQUEST).write_text("test\n")
    run(prorl_train(tmp_path, 2, *common, "trainer.total_steps=4", "--resume"))
    run(prorl_train(tmp_path, 1, *common, "trainer.total_steps=5", "--resume"))
    metrics = read_metrics(tmp_path)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5], "every step logged exactly once"
    kl = {m["step"]: m["actor/kl_loss"] for m in metrics}
    assert kl[2] > 1e-4 and kl[4] > 1e-6
    assert kl[3] == pytest.approx(0.0, abs=1e-7), "both ranks reset their reference at step 3 (KL is their mean)"
    events = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["step"], e["type"]) for e in events] == [(3, "reset")] and "test" in events[0]["cause"]
    state = json.loads((tmp_path / "checkpoints" / "step_5" / "trainer_state.json").read_text())
    assert state["sampler"]["draws"] == 5 * 8, "no prompt lost or drawn twice across the restarts"
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(tmp_path / "checkpoints" / "step_5" / "optimizer", tmp_path / "opt.pt")
    steps = {int(s["step"]) for s in torch.load(tmp_path / "opt.pt", weights_only=False)["optim"]["state"].values()}
    assert steps == {3}, "AdamW restarted at the reset (step 3) and carried on across 2 -> 1 processes"


@pytest.mark.slow
def test_compiled_layers_under_fsdp2_match_eager(tmp_path):
    """actor.compile under torchrun + FSDP2 (compiled per decoder layer, then sharded): the same
    losses and gradient norms as the eager 2-process run, step by step."""
    common = ("validation.every=0", "trainer.save_every=0", "trainer.total_steps=3", "actor.max_tokens_per_micro_batch=256",
              "model.autocast=none")  # fp32: step-by-step agreement to 1e-4 (bf16 compute would reorder roundings)
    run(prorl_train(tmp_path / "eager", 2, *common))
    run(prorl_train(tmp_path / "compiled", 2, *common, "actor.compile=true"))
    keys = ("actor/pg_loss", "actor/grad_norm", "actor/entropy", "critic/score/mean")
    eager, compiled = ([{k: m[k] for k in keys} for m in read_metrics(tmp_path / d) if "actor/pg_loss" in m]
                       for d in ("eager", "compiled"))
    assert len(eager) == len(compiled) == 3
    for a, b in zip(eager, compiled):
        for k in keys:
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), k
