"""Rollout engines behind one seam (:class:`prorl.rollout.base.RolloutEngine`), built by :func:`make_engine`."""

from __future__ import annotations

from prorl.config import RolloutConfig
from prorl.rollout.base import RolloutEngine


def make_engine(rollout: RolloutConfig, model_path: str, *, eos_token_id, pad_token_id: int, dtype: str,
                seed: int, device: str) -> RolloutEngine:
    """The engine ``rollout.engine`` names, loaded from ``model_path`` (HF format); the trainer then
    streams its current weights in with ``load_weights``."""
    if rollout.engine == "hf":
        from prorl.models.policy import load_policy
        from prorl.rollout.hf import HFRolloutEngine

        model, _ = load_policy(model_path, dtype=dtype, device=device)
        model.requires_grad_(False)
        return HFRolloutEngine(model, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                               max_batch_size=rollout.max_batch_size)
    raise ValueError(f"unknown rollout engine {rollout.engine!r}")
