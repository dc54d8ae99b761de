"""The trainer's wiring of issue 22's options: the training batch reads the estimators' keys from
the config, the cov losses' own statistics reach the metrics, and the 80/20 entropy mask
(algo.entropy_top_fraction) moves the policy by the kept tokens' gradient only, with a mini-batch
threshold that does not depend on the micro-batching (the micro_batch scope's does) and the kept
fraction logged."""

from __future__ import annotations

import math
import random

import pytest
import torch

import prorl.algo.advantages as A
from prorl.algo.entropy_mask import entropy_top_mask
from prorl.algo.losses import make_policy_loss
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


def test_the_policy_moves_by_the_kept_tokens_gradient_only():
    """One on-policy mini-batch in one micro-batch: the update is -lr * the gradient of the clip loss
    weighted by the top-30% entropy mask (denominator: every counted token), computed here by hand."""
    torch.manual_seed(0)
    actor = make_actor("algo.kl_coef=0", "actor.ppo_mini_batch_size=2", reference=False)
    batch = random_batch(len(actor.tokenizer), actor.tokenizer.pad_token_id)
    actor.model.train()
    logp, ent = actor._forward(actor.model, batch.seqs, torch.arange(8), temperature=1.0, with_entropy=True)
    keep = entropy_top_mask(ent, batch.loss_mask, 0.3)
    assert 0 < keep.sum() < batch.loss_mask.sum()
    loss = make_policy_loss(actor.cfg.algo)(logp, logp.detach(), batch.advantages, batch.loss_mask, rollout_is_weights=keep)
    grads = torch.autograd.grad(loss.loss, list(actor.model.parameters()), allow_unused=True)
    before = params(actor)
    want = {k: before[k] - (g if g is not None else 0.0) for (k, _), g in zip(actor.model.named_parameters(), grads)}

    got, metrics = _sgd_step("algo.entropy_top_fraction=0.3")
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-6)
    n = int(batch.loss_mask.sum())
    assert metrics["actor/entropy_mask_fraction"] == pytest.approx(math.ceil(0.3 * n) / n)
    unmasked, _ = _sgd_step()
    assert max(float((unmasked[k] - got[k]).abs().max()) for k in got) > 1e-4  # the mask changed the update


def test_the_mini_batch_threshold_does_not_depend_on_the_micro_batches():
    whole, m_whole = _sgd_step("algo.entropy_top_fraction=0.3", micro=8)
    pieces, m_pieces = _sgd_step("algo.entropy_top_fraction=0.3", micro=3)
    for k in whole:
        torch.testing.assert_close(pieces[k], whole[k], rtol=1e-4, atol=1e-6)
    assert m_pieces["actor/entropy_mask_fraction"] == pytest.approx(m_whole["actor/entropy_mask_fraction"])
    # each micro-batch's own threshold (the released code's) is a different update
    approx, m_approx = _sgd_step("algo.entropy_top_fraction=0.3", "algo.entropy_mask_scope=micro_batch", micro=3)
    assert max(float((approx[k] - whole[k]).abs().max()) for k in whole) > 1e-5
    assert m_approx["actor/entropy_mask_fraction"] >= 0.3
    same, _ = _sgd_step("algo.entropy_top_fraction=0.3", "algo.entropy_mask_scope=micro_batch", micro=8)
    for k in whole:  # one micro-batch: both scopes agree
        torch.testing.assert_close(same[k], whole[k], rtol=1e-5, atol=1e-7)


def test_the_threshold_pass_runs_only_when_needed(monkeypatch):
    calls = []

    def count(actor):
        real = actor._forward
        monkeypatch.setattr(actor, "_forward", lambda *a, **k: calls.append(torch.is_grad_enabled()) or real(*a, **k))

    for micro, scope, want in ((8, "mini_batch", [True]), (3, "mini_batch", [False] * 3 + [True] * 3),
                               (3, "micro_batch", [True] * 3)):
        calls.clear()
        actor = make_actor(f"actor.micro_batch_size={micro}", "actor.ppo_mini_batch_size=2", "algo.kl_coef=0",
                           "algo.entropy_top_fraction=0.2", f"algo.entropy_mask_scope={scope}", reference=False)
        count(actor)
        actor.update(random_batch(len(actor.tokenizer), actor.tokenizer.pad_token_id), rng=random.Random(0))
        assert calls == want, (micro, scope)
