"""``auto`` precision: bf16 compute where bf16 is native (GPUs, AMX / AVX512-BF16 CPUs), fp32 elsewhere,
never on top of FSDP2's own mixed precision or of low-precision weights; the defaults pack the update."""

from __future__ import annotations

import pytest
import torch

from prorl.config import load_config
from prorl.trainer import precision
from prorl.trainer.actor import Actor
from prorl.trainer.distributed import World
from prorl.models.policy import BUILTIN_TINY


@pytest.fixture
def native(monkeypatch):
    """Pretend the device does (True) or does not (False) multiply bf16 natively."""
    def set_native(value: bool) -> None:
        monkeypatch.setattr(precision, "native_bf16", lambda device: value)
    return set_native


@pytest.mark.parametrize("native_here, device, distributed, want_autocast, want_engine", [
    (True, "cpu", False, torch.bfloat16, "bfloat16"),      # an AMX Xeon
    (False, "cpu", False, None, "float32"),                # a CPU that would emulate bf16
    (True, "cuda:0", False, torch.bfloat16, "bfloat16"),   # one GPU, no FSDP: autocast
    (True, "cuda:0", True, None, "bfloat16"),              # torchrun on GPUs: FSDP2 computes in bf16 already
    (True, "cpu", True, torch.bfloat16, "bfloat16"),       # torchrun on CPUs (gloo): no FSDP mixed precision there
])
def test_auto_resolves_by_hardware_and_fsdp(native, native_here, device, distributed, want_autocast, want_engine):
    native(native_here)
    cfg = load_config(None, [])
    assert (cfg.model.autocast, cfg.rollout.dtype) == ("auto", "auto")
    assert precision.autocast_dtype(cfg.model, device, distributed) == want_autocast
    assert precision.engine_dtype(cfg, device, distributed) == want_engine


def test_explicit_settings_win_over_auto(native):
    native(True)
    cfg = load_config(None, ["model.autocast=none"])
    assert precision.autocast_dtype(cfg.model, "cpu") is None and precision.engine_dtype(cfg, "cpu") == "float32"
    cfg = load_config(None, ["model.autocast=none", "rollout.dtype=bfloat16"])
    assert precision.engine_dtype(cfg, "cpu") == "bfloat16"
    native(False)
    cfg = load_config(None, ["model.autocast=bfloat16"])
    assert precision.autocast_dtype(cfg.model, "cpu") == torch.bfloat16 and precision.engine_dtype(cfg, "cpu") == "bfloat16"
    cfg = load_config(None, ["model.autocast=none", "model.fsdp_mixed_precision=false"])
    assert precision.engine_dtype(cfg, "cuda:0", True) == "float32"


def test_bf16_weights_are_not_autocast(native):
    native(True)
    cfg = load_config(None, ["model.dtype=bfloat16"])
    assert precision.autocast_dtype(cfg.model, "cpu") is None
    assert precision.engine_dtype(cfg, "cpu") == "bfloat16"  # the weights' own dtype


def test_the_probe_matches_the_cpu_flags():
    flags = open("/proc/cpuinfo").read().split()
    assert precision.native_bf16("cpu") == ("amx_bf16" in flags or "avx512_bf16" in flags)


def test_the_default_actor_computes_as_resolved(native):
    """The Actor's forward follows the resolution: bf16 log-probs (rounded) when native, exact fp32 when not."""
    from tests.trainer.test_actor import random_batch

    outs = {}
    for native_here in (False, True):
        native(native_here)
        torch.manual_seed(0)
        actor = Actor(load_config(None, ["trainer.threads=1"]), World(), model_path=str(BUILTIN_TINY),
                      needs_reference=False)
        batch = random_batch(len(actor.tokenizer), actor.tokenizer.pad_token_id)
        outs[native_here] = actor.logprobs(batch.seqs, temperature=1.0)[batch.loss_mask.bool()]
        assert actor.cfg.actor.max_tokens_per_micro_batch > 0  # the default update is padding-free
    diff = (outs[True] - outs[False]).abs().max()
    assert 0 < diff < 0.15, diff


def test_describe_names_what_auto_became(native):
    native(True)
    line = precision.describe(load_config(None, []), "cpu")
    assert "actor computes in bfloat16" in line and "rollouts in bfloat16" in line
    native(False)
    line = precision.describe(load_config(None, []), "cpu")
    assert "actor computes in float32" in line and "rollouts in float32" in line


@pytest.mark.parametrize("autocast", ["none", "bfloat16"])
def test_sync_rollouts_log_the_trainer_engine_mismatch(tmp_path, autocast):
    """The hf engine reports its sampling log-probs in sync mode too: rollout_corr/ metrics are logged;
    fp32 on both sides agrees to float noise, bf16 rollouts and compute show their mismatch."""
    from tests.trainer.test_controls import _train

    ms = [m for m in _train(tmp_path, f"model.autocast={autocast}", "trainer.total_steps=2", "validation.every=0",
                            "algo.dynamic_sampling=false") if "timing_s/step" in m]
    assert len(ms) == 2
    for m in ms:
        diff = m["rollout_corr/abs_logp_diff_max"]
        assert (diff < 1e-4) if autocast == "none" else (diff > 1e-3), diff
