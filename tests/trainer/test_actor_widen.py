"""The trainer's wiring of issue 22's options: the training batch reads the estimators' keys from
the config."""

from __future__ import annotations

import pytest
import torch

import prorl.algo.advantages as A
from prorl.config import load_config
from prorl.data.dataset import Example
from prorl.rollout.base import Completion, SamplingParams
from prorl.trainer.batch import make_train_batch
from prorl.trainer.rollout_step import Group


@pytest.mark.parametrize("overrides, fn, kw", [
    (["algo.adv_estimator=passk", "algo.passk_k=2"], "passk_advantages", {"k": 2}),
    (["algo.adv_estimator=w_reinforce", "algo.positive_weight=0.5", "algo.dynamic_sampling=false"],
     "w_reinforce_advantages", {"positive_weight": 0.5}),
])
def test_the_training_batch_reads_the_estimators_keys_from_the_config(overrides, fn, kw):
    """make_train_batch passes algo.passk_k / positive_weight (not the functions' defaults) on."""
    cfg = load_config(None, ["rollout.n=4", *overrides])
    rewards = [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]]
    groups = [Group(Example({"data_source": "t"}, [5, 6]), [Completion([7, 8], False) for _ in r], r, r, ["ok"] * 4,
                    SamplingParams(4, 1.0, 1.0, 4)) for r in rewards]
    batch, _ = make_train_batch(groups, cfg, pad_token_id=0, device="cpu")
    want = getattr(A, fn)(torch.tensor(sum(rewards, [])), torch.arange(2).repeat_interleave(4), **kw)
    torch.testing.assert_close(batch.advantages, want)
    assert not torch.equal(want, getattr(A, fn)(torch.tensor(sum(rewards, [])), torch.arange(2).repeat_interleave(4)))
