"""High-entropy-token updates (arXiv:2506.01939; prorl/algo/entropy_mask.py): the threshold and the
mask by hand, and the gradient of a loss weighted by the mask (only kept tokens, the denominator
of every counted token). The Actor's wiring is tested in tests/trainer/test_actor_widen.py."""

from __future__ import annotations

import math

import pytest
import torch

from prorl.algo.entropy_mask import entropy_top_mask, entropy_top_threshold
from prorl.algo.losses import clip_policy_loss, make_policy_loss
from prorl.config import AlgoConfig


@pytest.mark.parametrize(
    "values, fraction, want",
    [
        ([0.1, 2.0, 0.5, 1.0, 0.0], 0.2, 2.0),  # ceil(0.2 * 5) = 1: the largest
        ([0.1, 2.0, 0.5, 1.0, 0.0], 0.5, 0.5),  # ceil(2.5) = 3: 2.0, 1.0, 0.5
        ([0.1, 2.0, 0.5, 1.0, 0.0], 0.01, 2.0),  # at least one token
        ([0.1, 2.0, 0.5, 1.0, 0.0], 1.0, 0.0),  # every token
        ([float(i) for i in range(50)], 0.14, 43.0),  # 0.14 * 50 = 7.000000000000001 is 7 tokens (49..43), not 8
    ],
)
def test_threshold_by_hand(values, fraction, want):
    assert float(entropy_top_threshold(torch.tensor(values), fraction)) == want


def test_threshold_edge_cases():
    assert math.isinf(float(entropy_top_threshold(torch.zeros(0), 0.2)))  # nothing counted: nothing kept
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            entropy_top_threshold(torch.ones(3), bad)


def test_mask_keeps_the_top_counted_tokens_only():
    ent = torch.tensor([[0.3, 2.0, 0.1, 9.0], [1.5, 0.2, 0.9, 0.4]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])  # 9.0 is padding: never counted, never kept
    # 7 counted tokens, fraction 0.3: ceil(2.1) = 3 -> 2.0, 1.5, 0.9
    keep = entropy_top_mask(ent, mask, 0.3)
    assert keep.tolist() == [[0, 1, 0, 0], [1, 0, 1, 0]] and keep.dtype == ent.dtype
    # a threshold from a wider scope replaces this batch's own
    assert entropy_top_mask(ent, mask, 0.3, threshold=torch.tensor(1.0)).tolist() == [[0, 1, 0, 0], [1, 0, 0, 0]]
    assert entropy_top_mask(ent, mask, 0.3, threshold=0.25).tolist() == [[1, 1, 0, 0], [1, 0, 1, 1]]
    # ties at the threshold are all kept
    assert entropy_top_mask(torch.ones(2, 3), torch.ones(2, 3), 0.2).sum() == 6
    assert not entropy_top_mask(ent.requires_grad_(True), mask, 0.3).requires_grad


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_only_kept_tokens_get_a_gradient_and_the_denominator_stays(mode):
    """The paper's objective: 1/sum|o_i| * sum over kept tokens. As a 0/1 weight through any loss,
    on-policy d/dlogp_t = -A_b * keep_t / D with D the aggregation's count of *all* counted tokens
    (token-mean), or per sequence |o_b| * B' (seq-mean-token-mean), or B' (seq-mean-token-sum)."""
    g = torch.Generator().manual_seed(0)
    B, T = 4, 6
    logp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 2
    ent = torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    adv = torch.tensor([1.0, -0.5, 2.0, -1.5], dtype=torch.float64)
    mask = torch.ones(B, T, dtype=torch.float64)
    mask[1, 3:] = 0
    mask[3, 1:] = 0
    keep = entropy_top_mask(ent, mask, 0.2)
    assert int(keep.sum()) == math.ceil(0.2 * int(mask.sum()))
    for loss in (make_policy_loss(AlgoConfig(loss_agg_mode=mode)),
                 make_policy_loss(AlgoConfig(policy_loss="cispo", loss_agg_mode=mode)),
                 make_policy_loss(AlgoConfig(policy_loss="kl_cov", loss_agg_mode=mode))):
        lp = logp.clone().requires_grad_(True)
        loss(lp, logp, adv, mask, rollout_is_weights=keep).loss.backward()
        if mode == "token-mean":
            denom = mask.sum().expand(B, T)
        elif mode == "seq-mean-token-mean":
            denom = (mask.sum(-1, keepdim=True) * B).expand(B, T)
        else:
            denom = torch.full((B, T), float(B), dtype=torch.float64)
        torch.testing.assert_close(lp.grad, -adv[:, None] * keep / denom, atol=1e-15, rtol=1e-12)


def test_masked_loss_composes_with_the_correction_weights():
    g = torch.Generator().manual_seed(1)
    logp, old = -torch.rand(3, 5, generator=g, dtype=torch.float64), -torch.rand(3, 5, generator=g, dtype=torch.float64)
    adv, mask, w = torch.randn(3, generator=g, dtype=torch.float64), torch.ones(3, 5), torch.rand(3, 5, generator=g)
    keep = entropy_top_mask(torch.rand(3, 5, generator=g), mask, 0.4)
    both = clip_policy_loss(logp, old, adv, mask, rollout_is_weights=w * keep).loss
    by_hand = clip_policy_loss(logp, old, adv, mask * keep, rollout_is_weights=w).loss * keep.sum() / mask.sum()
    assert both.item() == pytest.approx(by_hand.item(), rel=1e-12)
