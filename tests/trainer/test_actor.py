"""Gradient accumulation in the actor update: micro-batches must add up to the mini-batch's
aggregated loss in every aggregation mode (a wrong micro-batch weight changes the update)."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from prorl.models.policy import load_policy
from prorl.rollout.base import pad_batch
from prorl.trainer.actor import batch_logprobs, update_actor
from prorl.trainer.loop import BUILTIN_TINY


@pytest.mark.parametrize("agg_mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_micro_batches_add_up_to_the_mini_batch(agg_mode):
    torch.manual_seed(0)
    model, tok = load_policy(BUILTIN_TINY)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, len(tok), (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist() for _ in range(8)]
    responses = [torch.randint(3, len(tok), (int(torch.randint(1, 7, (1,), generator=g)),), generator=g).tolist() for _ in range(8)]
    batch = pad_batch(prompts, responses, tok.pad_token_id)  # ragged lengths: token counts differ per micro-batch
    old = batch_logprobs(model, batch, 8, 1.0)
    adv = torch.randn(8, generator=g)

    def step(micro: int) -> dict[str, torch.Tensor]:
        m = copy.deepcopy(model)
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        update_actor(m, opt, batch, old_logp=old, ref_logp=old + 0.1, advantages=adv, loss_mask=batch.response_mask,
                     group_size=4, mini_batch_groups=2, micro_batch_size=micro, epochs=1, eps_low=0.2, eps_high=0.4,
                     agg_mode=agg_mode, kl_coef=0.5, kl_estimator="k3", entropy_coef=0.01, grad_clip=1e9,
                     temperature=1.0, rng=random.Random(0))
        return {k: v.detach().clone() for k, v in m.named_parameters()}

    whole, pieces = step(8), step(3)
    for k in whole:
        torch.testing.assert_close(pieces[k], whole[k], rtol=1e-4, atol=1e-6)
