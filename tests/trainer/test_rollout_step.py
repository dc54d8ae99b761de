"""Reward shaping and the dynamic-sampling collection loop (with a scripted engine and scorer)."""

from __future__ import annotations

import pytest

from prorl.data.builtin_tasks import generate_rows
from prorl.data.dataset import Example, PromptSampler
from prorl.rollout.base import Completion, SamplingParams
from prorl.trainer.rollout_step import RewardShaping, collect, shape_rewards
from prorl.verifiers.base import Status, Verdict


def test_shape_rewards_overlong_and_truncation():
    # max_len 10, buffer 4: penalty starts after 6 tokens, -factor at 10
    rewards, over, trunc, length = shape_rewards([1.0, 1.0, 0.0, 1.0], [6, 8, 10, 10], [False, False, True, False],
                                                 max_len=10, shaping=RewardShaping(overlong_buffer_len=4,
                                                 overlong_penalty_factor=1.0, truncation_penalty=0.5))
    assert length == [0.0] * 4  # the cosine length penalty is off by default
    assert over == pytest.approx([0.0, -0.5, -1.0, -1.0])
    assert trunc == [0.0, 0.0, -0.5, 0.0]
    assert rewards == pytest.approx([1.0, 0.5, -1.5, 0.0])
    plain, _, _, _ = shape_rewards([1.0, 0.0], [10, 10], [True, True], max_len=10, shaping=RewardShaping())
    assert plain == [1.0, 0.0]


class ScriptedEngine:
    """Returns completions whose single token encodes 'right' (1) or 'wrong' (0) per a script."""

    def __init__(self, script):
        self.script = list(script)  # one list of 0/1 per group, consumed in order

    def generate(self, prompts, *, n, temperature, top_p, max_new_tokens):
        return [[Completion([bit], truncated=False) for bit in self.script.pop(0)] for _ in prompts]


class BitScorer:
    def score(self, items):
        return [Verdict(float(it["response"] == "1"), Status.CORRECT if it["response"] == "1" else Status.WRONG) for it in items]


class BitTokenizer:
    def decode(self, ids, skip_special_tokens=True):
        return str(ids[0])


def _sampler():
    rows = generate_rows("add", 20, 0, "train")
    return PromptSampler([Example(r, [1, 2, 3]) for r in rows], seed=0)


def test_dynamic_sampling_refills_until_batch_full():
    # round 1: 3 groups, only one informative; round 2: 2 groups, both informative
    engine = ScriptedEngine([[1, 1], [0, 1], [0, 0], [1, 0], [0, 1]])
    exp = collect(engine, BitTokenizer(), BitScorer(), _sampler(), num_prompts=3,
                  sampling=SamplingParams(n=2, temperature=1.0, top_p=1.0, max_new_tokens=4), dynamic_sampling=True, max_rounds=5,
                  shaping=RewardShaping(overlong_buffer_len=0, overlong_penalty_factor=1.0, truncation_penalty=0.0))
    assert len(exp.groups) == 3
    assert all(len(set(g.scores)) == 2 for g in exp.groups)
    m = exp.metrics
    assert m["dynamic_sampling/rounds"] == 2 and m["dynamic_sampling/generated_groups"] == 5
    assert m["dynamic_sampling/dropped_all_correct"] == 1 and m["dynamic_sampling/dropped_all_wrong"] == 1
    assert m["critic/score/mean"] == pytest.approx(5 / 10)
    assert m["dynamic_sampling/batch_underfilled"] == 0.0


def test_dynamic_sampling_gives_up_after_max_rounds_and_says_so():
    engine = ScriptedEngine([[1, 1]] * 2 + [[0, 1]] + [[0, 0]])
    exp = collect(engine, BitTokenizer(), BitScorer(), _sampler(), num_prompts=3,
                  sampling=SamplingParams(n=2, temperature=1.0, top_p=1.0, max_new_tokens=4), dynamic_sampling=True, max_rounds=1,
                  shaping=RewardShaping(overlong_buffer_len=0, overlong_penalty_factor=1.0, truncation_penalty=0.0))
    assert len(exp.groups) == 1 and exp.metrics["dynamic_sampling/batch_underfilled"] == 1.0


def test_static_sampling_keeps_everything():
    engine = ScriptedEngine([[1, 1], [0, 0]])
    exp = collect(engine, BitTokenizer(), BitScorer(), _sampler(), num_prompts=2,
                  sampling=SamplingParams(n=2, temperature=1.0, top_p=1.0, max_new_tokens=4), dynamic_sampling=False, max_rounds=5,
                  shaping=RewardShaping(overlong_buffer_len=0, overlong_penalty_factor=1.0, truncation_penalty=0.0))
    assert len(exp.groups) == 2 and exp.metrics["dynamic_sampling/rounds"] == 1


def test_length_penalty_is_logged_separately():
    # one-token responses, max_new_tokens 4: the correct ones get -(1 - cos(pi / 4)) / 2 = -.146447
    engine = ScriptedEngine([[1, 1], [0, 0]])
    exp = collect(engine, BitTokenizer(), BitScorer(), _sampler(), num_prompts=2,
                  sampling=SamplingParams(n=2, temperature=1.0, top_p=1.0, max_new_tokens=4), dynamic_sampling=False, max_rounds=5,
                  shaping=RewardShaping(overlong_buffer_len=0, overlong_penalty_factor=1.0, truncation_penalty=0.0, step=1,
                               length_penalty_min=0.0, length_penalty_max=1.0))
    assert exp.metrics["reward/length_penalty/mean"] == pytest.approx(-0.146447 / 2, abs=1e-6)
    assert exp.groups[0].rewards == pytest.approx([1 - 0.146447] * 2, abs=1e-6)
    assert exp.groups[0].scores == [1.0, 1.0]  # verifier scores stay unshaped
