"""The pass@k-preserving advantage estimators (issue 22): W-REINFORCE (arXiv:2506.01347) and the
analytical pass@k advantage (arXiv:2508.10751). Hand-computed values (arithmetic in the comments),
a brute-force enumeration of every size-k subset for pass@k, the properties the formulas imply,
and the gradient W-REINFORCE gets through the clip loss."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from prorl.algo.advantages import (
    ADV_ESTIMATORS,
    adv_estimator_hyper,
    compute_advantages,
    grpo_advantages,
    passk_advantages,
    register_adv_estimator,
    w_reinforce_advantages,
)
from prorl.algo.losses import clip_policy_loss
from prorl.config import AlgoConfig


def one_group(rewards: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(rewards), torch.zeros(len(rewards), dtype=torch.long)


# --------------------------------------------------------------------------- registry and config binding

def test_registered_with_their_config_fields():
    assert ADV_ESTIMATORS["w_reinforce"] is w_reinforce_advantages and ADV_ESTIMATORS["passk"] is passk_advantages
    assert adv_estimator_hyper(AlgoConfig(adv_estimator="w_reinforce", positive_weight=0.3)) == {"positive_weight": 0.3}
    assert adv_estimator_hyper(AlgoConfig(adv_estimator="passk", passk_k=3)) == {"k": 3}
    assert adv_estimator_hyper(AlgoConfig(adv_estimator="grpo", passk_k=3)) == {}
    r, g = torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.zeros(4, dtype=torch.long)
    bound = compute_advantages("passk", r, g, **adv_estimator_hyper(AlgoConfig(adv_estimator="passk", passk_k=2)))
    torch.testing.assert_close(bound, passk_advantages(r, g, k=2))


def test_registration_checks_the_hyper_parameters():
    def no_kw(scores, group_ids, *, norm_by_std, valid, eps):
        raise AssertionError

    with pytest.raises(TypeError, match="lam"):
        register_adv_estimator("_bad", hyper={"lam": "positive_weight"})(no_kw)
    assert "_bad" not in ADV_ESTIMATORS


# --------------------------------------------------------------------------- W-REINFORCE

@pytest.mark.parametrize(
    "lam, want",
    [
        # r' = 2r - 1: 1 -> +1, 0 -> -1, 0.9 -> 0.8, -0.1 -> -1.2, 0.5 -> 0; positives times lambda
        (0.1, [0.1, -1.0, 0.08, -1.2, 0.0, 0.0]),
        (0.0, [0.0, -1.0, 0.0, -1.2, 0.0, 0.0]),  # NSR alone
        (1.0, [1.0, -1.0, 0.8, -1.2, 0.0, 0.0]),  # plain REINFORCE with +-1 rewards
    ],
)
def test_w_reinforce_hand_computed(lam, want):
    rewards = torch.tensor([1.0, 0.0, 0.9, -0.1, 0.5, float("nan")])
    valid = torch.tensor([True, True, True, True, True, False])  # the NaN is an infrastructure failure
    for gids, norm in ((torch.tensor([0, 0, 1, 1, 2, 2]), True), (torch.tensor([5, 1, 5, 1, 5, 1]), False)):
        got = w_reinforce_advantages(rewards, gids, norm_by_std=norm, valid=valid, positive_weight=lam)
        torch.testing.assert_close(got, torch.tensor(want))  # no baseline, no std: groups and norm do not matter


def test_w_reinforce_keeps_all_wrong_and_all_correct_groups():
    # GRPO gives equal-reward groups 0; W-REINFORCE still pushes every failure down (the NSR signal)
    r, g = torch.tensor([0.0, 0.0, 1.0, 1.0]), torch.tensor([0, 0, 1, 1])
    assert grpo_advantages(r, g).tolist() == [0.0] * 4
    torch.testing.assert_close(w_reinforce_advantages(r, g), torch.tensor([-1.0, -1.0, 0.1, 0.1]))


def test_w_reinforce_rejects_a_negative_weight():
    with pytest.raises(ValueError, match="positive_weight"):
        w_reinforce_advantages(*one_group([1.0, 0.0]), positive_weight=-0.1)


@pytest.mark.parametrize("lam", [0.1, 0.0, 1.0])
def test_w_reinforce_through_the_on_policy_clip_loss_is_the_weighted_reinforce_gradient(lam):
    """The paper's objective lambda * L_PSR + L_NSR with token-mean: d/dlogp_t = -(lambda if correct
    else -1) / N for every counted token (ratio 1, so the clip is inactive). Derived by hand, not
    from the estimator: a sign flip or a dropped lambda in either place fails."""
    g = torch.Generator().manual_seed(3)
    correct = torch.tensor([True, False, True, False, False])
    logp = (-torch.rand(5, 6, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    mask = torch.ones(5, 6, dtype=torch.float64)
    mask[1, 4:] = 0
    mask[3, 2:] = 0
    adv = w_reinforce_advantages(correct.double(), torch.zeros(5, dtype=torch.long), positive_weight=lam).double()
    clip_policy_loss(logp, logp.detach(), adv, mask, agg_mode="token-mean", eps_low=0.2, eps_high=0.28).loss.backward()
    n = mask.sum()
    want = torch.where(correct[:, None], -lam / n, 1.0 / n) * mask  # PSR pulls up (weighted), NSR pushes down
    torch.testing.assert_close(logp.grad, want, atol=1e-12, rtol=1e-7)  # the advantages are float32


# --------------------------------------------------------------------------- pass@k: hand-computed

def _hand(n: int, n_neg: int, k: int) -> tuple[float, float]:
    """The paper's formulas with math.comb (independent of the implementation's product form)."""
    mean = 1 - math.comb(n_neg, k) / math.comb(n, k)
    std = math.sqrt(mean * (1 - mean))
    a_pos = (1 - mean) / (std + 1e-6)
    a_neg = (1 - mean - (math.comb(n_neg - 1, k - 1) / math.comb(n - 1, k - 1) if n_neg >= 1 else 0)) / (std + 1e-6)
    return a_pos, a_neg


@pytest.mark.parametrize(
    "rewards, k, want",
    [
        # N=4, 1 pass, k=2: R = 1 - C(3,2)/C(4,2) = 1/2, s = 1/2; A+ = (1/2)/(1/2) = 1;
        # A- = (1/2 - C(2,1)/C(3,1)) / (1/2) = (1/2 - 2/3) * 2 = -1/3
        ([1, 0, 0, 0], 2, [1.0, -1 / 3, -1 / 3, -1 / 3]),
        # N=8, 2 passes, k=4: C(6,4)/C(8,4) = 15/70 = 3/14, R = 11/14, s = sqrt(33)/14; A+ = 3/sqrt(33);
        # A- = (3/14 - C(5,3)/C(7,3)) / s = (3/14 - 4/14) * 14/sqrt(33) = -1/sqrt(33)
        ([0, 1, 0, 0, 1, 0, 0, 0], 4, [-1 / 33**0.5, 3 / 33**0.5, -1 / 33**0.5, -1 / 33**0.5, 3 / 33**0.5,
                                       -1 / 33**0.5, -1 / 33**0.5, -1 / 33**0.5]),
        # k=1 is GRPO with the population std: 1 of 4 passes, p = 1/4, s = sqrt(3)/4: A+ = 3/sqrt(3), A- = -1/sqrt(3)
        ([1, 0, 0, 0], 1, [3**0.5, -(3**-0.5), -(3**-0.5), -(3**-0.5)]),
        ([0, 1, 1, 1, 1, 1, 0, 0], 4, [0.0] * 8),  # 3 failures < k: every subset passes, R = 1, s = 0
        ([1, 1, 1, 1], 2, [0.0] * 4),  # all pass
        ([0, 0, 0, 0], 2, [0.0] * 4),  # none passes: R = 0
        ([1, 0, 0, 0], 4, [0.0] * 4),  # k = N: the only subset is the group, R is 0 or 1, no signal
        # a reward above 1/2 passes (shaped correct answers); 1/2 and below fail: as the first case
        ([0.8, 0.5, -0.2, 0.0], 2, [1.0, -1 / 3, -1 / 3, -1 / 3]),
    ],
)
def test_passk_hand_computed(rewards, k, want):
    got = passk_advantages(*one_group([float(r) for r in rewards]), k=k)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float32), atol=2e-6, rtol=1e-5)


def test_passk_groups_any_order_and_norm_off():
    # two interleaved groups: 7 -> [1,0,0,0] (k=2: numerators 1/2, -1/6), 3 -> [1,1,0,0] (R = 1 - 1/6 = 5/6:
    # numerators 1/6 and 1/6 - C(1,1)/C(3,1) = -1/6)
    r = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    gid = torch.tensor([7, 3, 7, 3, 3, 7, 3, 7])
    got = passk_advantages(r, gid, norm_by_std=False, k=2)
    torch.testing.assert_close(got, torch.tensor([1 / 2, 1 / 6, -1 / 6, -1 / 6, 1 / 6, -1 / 6, -1 / 6, -1 / 6]))
    a_pos, a_neg = _hand(4, 2, 2)
    normed = passk_advantages(r, gid, k=2)
    torch.testing.assert_close(normed[[1, 4]], torch.tensor([a_pos] * 2), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(normed[[3, 6]], torch.tensor([a_neg] * 2), rtol=1e-5, atol=1e-6)


def test_passk_invalid_responses_leave_the_group():
    # 6 responses, 2 invalid (NaN): the group is the 4 valid ones [1, 0, 0, 0]
    r = torch.tensor([1.0, float("nan"), 0.0, 0.0, float("nan"), 0.0])
    valid = torch.tensor([True, False, True, True, False, True])
    got = passk_advantages(r, torch.zeros(6, dtype=torch.long), valid=valid, k=2)
    torch.testing.assert_close(got, torch.tensor([1.0, 0.0, -1 / 3, -1 / 3, 0.0, -1 / 3]), atol=2e-6, rtol=1e-5)
    # k >= 4 valid responses: no subsets to compare, no signal (as a k = N group), with or without the std
    for k in (4, 5):
        for norm in (True, False):
            assert passk_advantages(r, torch.zeros(6, dtype=torch.long), valid=valid, k=k, norm_by_std=norm).abs().max() == 0


def test_passk_rejects_bad_k():
    for k in (0, -1, 1.5):
        with pytest.raises(ValueError, match="k must be"):
            passk_advantages(*one_group([1.0, 0.0]), k=k)


# --------------------------------------------------------------------------- pass@k: the derivation

def brute_force_passk(passes: list[bool], k: int) -> list[float]:
    """Every size-k subset scored by max; each response gets the mean of (R_S - mean R) / std R over
    the subsets that contain it (std over all subsets, population): the bootstrap's exact limit."""
    n = len(passes)
    subsets = list(itertools.combinations(range(n), k))
    rs = [float(any(passes[i] for i in s)) for s in subsets]
    mean = sum(rs) / len(rs)
    std = math.sqrt(sum((x - mean) ** 2 for x in rs) / len(rs))
    out = []
    for i in range(n):
        mine = [(x - mean) / (std + 1e-6) for s, x in zip(subsets, rs) if i in s]
        out.append(sum(mine) / len(mine))
    return out


@pytest.mark.parametrize("n", [2, 5, 8])
def test_passk_equals_the_mean_subset_advantage(n):
    g = torch.Generator().manual_seed(n)
    for k in range(1, n + 1):
        for _ in range(4):
            passes = (torch.rand(n, generator=g) < 0.4).tolist()
            got = passk_advantages(*one_group([float(p) for p in passes]), k=k)
            torch.testing.assert_close(got, torch.tensor(brute_force_passk(passes, k), dtype=torch.float32),
                                       atol=5e-6, rtol=1e-5)


def test_passk_group_sums_vanish_and_failures_never_gain():
    """sum_i A_i = N_pos A_pos + N_neg A_neg = 0 (N_neg C(N_neg-1, k-1)/C(N-1, k-1) = N C(N_neg,k)/C(N,k)),
    so A_neg <= 0 <= A_pos, with and without the std."""
    for n in (4, 16, 32):
        for k in range(1, n):
            r = torch.tensor([1.0] * (n // 4 + 1) + [0.0] * (n - n // 4 - 1))
            for norm in (True, False):
                a = passk_advantages(*one_group(r.tolist()), norm_by_std=norm, k=k)
                assert abs(float(a.double().sum())) < 1e-4 * max(1.0, float(a.abs().sum()))
                assert (a[r > 0.5] >= 0).all() and (a[r <= 0.5] <= 0).all()


def test_passk_with_k_1_is_grpo_with_the_population_std():
    g = torch.Generator().manual_seed(0)
    r = (torch.rand(24, generator=g) < 0.5).float()
    gid = torch.arange(3).repeat_interleave(8)
    # GRPO divides by the unbiased std (N - 1): the two differ by sqrt(N / (N - 1)) per group
    want = grpo_advantages(r, gid, eps=0.0) * math.sqrt(8 / 7)
    torch.testing.assert_close(passk_advantages(r, gid, k=1, eps=0.0), want, atol=1e-6, rtol=1e-5)


def test_passk_moves_the_learning_signal_to_harder_prompts():
    """The paper's reading of its analytical advantage: the total |A| a group gets (eta) peaks at a
    lower pass rate the larger k is; for k = 1 (GRPO) at half the group. N = 16: peaks 8, 6, 4, 2."""
    n = 16

    def argmax_eta(k: int) -> int:
        eta = [float(passk_advantages(*one_group([1.0] * p + [0.0] * (n - p)), k=k).abs().sum()) for p in range(n + 1)]
        return max(range(n + 1), key=lambda p: eta[p])

    assert [argmax_eta(k) for k in (1, 2, 4, 8)] == [8, 6, 4, 2]
