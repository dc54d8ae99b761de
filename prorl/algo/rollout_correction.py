"""Rollout/training mismatch correction: importance weights and masks from the log-probs the
inference engine sampled with (``logp_rollout``) and the ones the trainer computes for the same
tokens (``logp_train``, the old policy).

A separate inference engine (vLLM: other kernels, precision, batching) samples from slightly
different probabilities than the trainer's forward pass, which silently makes the update
off-policy. Each token's ratio ``r = pi_train / pi_rollout = exp(logp_train - logp_rollout)``
measures that; the policy loss multiplies its per-token losses by the weights returned here and
aggregates over the returned mask.

Modes (``algo.rollout_correction``):

- ``none``: weight 1, mask unchanged (the metrics are still computed, to watch the mismatch);
- ``tis``: truncated IS, token weight ``min(r, C)``, mask unchanged;
- ``mis_token``: masked IS (ICE-POP), token weight ``r`` where ``low <= r <= high``, tokens
  outside dropped from the mask (weight 0);
- ``mis_seq``: masked IS on the sequence ratio ``prod_t r_t`` (= exp of the summed log-ratio):
  sequences outside ``[low, high]`` dropped whole, the others weighted by that ratio;
- ``geo_seq``: like ``mis_seq`` on the geometric mean ``exp(mean_t log r_t)``, which does not
  grow with length (it needs much tighter bounds, e.g. [0.99, 1.01]).

Everything here is a function of tensors and scalars. Shapes: ``B`` responses, ``R`` response
tokens (padded); masks are 1 on tokens that count.
"""

from __future__ import annotations

import torch

ROLLOUT_CORRECTIONS = ("none", "tis", "mis_token", "mis_seq", "geo_seq")
_MAX_LOG_RATIO = 20.0  # exp(20) ~ 5e8: keeps the ratio finite for absurd mismatches


def mismatch_metrics(
    log_ratio: torch.Tensor,  # [B, R] logp_train - logp_rollout
    mask: torch.Tensor,  # [B, R] tokens that count (before correction)
) -> dict[str, float]:
    """``rollout_corr/`` statistics of the token log-ratio over the counted tokens."""
    m = mask.bool()
    if not m.any():
        return {"rollout_corr/abs_logp_diff_mean": 0.0, "rollout_corr/abs_logp_diff_max": 0.0,
                "rollout_corr/ratio_mean": 1.0, "rollout_corr/ratio_min": 1.0, "rollout_corr/ratio_max": 1.0}
    lr = log_ratio[m]  # [N]
    ratio = lr.clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO).exp()
    return {
        "rollout_corr/abs_logp_diff_mean": lr.abs().mean().item(),
        "rollout_corr/abs_logp_diff_max": lr.abs().max().item(),
        "rollout_corr/ratio_mean": ratio.mean().item(),
        "rollout_corr/ratio_min": ratio.min().item(),
        "rollout_corr/ratio_max": ratio.max().item(),
    }


def rollout_correction(
    logp_train: torch.Tensor,  # [B, R] old-policy log-probs from the trainer
    logp_rollout: torch.Tensor,  # [B, R] the engine's sampling log-probs of the same tokens
    mask: torch.Tensor,  # [B, R] 1 on tokens that count
    *,
    mode: str = "none",
    tis_cap: float = 2.0,
    low: float = 0.5,
    high: float = 5.0,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Importance weights ``[B, R]`` (0 off the mask, no gradient), the new mask ``[B, R]`` (same
    dtype as ``mask``) and ``rollout_corr/`` metrics: mean/max |logp_train - logp_rollout|, ratio
    mean/min/max (token level, over the incoming mask), ``fraction_masked`` (counted tokens the
    correction dropped) and ``weight_mean`` (mean weight over the new mask).

    ``tis_cap`` is C of ``tis``; ``[low, high]`` is the kept ratio range of the masked modes.
    """
    if mode not in ROLLOUT_CORRECTIONS:
        raise ValueError(f"unknown rollout correction {mode!r}; expected one of {ROLLOUT_CORRECTIONS}")
    if logp_train.shape != logp_rollout.shape or logp_train.shape != mask.shape:
        raise ValueError(f"shapes differ: logp_train {tuple(logp_train.shape)}, logp_rollout "
                         f"{tuple(logp_rollout.shape)}, mask {tuple(mask.shape)}")
    with torch.no_grad():
        m = mask.to(torch.float32)  # [B, R]
        log_ratio = (logp_train.float() - logp_rollout.float()) * m  # [B, R] 0 off the mask
        metrics = mismatch_metrics(log_ratio, m)
        tok_ratio = log_ratio.clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO).exp()  # [B, R]
        keep = torch.ones_like(m)  # [B, R]
        if mode == "none":
            weights = torch.ones_like(m)
        elif mode == "tis":
            weights = tok_ratio.clamp(max=tis_cap)
        elif mode == "mis_token":
            keep = ((tok_ratio >= low) & (tok_ratio <= high)).float()
            weights = tok_ratio
        else:
            seq_log = log_ratio.sum(-1)  # [B]
            if mode == "geo_seq":
                seq_log = seq_log / m.sum(-1).clamp(min=1.0)
            seq_ratio = seq_log.clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO).exp()  # [B]
            keep = ((seq_ratio >= low) & (seq_ratio <= high)).float().unsqueeze(-1).expand_as(m)
            weights = seq_ratio.unsqueeze(-1).expand_as(m)
        new_m = m * keep  # [B, R]
        weights = weights * new_m
        n_tok = m.sum()
        metrics["rollout_corr/fraction_masked"] = ((m - new_m).sum() / n_tok.clamp(min=1.0)).item()
        metrics["rollout_corr/weight_mean"] = (weights.sum() / new_m.sum().clamp(min=1.0)).item()
    return weights.to(logp_train.dtype), new_m.to(mask.dtype), metrics
