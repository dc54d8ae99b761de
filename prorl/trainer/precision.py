"""What ``auto`` precision means on this machine: bf16 compute where the hardware multiplies bf16 natively.

verl and TRL compute in bf16 by default (FSDP mixed precision, ``bf16=True``) while weights, gradients
and AdamW stay fp32; prorl does the same wherever it pays: on GPUs, and on CPUs with AMX or
AVX512-BF16 (bf16 matmuls at 2-4x the fp32 rate; README "Faster steps on one machine"). Elsewhere a
CPU would emulate bf16 slower than fp32, so ``auto`` stays fp32 there. ``model.autocast`` and
``rollout.dtype`` set to a dtype are taken as given.
"""

from __future__ import annotations

import functools

import torch

from prorl.config import Config, ModelConfig


@functools.cache  # the hardware does not change; the Actor asks at every forward
def native_bf16(device: str) -> bool:
    """Whether bf16 matrix multiplies run natively on ``device`` ("cpu", "cuda", "cuda:0")."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    return any(getattr(cpu, probe, lambda: False)() for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))


def fsdp_computes_bf16(model: ModelConfig, device: str, distributed: bool) -> bool:
    """FSDP2's mixed precision (bf16 parameters in forward/backward) is on: torchrun on GPUs."""
    return distributed and device.startswith("cuda") and model.fsdp_mixed_precision


def autocast_dtype(model: ModelConfig, device: str, distributed: bool = False) -> torch.dtype | None:
    """The dtype the actor's forward passes autocast to (None: no autocast).

    ``auto``: bf16 over fp32 weights where bf16 is native, except where FSDP2 mixed precision
    already computes in bf16 or the weights themselves are low precision (``model.dtype``)."""
    if model.autocast == "auto":
        if model.dtype != "float32" or fsdp_computes_bf16(model, device, distributed) or not native_bf16(device):
            return None
        return torch.bfloat16
    return None if model.autocast == "none" else getattr(torch, model.autocast)


def engine_dtype(cfg: Config, device: str, distributed: bool = False) -> str:
    """The rollout engine's weight dtype: ``rollout.dtype``, or for ``auto`` bf16 when the actor
    computes in bf16 (autocast or FSDP2 mixed precision; the usual GPU setup: the trainer/engine
    mismatch is logged under ``rollout_corr/``) and ``model.dtype`` otherwise."""
    if cfg.rollout.dtype != "auto":
        return cfg.rollout.dtype
    bf16 = autocast_dtype(cfg.model, device, distributed) is not None or fsdp_computes_bf16(cfg.model, device, distributed)
    return "bfloat16" if bf16 else cfg.model.dtype


def describe(cfg: Config, device: str, distributed: bool = False) -> str:
    """One line for the run's log: what ``auto`` resolved to here."""
    ac = autocast_dtype(cfg.model, device, distributed)
    fsdp = " (FSDP2 mixed precision)" if fsdp_computes_bf16(cfg.model, device, distributed) else ""
    return (f"precision: weights {cfg.model.dtype}, actor computes in {str(ac).replace('torch.', '') if ac else cfg.model.dtype}"
            f"{fsdp}, rollouts in {engine_dtype(cfg, device, distributed)} (native bf16 here: "
            f"{'yes' if native_bf16(device) else 'no'})")
