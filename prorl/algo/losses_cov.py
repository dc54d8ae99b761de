"""Clip-Cov and KL-Cov (Cui et al., "The Entropy Mechanism of Reinforcement Learning for Reasoning
Language Models", arXiv:2505.22617, Sec. 4), registered as ``algo.policy_loss=clip_cov | kl_cov``.

The paper shows that the entropy of a softmax policy falls by (roughly) the covariance between a
token's log-probability and its advantage, and that a small minority of tokens with a large
covariance drives the collapse. Both losses treat only those tokens differently: Clip-Cov cuts the
gradient of a few of them drawn at random from a covariance window, KL-Cov adds a penalty
``|log ratio|`` to the ones with the largest covariance. As in verl's
``compute_policy_loss_clip_cov`` / ``compute_policy_loss_kl_cov`` (which these follow, with verl's
defaults), the covariance, its means and the token budget ``ratio * N`` are taken over the tokens
the loss is called with: one micro-batch.

    cov_t = (A_t - mean_mask A) * (logp_t - mean_mask logp)          [B, T], detached
"""

from __future__ import annotations

import torch

from prorl.algo.losses import PolicyLossOutput, _finish, _prepare, masked_mean, register_policy_loss


def token_covariance(
    logp: torch.Tensor,  # [B, T]
    advantages: torch.Tensor,  # [B, T]
    mask: torch.Tensor,  # [B, T] bool
) -> torch.Tensor:  # [B, T] detached; meaningless off the mask
    """Each token's term of the covariance of advantage and log-prob over the counted tokens."""
    lp = logp.detach()
    return (advantages - masked_mean(advantages, mask)) * (lp - masked_mean(lp, mask))


@register_policy_loss("clip_cov", hyper={"eps_low": "eps_low", "eps_high": "eps_high", "clip_cov_ratio": "clip_cov_ratio",
                                         "clip_cov_lb": "clip_cov_lb", "clip_cov_ub": "clip_cov_ub"})
def clip_cov_policy_loss(
    logp: torch.Tensor,  # [B, T]
    old_logp: torch.Tensor,  # [B, T]
    advantages: torch.Tensor,  # [B] or [B, T]
    mask: torch.Tensor,  # [B, T]
    *,
    agg_mode: str = "token-mean",
    rollout_is_weights: torch.Tensor | None = None,  # [B, T] detached
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    clip_cov_ratio: float = 2e-4,
    clip_cov_lb: float = 1.0,
    clip_cov_ub: float = 5.0,
    generator: torch.Generator | None = None,
) -> PolicyLossOutput:
    """Clip-Cov: the PPO clipped surrogate with decoupled bounds, except that
    ``max(int(clip_cov_ratio * N), 1)`` of the N counted tokens, drawn uniformly at random among
    those not PPO-clipped whose covariance lies in ``(clip_cov_lb, clip_cov_ub)``, lose their loss
    and gradient (verl: ``corr = 0``)::

        l = max(-r A, -clip(r, 1 - eps_low, 1 + eps_high) A) * (1 - cut)

    No dual clip (verl's clip_cov does not read ``clip_ratio_c``). The draw uses ``generator`` (a
    CPU ``torch.Generator``; None: torch's global generator, as verl's ``torch.randperm``; prorl
    seeds it with ``trainer.seed`` and checkpoints it, so runs repeat and resume exactly; tests
    pass one). clipfrac / high / below_low_bound: the PPO clip as for ``clip``; lower: 0;
    ``extra["pg_clipfrac_cov"]``: the fraction of cut tokens (what verl logs as pg_clipfrac here).
    """
    adv, log_ratio, ratio = _prepare(logp, old_logp, advantages)
    m = mask > 0
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    with torch.no_grad():
        by_clip = (clipped > unclipped) & m
        cov = token_covariance(logp, adv, m)
        candidates = torch.nonzero(m & ~by_clip & (cov > clip_cov_lb) & (cov < clip_cov_ub))  # [n, 2], row-major
        budget = max(int(clip_cov_ratio * float(m.sum())), 1)
        cut = torch.zeros_like(m)
        if len(candidates):
            pick = torch.randperm(len(candidates), generator=generator)[:budget].to(candidates.device)
            cut[candidates[pick, 0], candidates[pick, 1]] = True
    loss_mat = torch.maximum(unclipped, clipped) * (~cut).to(unclipped.dtype)  # [B, T]
    with torch.no_grad():
        high = (ratio > 1.0 + eps_high) & (adv > 0)
        below_low = (ratio < 1.0 - eps_low) & (adv < 0)
    out = _finish(loss_mat, mask, agg_mode, rollout_is_weights, log_ratio, clipped > unclipped, high,
                  torch.zeros_like(m), below_low)
    out.extra["pg_clipfrac_cov"] = (cut.to(log_ratio.dtype).sum() / m.sum().clamp(min=1)).detach()
    return out


@register_policy_loss("kl_cov", hyper={"kl_cov_ratio": "kl_cov_ratio", "ppo_kl_coef": "ppo_kl_coef"})
def kl_cov_policy_loss(
    logp: torch.Tensor,  # [B, T]
    old_logp: torch.Tensor,  # [B, T]
    advantages: torch.Tensor,  # [B] or [B, T]
    mask: torch.Tensor,  # [B, T]
    *,
    agg_mode: str = "token-mean",
    rollout_is_weights: torch.Tensor | None = None,  # [B, T] detached
    kl_cov_ratio: float = 2e-4,
    ppo_kl_coef: float = 0.1,
) -> PolicyLossOutput:
    """KL-Cov: the unclipped surrogate ``-r A`` on every token, plus ``ppo_kl_coef * |log r|`` on
    the ``max(int(kl_cov_ratio * N), 1)`` counted tokens of largest covariance (deterministic)::

        l = -r A + ppo_kl_coef * |logp - old_logp| * selected

    No PPO clip and no dual clip (verl's kl_cov reads neither the clip ratios nor clip_ratio_c):
    the penalty is the trust region, on the tokens that drive the entropy down. On-policy (first
    mini-batch, log r = 0) the penalty and its gradient are 0. clipfrac and the other clip
    statistics are 0; ``extra``: ``kl_cov_fraction`` (selected tokens) and ``ppo_kl_abs``, the
    mean of ``|log r|`` (what verl logs as ppo_kl here; prorl's ppo_kl stays mean(old - logp)).
    """
    adv, log_ratio, ratio = _prepare(logp, old_logp, advantages)
    m = mask > 0
    with torch.no_grad():
        cov = token_covariance(logp, adv, m)[m]  # [N] counted tokens, row-major (verl's order)
        selected = torch.zeros_like(m)
        if cov.numel():
            top = torch.topk(cov, max(1, int(cov.numel() * kl_cov_ratio))).indices
            rows, cols = m.nonzero(as_tuple=True)
            selected[rows[top], cols[top]] = True
    loss_mat = -adv * ratio + ppo_kl_coef * log_ratio.abs() * selected.to(ratio.dtype)  # [B, T]
    none = torch.zeros_like(m)
    out = _finish(loss_mat, mask, agg_mode, rollout_is_weights, log_ratio, none, none, none, none)
    n = m.sum().clamp(min=1)
    out.extra["kl_cov_fraction"] = selected.to(log_ratio.dtype).sum() / n
    out.extra["ppo_kl_abs"] = (log_ratio.detach().abs() * m).sum() / n
    return out
