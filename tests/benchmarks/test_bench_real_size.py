"""benchmarks/bench_real_size.py, cut down: the real vocabulary (151,936) and widths (hidden 896,
14/2 heads, intermediate 4864) with 2 decoder layers, 2 prompts x 4 samples x 16 tokens, one
step through the controller with vLLM. Checks that every phase ran, that the update changed the
policy, that the weight sync brought vLLM to the trainer's weights, and the memory model.

Memory: the peak RSS of every phase and of the step within 20% of
``memory_model.cpu_step_prediction`` (every phase was within 1% at this size on 2026-12-02; the
baseline constant is ~12% of the 7.3 GB step peak here, against ~6% at 24 layers)."""

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

pytestmark = [pytest.mark.slow, pytest.mark.vllm]
if importlib.util.find_spec("vllm") is None:
    pytest.skip("vLLM is not installed (bash scripts/install.sh --vllm)", allow_module_level=True)


def test_cut_down_real_size_step(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_real_size.py"), "--layers", "2",
                        "--max-tokens", "16", "--arms", "fp32", "--work", str(tmp_path / "work"), "--json", str(out),
                        "--timeout", "900"], env=env, capture_output=True, text=True, timeout=1000, cwd=str(REPO))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    (arm,) = res["arms"]["fp32"]
    ph = arm["phases"]
    for name in ("generate", "reference", "update", "weight_sync"):
        assert ph[name]["calls"] == 1 and ph[name]["seconds"] > 0, (name, ph[name])
    assert arm["batch"]["sequences"] == 8 and arm["batch"]["response_tokens"] > 0
    m = arm["metrics"]
    assert math.isfinite(m["actor/grad_norm"]) and m["actor/grad_norm"] > 0  # the update had a gradient
    assert m["timing_s/weight_sync"] > 0
    sync = arm["sync_check"]
    # after the step the engine's greedy log-probs are the trainer's (fp32 both) ...
    assert sync["after"]["max"] < 1e-3, sync
    # ... and the pre-step engine's were not: the update moved the policy and the sync carried it over
    assert sync["before"]["mean"] > 10 * max(sync["after"]["mean"], 1e-7), sync
    assert abs(arm["ratio"] - 1) <= 0.2, (arm["step_peak_rss"], arm["predicted_peak_rss"])
    for name in ("generate", "reference", "update", "weight_sync"):
        assert abs(ph[name]["ratio"] - 1) <= 0.2, (name, ph[name]["peak_rss"], ph[name]["predicted_rss"])
