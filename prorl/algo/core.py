"""The pure algorithm core: KL estimators, the dynamic-sampling filter and reward shaping
(DAPO's overlong penalty, ProRL v2's scheduled cosine length penalty); the advantage estimators
(:mod:`prorl.algo.advantages`) and the policy losses with loss aggregation
(:mod:`prorl.algo.losses`, :mod:`prorl.algo.losses_cov`) are re-exported here; the 80/20 entropy
mask is :mod:`prorl.algo.entropy_mask`.

Everything here is a function of tensors and scalars: no models, no config objects, no I/O.
Shapes: ``B`` responses in a batch, ``T`` response tokens (padded), ``G`` groups of ``n``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from prorl.algo.advantages import (  # noqa: F401  (re-exported)
    ADV_ESTIMATORS,
    adv_estimator_hyper,
    compute_advantages,
    get_adv_estimator,
    grpo_advantages,
    passk_advantages,
    register_adv_estimator,
    reinforce_pp_baseline_advantages,
    w_reinforce_advantages,
)
from prorl.algo.losses import (  # noqa: F401  (re-exported)
    LOSS_AGG_MODES,
    POLICY_LOSSES,
    PolicyLossOutput,
    aggregate_loss,
    cispo_policy_loss,
    clip_policy_loss,
    get_policy_loss,
    make_policy_loss,
    masked_mean,
    policy_loss_hyper,
    register_policy_loss,
)
from prorl.algo.losses_cov import clip_cov_policy_loss, kl_cov_policy_loss  # noqa: F401  (re-exported)

KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_penalty(
    logp: torch.Tensor,  # [B, T]
    ref_logp: torch.Tensor,  # [B, T]
    estimator: str = "k3",
) -> torch.Tensor:  # [B, T]
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (Schulman's k1, k2, k3).

    k1 = log r, k2 = (log r)^2 / 2, k3 = exp(-log r) - 1 + log r  with  log r = logp - ref_logp.
    k3 is unbiased and always >= 0; it is clamped to [0, 10] (verl clamps at 10) for stability.
    """
    log_r = logp - ref_logp
    if estimator == "k1":
        return log_r
    if estimator == "k2":
        return 0.5 * log_r.square()
    if estimator == "k3":
        lr = (-log_r).clamp(-20.0, 20.0)
        return (torch.expm1(lr) - lr).clamp(0.0, 10.0)  # expm1: no negative round-off near 0
    raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {KL_ESTIMATORS}")


@dataclass(frozen=True)
class GroupFilterResult:
    keep: list[int]  # indices of groups kept, in order
    dropped_all_correct: int
    dropped_all_wrong: int
    dropped_other_equal: int


def filter_groups(group_scores: Sequence[Sequence[float]], *, tol: float = 1e-9) -> GroupFilterResult:
    """DAPO dynamic sampling: keep only groups whose rewards are not all equal (an all-equal group
    has zero advantage everywhere and contributes no gradient). Counts what was dropped and why."""
    keep, all_correct, all_wrong, other = [], 0, 0, 0
    for gi, scores in enumerate(group_scores):
        if len(scores) > 1 and max(scores) - min(scores) > tol:
            keep.append(gi)
        elif min(scores) >= 1.0 - tol:
            all_correct += 1
        elif max(scores) <= tol:
            all_wrong += 1
        else:
            other += 1
    return GroupFilterResult(keep, all_correct, all_wrong, other)


def overlong_penalty(lengths: torch.Tensor, max_len: int, buffer_len: int, factor: float = 1.0) -> torch.Tensor:
    """DAPO soft overlong punishment: 0 until ``max_len - buffer_len`` tokens, then falling linearly
    to ``-factor`` at ``max_len``. # [B] -> [B]"""
    if buffer_len <= 0:
        return torch.zeros_like(lengths, dtype=torch.float32)
    start = max_len - buffer_len
    return -factor * ((lengths.float() - start) / buffer_len).clamp(0.0, 1.0)


def length_penalty_active(step: int, period: int, on_steps: int) -> bool:
    """The cyclic schedule: with ``period > 0`` the penalty is on for the first ``on_steps`` steps of
    every ``period`` (steps count from 1: on for steps 1..on_steps, period+1..period+on_steps, ...);
    ``period == 0`` means always on."""
    if period <= 0:
        return True
    return (step - 1) % period < on_steps


def cosine_length_penalty(
    lengths: torch.Tensor,  # [B] response lengths in tokens
    max_len: int,
    step: int,
    *,
    min_penalty: float,
    max_penalty: float,
    period: int = 0,
    on_steps: int = 0,
) -> torch.Tensor:  # [B] <= 0
    """ProRL v2's scheduled cosine length penalty (a value <= 0 added to the reward).

    The length term is the cosine schedule of Yeo et al., "Demystifying Long Chain-of-Thought
    Reasoning in LLMs" (arXiv:2502.03373: CosFn(t, T, eta_min, eta_max) = eta_min +
    (eta_max - eta_min)(1 + cos(t pi / T)) / 2), used as a penalty that grows with the length:

        penalty(L) = -(min_penalty + (max_penalty - min_penalty) * (1 - cos(pi * min(L, max_len) / max_len)) / 2)

    i.e. ``-min_penalty`` at L = 0, ``-max_penalty`` at L >= max_len, flat at both ends. ProRL v2
    (NVIDIA blog, Aug 2025) applies such a penalty on a schedule, cyclically; its post gives no
    formula for the schedule, so the on/off window of :func:`length_penalty_active` is this
    implementation's choice. Off steps, and ``min_penalty == max_penalty == 0``, give zeros.
    """
    if (min_penalty == 0 and max_penalty == 0) or not length_penalty_active(step, period, on_steps):
        return torch.zeros_like(lengths, dtype=torch.float32)
    x = (lengths.float() / max_len).clamp(0.0, 1.0)  # [B]
    return -(min_penalty + (max_penalty - min_penalty) * 0.5 * (1.0 - torch.cos(math.pi * x)))
