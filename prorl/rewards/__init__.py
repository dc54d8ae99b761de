"""Reward plumbing: a hard-limited verifier worker pool, the trainer's ``RewardScorer``, and the
HTTP reward service (token, limits, metrics, drain) with its multi-replica client. Imports are lazy
so ``import prorl.rewards`` stays cheap."""

from __future__ import annotations

from typing import Any

__all__ = ["VerifierPool", "PoolOverloaded", "RewardScorer", "RewardClient", "RewardServiceError", "RewardServer",
           "ServerLimits"]

_WHERE = {
    "VerifierPool": "prorl.rewards.pool",
    "PoolOverloaded": "prorl.rewards.pool",
    "RewardScorer": "prorl.rewards.scorer",
    "RewardClient": "prorl.rewards.client",
    "RewardServiceError": "prorl.rewards.client",
    "RewardServer": "prorl.rewards.server",
    "ServerLimits": "prorl.rewards.guard",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(name)
