"""Outcome-reward advantage estimators, chosen by name from a small registry (``algo.adv_estimator``).

Every estimator has the same signature::

    fn(rewards [B], group_ids [B], *, norm_by_std: bool, valid: [B] bool | None, eps: float) -> [B]

``rewards`` holds one scalar per response, ``group_ids`` the integer id of each response's prompt
group (any values, any order). ``valid`` marks the responses that count: the others (e.g. an
infrastructure failure of the verifier, not a verdict on the response) get advantage 0 and do not
enter any statistic. A new estimator is one function under ``@register_adv_estimator("name")``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

AdvantageFn = Callable[..., torch.Tensor]
ADV_ESTIMATORS: dict[str, AdvantageFn] = {}


def register_adv_estimator(name: str) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator: make ``fn`` available as ``algo.adv_estimator=name``."""

    def deco(fn: AdvantageFn) -> AdvantageFn:
        if name in ADV_ESTIMATORS and ADV_ESTIMATORS[name] is not fn:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        ADV_ESTIMATORS[name] = fn
        return fn

    return deco


def get_adv_estimator(name: str) -> AdvantageFn:
    try:
        return ADV_ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown advantage estimator {name!r}; registered: {', '.join(sorted(ADV_ESTIMATORS))}") from None


def compute_advantages(
    name: str,
    rewards: torch.Tensor,  # [B]
    group_ids: torch.Tensor,  # [B]
    *,
    norm_adv_by_std: bool = True,
    valid: torch.Tensor | None = None,  # [B] bool
    eps: float = 1e-6,
) -> torch.Tensor:  # [B] float32
    """The one entry point: ``compute_advantages(cfg.algo.adv_estimator, rewards, group_ids,
    norm_adv_by_std=cfg.algo.norm_adv_by_std, valid=valid)``."""
    return get_adv_estimator(name)(rewards, group_ids, norm_by_std=norm_adv_by_std, valid=valid, eps=eps)


class _Centred(NamedTuple):
    centred: torch.Tensor  # [B] reward minus its group's mean over valid members; 0 where invalid
    inverse: torch.Tensor  # [B] group index 0..G-1 of each response
    counts: torch.Tensor  # [G] valid members per group
    valid: torch.Tensor  # [B] float 1/0


def _group_centre(rewards: torch.Tensor, group_ids: torch.Tensor, valid: torch.Tensor | None) -> _Centred:
    """Subtract each group's mean, computed over its valid members only."""
    scores = rewards.float()
    v = torch.ones_like(scores) if valid is None else valid.to(device=scores.device, dtype=torch.bool).float()  # [B]
    if v.shape != scores.shape or group_ids.shape != scores.shape:
        raise ValueError(f"rewards {tuple(scores.shape)}, group_ids {tuple(group_ids.shape)} and valid "
                         f"{tuple(v.shape)} must all be [B]")
    _, inverse = torch.unique(group_ids, return_inverse=True)
    num_groups = int(inverse.max().item()) + 1 if inverse.numel() else 0
    zeros = torch.zeros(num_groups, dtype=scores.dtype, device=scores.device)
    counts = zeros.index_add(0, inverse, v)  # [G]
    kept = torch.where(v > 0, scores, torch.zeros_like(scores))  # [B] an invalid one's reward (even NaN) is ignored
    sums = zeros.index_add(0, inverse, kept)  # [G]
    means = sums / counts.clamp(min=1.0)  # [G]
    centred = torch.where(v > 0, scores - means[inverse], torch.zeros_like(scores))  # [B]; invalid -> 0
    return _Centred(centred, inverse, counts, v)


@register_adv_estimator("grpo")
def grpo_advantages(
    scores: torch.Tensor,  # [B] one scalar reward per response
    group_ids: torch.Tensor,  # [B] integer id of each response's prompt group
    *,
    norm_by_std: bool = True,
    valid: torch.Tensor | None = None,  # [B] bool, responses that count
    eps: float = 1e-6,
) -> torch.Tensor:  # [B]
    """GRPO: a response's reward minus its group's mean, divided by the group's std (unbiased,
    as verl) when ``norm_by_std``. Groups of one (valid member) and all-equal groups get 0."""
    c = _group_centre(scores, group_ids, valid)
    if not norm_by_std:
        return c.centred
    sq = torch.zeros_like(c.counts).index_add(0, c.inverse, c.centred**2)  # [G]
    std = torch.where(c.counts > 1, (sq / (c.counts - 1).clamp(min=1)).sqrt(), torch.zeros_like(sq))  # [G]
    return c.centred / (std[c.inverse] + eps)


@register_adv_estimator("reinforce_pp_baseline")
def reinforce_pp_baseline_advantages(
    scores: torch.Tensor,  # [B]
    group_ids: torch.Tensor,  # [B]
    *,
    norm_by_std: bool = True,
    valid: torch.Tensor | None = None,  # [B] bool
    eps: float = 1e-6,
) -> torch.Tensor:  # [B]
    """REINFORCE++-baseline (ProRL v2): subtract the group mean (the local baseline), then divide
    by the standard deviation of those centred values over the whole batch (global normalisation):

        c_i = r_i - mean_{j in group(i)} r_j ;   A_i = (c_i - mean_batch c) / (std_batch c + eps)

    Statistics are over valid responses, std unbiased (N - 1) like verl's ``masked_whiten``. Every
    group's centred values sum to 0, so ``mean_batch c`` is exactly 0 at the response level and is
    not subtracted (all-equal groups keep advantage exactly 0). verl whitens over tokens instead
    (a length-weighted mean and std); here, as everywhere in prorl, a response counts once.
    ``norm_by_std=False`` returns the centred values (the same as GRPO without std).
    """
    c = _group_centre(scores, group_ids, valid)
    if not norm_by_std:
        return c.centred
    n = c.valid.sum()
    var = (c.centred**2).sum() / (n - 1).clamp(min=1.0)  # batch mean of c is 0
    std = var.sqrt() if n > 1 else torch.zeros_like(var)
    return c.centred / (std + eps)
