"""Tests of ProRL v2's scheduled cosine length penalty (prorl/algo/core.py) and of its place in
reward shaping (prorl/trainer/rollout_step.py)."""

from __future__ import annotations

import math

import pytest
import torch

from prorl.algo.core import cosine_length_penalty, length_penalty_active
from prorl.config import RewardConfig
from prorl.trainer.rollout_step import RewardShaping, shape_rewards


def test_cosine_penalty_hand_computed():
    lengths = torch.tensor([0, 25, 50, 75, 100, 150])  # [B]
    got = cosine_length_penalty(lengths, 100, step=1, min_penalty=0.1, max_penalty=0.5)
    # -(.1 + .4 * (1 - cos(pi L / 100)) / 2):  L=0: -.1 ; L=25: 1 - cos(pi/4) = .292893 -> -(.1 + .058579) = -.158579
    # L=50: -(.1 + .2) = -.3 ; L=75: 1 + .707107 -> -(.1 + .341421) = -.441421 ; L=100 and beyond: -.5
    torch.testing.assert_close(got, torch.tensor([-0.1, -0.158579, -0.3, -0.441421, -0.5, -0.5]), atol=1e-6, rtol=0)


def test_cosine_penalty_is_monotone_flat_at_the_ends_and_off_when_zero():
    lengths = torch.arange(0, 65)
    got = cosine_length_penalty(lengths, 64, step=1, min_penalty=0.0, max_penalty=1.0)
    assert (got[1:] <= got[:-1]).all()  # longer never penalised less
    assert got[0].item() == 0.0 and got[-1].item() == pytest.approx(-1.0)
    for n, v in zip(lengths.tolist(), got.tolist()):  # looped reference
        assert v == pytest.approx(-(1 - math.cos(math.pi * n / 64)) / 2, abs=1e-6)
    assert got[1].item() - got[0].item() > got[32].item() - got[31].item()  # flat start, steep middle
    assert torch.equal(cosine_length_penalty(lengths, 64, 1, min_penalty=0.0, max_penalty=0.0), torch.zeros(65))


def test_cyclic_schedule():
    # period 10, on 3: steps 1-3 on, 4-10 off, 11-13 on, 14 off ...
    on = [s for s in range(1, 31) if length_penalty_active(s, period=10, on_steps=3)]
    assert on == [1, 2, 3, 11, 12, 13, 21, 22, 23]
    assert all(length_penalty_active(s, period=0, on_steps=0) for s in range(1, 50))  # no period: always on
    assert all(length_penalty_active(s, period=5, on_steps=5) for s in range(1, 50))
    lengths = torch.tensor([10, 20])
    kw = dict(min_penalty=0.2, max_penalty=0.6, period=10, on_steps=3)
    assert torch.equal(cosine_length_penalty(lengths, 20, 4, **kw), torch.zeros(2))  # off step
    torch.testing.assert_close(cosine_length_penalty(lengths, 20, 12, **kw), torch.tensor([-0.4, -0.6]))


def test_shape_rewards_length_penalty_on_correct_responses_only():
    # max_len 8; min 0, max 1: L=4 -> -.5, L=8 -> -1, L=2 -> -(1 - cos(pi/4)) / 2 = -.146447
    kw = dict(overlong_buffer_len=0, overlong_penalty_factor=1.0, truncation_penalty=0.0, step=1,
              length_penalty_min=0.0, length_penalty_max=1.0)
    rewards, over, trunc, length = shape_rewards([1.0, 0.0, 1.0, 0.5], [4, 4, 8, 2], [False] * 4, max_len=8,
                                                 shaping=RewardShaping(**kw))
    assert length == pytest.approx([-0.5, 0.0, -1.0, 0.0])  # wrong and partial (0.5) responses untouched
    assert rewards == pytest.approx([0.5, 0.0, 0.0, 0.5])
    _, _, _, length_all = shape_rewards([1.0, 0.0, 1.0, 0.5], [4, 4, 8, 2], [False] * 4, max_len=8,
                                        shaping=RewardShaping(length_penalty_correct_only=False, **kw))
    assert length_all == pytest.approx([-0.5, -0.5, -1.0, -0.146447], abs=1e-6)


def test_shape_rewards_adds_every_penalty_and_needs_the_step():
    # overlong (buffer 4 of 8): L=8 -> -1 ; truncation .25 ; length: -(.2 + .2 * (1 - cos(pi)) / 2) = -.4 at L=8
    rewards, over, trunc, length = shape_rewards([1.0], [8], [True], max_len=8, shaping=RewardShaping(
        overlong_buffer_len=4, overlong_penalty_factor=1.0, truncation_penalty=0.25, step=7,
        length_penalty_min=0.2, length_penalty_max=0.4))
    assert (over, trunc) == ([-1.0], [-0.25]) and length == pytest.approx([-0.4])
    assert rewards == pytest.approx([1.0 - 1.0 - 0.25 - 0.4])
    with pytest.raises(ValueError, match="step"):
        shape_rewards([1.0], [8], [False], max_len=8, shaping=RewardShaping(length_penalty_max=0.4))


def test_shaping_from_config_round_trip():
    cfg = RewardConfig(length_penalty_max=0.3, length_penalty_min=0.1, length_penalty_period=6, length_penalty_on_steps=2,
                       length_penalty_correct_only=False, overlong_buffer_len=2, truncation_penalty=0.5)
    sh = RewardShaping.from_config(cfg, step=8)  # (8 - 1) % 6 = 1 < 2: on
    _, _, _, length = shape_rewards([0.0], [10], [False], max_len=10, shaping=sh)
    assert length == pytest.approx([-0.3])
    _, _, _, length = shape_rewards([0.0], [10], [False], max_len=10, shaping=RewardShaping.from_config(cfg, step=9))
    assert length == [0.0]
    assert sh.truncation_penalty == 0.5 and sh.overlong_buffer_len == 2 and sh.step == 8


def test_default_config_shapes_exactly_as_before():
    # what the loop passed before (three keys) and the shaping of the default section give the same rewards
    old = dict(overlong_buffer_len=4, overlong_penalty_factor=1.0, truncation_penalty=0.5)
    cfg = RewardConfig(**old)
    args = ([1.0, 0.0, 1.0], [3, 10, 9], [False, True, False])
    assert shape_rewards(*args, max_len=10, shaping=RewardShaping(**old)) == \
        shape_rewards(*args, max_len=10, shaping=RewardShaping.from_config(cfg, 5))
