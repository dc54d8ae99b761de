"""Tests of the policy-loss registry (prorl/algo/losses.py): CISPO by hand and against a looped
reference with autograd, the rollout importance-sampling weights for every loss, and the
config -> loss binding the actor uses."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from prorl.algo.losses import (
    POLICY_LOSSES,
    cispo_policy_loss,
    clip_policy_loss,
    get_policy_loss,
    make_policy_loss,
    policy_loss_hyper,
    register_policy_loss,
)
from prorl.config import AlgoConfig

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
SHAPES = [(1, 1), (3, 5), (8, 17)]


def random_batch(B: int, T: int, seed: int, dtype=torch.float64, spread: float = 0.4):
    """log-probs (negative, as real ones), ratios e^{N(0, spread)}, advantages, right-padded mask."""
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, T, generator=g, dtype=dtype) * 3 - 0.05  # [B, T]
    logp = old + torch.randn(B, T, generator=g, dtype=dtype) * spread  # [B, T]
    adv = torch.randn(B, generator=g, dtype=dtype)  # [B]
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    lengths[0] = T
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(dtype)  # [B, T]
    return logp, old, adv, mask


def ref_aggregate(loss, mask, mode):
    """Looped aggregation over torch scalars (autograd flows)."""
    rows = []
    for row_l, row_m in zip(loss, mask):
        toks = [l for l, m in zip(row_l, row_m) if m]
        rows.append(toks)
    if mode == "token-mean":
        toks = [t for r in rows for t in r]
        return sum(toks) / max(len(toks), 1) if toks else 0.0
    per_seq = [sum(r) / len(r) if mode == "seq-mean-token-mean" else sum(r) for r in rows if r]
    return sum(per_seq) / len(per_seq) if per_seq else 0.0


def ref_cispo(logp, old, adv, mask, eps_max, mode, w=None):
    """-sg(min(r, 1 + eps_max)) * A * logp per token, looped; ``w`` optional per-token IS weights."""
    B, T = logp.shape
    loss = []
    for b in range(B):
        row = []
        for t in range(T):
            r = math.exp(float(logp[b, t].detach()) - float(old[b, t]))
            coef = min(r, 1.0 + eps_max) * float(adv[b]) * (1.0 if w is None else float(w[b, t]))
            row.append(-coef * logp[b, t])
        loss.append(row)
    return ref_aggregate(loss, mask.tolist(), mode)


def _val(x) -> float:
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


# --------------------------------------------------------------------------- registry

def test_registry_and_historical_names():
    assert set(POLICY_LOSSES) >= {"clip", "cispo"}
    assert get_policy_loss("clip") is clip_policy_loss
    assert get_policy_loss("cispo") is cispo_policy_loss
    with pytest.raises(ValueError, match="registered: cispo, clip"):
        get_policy_loss("gspo")
    with pytest.raises(ValueError, match="already registered"):
        register_policy_loss("clip")(cispo_policy_loss)


def test_registration_checks_the_common_signature():
    def no_weights(logp, old_logp, advantages, mask, *, agg_mode="token-mean"):
        raise AssertionError

    with pytest.raises(TypeError, match="rollout_is_weights"):
        register_policy_loss("_bad")(no_weights)

    def fine(logp, old_logp, advantages, mask, *, agg_mode="token-mean", rollout_is_weights=None, tau=1.0):
        raise AssertionError

    with pytest.raises(TypeError, match="beta"):  # a hyper-parameter the function does not take
        register_policy_loss("_bad", hyper={"beta": "kl_coef"})(fine)
    assert "_bad" not in POLICY_LOSSES


def test_a_new_loss_is_one_function_and_gets_its_hyper_parameters_from_the_config():
    @register_policy_loss("_test_vanilla", hyper={"scale": "entropy_coef"})
    def vanilla(logp, old_logp, advantages, mask, *, agg_mode="token-mean", rollout_is_weights=None, scale=1.0):
        return clip_policy_loss(logp, old_logp, advantages * scale, mask, agg_mode=agg_mode,
                                rollout_is_weights=rollout_is_weights, eps_low=10.0, eps_high=10.0)

    try:
        cfg = SimpleNamespace(policy_loss="_test_vanilla", loss_agg_mode="token-mean", entropy_coef=3.0)
        assert policy_loss_hyper(cfg) == {"scale": 3.0}
        logp = torch.zeros(1, 2)
        out = make_policy_loss(cfg)(logp, logp, torch.tensor([1.0]), torch.ones(1, 2))
        assert out.loss.item() == pytest.approx(-3.0)  # ratio 1: -A * scale
    finally:
        del POLICY_LOSSES["_test_vanilla"]


def test_make_policy_loss_binds_the_algo_config():
    logp, old, adv, mask = random_batch(4, 6, seed=1, spread=1.0)
    clip_cfg = AlgoConfig(eps_low=0.1, eps_high=0.3, loss_agg_mode="seq-mean-token-sum")
    assert policy_loss_hyper(clip_cfg) == {"eps_low": 0.1, "eps_high": 0.3, "clip_ratio_c": 3.0}
    got = make_policy_loss(clip_cfg)(logp, old, adv, mask)
    want = clip_policy_loss(logp, old, adv, mask, eps_low=0.1, eps_high=0.3, agg_mode="seq-mean-token-sum")
    assert got.loss.item() == want.loss.item() and got.clipfrac.item() == want.clipfrac.item()
    for c in (None, 1.1):  # the dual clip's setting reaches the loss (spread 1: some A < 0 ratios exceed 1.1)
        bound = make_policy_loss(AlgoConfig(clip_ratio_c=c))(logp, old, adv, mask)
        want = clip_policy_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.4, clip_ratio_c=c)
        assert bound.loss.item() == want.loss.item() and bound.clipfrac_lower.item() == want.clipfrac_lower.item()
    assert make_policy_loss(AlgoConfig(clip_ratio_c=1.1))(logp, old, adv, mask).clipfrac_lower.item() > 0
    assert make_policy_loss(AlgoConfig(clip_ratio_c=None))(logp, old, adv, mask).clipfrac_lower.item() == 0
    cispo_cfg = AlgoConfig(policy_loss="cispo", cispo_eps_max=0.5, loss_agg_mode="seq-mean-token-mean")
    assert policy_loss_hyper(cispo_cfg) == {"eps_max": 0.5}
    got = make_policy_loss(cispo_cfg)(logp, old, adv, mask)
    want = cispo_policy_loss(logp, old, adv, mask, eps_max=0.5, agg_mode="seq-mean-token-mean")
    assert got.loss.item() == want.loss.item() and got.clipfrac.item() == want.clipfrac.item()


# --------------------------------------------------------------------------- cispo by hand

def _cispo_one(ratio: float, adv: float, eps_max: float = 4.0, old: float = -2.0):
    """One token with old_logp = -2 and logp = -2 + ln(ratio)."""
    logp = torch.tensor([[old + math.log(ratio)]], dtype=torch.float64, requires_grad=True)  # [1, 1]
    out = cispo_policy_loss(logp, torch.tensor([[old]], dtype=torch.float64), torch.tensor([adv], dtype=torch.float64),
                            torch.ones(1, 1), eps_max=eps_max)
    out.loss.backward()
    return out, float(logp.grad)


@pytest.mark.parametrize(
    "ratio, adv, loss, grad, truncated",
    [
        # w = min(r, 5); loss = -w A logp; d/dlogp = -w A (the weight is a constant)
        (2.0, 1.0, 2.613706, -2.0, False),  # logp = -2 + .693147 = -1.306853 -> -2 * -1.306853
        (6.0, 1.0, 1.041203, -5.0, True),  # logp = -2 + 1.791759 = -.2082405; w truncated to 5 -> 5 * .2082405
        (6.0, -1.0, -1.041203, 5.0, True),  # truncation also applies for A < 0 (clip's would not)
        (0.1, -2.0, -0.860517, 0.2, False),  # no lower bound: w = .1; logp = -4.302585; -(.1 * -2 * -4.302585)
        (5.0, 1.0, 1.952810, -5.0, False),  # exactly at the cap: w = 5, not counted as truncated; logp = -.390562
        (6.0, 0.0, 0.0, 0.0, False),  # A = 0: nothing, never counted
    ],
)
def test_cispo_hand_computed(ratio, adv, loss, grad, truncated):
    out, g = _cispo_one(ratio, adv)
    assert out.loss.item() == pytest.approx(loss, abs=1e-6)
    assert g == pytest.approx(grad, abs=1e-9)
    assert float(out.clipfrac) == float(out.clipfrac_high) == float(truncated)
    assert float(out.clipfrac_lower) == float(out.clipfrac_below_low_bound) == 0.0  # no dual clip, no lower bound
    assert float(out.approx_kl) == pytest.approx(-math.log(ratio), abs=1e-12)


def test_cispo_keeps_the_gradient_that_clip_zeroes():
    # ratio 2 with A > 0: clip (eps_high .4) is active -> gradient 0; cispo (cap 5) -> -w A = -2
    logp = torch.tensor([[math.log(2.0) - 1.0]], dtype=torch.float64, requires_grad=True)
    old, adv, mask = torch.tensor([[-1.0]], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64), torch.ones(1, 1)
    clip_policy_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.4).loss.backward()
    assert float(logp.grad) == 0.0
    logp.grad = None
    cispo_policy_loss(logp, old, adv, mask, eps_max=4.0).loss.backward()
    assert float(logp.grad) == pytest.approx(-2.0)


@pytest.mark.parametrize("mode", AGG_MODES)
def test_on_policy_cispo_and_clip_have_the_same_gradient(mode):
    # ratio 1 everywhere (first mini-batch): clip's d/dlogp = -A r = -A, cispo's = -min(1, cap) A = -A
    logp, _, adv, mask = random_batch(5, 7, seed=2)
    grads = []
    for fn in (clip_policy_loss, cispo_policy_loss):
        lp = logp.clone().requires_grad_(True)
        fn(lp, logp, adv, mask, agg_mode=mode).loss.backward()
        grads.append(lp.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-12, rtol=1e-9)


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("eps_max", [0.2, 1.0, 4.0])
def test_cispo_matches_looped_reference(mode, shape, eps_max):
    logp, old, adv, mask = random_batch(*shape, seed=shape[0] * 13 + shape[1], spread=1.0)
    lp = logp.clone().requires_grad_(True)
    out = cispo_policy_loss(lp, old, adv, mask, eps_max=eps_max, agg_mode=mode)
    out.loss.backward()
    lp_ref = logp.clone().requires_grad_(True)
    ref = ref_cispo(lp_ref, old, adv, mask, eps_max, mode)
    assert out.loss.item() == pytest.approx(_val(ref), rel=1e-9, abs=1e-12)
    if isinstance(ref, torch.Tensor):
        ref.backward()
        torch.testing.assert_close(lp.grad, lp_ref.grad, atol=1e-12, rtol=1e-9)
    m = mask.bool()
    ratio = (logp - old).exp()
    trunc = ((ratio > 1 + eps_max) & (adv[:, None] != 0) & m).sum().item() / max(m.sum().item(), 1)
    assert float(out.clipfrac) == pytest.approx(trunc) and float(out.clipfrac_high) == pytest.approx(trunc)


def test_cispo_gradient_analytic_token_mean():
    # d loss / d logp[b,t] = -min(r, 1 + eps_max) A_b / N on counted tokens; 0 on padding
    logp, old, adv, mask = random_batch(6, 9, seed=11, spread=1.0)
    lp = logp.clone().requires_grad_(True)
    cispo_policy_loss(lp, old, adv, mask, eps_max=0.5).loss.backward()
    n = float(mask.sum())
    want = torch.zeros_like(logp)
    for b in range(6):
        for t in range(9):
            if mask[b, t]:
                want[b, t] = -min(math.exp(float(logp[b, t] - old[b, t])), 1.5) * float(adv[b]) / n
    torch.testing.assert_close(lp.grad, want, atol=1e-12, rtol=1e-9)


# --------------------------------------------------------------------------- every registered loss

def _call(name, logp, old, adv, mask, **kw):
    hyper = {"clip": dict(eps_low=0.2, eps_high=0.28), "cispo": dict(eps_max=0.3)}[name]
    return get_policy_loss(name)(logp, old, adv, mask, **hyper, **kw)


@pytest.mark.parametrize("name", ["clip", "cispo"])
@pytest.mark.parametrize("mode", AGG_MODES)
def test_rollout_is_weights_multiply_the_per_token_loss(name, mode):
    logp, old, adv, mask = random_batch(5, 8, seed=4, spread=0.6)
    w = torch.rand(5, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2  # [B, T]
    # reference: the unweighted per-token losses, recovered one token at a time, times w, aggregated
    lp = logp.clone().requires_grad_(True)
    out = _call(name, lp, old, adv, mask, agg_mode=mode, rollout_is_weights=w)
    out.loss.backward()
    lp_ref = logp.clone().requires_grad_(True)
    tok = [[_call(name, lp_ref[b:b + 1, t:t + 1], old[b:b + 1, t:t + 1], adv[b:b + 1], torch.ones(1, 1)).loss * w[b, t]
            for t in range(8)] for b in range(5)]
    ref = ref_aggregate(tok, mask.tolist(), mode)
    assert out.loss.item() == pytest.approx(_val(ref), rel=1e-9, abs=1e-12)
    ref.backward()
    torch.testing.assert_close(lp.grad, lp_ref.grad, atol=1e-12, rtol=1e-9)
    # clip statistics do not depend on the weights
    plain = _call(name, logp, old, adv, mask, agg_mode=mode)
    for f in ("clipfrac", "clipfrac_high", "clipfrac_lower", "clipfrac_below_low_bound", "approx_kl"):
        assert float(getattr(out, f)) == float(getattr(plain, f))


@pytest.mark.parametrize("name", ["clip", "cispo"])
def test_rollout_is_weights_of_one_change_nothing_and_get_no_gradient(name):
    logp, old, adv, mask = random_batch(4, 6, seed=6)
    logp.requires_grad_(True)
    w = torch.ones(4, 6, dtype=torch.float64, requires_grad=True)
    with_w = _call(name, logp, old, adv, mask, rollout_is_weights=w)
    assert with_w.loss.item() == _call(name, logp, old, adv, mask).loss.item()
    with_w.loss.backward()
    assert w.grad is None  # detached: a correction weight, not a parameter path


@pytest.mark.parametrize("name", ["clip", "cispo"])
@pytest.mark.parametrize("mode", AGG_MODES)
def test_masked_tokens_do_not_contribute(name, mode):
    logp, old, adv, mask = random_batch(5, 7, seed=3)
    mask[1, 3:] = 0
    junk = torch.randn(5, 7, generator=torch.Generator().manual_seed(9), dtype=torch.float64) * 50
    outs, grads = [], []
    for trial in range(2):
        lp = torch.where(mask.bool(), logp, junk) if trial else logp.clone()
        olp = torch.where(mask.bool(), old, -junk) if trial else old
        lp.requires_grad_(True)
        out = _call(name, lp, olp, adv, mask, agg_mode=mode)
        out.loss.backward()
        outs.append(out)
        grads.append(lp.grad)
    for f in ("loss", "clipfrac", "clipfrac_high", "clipfrac_lower", "clipfrac_below_low_bound", "approx_kl"):
        assert _val(getattr(outs[0], f)) == pytest.approx(_val(getattr(outs[1], f)), rel=1e-12, abs=1e-15)
    torch.testing.assert_close(grads[0], grads[1])
    assert torch.count_nonzero(grads[0][mask == 0]) == 0


@pytest.mark.parametrize("name", ["clip", "cispo"])
def test_zero_advantage_and_extreme_ratios(name):
    logp, old, _, mask = random_batch(4, 6, seed=5)
    lp = logp.clone().requires_grad_(True)
    out = _call(name, lp, old, torch.zeros(4, dtype=torch.float64), mask)
    out.loss.backward()
    assert out.loss.item() == 0.0 and torch.count_nonzero(lp.grad) == 0 and float(out.clipfrac) == 0.0
    lp = torch.tensor([[-0.01, -100.0]], requires_grad=True)  # log ratios ~ +100 / -100
    out = _call(name, lp, torch.tensor([[-100.0, -0.01]]), torch.tensor([-1.0]), torch.ones(1, 2))
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(lp.grad).all()
