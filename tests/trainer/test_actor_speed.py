"""The Actor's speed settings compute the same thing: ``model.autocast`` (bf16 math over fp32
weights), ``actor.compile`` (per-layer torch.compile) and ``model.attn_implementation``."""

from __future__ import annotations

import random

import pytest
import torch

from prorl.config import ConfigError, load_config
from tests.trainer.test_actor import make_actor, params, random_batch


def _logprobs(actor, batch) -> torch.Tensor:
    return actor.logprobs(batch.seqs, temperature=1.0)


def test_autocast_computes_in_bf16_over_fp32_weights():
    torch.manual_seed(0)
    plain, mixed = make_actor(), make_actor("model.autocast=bfloat16")
    batch = random_batch(len(plain.tokenizer), plain.tokenizer.pad_token_id)
    lp32, lp16 = _logprobs(plain, batch), _logprobs(mixed, batch)
    mask = batch.loss_mask.bool()
    diff = (lp32 - lp16)[mask].abs()
    assert 0 < diff.max() < 0.15, diff.max()  # bf16 rounding: close, but not the fp32 numbers
    assert lp16.dtype == torch.float32
    before = params(mixed)
    mixed.update(batch, rng=random.Random(0))
    after = params(mixed)
    assert all(v.dtype == torch.float32 for v in after.values())  # the weights and AdamW stay fp32
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_autocast_needs_fp32_weights():
    with pytest.raises(ConfigError, match="model.autocast"):
        load_config(None, ["model.autocast=bfloat16", "model.dtype=bfloat16"])


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_compiled_actor_matches_eager(attn):
    """Same log-probs and the same update with actor.compile (and eager attention) as without."""
    batch = None
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        actor = make_actor(f"actor.compile={str(compiled).lower()}", f"model.attn_implementation={attn}",
                           "algo.kl_coef=0.1")
        assert actor.model.config._attn_implementation == attn
        layers = [*actor.model.model.layers, *actor.reference.model.layers]
        assert all((getattr(layer, "_compiled_call_impl", None) is not None) == compiled for layer in layers)
        batch = batch or random_batch(len(actor.tokenizer), actor.tokenizer.pad_token_id)
        lp = _logprobs(actor, batch)
        metrics = actor.update(batch, rng=random.Random(0))
        results.append((lp, params(actor), metrics))
    (lp0, p0, m0), (lp1, p1, m1) = results
    torch.testing.assert_close(lp1, lp0, rtol=1e-4, atol=1e-4)
    for k in p0:
        torch.testing.assert_close(p1[k], p0[k], rtol=1e-4, atol=1e-5)
    assert m1["actor/pg_loss"] == pytest.approx(m0["actor/pg_loss"], rel=1e-3, abs=1e-5)
    # compiled in place: state-dict names are unchanged (checkpoints and the weight sync rely on them)
    assert set(p1) == set(p0)
