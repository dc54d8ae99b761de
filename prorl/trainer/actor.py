"""The actor update: log-probs in micro-batches, then PPO-style mini-batch updates with the
decoupled-clip loss, the KL penalty to the reference and an optional entropy bonus."""

from __future__ import annotations

import random
from collections import defaultdict

import torch

from prorl.algo.core import aggregate_loss, kl_penalty, masked_mean, policy_loss
from prorl.models.policy import response_logprobs
from prorl.rollout.base import PackedBatch


@torch.no_grad()
def batch_logprobs(model, batch: PackedBatch, micro_batch_size: int, temperature: float) -> torch.Tensor:
    """Log-probs of every response token under ``model`` without grad. # -> [B, R]"""
    was_training = model.training
    model.eval()
    out = []
    for s in range(0, batch.input_ids.shape[0], micro_batch_size):
        lp, _ = response_logprobs(model, batch.input_ids[s:s + micro_batch_size],
                                  batch.attention_mask[s:s + micro_batch_size], batch.response_len,
                                  temperature=temperature)
        out.append(lp)
    model.train(was_training)
    return torch.cat(out)


def _agg_count(mask: torch.Tensor, agg_mode: str) -> torch.Tensor:
    """What the aggregation divides by: counted tokens (token-mean) or sequences with any token."""
    return mask.sum() if agg_mode == "token-mean" else (mask.sum(-1) > 0).sum().float()


def update_actor(
    model,
    optimizer: torch.optim.Optimizer,
    batch: PackedBatch,
    *,
    old_logp: torch.Tensor,  # [B, R]
    ref_logp: torch.Tensor | None,  # [B, R]
    advantages: torch.Tensor,  # [B]
    loss_mask: torch.Tensor,  # [B, R] response mask, truncated responses possibly masked out
    group_size: int,
    mini_batch_groups: int,
    micro_batch_size: int,
    epochs: int,
    eps_low: float,
    eps_high: float,
    agg_mode: str,
    kl_coef: float,
    kl_estimator: str,
    entropy_coef: float,
    grad_clip: float,
    temperature: float,
    rng: random.Random,
) -> dict[str, float]:
    """Run ``epochs`` passes of mini-batch updates over the batch; returns verl-named metrics.

    Micro-batch losses are weighted so that their sum equals the mini-batch's aggregated loss
    (by token count for token-mean, by sequence count for the seq-mean modes).
    """
    model.train()
    num_groups = batch.input_ids.shape[0] // group_size
    stats: dict[str, list[float]] = defaultdict(list)
    for _ in range(epochs):
        order = list(range(num_groups))
        rng.shuffle(order)
        for mb_start in range(0, num_groups, mini_batch_groups):
            groups = order[mb_start:mb_start + mini_batch_groups]
            idx = torch.tensor([g * group_size + j for g in groups for j in range(group_size)], device=loss_mask.device)
            total = _agg_count(loss_mask[idx], agg_mode).clamp(min=1.0)
            optimizer.zero_grad(set_to_none=True)
            for s in range(0, len(idx), micro_batch_size):
                sub = idx[s:s + micro_batch_size]
                mask = loss_mask[sub]
                weight = _agg_count(mask, agg_mode) / total
                if weight.item() == 0:
                    continue
                logp, ent = response_logprobs(model, batch.input_ids[sub], batch.attention_mask[sub],
                                              batch.response_len, temperature=temperature, with_entropy=True)
                pl = policy_loss(logp, old_logp[sub], advantages[sub], mask, eps_low=eps_low,
                                 eps_high=eps_high, agg_mode=agg_mode)
                loss = pl.loss
                if ref_logp is not None and kl_coef > 0:
                    kl = aggregate_loss(kl_penalty(logp, ref_logp[sub], kl_estimator), mask, agg_mode)
                    loss = loss + kl_coef * kl
                    stats["actor/kl_loss"].append(kl.item())
                ent_mean = aggregate_loss(ent, mask, agg_mode)
                if entropy_coef:
                    loss = loss - entropy_coef * ent_mean
                (loss * weight).backward()
                stats["actor/pg_loss"].append(pl.loss.item())
                stats["actor/pg_clipfrac"].append(pl.clipfrac.item())
                stats["actor/pg_clipfrac_higher"].append(pl.clipfrac_high.item())
                stats["actor/pg_clipfrac_lower"].append(pl.clipfrac_lower.item())
                stats["actor/ppo_kl"].append(pl.approx_kl.item())
                stats["actor/entropy"].append(masked_mean(ent.detach(), mask).item())
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            if torch.isfinite(grad_norm):
                optimizer.step()
            else:
                stats["actor/nonfinite_grad_skips"].append(1.0)
            stats["actor/grad_norm"].append(float(grad_norm))
    return {k: sum(v) / len(v) for k, v in stats.items() if v}
