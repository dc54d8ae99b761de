"""Rollout engines behind one seam (:class:`prorl.rollout.base.RolloutEngine`), built by
:func:`make_engine` from ``rollout.engine``: ``hf`` (transformers ``generate``) or ``vllm``."""

from __future__ import annotations

from typing import Sequence

from prorl.config import RolloutConfig
from prorl.rollout.base import RolloutEngine

# read once, when make_engine builds the engine: a stage cannot change them (the others reach the
# engine through its ``configure(rollout)`` when a stage begins, or with every generate call)
ENGINE_FIXED_KEYS = ("rollout.engine", "rollout.dtype", "rollout.hf_cache", "rollout.gpu_memory_utilization",
                     "rollout.tensor_parallel_size", "rollout.cpu_kv_cache_gib", "rollout.max_model_len",
                     "rollout.enforce_eager", "rollout.sleep_level")


def make_engine(rollout: RolloutConfig, model_path: str, *, eos_token_id: int | Sequence[int], pad_token_id: int,
                dtype: str, seed: int, device: str, report_logprobs: bool = False) -> RolloutEngine:
    """The engine ``rollout.engine`` names, with its own copy of the model at ``model_path`` (HF
    format; ``builtin:tiny`` is the shipped warm start); the trainer then streams its current
    weights in with ``load_weights``.

    ``dtype`` is the trainer's weight dtype, which the engine uses unless ``rollout.dtype`` names
    another (weights synced in later are cast to the engine's dtype). ``seed`` seeds vLLM's
    sampling; the hf engine samples from torch's global generator (seeded by the trainer). ``device`` is the trainer's device: the engine is colocated there.
    ``report_logprobs``: the hf engine also reports the sampler's per-token log-probs (vllm always does).
    """
    from prorl.models.policy import resolve_model_path

    path = resolve_model_path(model_path)
    dtype = dtype if rollout.dtype == "auto" else rollout.dtype
    if rollout.engine == "hf":
        from prorl.models.policy import load_policy
        from prorl.rollout.hf import HFRolloutEngine

        model, _ = load_policy(path, dtype=dtype, device=device)
        model.requires_grad_(False)
        return HFRolloutEngine(model, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                               max_batch_size=rollout.max_batch_size,
                               cache_implementation=None if rollout.hf_cache == "dynamic" else rollout.hf_cache,
                               report_logprobs=report_logprobs)
    if rollout.engine == "vllm":
        from prorl.rollout.vllm import VLLMRolloutEngine

        return VLLMRolloutEngine(
            path, eos_token_id=eos_token_id, pad_token_id=pad_token_id, dtype=dtype, seed=seed, device=device,
            gpu_memory_utilization=rollout.gpu_memory_utilization, tensor_parallel_size=rollout.tensor_parallel_size,
            cpu_kv_cache_gib=rollout.cpu_kv_cache_gib, max_model_len=rollout.max_model_len,
            enforce_eager=rollout.enforce_eager, sleep_level=rollout.sleep_level)
    raise ValueError(f"unknown rollout engine {rollout.engine!r}; expected hf or vllm")
