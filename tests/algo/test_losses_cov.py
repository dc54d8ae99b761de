"""Clip-Cov and KL-Cov (arXiv:2505.22617; prorl/algo/losses_cov.py): a hand-computed case for each
(the arithmetic is in the comments), the random draw of Clip-Cov, gradients by hand and by finite
differences, and their composition with the registry and the other losses. Agreement with verl's
own functions is in test_verl_reference.py."""

from __future__ import annotations

import math

import pytest
import torch

from prorl.algo.losses import POLICY_LOSSES, clip_policy_loss, make_policy_loss, policy_loss_hyper
from prorl.algo.losses_cov import clip_cov_policy_loss, kl_cov_policy_loss, token_covariance
from prorl.config import AlgoConfig

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


def hand_inputs():
    """B=2, T=3, the last token of row 1 padding. A = [2, -1]; ratios [[1.1, 1.5, 1.4], [0.9, 1.0, -]].
    Counted means: A (2*3 - 2)/5 = 0.8, logp (-0.5 - 2.5 - 1 - 3 - 0.5)/5 = -1.5, so
    cov = [[1.2*1, 1.2*-1, 1.2*0.5], [-1.8*-1.5, -1.8*1, -]] = [[1.2, -1.2, 0.6], [2.7, -1.8, -]]."""
    logp = torch.tensor([[-0.5, -2.5, -1.0], [-3.0, -0.5, -1.0]], dtype=torch.float64)
    ratio = torch.tensor([[1.1, 1.5, 1.4], [0.9, 1.0, 1.0]], dtype=torch.float64)
    adv = torch.tensor([2.0, -1.0], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    return logp, logp - ratio.log(), adv, mask


def test_token_covariance_by_hand():
    logp, _, adv, mask = hand_inputs()
    cov = token_covariance(logp, adv[:, None].expand_as(logp), mask > 0)
    torch.testing.assert_close(cov[mask > 0], torch.tensor([1.2, -1.2, 0.6, 2.7, -1.8], dtype=torch.float64))


def test_registered_with_their_config_fields():
    assert POLICY_LOSSES["clip_cov"] is clip_cov_policy_loss and POLICY_LOSSES["kl_cov"] is kl_cov_policy_loss
    cc = AlgoConfig(policy_loss="clip_cov", eps_low=0.1, eps_high=0.3, clip_cov_ratio=0.4, clip_cov_lb=0.5, clip_cov_ub=4.0)
    assert policy_loss_hyper(cc) == {"eps_low": 0.1, "eps_high": 0.3, "clip_cov_ratio": 0.4, "clip_cov_lb": 0.5,
                                     "clip_cov_ub": 4.0}
    kc = AlgoConfig(policy_loss="kl_cov", kl_cov_ratio=0.4, ppo_kl_coef=1.0, loss_agg_mode="seq-mean-token-sum")
    assert policy_loss_hyper(kc) == {"kl_cov_ratio": 0.4, "ppo_kl_coef": 1.0}
    logp, old, adv, mask = hand_inputs()
    got = make_policy_loss(kc)(logp, old, adv, mask)
    want = kl_cov_policy_loss(logp, old, adv, mask, agg_mode="seq-mean-token-sum", kl_cov_ratio=0.4, ppo_kl_coef=1.0)
    assert got.loss.item() == want.loss.item()


# --------------------------------------------------------------------------- clip_cov by hand

def _run(fn, *, grad: bool = True, **kw):
    logp, old, adv, mask = hand_inputs()
    lp = logp.clone().requires_grad_(grad)
    out = fn(lp, old, adv, mask, **kw)
    if grad:
        out.loss.backward()
    return out, lp.grad


def test_clip_cov_hand_computed_every_candidate_cut():
    """Window (0.5, 5): (0,0) 1.2, (0,2) 0.6, (1,0) 2.7; (0,2) is PPO-clipped (r 1.4 > 1.28, A > 0)
    and not a candidate. Budget int(0.4 * 5) = 2 = both candidates: deterministic.
    Losses: (0,0) cut 0; (0,1) max(-3, -2*1.28) = -2.56; (0,2) -2.56; (1,0) cut 0; (1,1) -(-1)*1 = 1.
    token-mean (-2.56 - 2.56 + 1) / 5 = -0.824. Gradient: only (1,1), -A r / N = 1/5."""
    out, g = _run(clip_cov_policy_loss, eps_low=0.2, eps_high=0.28, clip_cov_ratio=0.4, clip_cov_lb=0.5,
                  clip_cov_ub=5.0, generator=torch.Generator().manual_seed(0))
    assert out.loss.item() == pytest.approx(-0.824, abs=1e-12)
    torch.testing.assert_close(g, torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.2, 0.0]], dtype=torch.float64))
    assert float(out.extra["pg_clipfrac_cov"]) == pytest.approx(2 / 5)
    assert float(out.clipfrac) == float(out.clipfrac_high) == pytest.approx(2 / 5)  # (0,1), (0,2)
    assert float(out.clipfrac_lower) == float(out.clipfrac_below_low_bound) == 0.0


def test_clip_cov_draws_its_budget_at_random_among_the_candidates():
    """Budget int(0.2 * 5) = 1 of the 2 candidates. Cut (0,0): (1,0) keeps -(-1)*0.9 = 0.9 ->
    (-2.56 - 2.56 + 0.9 + 1) / 5 = -0.644; cut (1,0): (0,0) keeps -2*1.1 -> (-2.2 - 5.12 + 1) / 5 = -1.264."""
    seen = set()
    for seed in range(12):
        losses = [_run(clip_cov_policy_loss, grad=False, eps_low=0.2, eps_high=0.28, clip_cov_ratio=0.2, clip_cov_lb=0.5,
                       generator=torch.Generator().manual_seed(seed))[0].loss.item() for _ in range(2)]
        assert losses[0] == losses[1]  # the same seed draws the same token
        seen.add(round(losses[0], 9))
    assert seen == {-0.644, -1.264}
    # without a generator: torch's global one, as verl's randperm
    torch.manual_seed(3)
    first = _run(clip_cov_policy_loss, grad=False, clip_cov_ratio=0.2, clip_cov_lb=0.5)[0].loss.item()
    torch.manual_seed(3)
    assert _run(clip_cov_policy_loss, grad=False, clip_cov_ratio=0.2, clip_cov_lb=0.5)[0].loss.item() == first


def test_clip_cov_cuts_at_least_one_token_and_only_inside_the_window():
    # ratio 2e-4 * 5 tokens = 0.001 -> budget 1; window (1, 5) holds (0,0) 1.2 and (1,0) 2.7
    out, _ = _run(clip_cov_policy_loss, grad=False, generator=torch.Generator().manual_seed(0))
    assert float(out.extra["pg_clipfrac_cov"]) == pytest.approx(1 / 5)
    # window (3, 5): no candidate, nothing cut: the clip loss without the dual clip
    out, g = _run(clip_cov_policy_loss, eps_low=0.2, eps_high=0.28, clip_cov_ratio=1.0, clip_cov_lb=3.0)
    ref, g_ref = _run(clip_policy_loss, eps_low=0.2, eps_high=0.28, clip_ratio_c=None)
    assert float(out.extra["pg_clipfrac_cov"]) == 0.0 and out.loss.item() == ref.loss.item()
    torch.testing.assert_close(g, g_ref)


# --------------------------------------------------------------------------- kl_cov by hand

def test_kl_cov_hand_computed():
    """Budget int(0.4 * 5) = 2: the largest covariances (1,0) 2.7 and (0,0) 1.2. beta = 1.
    Losses -A r (+ |ln r| if selected): (0,0) -2.2 + .0953102; (0,1) -3; (0,2) -2.8; (1,0) .9 + .1053605;
    (1,1) 1. token-mean -5.9993293 / 5. Gradient (-A r + beta sign(ln r) sel) / 5:
    (0,0) (-2.2 + 1)/5, (0,1) -3/5, (0,2) -2.8/5, (1,0) (.9 - 1)/5, (1,1) 1/5."""
    out, g = _run(kl_cov_policy_loss, kl_cov_ratio=0.4, ppo_kl_coef=1.0)
    l1, l9, l14, l15 = math.log(1.1), math.log(0.9), math.log(1.4), math.log(1.5)
    assert out.loss.item() == pytest.approx((-2.2 + l1 - 3.0 - 2.8 + 0.9 - l9 + 1.0) / 5, abs=1e-12)
    torch.testing.assert_close(g, torch.tensor([[-0.24, -0.6, -0.56], [-0.02, 0.2, 0.0]], dtype=torch.float64))
    assert float(out.extra["kl_cov_fraction"]) == pytest.approx(2 / 5)
    assert float(out.extra["ppo_kl_abs"]) == pytest.approx((l1 + l15 + l14 - l9) / 5)
    assert float(out.approx_kl) == pytest.approx(-(l1 + l15 + l14 + l9) / 5)
    assert float(out.clipfrac) == float(out.clipfrac_lower) == 0.0  # no clip at all


def test_kl_cov_without_penalty_is_the_unclipped_surrogate_and_picks_at_least_one():
    out, g = _run(kl_cov_policy_loss, kl_cov_ratio=0.4, ppo_kl_coef=0.0)
    assert out.loss.item() == pytest.approx((-2.2 - 3.0 - 2.8 + 0.9 + 1.0) / 5, abs=1e-12)
    torch.testing.assert_close(g, torch.tensor([[-2.2, -3.0, -2.8], [0.9, 1.0, 0.0]], dtype=torch.float64) / 5)
    out, _ = _run(kl_cov_policy_loss, grad=False)  # 2e-4 * 5 -> 1 token: (1,0), cov 2.7
    assert float(out.extra["kl_cov_fraction"]) == pytest.approx(1 / 5)
    assert out.loss.item() == pytest.approx((-2.2 - 3.0 - 2.8 + 0.9 - 0.1 * math.log(0.9) + 1.0) / 5, abs=1e-12)


# --------------------------------------------------------------------------- gradients, weights, modes

def random_inputs(seed: int, B: int = 5, T: int = 8):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3 - 0.05
    logp = old + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.5
    adv = torch.randn(B, generator=g, dtype=torch.float64) * 1.5
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(torch.float64)
    w = 0.5 + torch.rand(B, T, generator=g, dtype=torch.float64)
    return logp, old, adv, mask, w


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("weighted", [False, True])
def test_gradients_match_finite_differences(mode, weighted):
    for seed in range(3):
        logp, old, adv, mask, w = random_inputs(seed)
        weights = w if weighted else None

        def clip_cov(lp):  # a fresh generator per call: the same tokens are cut every time
            return clip_cov_policy_loss(lp, old, adv, mask, agg_mode=mode, rollout_is_weights=weights, clip_cov_ratio=0.2,
                                        clip_cov_lb=0.2, generator=torch.Generator().manual_seed(seed)).loss

        def kl_cov(lp):
            return kl_cov_policy_loss(lp, old, adv, mask, agg_mode=mode, rollout_is_weights=weights, kl_cov_ratio=0.2,
                                      ppo_kl_coef=1.0).loss

        for fn in (clip_cov, kl_cov):
            assert torch.autograd.gradcheck(fn, (logp.clone().requires_grad_(True),), eps=1e-6, atol=1e-7)


def test_the_weights_multiply_the_per_token_loss():
    logp, old, adv, mask, w = random_inputs(7)
    for fn, kw in ((clip_cov_policy_loss, {"clip_cov_ratio": 0.2, "clip_cov_lb": 0.2}),
                   (kl_cov_policy_loss, {"kl_cov_ratio": 0.2, "ppo_kl_coef": 1.0})):
        gen = {"generator": torch.Generator().manual_seed(1)} if fn is clip_cov_policy_loss else {}
        plain = fn(logp, old, adv, mask, agg_mode="seq-mean-token-sum", **kw, **gen)
        gen = {"generator": torch.Generator().manual_seed(1)} if fn is clip_cov_policy_loss else {}
        const = fn(logp, old, adv, mask, agg_mode="seq-mean-token-sum", rollout_is_weights=torch.full_like(w, 2.5), **kw,
                   **gen)
        assert const.loss.item() == pytest.approx(2.5 * plain.loss.item(), rel=1e-12)
        for k in plain.extra:
            assert float(const.extra[k]) == float(plain.extra[k])  # statistics are not weighted


def test_on_policy_clip_cov_and_kl_cov_leave_the_clip_gradient_on_untouched_tokens():
    """ratio 1 (first mini-batch): no PPO clip, |log r| = 0 with gradient 0; so kl_cov's gradient is
    clip's everywhere, and clip_cov's is clip's except on the cut tokens (zero there)."""
    logp, _, adv, mask, _ = random_inputs(11)
    grads = {}
    for name, fn, kw in (("clip", clip_policy_loss, {}), ("kl_cov", kl_cov_policy_loss, {"kl_cov_ratio": 0.3}),
                         ("clip_cov", clip_cov_policy_loss, {"clip_cov_ratio": 0.3, "clip_cov_lb": 0.0,
                                                             "generator": torch.Generator().manual_seed(0)})):
        lp = logp.clone().requires_grad_(True)
        out = fn(lp, logp, adv, mask, **kw)
        out.loss.backward()
        grads[name] = (lp.grad, out)
    torch.testing.assert_close(grads["kl_cov"][0], grads["clip"][0], atol=1e-15, rtol=0)
    cut = (grads["clip_cov"][0] == 0) & (grads["clip"][0] != 0)
    n_cut = round(float(grads["clip_cov"][1].extra["pg_clipfrac_cov"]) * float(mask.sum()))
    assert int(cut.sum()) == n_cut == int(0.3 * float(mask.sum()))
    torch.testing.assert_close(grads["clip_cov"][0][~cut], grads["clip"][0][~cut], atol=1e-15, rtol=0)
