"""Tests of the pure algorithm core (prorl/algo/core.py).

Each function is checked twice: against small hand-computed cases (arithmetic in the comments)
and against a deliberately naive looped pure-Python reference on random seeded tensors of
several shapes, with padding masks. Gradients are compared through autograd.
"""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
import torch

from prorl.algo.core import (
    aggregate_loss,
    filter_groups,
    grpo_advantages,
    kl_penalty,
    masked_mean,
    overlong_penalty,
)
from prorl.algo.losses import clip_policy_loss

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
SHAPES = [(1, 1), (3, 5), (8, 17), (16, 3)]


# --------------------------------------------------------------------------- looped references

def ref_advantages(scores: list[float], gids: list[int], norm: bool = True, eps: float = 1e-6) -> list[float]:
    """GRPO by hand: per group mean and unbiased std; groups of one get 0."""
    groups: dict[int, list[float]] = defaultdict(list)
    for s, g in zip(scores, gids):
        groups[g].append(s)
    out = []
    for s, g in zip(scores, gids):
        xs = groups[g]
        mean = sum(xs) / len(xs)
        if not norm:
            out.append(s - mean)
            continue
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
        out.append((s - mean) / (std + eps))
    return out


def ref_aggregate(loss: list[list], mask: list[list], mode: str):
    """Aggregation with explicit loops; works on floats or on torch scalars (for autograd)."""
    if mode == "token-mean":
        total, count = 0.0, 0.0
        for row_l, row_m in zip(loss, mask):
            for l, m in zip(row_l, row_m):
                if m:
                    total = total + l
                    count += 1
        return total / max(count, 1.0)
    per_seq = []
    for row_l, row_m in zip(loss, mask):
        s, c = 0.0, 0
        for l, m in zip(row_l, row_m):
            if m:
                s = s + l
                c += 1
        if c == 0:
            continue  # fully masked sequences are ignored
        per_seq.append(s / c if mode == "seq-mean-token-mean" else s)
    if not per_seq:
        return 0.0
    total = 0.0
    for v in per_seq:
        total = total + v
    return total / len(per_seq)


def _val(x) -> float:
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


def ref_token_loss(lp, olp, a, eps_low, eps_high, c=3.0):
    """-min(r A, clip(r) A) for one token, then capped at -A c when A < 0 (dual clip; c None: no cap);
    lp/olp may be floats or torch scalars."""
    lr = lp - olp
    r = torch.exp(lr) if isinstance(lr, torch.Tensor) else math.exp(lr)
    lo, hi = 1.0 - eps_low, 1.0 + eps_high
    r_clip = r if lo <= _val(r) <= hi else (r * 0 + (lo if _val(r) < lo else hi))  # constant: no gradient
    obj_unclipped, obj_clipped = r * a, r_clip * a
    loss = -(obj_unclipped if _val(obj_unclipped) <= _val(obj_clipped) else obj_clipped)
    if c is not None and a < 0 and _val(loss) > -a * c:
        loss = loss * 0 + (-a * c)  # a constant: no gradient
    return loss


def ref_policy_loss(logp, old, adv, mask, eps_low, eps_high, mode, c=3.0):
    """Looped policy loss over torch scalars (autograd flows through ``logp``) plus its statistics:
    loss, clipfrac, high, dual (the dual clip is active), below_low (r < 1 - eps_low, A < 0), kl."""
    B, T = logp.shape
    loss = [[ref_token_loss(logp[b, t], old[b, t], float(adv[b]), eps_low, eps_high, c) for t in range(T)]
            for b in range(B)]
    m = mask.tolist()
    logp_v = logp.detach()
    clipped = high = low = dual = kl = 0.0
    n = 0
    for b in range(B):
        for t in range(T):
            if not m[b][t]:
                continue
            n += 1
            r = math.exp(float(logp_v[b, t]) - float(old[b, t]))
            a = float(adv[b])
            high += a > 0 and r > 1 + eps_high
            low += a < 0 and r < 1 - eps_low
            clipped += (a > 0 and r > 1 + eps_high) or (a < 0 and r < 1 - eps_low)
            dual += c is not None and a < 0 and r > c  # -A r > -A c
            kl += float(old[b, t]) - float(logp_v[b, t])
    n = max(n, 1)
    return ref_aggregate(loss, m, mode), clipped / n, high / n, dual / n, low / n, kl / n


def random_batch(B: int, T: int, seed: int, dtype=torch.float64):
    """Random logp/old_logp with ratios spread around the clip range, advantages, padded mask."""
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, T, generator=g, dtype=dtype) * 3  # [B, T]
    logp = old + torch.randn(B, T, generator=g, dtype=dtype) * 0.4  # [B, T] ratios ~ e^{N(0, .4)}
    adv = torch.randn(B, generator=g, dtype=dtype)  # [B]
    lengths = torch.randint(0, T + 1, (B,), generator=g)  # some rows fully padded
    lengths[0] = T  # at least one full row
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(dtype)  # [B, T] right padding
    return logp, old, adv, mask


# --------------------------------------------------------------------------- grpo_advantages

def test_grpo_hand_computed_unbiased_std():
    # one group [1, 0, 0, 0]: mean 0.25, centred [.75, -.25, -.25, -.25]
    # unbiased var = (.5625 + 3 * .0625) / 3 = .25 -> std .5 -> adv [1.5, -.5, -.5, -.5]
    # (the biased std sqrt(.1875) = .433 would give 1.732)
    adv = grpo_advantages(torch.tensor([1.0, 0, 0, 0]), torch.tensor([0, 0, 0, 0]), eps=0.0)
    torch.testing.assert_close(adv, torch.tensor([1.5, -0.5, -0.5, -0.5]))


def test_grpo_eps_in_denominator():
    # group [0, 1]: mean .5, centred [-.5, .5], unbiased std sqrt(.5 / 1) = .70711
    # eps = 1 -> .5 / 1.70711 = .29289
    adv = grpo_advantages(torch.tensor([0.0, 1.0]), torch.tensor([5, 5]), eps=1.0)
    torch.testing.assert_close(adv, torch.tensor([-0.29289, 0.29289]), atol=1e-5, rtol=0)


def test_grpo_groups_non_contiguous_and_independent():
    # ids 7 and 3 interleaved: group 7 = [1, 0] -> [.7071, -.7071]; group 3 = [2, 2] -> [0, 0]
    adv = grpo_advantages(torch.tensor([1.0, 2.0, 0.0, 2.0]), torch.tensor([7, 3, 7, 3]), eps=1e-9)
    torch.testing.assert_close(adv, torch.tensor([0.70711, 0.0, -0.70711, 0.0]), atol=1e-5, rtol=0)


def test_grpo_all_equal_and_singleton_groups_get_zero():
    scores = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.7, 0.3])  # [B]
    gids = torch.tensor([0, 0, 0, 1, 1, 2, 3])  # groups: all-correct, all-wrong, two singletons
    adv = grpo_advantages(scores, gids)
    assert torch.equal(adv, torch.zeros(7))
    assert torch.isfinite(adv).all()
    assert torch.equal(grpo_advantages(scores, gids, norm_by_std=False), torch.zeros(7))


def test_grpo_without_std_norm_is_centred_only():
    # group [3, 1, 2]: mean 2 -> [1, -1, 0]
    adv = grpo_advantages(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([0, 0, 0]), norm_by_std=False)
    torch.testing.assert_close(adv, torch.tensor([1.0, -1.0, 0.0]))


def test_grpo_empty_batch():
    assert grpo_advantages(torch.zeros(0), torch.zeros(0, dtype=torch.long)).numel() == 0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("norm", [True, False])
def test_grpo_matches_looped_reference(seed, norm):
    g = torch.Generator().manual_seed(seed)
    n_groups, n = [(1, 1), (3, 4), (5, 16), (8, 2), (2, 7), (4, 3)][seed]
    gids = torch.arange(n_groups).repeat_interleave(n)[torch.randperm(n_groups * n, generator=g)]  # [B]
    scores = (torch.rand(n_groups * n, generator=g) < 0.5).float()  # [B] binary rewards
    scores += torch.randn(n_groups * n, generator=g) * (seed % 2) * 0.3  # and continuous ones
    got = grpo_advantages(scores, gids, norm_by_std=norm)
    want = ref_advantages(scores.tolist(), gids.tolist(), norm=norm)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float32), atol=1e-4, rtol=1e-4)
    # advantages sum to zero inside every group
    for gi in range(n_groups):
        assert abs(float(got[gids == gi].sum())) < 1e-4


# --------------------------------------------------------------------------- aggregate_loss

def test_aggregate_hand_computed():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 99.0, 99.0], [7.0, 7.0, 7.0]])  # [B=3, T=3]
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])  # row 2 fully masked
    # token-mean: (1 + 2 + 3 + 4) / 4 = 2.5
    assert float(aggregate_loss(loss, mask, "token-mean")) == pytest.approx(2.5)
    # seq-mean-token-mean: mean(6/3, 4/1) = 3 (row 2 ignored, not counted as 0)
    assert float(aggregate_loss(loss, mask, "seq-mean-token-mean")) == pytest.approx(3.0)
    # seq-mean-token-sum: mean(6, 4) = 5
    assert float(aggregate_loss(loss, mask, "seq-mean-token-sum")) == pytest.approx(5.0)


@pytest.mark.parametrize("mode", AGG_MODES)
def test_aggregate_all_masked_is_zero_and_finite(mode):
    out = aggregate_loss(torch.ones(2, 3), torch.zeros(2, 3), mode)
    assert float(out) == 0.0


def test_aggregate_unknown_mode():
    with pytest.raises(ValueError, match="loss_agg_mode"):
        aggregate_loss(torch.ones(1, 1), torch.ones(1, 1), "token-sum")


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("shape", SHAPES)
def test_aggregate_matches_looped_reference(mode, shape):
    B, T = shape
    _, _, _, mask = random_batch(B, T, seed=B * 31 + T)
    loss = torch.randn(B, T, generator=torch.Generator().manual_seed(T), dtype=torch.float64)  # [B, T]
    want = ref_aggregate(loss.tolist(), mask.tolist(), mode)
    assert float(aggregate_loss(loss, mask, mode)) == pytest.approx(want, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("mode", ["seq-mean-token-mean", "seq-mean-token-sum"])
def test_seq_mean_modes_ignore_fully_masked_rows(mode):
    g = torch.Generator().manual_seed(0)
    loss = torch.randn(5, 4, generator=g)  # [B, T]
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0]])
    keep = torch.tensor([0, 2, 4])
    torch.testing.assert_close(aggregate_loss(loss, mask, mode), aggregate_loss(loss[keep], mask[keep], mode))


# --------------------------------------------------------------------------- clip_policy_loss: hand-computed clip boundaries

def _one_token(ratio: float, adv: float, **kw):
    """clip_policy_loss on a single token with the given ratio (old_logp = 0, logp = log ratio)."""
    logp = torch.tensor([[math.log(ratio)]], dtype=torch.float64, requires_grad=True)  # [1, 1]
    out = clip_policy_loss(logp, torch.zeros(1, 1, dtype=torch.float64), torch.tensor([adv], dtype=torch.float64),
                      torch.ones(1, 1), eps_low=0.2, eps_high=0.4, **kw)
    out.loss.backward()
    return out, float(logp.grad)


@pytest.mark.parametrize(
    "ratio, adv, loss, clipped, side",
    [
        # A > 0: the upper bound 1 + 0.4 bites; -min(r, clip(r)) * A
        (1.3999, 1.0, -1.3999, False, None),  # inside: -1.3999, gradient -A r
        (1.4001, 1.0, -1.4, True, "high"),  # outside: clipped to -1.4, no gradient
        (2.0, 2.0, -2.8, True, "high"),  # -min(2 * 2, 1.4 * 2) = -2.8
        (0.8001, 1.0, -0.8001, False, None),
        (0.5, 1.0, -0.5, False, None),  # below 1 - eps_low but A > 0: min(0.5, 0.8) = 0.5 is kept
        # A < 0: the lower bound 1 - 0.2 bites
        (0.8001, -1.0, 0.8001, False, None),  # inside: -(r * -1) = .8001
        (0.7999, -1.0, 0.8, True, "low"),  # outside: -min(-.7999, -.8) = .8, no gradient
        (0.5, -3.0, 2.4, True, "low"),  # -min(-1.5, -2.4) = 2.4
        (1.4001, -1.0, 1.4001, False, None),  # above 1 + eps_high but A < 0: -min(-1.4001, -1.4) kept
        (2.999, -1.0, 2.999, False, None),  # just under the dual clip's cap -A c = 3 (test_dual_clip.py: above it)
        # A = 0: nothing, never counted as clipped
        (5.0, 0.0, 0.0, False, None),
    ],
)
def test_clip_boundaries(ratio, adv, loss, clipped, side):
    out, grad = _one_token(ratio, adv)
    assert out.loss.item() == pytest.approx(loss, abs=1e-9)
    assert float(out.clipfrac) == float(clipped)
    assert float(out.clipfrac_high) == float(side == "high")
    assert float(out.clipfrac_below_low_bound) == float(side == "low")
    assert float(out.clipfrac_lower) == 0.0  # r <= 3 = clip_ratio_c: the dual clip never bites here
    # d/dlogp of -A r = -A r (unclipped); 0 when the clip is active
    assert grad == pytest.approx(0.0 if clipped else -adv * ratio, abs=1e-9)
    assert float(out.approx_kl) == pytest.approx(-math.log(ratio), abs=1e-12)


def test_decoupled_eps_low_high():
    # eps_low=0.1, eps_high=0.5; ratio 0.85 with A<0 is clipped only when eps_low > 0.15
    logp = torch.log(torch.tensor([[0.85, 1.45]], dtype=torch.float64))  # [1, 2]
    old = torch.zeros(1, 2, dtype=torch.float64)
    mask = torch.ones(1, 2)
    neg = clip_policy_loss(logp, old, torch.tensor([-1.0], dtype=torch.float64), mask, eps_low=0.1, eps_high=0.5)
    # token0: r=.85 >= .9? no -> clipped to .9: loss .9 ; token1: r=1.45, A<0: 1.45 ; mean 1.175
    assert neg.loss.item() == pytest.approx(1.175)
    assert float(neg.clipfrac_below_low_bound) == 0.5 and float(neg.clipfrac_high) == 0.0
    assert float(neg.clipfrac_lower) == 0.0  # ratios below clip_ratio_c: no dual clip
    pos = clip_policy_loss(logp, old, torch.tensor([1.0], dtype=torch.float64), mask, eps_low=0.1, eps_high=0.5)
    # A>0: token0 -.85 ; token1 r=1.45 < 1.5 not clipped: -1.45 ; mean -1.15
    assert pos.loss.item() == pytest.approx(-1.15)
    assert float(pos.clipfrac) == 0.0


def test_per_token_advantages_accepted():
    logp = torch.zeros(2, 3)  # [B, T] ratio 1 everywhere
    adv = torch.tensor([[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]])  # [B, T]
    out = clip_policy_loss(logp, logp, adv, torch.ones(2, 3))
    # -(1+2+3-1-2-3)/6 = 0
    assert out.loss.item() == pytest.approx(0.0)
    out = clip_policy_loss(logp, logp, adv, torch.tensor([[1, 1, 1], [0, 0, 0]]))
    assert out.loss.item() == pytest.approx(-2.0)  # -(1+2+3)/3


# --------------------------------------------------------------------------- clip_policy_loss vs looped reference

@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("eps", [(0.2, 0.4), (0.2, 0.2), (0.1, 0.28)])
@pytest.mark.parametrize("c", [3.0, 1.2, None])  # 1.2: ratios e^{N(0, .4)} pass it often, so the dual clip bites
def test_policy_loss_matches_looped_reference(mode, shape, eps, c):
    B, T = shape
    logp, old, adv, mask = random_batch(B, T, seed=B * 100 + T)
    lp = logp.clone().requires_grad_(True)
    out = clip_policy_loss(lp, old, adv, mask, eps_low=eps[0], eps_high=eps[1], clip_ratio_c=c, agg_mode=mode)
    out.loss.backward()

    lp_ref = logp.clone().requires_grad_(True)
    ref_loss, clipfrac, high, dual, low, kl = ref_policy_loss(lp_ref, old, adv, mask, eps[0], eps[1], mode, c)
    assert out.loss.item() == pytest.approx(_val(ref_loss), rel=1e-9, abs=1e-12)
    assert float(out.clipfrac) == pytest.approx(clipfrac)
    assert float(out.clipfrac_high) == pytest.approx(high)
    assert float(out.clipfrac_lower) == pytest.approx(dual)
    assert float(out.clipfrac_below_low_bound) == pytest.approx(low)
    assert float(out.approx_kl) == pytest.approx(kl, rel=1e-9, abs=1e-12)
    if isinstance(ref_loss, torch.Tensor) and ref_loss.requires_grad:
        ref_loss.backward()
        torch.testing.assert_close(lp.grad, lp_ref.grad, atol=1e-12, rtol=1e-9)
    else:  # everything masked: the gradient is all zero
        assert torch.count_nonzero(lp.grad) == 0


def test_policy_loss_gradient_analytic_token_mean():
    # d loss / d logp[b,t] = -A_b r_bt / N on unclipped, unmasked tokens; 0 elsewhere (also where
    # the dual clip caps an A < 0 token with r > clip_ratio_c = 3)
    logp, old, adv, mask = random_batch(6, 9, seed=11)
    lp = logp.clone().requires_grad_(True)
    clip_policy_loss(lp, old, adv, mask, eps_low=0.2, eps_high=0.4).loss.backward()
    n = float(mask.sum())
    want = torch.zeros_like(logp)
    for b in range(6):
        for t in range(9):
            r = math.exp(float(logp[b, t] - old[b, t]))
            a = float(adv[b])
            active = (a > 0 and r > 1.4) or (a < 0 and (r < 0.8 or r > 3.0))
            if mask[b, t] and not active:
                want[b, t] = -a * r / n
    torch.testing.assert_close(lp.grad, want, atol=1e-12, rtol=1e-9)


@pytest.mark.parametrize("mode", AGG_MODES)
def test_masked_tokens_do_not_contribute(mode):
    logp, old, adv, mask = random_batch(5, 7, seed=3)
    mask[1, 3:] = 0  # make sure there is padding
    outs, grads = [], []
    for trial in range(2):
        lp, olp = logp.clone(), old.clone()
        if trial:  # garbage (even extreme) values on padded positions
            junk = torch.randn(5, 7, generator=torch.Generator().manual_seed(9), dtype=torch.float64) * 50
            lp = torch.where(mask.bool(), lp, junk)
            olp = torch.where(mask.bool(), olp, -junk)
        lp.requires_grad_(True)
        out = clip_policy_loss(lp, olp, adv, mask, agg_mode=mode)
        out.loss.backward()
        outs.append(out)
        grads.append(lp.grad)
    for field in ("loss", "clipfrac", "clipfrac_high", "clipfrac_lower", "clipfrac_below_low_bound", "approx_kl"):
        assert _val(getattr(outs[0], field)) == pytest.approx(_val(getattr(outs[1], field)), rel=1e-12, abs=1e-15)
    torch.testing.assert_close(grads[0], grads[1])
    assert torch.count_nonzero(grads[0][mask == 0]) == 0


def test_zero_advantage_gives_zero_loss_and_gradient():
    logp, old, _, mask = random_batch(4, 6, seed=5)
    lp = logp.clone().requires_grad_(True)
    out = clip_policy_loss(lp, old, torch.zeros(4, dtype=torch.float64), mask)
    out.loss.backward()
    assert out.loss.item() == 0.0
    assert torch.count_nonzero(lp.grad) == 0
    assert float(out.clipfrac) == 0.0


def test_on_policy_ratio_one_is_minus_mean_advantage():
    # first mini-batch of a step: logp == old_logp, ratio 1 everywhere -> loss = -sum(A * m) / sum(m)
    logp, _, adv, mask = random_batch(4, 6, seed=8)
    out = clip_policy_loss(logp, logp, adv, mask)
    want = -float((adv[:, None] * mask).sum() / mask.sum())
    assert out.loss.item() == pytest.approx(want, rel=1e-12)
    assert float(out.approx_kl) == 0.0 and float(out.clipfrac) == 0.0


def test_extreme_log_ratio_is_finite():
    logp = torch.tensor([[0.0, -100.0]], requires_grad=True)  # [1, 2]
    old = torch.tensor([[-100.0, 0.0]])  # log ratios +100 / -100, clamped to +-20
    out = clip_policy_loss(logp, old, torch.tensor([-1.0]), torch.ones(1, 2))
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(logp.grad).all()


# --------------------------------------------------------------------------- kl_penalty

def test_kl_hand_computed():
    logp = torch.tensor([[0.0]], dtype=torch.float64)
    ref = torch.tensor([[math.log(2.0)]], dtype=torch.float64)
    # log r = logp - ref = -ln 2 = -.693147
    assert float(kl_penalty(logp, ref, "k1")) == pytest.approx(-0.693147, abs=1e-6)
    # k2 = (ln 2)^2 / 2 = .240227
    assert float(kl_penalty(logp, ref, "k2")) == pytest.approx(0.240227, abs=1e-6)
    # k3 = exp(ln 2) - 1 - ln 2 = 2 - 1 - .693147 = .306853
    assert float(kl_penalty(logp, ref, "k3")) == pytest.approx(0.306853, abs=1e-6)
    # other side: log r = +ln 2: k3 = 1/2 - 1 + ln 2 = .193147
    assert float(kl_penalty(ref, logp, "k3")) == pytest.approx(0.193147, abs=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("est", ["k1", "k2", "k3"])
def test_kl_matches_looped_reference(shape, est):
    logp, ref, _, _ = random_batch(*shape, seed=shape[0] + 7 * shape[1])
    got = kl_penalty(logp, ref, est)
    assert got.shape == logp.shape
    for b in range(shape[0]):
        for t in range(shape[1]):
            lr = float(logp[b, t] - ref[b, t])
            want = {"k1": lr, "k2": 0.5 * lr * lr, "k3": math.exp(-lr) - 1 + lr}[est]
            assert float(got[b, t]) == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_k3_nonnegative_zero_at_equality_and_clamped():
    g = torch.Generator().manual_seed(0)
    logp = torch.randn(64, 32, generator=g, dtype=torch.float64) * 3  # [B, T]
    ref = torch.randn(64, 32, generator=g, dtype=torch.float64) * 3
    assert (kl_penalty(logp, ref, "k3") >= 0).all()
    assert (kl_penalty(logp, ref, "k2") >= 0).all()
    for est in ("k1", "k2", "k3"):  # right after a reference reset: KL is 0 ...
        lp = logp.clone().requires_grad_(True)
        kl = kl_penalty(lp, logp, est)
        assert torch.count_nonzero(kl) == 0
        kl.sum().backward()
        # ... and so is its gradient for k2/k3 (d/dx (e^-x - 1 + x) = 0 at x = 0); k1's is 1
        assert torch.equal(lp.grad, torch.ones_like(lp) if est == "k1" else torch.zeros_like(lp))
    # log r = -30: exp(30) explodes; verl-style clamp to 10
    assert float(kl_penalty(torch.tensor([[-30.0]]), torch.tensor([[0.0]]), "k3")) == 10.0


def test_k3_nonnegative_in_float32_near_equality():
    # right after a reset the policy and the reference agree to ~1e-4: exp(x) rounds to 1 in float32
    # for |x| < 6e-8 and exp(x) - 1 - x = -x < 0 for x > 0. Fix: (torch.expm1(lr) - lr).clamp(0, 10).
    g = torch.Generator().manual_seed(0)
    logp = torch.randn(256, 256, generator=g)  # [B, T] float32
    ref = logp + torch.randn(256, 256, generator=g) * 1e-4
    assert (kl_penalty(logp, ref, "k3") >= 0).all()


def test_k1_k3_expectations_equal_exact_kl():
    # For x ~ p: E[k1] = E[k3] = KL(p || q) exactly (k3: sum_x q - 1 + KL = KL). Enumerate a categorical.
    g = torch.Generator().manual_seed(1)
    # moderate spread so that no k3 value reaches the +10 stability clamp (which would bias it)
    logp = torch.log_softmax(torch.randn(50, generator=g, dtype=torch.float64) * 0.5, -1)  # [V]
    logq = torch.log_softmax(torch.randn(50, generator=g, dtype=torch.float64) * 0.5, -1)
    p = logp.exp()
    kl = float((p * (logp - logq)).sum())
    for est in ("k1", "k3"):
        assert float((p * kl_penalty(logp[None], logq[None], est)[0]).sum()) == pytest.approx(kl, rel=1e-9)


def test_kl_unknown_estimator():
    with pytest.raises(ValueError, match="k4"):
        kl_penalty(torch.zeros(1, 1), torch.zeros(1, 1), "k4")


# --------------------------------------------------------------------------- masked_mean

def test_masked_mean():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 100.0, 100.0]])  # [B, T]
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert float(masked_mean(x, m)) == pytest.approx(2.0)  # (1 + 2 + 3) / 3
    assert float(masked_mean(x, torch.zeros(2, 3))) == 0.0


# --------------------------------------------------------------------------- filter_groups

def test_filter_groups_counts():
    res = filter_groups([
        [1, 0, 1, 0],  # 0 kept
        [1, 1, 1, 1],  # all correct
        [0, 0, 0, 0],  # all wrong
        [0.5, 0.5, 0.5],  # equal but neither
        [1, 1, 1, 0.0],  # 4 kept
        [1],  # group of one: equal by definition (correct)
        [0],  # group of one: wrong
        [0.3],  # group of one: other
    ])
    assert res.keep == [0, 4]
    assert (res.dropped_all_correct, res.dropped_all_wrong, res.dropped_other_equal) == (2, 2, 2)


def test_filter_groups_tolerance_and_consistency_with_advantages():
    res = filter_groups([[1.0, 1.0 + 1e-12], [0.0, 1e-3]])
    assert res.keep == [1]
    # every dropped group has all-zero GRPO advantages, every kept one has some non-zero advantage
    g = torch.Generator().manual_seed(4)
    groups = [(torch.rand(4, generator=g) < p).float().tolist() for p in (0.0, 0.3, 0.5, 1.0, 0.8, 0.1) * 3]
    res = filter_groups(groups)
    scores = torch.tensor([s for grp in groups for s in grp])
    gids = torch.arange(len(groups)).repeat_interleave(4)
    adv = grpo_advantages(scores, gids).view(len(groups), 4)
    for gi in range(len(groups)):
        assert (gi in res.keep) == bool(adv[gi].abs().max() > 0)
    assert len(res.keep) + res.dropped_all_correct + res.dropped_all_wrong + res.dropped_other_equal == len(groups)


# --------------------------------------------------------------------------- overlong_penalty

def test_overlong_penalty_hand_computed():
    lengths = torch.tensor([0, 10, 16, 17, 18, 20, 25])  # [B]
    # max 20, buffer 4 -> starts at 16, -(len - 16) / 4 * factor, capped at -factor
    got = overlong_penalty(lengths, max_len=20, buffer_len=4, factor=0.5)
    torch.testing.assert_close(got, torch.tensor([0, 0, 0, -0.125, -0.25, -0.5, -0.5]))
    assert torch.equal(overlong_penalty(lengths, 20, 0), torch.zeros(7))


def test_overlong_penalty_looped_reference():
    lengths = torch.arange(0, 130)
    got = overlong_penalty(lengths, max_len=128, buffer_len=32, factor=1.0)
    for n, v in zip(lengths.tolist(), got.tolist()):
        want = min(0.0, -(n - 96) / 32) if n <= 128 else -1.0
        assert v == pytest.approx(want, abs=1e-6)
