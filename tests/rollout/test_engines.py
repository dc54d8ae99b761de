"""The engine factory and the HF engine's side of the seam (own model copy, load_weights,
sleep/wake), plus the error a missing vLLM gives. Runs without vLLM."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from prorl.config import RolloutConfig
from prorl.models.policy import load_policy
from prorl.rollout import make_engine
from prorl.rollout.hf import HFRolloutEngine

TINY = Path(__file__).resolve().parents[2] / "prorl" / "assets" / "tiny-warmstart"


@pytest.fixture(scope="module")
def trainer_model():
    model, tok = load_policy(TINY)
    return model, tok


def hf_engine(tok) -> HFRolloutEngine:
    return make_engine(RolloutConfig(engine="hf", max_batch_size=64), "builtin:tiny", eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id, dtype="float32", seed=0, device="cpu")


def test_hf_engine_owns_its_model_and_loads_named_weights(trainer_model):
    model, tok = trainer_model
    engine = hf_engine(tok)
    assert isinstance(engine, HFRolloutEngine) and engine.model is not model
    theirs = dict(model.named_parameters())
    ours = dict(engine.model.named_parameters())
    assert all(torch.equal(ours[k], theirs[k]) and ours[k].data_ptr() != theirs[k].data_ptr() for k in ours)

    changed, _ = load_policy(TINY)
    with torch.no_grad():
        for p in changed.parameters():
            p.add_(0.01)
    engine.load_weights(changed.named_parameters())
    after = dict(engine.model.named_parameters())
    assert all(torch.equal(after[k], v) for k, v in changed.named_parameters())
    # the tied LM head follows the embedding, and a state_dict (which names it) loads too
    assert torch.equal(engine.model.lm_head.weight, changed.model.embed_tokens.weight)
    engine.load_weights(model.state_dict().items())
    assert all(torch.equal(p, theirs[k]) for k, p in engine.model.named_parameters())
    with pytest.raises(KeyError, match="no parameter 'model.bogus.weight'"):
        engine.load_weights([("model.bogus.weight", torch.zeros(1))])


def test_hf_engine_sleep_wake_are_harmless(trainer_model):
    _, tok = trainer_model
    engine = hf_engine(tok)
    engine.sleep()
    engine.wake_up()
    prompt = tok("12+34=")["input_ids"]
    groups = engine.generate([prompt, prompt[:3]], n=2, temperature=1.0, top_p=1.0, max_new_tokens=4)
    assert [len(g) for g in groups] == [2, 2]
    assert all(c.logprobs is None and 1 <= len(c.token_ids) <= 4 for g in groups for c in g)


def test_missing_vllm_names_the_install_command(trainer_model, monkeypatch):
    _, tok = trainer_model
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed, even where it is
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # restored afterwards
    with pytest.raises(ImportError, match=r"bash scripts/install.sh --vllm"):
        make_engine(RolloutConfig(engine="vllm"), str(TINY), eos_token_id=tok.eos_token_id,
                    pad_token_id=tok.pad_token_id, dtype="float32", seed=0, device="cpu")


def test_rollout_dtype_gives_the_engine_its_own_precision(trainer_model):
    """rollout.dtype=bfloat16: the engine's copy is bf16 while the trainer stays fp32, and fp32
    weights synced in are cast to it; auto follows the trainer's dtype."""
    model, tok = trainer_model
    kw = dict(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, dtype="float32", seed=0, device="cpu")
    auto = make_engine(RolloutConfig(engine="hf"), "builtin:tiny", **kw)
    bf16 = make_engine(RolloutConfig(engine="hf", dtype="bfloat16"), "builtin:tiny", **kw)
    assert {p.dtype for p in auto.model.parameters()} == {torch.float32}
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    bf16.load_weights(model.named_parameters())
    ours = dict(bf16.model.named_parameters())
    assert all(torch.equal(ours[k], p.detach().to(torch.bfloat16)) for k, p in model.named_parameters())
    out = bf16.generate([[5, 6, 7]], n=2, temperature=1.0, top_p=1.0, max_new_tokens=4)
    assert len(out[0]) == 2 and all(len(c.token_ids) <= 4 for c in out[0])
