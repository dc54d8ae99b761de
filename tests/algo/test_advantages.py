"""Tests of the advantage-estimator registry (prorl/algo/advantages.py): hand-computed cases (the
arithmetic is in the comments), a looped reference, and the ``valid`` mask (infrastructure failures)."""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
import torch

from prorl.algo.advantages import (
    ADV_ESTIMATORS,
    compute_advantages,
    get_adv_estimator,
    grpo_advantages,
    register_adv_estimator,
    reinforce_pp_baseline_advantages,
)
from prorl.algo.core import grpo_advantages as core_grpo

RPP = "reinforce_pp_baseline"


def ref_reinforce_pp(scores: list[float], gids: list[int], valid: list[bool], eps: float = 1e-6) -> list[float]:
    """By hand: centre on the group mean of valid members, divide by the unbiased std of all valid
    centred values (including their batch mean, which is 0)."""
    groups: dict[int, list[float]] = defaultdict(list)
    for s, g, v in zip(scores, gids, valid):
        if v:
            groups[g].append(s)
    centred = [s - sum(groups[g]) / len(groups[g]) if v else 0.0 for s, g, v in zip(scores, gids, valid)]
    cs = [c for c, v in zip(centred, valid) if v]
    mean = sum(cs) / len(cs)
    std = math.sqrt(sum((c - mean) ** 2 for c in cs) / (len(cs) - 1)) if len(cs) > 1 else 0.0
    return [(c - mean) / (std + eps) if v else 0.0 for c, v in zip(centred, valid)]


def test_registry_names_and_lookup():
    assert set(ADV_ESTIMATORS) >= {"grpo", RPP}
    assert get_adv_estimator("grpo") is grpo_advantages is core_grpo  # core re-exports the same function
    with pytest.raises(ValueError, match="registered: grpo"):
        get_adv_estimator("gae")
    with pytest.raises(ValueError, match="already registered"):
        register_adv_estimator("grpo")(lambda *a, **k: None)


def test_register_a_new_estimator_is_one_function():
    @register_adv_estimator("_test_sign")
    def sign(scores, group_ids, *, norm_by_std, valid, eps):
        return torch.sign(scores - 0.5)

    try:
        out = compute_advantages("_test_sign", torch.tensor([1.0, 0.0]), torch.tensor([0, 0]))
        assert out.tolist() == [1.0, -1.0]
    finally:
        del ADV_ESTIMATORS["_test_sign"]


def test_reinforce_pp_baseline_hand_computed():
    # g0 = [1, 0, 0, 0]: mean .25 -> centred [.75, -.25, -.25, -.25]
    # g1 = [1, 1, 0, 0]: mean .5  -> centred [.5, .5, -.5, -.5]
    # batch: sum c^2 = .5625 + 3 * .0625 + 4 * .25 = 1.75; unbiased var 1.75 / 7 = .25 -> std .5
    scores = torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 0])
    gids = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    adv = compute_advantages(RPP, scores, gids, eps=0.0)
    torch.testing.assert_close(adv, torch.tensor([1.5, -0.5, -0.5, -0.5, 1.0, 1.0, -1.0, -1.0]))
    # GRPO differs on g1: its own std sqrt(1 / 3) = .57735 -> .5 / .57735 = .86603
    grpo = compute_advantages("grpo", scores, gids, eps=0.0)
    torch.testing.assert_close(grpo[4:], torch.tensor([0.86603, 0.86603, -0.86603, -0.86603]), atol=1e-5, rtol=0)
    torch.testing.assert_close(grpo[:4], adv[:4])  # g0's group std happens to equal the batch std (.5)


def test_reinforce_pp_all_equal_groups_count_in_the_batch_std():
    # adding g2 = [1, 1, 1, 1] (centred 0): var = 1.75 / 11 = .159091, std .398862
    # .75 / .398862 = 1.880350, -.25 / .398862 = -.626783, .5 / .398862 = 1.253566
    scores = torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 1])
    gids = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
    adv = compute_advantages(RPP, scores, gids, eps=0.0)
    torch.testing.assert_close(adv, torch.tensor([1.880350, -0.626783, -0.626783, -0.626783, 1.253566, 1.253566,
                                                  -1.253566, -1.253566, 0, 0, 0, 0]), atol=2e-6, rtol=0)
    assert torch.equal(adv[8:], torch.zeros(4))  # exactly 0, not round-off


def test_reinforce_pp_without_std_is_centred_only_and_degenerate_batches():
    scores, gids = torch.tensor([3.0, 1.0, 2.0, 5.0]), torch.tensor([0, 0, 0, 1])
    # g0 mean 2 -> [1, -1, 0]; g1 is a singleton -> 0
    assert compute_advantages(RPP, scores, gids, norm_adv_by_std=False).tolist() == [1.0, -1.0, 0.0, 0.0]
    assert torch.equal(compute_advantages(RPP, torch.ones(6), torch.arange(6) // 3), torch.zeros(6))
    assert torch.equal(compute_advantages(RPP, torch.tensor([0.7]), torch.tensor([0])), torch.zeros(1))
    assert compute_advantages(RPP, torch.zeros(0), torch.zeros(0, dtype=torch.long)).numel() == 0


@pytest.mark.parametrize("seed", range(5))
def test_reinforce_pp_matches_looped_reference(seed):
    g = torch.Generator().manual_seed(seed)
    n_groups, n = [(1, 2), (3, 4), (5, 16), (8, 2), (4, 7)][seed]
    B = n_groups * n
    gids = torch.arange(n_groups).repeat_interleave(n)[torch.randperm(B, generator=g)]  # [B]
    scores = (torch.rand(B, generator=g) < 0.5).float() + torch.randn(B, generator=g) * 0.2 * (seed % 2)  # [B]
    valid = torch.rand(B, generator=g) > 0.2  # [B]
    valid[0] = valid[1] = True
    got = compute_advantages(RPP, scores, gids, valid=valid)
    want = ref_reinforce_pp(scores.tolist(), gids.tolist(), valid.tolist())
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float32), atol=1e-4, rtol=1e-4)
    v = got[valid]
    if v.abs().max() > 0:  # unit (unbiased) std over the valid responses
        assert float(v.std()) == pytest.approx(1.0, abs=1e-4)


# --------------------------------------------------------------------------- the valid mask

@pytest.mark.parametrize("name", ["grpo", RPP])
def test_invalid_responses_get_zero_and_do_not_enter_the_statistics(name):
    # group [1, 0, 0, X] with X an infrastructure failure (its reward NaN, or any value)
    for x in (float("nan"), 1.0, 0.0, 1e9):
        scores = torch.tensor([1.0, 0.0, 0.0, x])
        valid = torch.tensor([True, True, True, False])
        adv = compute_advantages(name, scores, torch.zeros(4, dtype=torch.long), valid=valid, eps=0.0)
        # valid [1, 0, 0]: mean 1/3 -> centred [2/3, -1/3, -1/3]; unbiased var (4/9 + 2/9) / 2 = 1/3,
        # std .57735 (group = batch here) -> [1.15470, -.57735, -.57735]
        torch.testing.assert_close(adv, torch.tensor([1.15470, -0.57735, -0.57735, 0.0]), atol=1e-5, rtol=0)
        assert adv[3].item() == 0.0


@pytest.mark.parametrize("name", ["grpo", RPP])
def test_valid_mask_equals_dropping_the_invalid_responses(name):
    g = torch.Generator().manual_seed(3)
    gids = torch.arange(6).repeat_interleave(5)  # [30]
    scores = (torch.rand(30, generator=g) < 0.5).float()
    valid = torch.rand(30, generator=g) > 0.3
    masked = compute_advantages(name, scores, gids, valid=valid)
    dropped = compute_advantages(name, scores[valid], gids[valid])
    torch.testing.assert_close(masked[valid], dropped)
    assert torch.equal(masked[~valid], torch.zeros(int((~valid).sum())))


@pytest.mark.parametrize("name", ["grpo", RPP])
def test_all_valid_mask_is_the_same_as_none(name):
    g = torch.Generator().manual_seed(0)
    scores, gids = torch.rand(24, generator=g), torch.arange(24) // 6
    assert torch.equal(compute_advantages(name, scores, gids, valid=torch.ones(24, dtype=torch.bool)),
                       compute_advantages(name, scores, gids))


def test_grpo_group_left_with_one_valid_member_gets_zero():
    adv = grpo_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([0, 0, 1, 1]),
                          valid=torch.tensor([True, False, True, True]))
    assert adv[0].item() == 0.0 and adv[1].item() == 0.0 and adv[2].item() > 0 > adv[3].item()


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="must all be"):
        compute_advantages("grpo", torch.ones(4), torch.zeros(4, dtype=torch.long), valid=torch.ones(3, dtype=torch.bool))


def test_reinforce_pp_direct_call_matches_registry():
    s, gid = torch.tensor([1.0, 0.0, 0.5, 0.5]), torch.tensor([0, 0, 1, 1])
    assert torch.equal(reinforce_pp_baseline_advantages(s, gid), compute_advantages(RPP, s, gid))
