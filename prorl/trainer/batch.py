"""From scored groups to the Actor's training batch: advantages (per group, from the algorithm
core), masks and tensors on the policy's device."""

from __future__ import annotations

import torch

from prorl.algo.core import adv_estimator_hyper, compute_advantages
from prorl.config import Config
from prorl.models.layout import PaddedBatch, pad_batch, pad_logprobs
from prorl.rollout.base import SamplingParams
from prorl.trainer.actor import TrainBatch
from prorl.trainer.rollout_step import Group

INFRA_ERROR = "infra_error"  # a failure of ours (worker died, service unreachable): no verdict on the response


def make_train_batch(groups: list[Group], cfg: Config, *, pad_token_id: int, device: str) -> tuple[TrainBatch, dict]:
    """Pad the groups' prompts and responses, compute advantages within each group and the loss
    mask (truncated responses optionally masked; samples without a verdict always excluded)."""
    n = len(groups[0].completions)
    prompts = [g.example.prompt_ids for g in groups for _ in range(n)]
    responses = [c.token_ids for g in groups for c in g.completions]
    seqs = pad_batch(prompts, responses, pad_token_id).to(device)
    rewards = torch.tensor([r for g in groups for r in g.rewards])  # [B]
    group_ids = torch.arange(len(groups)).repeat_interleave(n)  # [B]
    valid = torch.tensor([s != INFRA_ERROR for g in groups for s in g.statuses])  # [B]
    adv = compute_advantages(cfg.algo.adv_estimator, rewards, group_ids, norm_adv_by_std=cfg.algo.norm_adv_by_std,
                             valid=valid,  # samples without a verdict: advantage 0, outside the statistics
                             **adv_estimator_hyper(cfg.algo)).to(device)
    loss_mask = seqs.response_mask.clone()
    loss_mask[~valid.to(device)] = 0.0
    if cfg.reward.mask_truncated:
        trunc = torch.tensor([c.truncated for g in groups for c in g.completions], device=device)
        loss_mask[trunc] = 0.0
    temperature = groups[0].sampling.logprob_temperature  # the distribution the engine sampled from
    rollout_logp = pad_logprobs([c.logprobs for g in groups for c in g.completions], seqs.response_len)
    metrics = {"critic/advantages/mean": adv.mean().item(), "critic/advantages/max": adv.max().item(),
               "critic/advantages/min": adv.min().item(), "critic/rewards/mean": rewards.mean().item(),
               "perf/total_num_tokens": int(seqs.attention_mask.sum())}
    return TrainBatch(seqs, adv, loss_mask, n, temperature,
                      rollout_logp.to(device) if rollout_logp is not None else None), metrics


def empty_train_batch(sampling: SamplingParams, *, pad_token_id: int, device: str) -> TrainBatch:
    """No groups on this rank this step (dynamic sampling left it none): it still takes part in the
    update's collectives with zero-weight passes."""
    seqs = PaddedBatch(torch.full((0, 2), pad_token_id, device=device), torch.zeros(0, 2, dtype=torch.long, device=device),
                       torch.zeros(0, 1, device=device), 1)
    return TrainBatch(seqs, torch.zeros(0, device=device), seqs.response_mask, sampling.n, sampling.logprob_temperature)
