"""An ``infra_error`` verdict is no verdict: counted apart, excluded from the score metrics."""

from __future__ import annotations

import pytest

from prorl.data.builtin_tasks import generate_rows
from prorl.data.dataset import Example, PromptSampler
from prorl.rollout.base import Completion, SamplingParams
from prorl.trainer.rollout_step import RewardShaping, collect
from prorl.verifiers.base import Status, Verdict


class _Engine:
    def generate(self, prompts, *, n, temperature, top_p, max_new_tokens):
        return [[Completion([k], truncated=False) for k in range(n)] for _ in prompts]


class _Tok:
    def decode(self, ids, skip_special_tokens=True):
        return str(ids[0])


class _Scorer:
    """Sample 0 correct, 1 wrong, 2 and 3 could not be scored (infrastructure), in every group."""

    def score(self, items):
        table = {"0": Verdict(1.0, Status.CORRECT), "1": Verdict(0.0, Status.WRONG),
                 "2": Verdict(0.0, Status.INFRA_ERROR, "not scored"), "3": Verdict(0.0, Status.INFRA_ERROR, "x")}
        return [table[it["response"]] for it in items]


def test_infra_error_counted_and_excluded_from_score_metrics():
    rows = generate_rows("add", 8, 0, "train")
    sampler = PromptSampler([Example(r, [1, 2]) for r in rows], seed=0)
    exp = collect(_Engine(), _Tok(), _Scorer(), sampler, num_prompts=2,
                  sampling=SamplingParams(n=4, temperature=1.0, top_p=1.0, max_new_tokens=4), dynamic_sampling=False, max_rounds=1,
                  shaping=RewardShaping(overlong_buffer_len=0, overlong_penalty_factor=1.0, truncation_penalty=0.0))
    m = exp.metrics
    assert m["reward/status/infra_error"] == pytest.approx(0.5)
    assert m["reward/status/correct"] == pytest.approx(0.25)
    assert m["critic/score/mean"] == pytest.approx(0.5)  # 1 of the 2 judged, not 1 of 4
    assert m["critic/score/builtin/add/mean"] == pytest.approx(0.5)
    assert m["critic/acc/builtin/add/mean"] == pytest.approx(0.5)
    assert exp.groups[0].statuses == ["correct", "wrong", "infra_error", "infra_error"]


def test_a_source_with_only_infra_errors_has_no_score_metric():
    class AllInfra:
        def score(self, items):
            return [Verdict(0.0, Status.INFRA_ERROR, "down")] * len(items)

    rows = generate_rows("add", 8, 0, "train")
    sampler = PromptSampler([Example(r, [1, 2]) for r in rows], seed=0)
    exp = collect(_Engine(), _Tok(), AllInfra(), sampler, num_prompts=1,
                  sampling=SamplingParams(n=2, temperature=1.0, top_p=1.0, max_new_tokens=4), dynamic_sampling=False, max_rounds=1,
                  shaping=RewardShaping(overlong_buffer_len=0, overlong_penalty_factor=1.0, truncation_penalty=0.0))
    assert exp.metrics["reward/status/infra_error"] == 1.0
    assert not any(k.startswith("critic/acc/") for k in exp.metrics)
