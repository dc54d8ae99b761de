"""High-entropy-token updates (Wang et al., "Beyond the 80/20 Rule: High-Entropy Minority Tokens
Drive Effective Reinforcement Learning for LLM Reasoning", arXiv:2506.01939, Sec. 5): the policy
gradient flows only through the top fraction rho (paper: 0.2) of the response tokens by entropy,
the "forking" tokens; the objective keeps DAPO's denominator (all tokens)::

    J = 1 / sum_i |o_i|  sum_i sum_t  1[H_{i,t} >= tau_rho]  * min(r A, clip(r) A)

``tau_rho`` is the entropy above which a fraction rho of the batch's tokens lie. The mask is a 0/1
per-token weight (the actor multiplies it into ``rollout_is_weights``), so it composes with every
registered loss and leaves the aggregation's denominator alone. The paper's released code
(verl-based) instead keeps ``ceil(rho * N)`` tokens of each micro-batch and divides by the kept
count; with token-mean that is a constant factor ~1/rho on the gradient.

Scope of the threshold. The paper takes it over the batch; its released code over each micro-batch
(one or a few sequences there). The actor offers both (``algo.entropy_mask_scope``): ``mini_batch``
costs a no-grad forward of the mini-batch first, ``micro_batch`` is free. Measured on prorl's own
rollouts (rho 0.2, 16 prompts x 8 samples, tiny / chain warm starts), per-micro-batch thresholds
decide 31-33% / 18-20% of the kept tokens differently when a micro-batch holds one prompt's group,
12-20% with two groups and 7-10% with four; under the mini-batch threshold a one-group micro-batch
keeps 8-33% of its tokens. Prompts differ in entropy, and the per-micro-batch rule takes 20% from
every one of them.
"""

from __future__ import annotations

import math

import torch


def entropy_top_threshold(entropy: torch.Tensor, fraction: float) -> torch.Tensor:  # [N] -> []
    """The entropy of the ``ceil(fraction * N)``-th highest of the N counted tokens' entropies (at
    least one token; +inf when N = 0): ``entropy >= threshold`` keeps that top fraction, and every
    token tied with it (a group's responses share their first token's distribution, hence its
    entropy: all or none of them is kept)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    values = entropy.detach().reshape(-1)
    if values.numel() == 0:
        return torch.tensor(math.inf, device=entropy.device)
    k = max(1, math.ceil(fraction * values.numel() - 1e-9))  # 1e-9: 0.14 * 50 is 7.000000000000001
    return torch.topk(values.float(), k).values[-1]


def entropy_top_mask(
    entropy: torch.Tensor,  # [B, T] per-token entropy
    mask: torch.Tensor,  # [B, T] 1 on counted tokens
    fraction: float,
    threshold: float | torch.Tensor | None = None,  # [] from a wider scope (the mini-batch); None: this batch's
) -> torch.Tensor:  # [B, T] float 1/0, detached
    """1 on the counted tokens whose entropy reaches the top-``fraction`` threshold, computed over
    ``entropy[mask]`` unless ``threshold`` is given."""
    ent = entropy.detach()
    m = mask > 0
    if threshold is None:
        threshold = entropy_top_threshold(ent[m], fraction)
    return ((ent.float() >= threshold) & m).to(ent.dtype)
