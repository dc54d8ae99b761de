"""Tests of the rollout/training mismatch correction (prorl/algo/rollout_correction.py).

Hand-computed cases (ratios chosen as simple fractions, arithmetic in the comments), then a naive
looped reference on random seeded tensors for every mode, with padding that carries garbage."""

from __future__ import annotations

import math

import pytest
import torch

from prorl.algo.rollout_correction import ROLLOUT_CORRECTIONS, rollout_correction

L = math.log


def hand_case():
    # token ratios pi_train / pi_rollout: row 0: 0.5/0.25 = 2, 0.2/0.8 = 0.25, 0.9/0.9 = 1
    #                                     row 1: 0.1/0.4 = 0.25, 0.3/0.3 = 1, padding (garbage log-probs)
    lt = torch.tensor([[L(0.5), L(0.2), L(0.9)], [L(0.1), L(0.3), 7.0]])
    lr = torch.tensor([[L(0.25), L(0.8), L(0.9)], [L(0.4), L(0.3), -90.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    return lt, lr, mask


def test_metrics_hand_computed():
    w, m, met = rollout_correction(*hand_case(), mode="none")
    assert torch.equal(w, torch.tensor([[1.0, 1, 1], [1, 1, 0]]))
    assert torch.equal(m, hand_case()[2])
    # |log ratio| over the 5 counted tokens: log 2, log 4, 0, log 4, 0 -> mean (1 + 2 + 2) log 2 / 5 = log 2
    assert met["rollout_corr/abs_logp_diff_mean"] == pytest.approx(L(2), rel=1e-6)
    assert met["rollout_corr/abs_logp_diff_max"] == pytest.approx(L(4), rel=1e-6)
    assert met["rollout_corr/ratio_mean"] == pytest.approx((2 + 0.25 + 1 + 0.25 + 1) / 5, rel=1e-6)
    assert met["rollout_corr/ratio_min"] == pytest.approx(0.25, rel=1e-6)
    assert met["rollout_corr/ratio_max"] == pytest.approx(2.0, rel=1e-6)
    assert met["rollout_corr/fraction_masked"] == 0.0
    assert met["rollout_corr/weight_mean"] == pytest.approx(1.0)


def test_tis_hand_computed():
    w, m, met = rollout_correction(*hand_case(), mode="tis", tis_cap=1.5)
    # min(r, 1.5): 2 -> 1.5, the rest below the cap; padding 0
    assert torch.allclose(w, torch.tensor([[1.5, 0.25, 1.0], [0.25, 1.0, 0.0]]), atol=1e-6)
    assert torch.equal(m, hand_case()[2])
    assert met["rollout_corr/weight_mean"] == pytest.approx((1.5 + 0.25 + 1 + 0.25 + 1) / 5, rel=1e-6)


def test_mis_token_hand_computed():
    w, m, met = rollout_correction(*hand_case(), mode="mis_token", low=0.5, high=5.0)
    # ICE-POP [0.5, 5]: 2 and 1 kept with weight r, the two 0.25s dropped
    assert torch.equal(m, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
    assert torch.allclose(w, torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 0.0]]), atol=1e-6)
    assert met["rollout_corr/fraction_masked"] == pytest.approx(2 / 5)
    # an upper bound below 2 drops that token too
    _, m, _ = rollout_correction(*hand_case(), mode="mis_token", low=0.5, high=1.5)
    assert torch.equal(m, torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))


def test_mis_seq_hand_computed():
    # sequence ratios: row 0: 2 * 0.25 * 1 = 0.5, row 1: 0.25 * 1 = 0.25 (padding excluded)
    w, m, met = rollout_correction(*hand_case(), mode="mis_seq", low=0.4, high=5.0)
    assert torch.equal(m, torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
    assert torch.allclose(w, torch.tensor([[0.5, 0.5, 0.5], [0.0, 0.0, 0.0]]), atol=1e-6)
    assert met["rollout_corr/fraction_masked"] == pytest.approx(2 / 5)
    w, m, _ = rollout_correction(*hand_case(), mode="mis_seq", low=0.2, high=0.45)
    assert torch.equal(m, torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]))
    assert torch.allclose(w, torch.tensor([[0.0, 0.0, 0.0], [0.25, 0.25, 0.0]]), atol=1e-6)


def test_geo_seq_hand_computed():
    # geometric means: row 0: 0.5 ** (1/3) = 0.7937, row 1: 0.25 ** (1/2) = 0.5 (2 counted tokens, not 3)
    w, m, _ = rollout_correction(*hand_case(), mode="geo_seq", low=0.4, high=1.5)
    g0 = 0.5 ** (1 / 3)
    assert torch.equal(m, hand_case()[2])
    assert torch.allclose(w, torch.tensor([[g0, g0, g0], [0.5, 0.5, 0.0]]), atol=1e-6)
    w, m, met = rollout_correction(*hand_case(), mode="geo_seq", low=0.6, high=1.5)
    assert torch.equal(m, torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
    assert met["rollout_corr/fraction_masked"] == pytest.approx(2 / 5)


def ref_correction(lt, lr, mask, mode, cap, low, high):
    """Looped pure-Python reference: weights and mask as nested lists."""
    W, M = [], []
    for row_t, row_r, row_m in zip(lt.tolist(), lr.tolist(), mask.tolist()):
        ratios = [math.exp(a - b) for a, b, c in zip(row_t, row_r, row_m) if c]
        logs = [a - b for a, b, c in zip(row_t, row_r, row_m) if c]
        seq = math.exp(sum(logs))
        geo = math.exp(sum(logs) / len(logs)) if logs else 1.0
        w_row, m_row, k = [], [], 0
        for c in row_m:
            if not c:
                w_row.append(0.0)
                m_row.append(0.0)
                continue
            r = ratios[k]
            k += 1
            if mode == "none":
                w, keep = 1.0, True
            elif mode == "tis":
                w, keep = min(r, cap), True
            elif mode == "mis_token":
                w, keep = r, low <= r <= high
            else:
                s = seq if mode == "mis_seq" else geo
                w, keep = s, low <= s <= high
            w_row.append(w if keep else 0.0)
            m_row.append(1.0 if keep else 0.0)
        W.append(w_row)
        M.append(m_row)
    return W, M


@pytest.mark.parametrize("mode", ROLLOUT_CORRECTIONS)
@pytest.mark.parametrize("shape", [(1, 1), (4, 7), (16, 3)])
def test_matches_looped_reference(mode, shape):
    g = torch.Generator().manual_seed(ROLLOUT_CORRECTIONS.index(mode) * 100 + shape[0] * 10 + shape[1])
    lt = -torch.rand(shape, generator=g) * 3
    lr = lt + torch.randn(shape, generator=g) * 0.3  # mismatch of a few tenths in log space
    mask = (torch.rand(shape, generator=g) > 0.25).float()
    mask[:, 0] = 1.0
    lr = torch.where(mask.bool(), lr, torch.full_like(lr, -1e4))  # padding garbage must not leak
    low, high = (0.9, 1.1) if mode == "geo_seq" else (0.5, 2.0)
    w, m, met = rollout_correction(lt, lr, mask, mode=mode, tis_cap=1.2, low=low, high=high)
    W, M = ref_correction(lt, lr, mask, mode, 1.2, low, high)
    assert torch.allclose(w, torch.tensor(W), rtol=1e-5, atol=1e-6)
    assert torch.equal(m, torch.tensor(M))
    dropped = (mask.sum() - torch.tensor(M).sum()) / mask.sum()
    assert met["rollout_corr/fraction_masked"] == pytest.approx(dropped.item(), abs=1e-6)
    assert all(k.startswith("rollout_corr/") and math.isfinite(v) for k, v in met.items())


def test_no_gradient_and_identity_when_engines_agree():
    lt = torch.randn(3, 5, requires_grad=True)
    mask = torch.ones(3, 5)
    for mode in ROLLOUT_CORRECTIONS:
        w, m, met = rollout_correction(lt, lt.detach().clone(), mask, mode=mode, low=0.99, high=1.01)
        assert not w.requires_grad
        assert torch.allclose(w, torch.ones(3, 5)) and torch.equal(m, mask)
        assert met["rollout_corr/abs_logp_diff_max"] == 0.0 and met["rollout_corr/fraction_masked"] == 0.0


def test_empty_mask_and_bad_input():
    w, m, met = rollout_correction(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), mode="mis_seq")
    assert w.sum() == 0 and m.sum() == 0 and met["rollout_corr/fraction_masked"] == 0.0
    with pytest.raises(ValueError, match="unknown rollout correction"):
        rollout_correction(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), mode="ppo")
    with pytest.raises(ValueError, match="shapes differ"):
        rollout_correction(torch.zeros(1, 2), torch.zeros(1, 1), torch.ones(1, 1))
