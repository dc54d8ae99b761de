"""The pure algorithm core: GRPO advantages, the decoupled-clip policy loss, KL estimators,
loss aggregation, and the dynamic-sampling filter.

Everything here is a function of tensors and scalars: no models, no config objects, no I/O.
Shapes: ``B`` responses in a batch, ``T`` response tokens (padded), ``G`` groups of ``n``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
KL_ESTIMATORS = ("k1", "k2", "k3")


def grpo_advantages(
    scores: torch.Tensor,  # [B] one scalar reward per response
    group_ids: torch.Tensor,  # [B] integer id of each response's prompt group
    *,
    norm_by_std: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:  # [B]
    """GRPO: a response's reward minus its group's mean, divided by the group's std (unbiased,
    as verl) when ``norm_by_std``. Groups of one and all-equal groups get advantage 0."""
    scores = scores.float()
    _, inverse = torch.unique(group_ids, return_inverse=True)
    num_groups = int(inverse.max().item()) + 1 if inverse.numel() else 0
    counts = torch.zeros(num_groups).index_add_(0, inverse, torch.ones_like(scores))  # [G]
    sums = torch.zeros(num_groups).index_add_(0, inverse, scores)  # [G]
    means = sums / counts  # [G]
    centred = scores - means[inverse]  # [B]
    if not norm_by_std:
        return centred
    sq = torch.zeros(num_groups).index_add_(0, inverse, centred**2)  # [G]
    std = torch.where(counts > 1, (sq / (counts - 1).clamp(min=1)).sqrt(), torch.zeros_like(sq))  # [G]
    return centred / (std[inverse] + eps)


def aggregate_loss(
    loss_mat: torch.Tensor,  # [B, T] per-token loss
    mask: torch.Tensor,  # [B, T] 1 on tokens that count
    mode: str = "token-mean",
) -> torch.Tensor:  # []
    """Reduce per-token losses to a scalar.

    token-mean: sum over all tokens / number of tokens (DAPO: long responses weigh more);
    seq-mean-token-mean: mean over tokens within each sequence, then over sequences (GRPO);
    seq-mean-token-sum: sum over tokens within each sequence, then mean over sequences (Dr. GRPO style).
    Sequences without any counted token are ignored in the seq-mean modes.
    """
    mask = mask.to(loss_mat.dtype)
    if mode == "token-mean":
        return (loss_mat * mask).sum() / mask.sum().clamp(min=1.0)
    per_seq_tokens = mask.sum(-1)  # [B]
    seq_sum = (loss_mat * mask).sum(-1)  # [B]
    present = (per_seq_tokens > 0).to(loss_mat.dtype)  # [B]
    if mode == "seq-mean-token-mean":
        per_seq = seq_sum / per_seq_tokens.clamp(min=1.0)
    elif mode == "seq-mean-token-sum":
        per_seq = seq_sum
    else:
        raise ValueError(f"unknown loss_agg_mode {mode!r}; expected one of {LOSS_AGG_MODES}")
    return (per_seq * present).sum() / present.sum().clamp(min=1.0)


@dataclass
class PolicyLossOutput:
    loss: torch.Tensor  # [] aggregated clipped surrogate
    clipfrac: torch.Tensor  # [] fraction of tokens clipped on either side (verl's pg_clipfrac)
    clipfrac_high: torch.Tensor  # [] ratio > 1 + eps_high with A > 0
    clipfrac_lower: torch.Tensor  # [] ratio < 1 - eps_low with A < 0 (verl's pg_clipfrac_lower)
    approx_kl: torch.Tensor  # [] mean(old_logp - logp) over tokens (verl's ppo_kl)


def policy_loss(
    logp: torch.Tensor,  # [B, T] current policy log-probs of the sampled tokens
    old_logp: torch.Tensor,  # [B, T] log-probs under the policy that sampled them
    advantages: torch.Tensor,  # [B] or [B, T]
    mask: torch.Tensor,  # [B, T]
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.4,
    agg_mode: str = "token-mean",
) -> PolicyLossOutput:
    """PPO clipped surrogate with decoupled bounds (DAPO clip-higher):
    ``-min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)`` per token, then aggregated."""
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1).expand_as(logp)  # [B, T]
    log_ratio = (logp - old_logp).clamp(-20.0, 20.0)  # [B, T]
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    loss_mat = torch.maximum(unclipped, clipped)  # [B, T]
    m = mask.to(logp.dtype)
    n_tok = m.sum().clamp(min=1.0)
    with torch.no_grad():
        is_clipped = (clipped > unclipped).to(logp.dtype)
        high = ((ratio > 1.0 + eps_high) & (advantages > 0)).to(logp.dtype)
        low = ((ratio < 1.0 - eps_low) & (advantages < 0)).to(logp.dtype)
        out_stats = (
            (is_clipped * m).sum() / n_tok,
            (high * m).sum() / n_tok,
            (low * m).sum() / n_tok,
            (-log_ratio * m).sum() / n_tok,
        )
    return PolicyLossOutput(aggregate_loss(loss_mat, mask, agg_mode), *out_stats)


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


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1.0)


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
