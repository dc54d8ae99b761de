"""Rollout engines behind one seam (:class:`prorl.rollout.base.RolloutEngine`), built by
:func:`make_engine` from ``rollout.engine``: ``hf`` (transformers ``generate``) or ``vllm``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from prorl.rollout.base import Completion, RolloutEngine

if TYPE_CHECKING:
    from prorl.config import RolloutConfig

__all__ = ["Completion", "RolloutEngine", "make_engine"]

_BUILTIN_TINY = Path(__file__).resolve().parents[1] / "assets" / "tiny-warmstart"


def make_engine(
    rollout_cfg: "RolloutConfig",
    model_path: str,
    *,
    eos_token_id: int | Sequence[int],
    pad_token_id: int,
    dtype: str = "float32",
    seed: int = 0,
    device: str = "cpu",
) -> RolloutEngine:
    """The engine ``rollout_cfg.engine`` names, with its own copy of the model at ``model_path``
    (an HF directory or hub name; ``builtin:tiny`` is the shipped warm start).

    Both engines take the trainer's weights through ``load_weights`` after each update. ``seed``
    seeds vLLM's sampling; the hf engine samples from torch's global generator (seeded by the
    trainer), as before. ``device`` is the trainer's device: the engine is colocated there.
    """
    path = str(_BUILTIN_TINY) if model_path == "builtin:tiny" else str(model_path)
    if rollout_cfg.engine == "hf":
        from prorl.models.policy import load_policy
        from prorl.rollout.hf import HFRolloutEngine

        model, _ = load_policy(path, dtype=dtype, device=device)
        model.requires_grad_(False).eval()
        return HFRolloutEngine(model, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                               max_batch_size=rollout_cfg.max_batch_size)
    if rollout_cfg.engine == "vllm":
        from prorl.rollout.vllm import VLLMRolloutEngine

        return VLLMRolloutEngine(
            path, eos_token_id=eos_token_id, pad_token_id=pad_token_id, dtype=dtype, seed=seed, device=device,
            gpu_memory_utilization=rollout_cfg.gpu_memory_utilization,
            tensor_parallel_size=rollout_cfg.tensor_parallel_size, cpu_kv_cache_gib=rollout_cfg.cpu_kv_cache_gib,
            max_model_len=rollout_cfg.max_model_len, enforce_eager=rollout_cfg.enforce_eager,
            sleep_level=rollout_cfg.sleep_level)
    raise ValueError(f"unknown rollout engine {rollout_cfg.engine!r}; expected hf or vllm")
