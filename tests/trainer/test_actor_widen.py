"""The trainer's wiring of issue 22's options: the training batch reads the estimators' keys from
the config, the cov losses' own statistics reach the metrics."""

from __future__ import annotations

import random

import pytest
import torch

import prorl.algo.advantages as A
from prorl.config import load_config
from prorl.data.dataset import Example
from prorl.rollout.base import Completion, SamplingParams
from prorl.trainer.batch import make_train_batch
from prorl.trainer.rollout_step import Group
from tests.trainer.test_actor import make_actor, params, random_batch


def _sgd_step(*overrides: str, micro: int = 8) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    torch.manual_seed(0)
    actor = make_actor(f"actor.micro_batch_size={micro}", "actor.ppo_mini_batch_size=2", "algo.kl_coef=0",
                       "actor.grad_clip=1e9", *overrides, reference=False)
    actor.optimizer = torch.optim.SGD(actor.model.parameters(), lr=1.0)
    batch = random_batch(len(actor.tokenizer), actor.tokenizer.pad_token_id)
    metrics = actor.update(batch, rng=random.Random(0))
    return params(actor), metrics


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


@pytest.mark.parametrize("loss, keys", [("clip_cov", ["actor/pg_clipfrac_cov"]),
                                        ("kl_cov", ["actor/kl_cov_fraction", "actor/ppo_kl_abs"])])
def test_the_cov_losses_statistics_are_logged(loss, keys):
    # two mini-batches: the second is off-policy, so the kl_cov penalty is active there
    _, metrics = _sgd_step(f"algo.policy_loss={loss}", "actor.ppo_mini_batch_size=1")
    for k in keys:  # fractions in (0, 1]; ppo_kl_abs > 0 (SGD at lr 1 moves the policy far: no upper bound)
        assert 0 < metrics[k] and (k.endswith("abs") or metrics[k] <= 1), (k, metrics)
