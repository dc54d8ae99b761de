"""The Actor's update: micro-batches add up to the mini-batch in every aggregation mode, the KL
penalty pulls toward the reference, the entropy bonus raises entropy, the on-policy update skips
the old-log-prob pass, and a reset makes the reference equal the policy."""

from __future__ import annotations

import random

import pytest
import torch

from prorl.config import apply_overrides, load_config
from prorl.models.layout import pad_batch
from prorl.trainer.actor import Actor, TrainBatch
from prorl.trainer.distributed import World
from prorl.trainer.setup import BUILTIN_TINY


# the numerics tests compare update paths exactly: fp32 throughout and the padded update unless a
# test asks for another (the defaults pack and, where bf16 is native, autocast: tests/trainer/test_precision.py)
EXACT = ("model.autocast=none", "actor.max_tokens_per_micro_batch=0")


def make_actor(*overrides: str, reference: bool = True) -> Actor:
    cfg = load_config(None, ["trainer.threads=1", *EXACT, *overrides])
    return Actor(cfg, World(), model_path=str(BUILTIN_TINY), needs_reference=reference)


def random_batch(vocab: int, pad: int, *, groups: int = 2, n: int = 4, seed: int = 1, adv: torch.Tensor | None = None):
    g = torch.Generator().manual_seed(seed)
    B = groups * n
    prompts = [torch.randint(3, vocab, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist() for _ in range(B)]
    responses = [torch.randint(3, vocab, (int(torch.randint(1, 7, (1,), generator=g)),), generator=g).tolist() for _ in range(B)]
    seqs = pad_batch(prompts, responses, pad)  # ragged lengths: token counts differ per micro-batch
    advantages = torch.randn(B, generator=g) if adv is None else adv
    return TrainBatch(seqs, advantages, seqs.response_mask, n, 1.0)


def perturb_reference(actor: Actor, scale: float = 0.05) -> None:
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in actor.reference.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def params(actor: Actor) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in actor.model.named_parameters()}


@pytest.mark.parametrize("agg_mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_micro_batches_add_up_to_the_mini_batch(agg_mode):
    def step(micro: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        actor = make_actor(f"actor.micro_batch_size={micro}", "actor.ppo_mini_batch_size=2", f"algo.loss_agg_mode={agg_mode}",
                           "algo.kl_coef=0.5", "algo.entropy_coef=0.01", "actor.grad_clip=1e9")
        perturb_reference(actor)
        actor.optimizer = torch.optim.SGD(actor.model.parameters(), lr=1.0)
        batch = random_batch(len(actor.tokenizer), actor.tokenizer.pad_token_id)
        actor.update(batch, rng=random.Random(0))
        return params(actor)

    whole, pieces = step(8), step(3)
    for k in whole:
        torch.testing.assert_close(pieces[k], whole[k], rtol=1e-4, atol=1e-6)


def _kl_to_reference(actor: Actor, batch: TrainBatch) -> float:
    lp = actor.logprobs(batch.seqs, temperature=1.0)
    ref = actor.logprobs(batch.seqs, temperature=1.0, reference=True)
    k3 = torch.expm1(ref - lp) - (ref - lp)  # >= 0, zero only where the two agree (what the penalty minimises)
    return float((k3 * batch.loss_mask).sum() / batch.loss_mask.sum())


def test_kl_penalty_moves_the_policy_toward_the_reference():
    """Zero advantages: the only force is the KL term, so KL to the reference must fall (a flipped
    sign of the penalty makes it rise)."""
    actor = make_actor("algo.kl_coef=1.0", "algo.kl_estimator=k3", "actor.lr=1e-3", "actor.ppo_mini_batch_size=2")
    perturb_reference(actor, 0.05)
    batch = random_batch(len(actor.tokenizer), actor.tokenizer.pad_token_id, adv=torch.zeros(8))
    before = _kl_to_reference(actor, batch)
    for _ in range(3):
        actor.update(batch, rng=random.Random(0))
    after = _kl_to_reference(actor, batch)
    assert after < before - 0.01, f"KL to the reference {before:.4f} -> {after:.4f}: the penalty does not pull"


def test_entropy_bonus_raises_entropy():
    actor = make_actor("algo.kl_coef=0", "algo.entropy_coef=1.0", "actor.lr=1e-4", "actor.ppo_mini_batch_size=2",
                       reference=False)
    batch = random_batch(len(actor.tokenizer), actor.tokenizer.pad_token_id, adv=torch.zeros(8))
    first = actor.update(batch, rng=random.Random(0))["actor/entropy"]
    for _ in range(3):
        last = actor.update(batch, rng=random.Random(0))["actor/entropy"]
    assert last > first + 0.1, f"entropy {first:.4f} -> {last:.4f}: the bonus does not raise it"


def test_on_policy_update_skips_the_old_logprob_pass(monkeypatch):
    actor = make_actor("algo.kl_coef=0", "actor.ppo_mini_batch_size=2", reference=False)
    calls = []
    real = actor.logprobs
    monkeypatch.setattr(actor, "logprobs", lambda *a, **k: calls.append(k.get("reference", False)) or real(*a, **k))
    batch = random_batch(len(actor.tokenizer), actor.tokenizer.pad_token_id)
    actor.update(batch, rng=random.Random(0))
    assert calls == [], "one mini-batch, one epoch: old log-probs are the detached current ones"
    actor.configure(apply_overrides(actor.cfg, {"actor.ppo_mini_batch_size": 1}))  # as a stage would
    actor.update(batch, rng=random.Random(0))
    assert calls == [False], "two mini-batches: the second is off-policy and needs the old log-probs"


@pytest.mark.parametrize("overrides, recomputes", [
    ((), True),  # sync: the trainer's recompute is the old policy
    (("rollout.mode=async",), False),  # async, K = 1 (auto): the behaviour policy's log-probs, no old pass
    (("rollout.mode=async", "rollout.max_staleness=0"), True),  # on-policy async: as sync
    (("rollout.mode=async", "algo.rollout_correction=tis"), True),  # the decoupled objective: the recompute is pi_prox
    (("rollout.mode=async", "algo.use_rollout_logprobs_as_old=false"), True),  # an explicit choice wins
    (("algo.use_rollout_logprobs_as_old=true",), False),
])
def test_the_old_policy_of_stale_samples_is_the_one_that_sampled_them(monkeypatch, overrides, recomputes):
    """Two mini-batches (off-policy): the old log-probs are recomputed unless they come from the
    engine; with them, the PPO ratio of every token (the engine gave each 2 nats less) is about exp(2)."""
    actor = make_actor("algo.kl_coef=0", "actor.ppo_mini_batch_size=1", "actor.lr=1e-9", *overrides, reference=False)
    calls = []
    real = actor.logprobs
    monkeypatch.setattr(actor, "logprobs", lambda *a, **k: calls.append(k.get("reference", False)) or real(*a, **k))
    batch = random_batch(len(actor.tokenizer), actor.tokenizer.pad_token_id)
    batch.rollout_logp = real(batch.seqs, temperature=1.0) - 2.0
    m = actor.update(batch, rng=random.Random(0))
    assert calls == ([False] if recomputes else [])
    assert (abs(m["actor/ppo_kl"]) > 1.0) == (not recomputes), m["actor/ppo_kl"]  # mean log(pi_old / pi): ~0 or ~-2


def test_reset_copies_the_policy_into_the_reference_and_restarts_adam():
    actor = make_actor("algo.kl_coef=0.1", "actor.ppo_mini_batch_size=2")
    batch = random_batch(len(actor.tokenizer), actor.tokenizer.pad_token_id)
    actor.update(batch, rng=random.Random(0))
    assert _kl_to_reference(actor, batch) > 0.0
    actor.reset(reference=True, optimizer=True)
    assert _kl_to_reference(actor, batch) == 0.0
    assert not actor.optimizer.state


def test_rollout_correction_masks_and_reports_the_mismatch():
    """Engine log-probs 2 nats below the trainer's on every token of half the sequences: mis_token
    ([0.5, 5]) drops exactly those tokens; when it drops every token the update does nothing."""
    def run(offset_rows: slice, mode: str) -> tuple[dict, dict[str, torch.Tensor], float]:
        actor = make_actor("algo.kl_coef=0", "actor.ppo_mini_batch_size=2", "rollout.engine=vllm",
                           f"algo.rollout_correction={mode}", reference=False)
        actor.optimizer = torch.optim.SGD(actor.model.parameters(), lr=0.1)
        batch = random_batch(len(actor.tokenizer), actor.tokenizer.pad_token_id)
        rollout = actor.logprobs(batch.seqs, temperature=1.0)
        rollout[offset_rows] -= 2.0
        batch.rollout_logp = rollout
        before = params(actor)
        share = float(batch.loss_mask[offset_rows].sum() / batch.loss_mask.sum())
        metrics = actor.update(batch, rng=random.Random(0))
        return metrics, {k: (v - before[k]).abs().max() for k, v in params(actor).items()}, share

    m, moved, share = run(slice(0, 4), "mis_token")
    assert 0 < share < 1 and m["rollout_corr/fraction_masked"] == pytest.approx(share, abs=1e-6)
    assert m["rollout_corr/abs_logp_diff_max"] == pytest.approx(2.0, abs=1e-4)
    assert max(moved.values()) > 0
    m, moved, _ = run(slice(0, 8), "mis_token")
    assert m["rollout_corr/fraction_masked"] == pytest.approx(1.0)
    assert max(moved.values()) == 0, "every token masked: no gradient"
    m, moved, _ = run(slice(0, 8), "none")
    assert max(moved.values()) > 0 and m["rollout_corr/ratio_min"] == pytest.approx(float(torch.tensor(2.0).exp()), rel=1e-4)
