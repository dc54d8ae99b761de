"""Tests of per-token log-probs / entropy on the padded verl layout (prorl/models/policy.py) and of
the tiny model's save/reload round trip (prorl/models/tiny.py)."""

from __future__ import annotations

import math

import pytest
import torch

from prorl.models.layout import pad_batch
from prorl.models.policy import (
    entropy_from_logits,
    load_policy,
    position_ids_from_mask,
    response_logprobs,
)

QUESTIONS = ["What is 3+4?", "Sort ascending: 9 1 5 3 3", "What is 88+11? Put the final answer in \\boxed{}.", "Hi"]
RESPONSE_LENGTHS = [5, 1, 7, 3]  # right padding of different amounts


def sequence_logprobs_reference(model, input_ids, attention_mask, response_len, temperature=1.0):
    """Slow, obviously-correct version of :func:`response_logprobs` (full fp32 logits)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=position_ids_from_mask(attention_mask), use_cache=False).logits.float()
    logits = logits[:, -response_len - 1:-1, :] / temperature
    return torch.log_softmax(logits, -1).gather(-1, input_ids[:, -response_len:].unsqueeze(-1)).squeeze(-1)


@pytest.fixture(scope="module")
def batch(policy):
    """Prompts of different lengths (left-padded) and random responses (right-padded)."""
    model, tok = policy
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=True, add_generation_prompt=True)
               for q in QUESTIONS]
    prompts = [list(p["input_ids"] if not isinstance(p, list) else p) for p in prompts]
    assert len({len(p) for p in prompts}) > 1
    g = torch.Generator().manual_seed(0)
    responses = [torch.randint(3, len(tok), (n,), generator=g).tolist() for n in RESPONSE_LENGTHS]
    return prompts, responses, pad_batch(prompts, responses, tok.pad_token_id)


def unpadded_logits(model, prompt: list[int], response: list[int], temperature: float = 1.0) -> torch.Tensor:
    """Logits (one sequence, no padding at all) at the positions predicting the response. # [r, V]"""
    ids = torch.tensor([prompt + response])  # [1, p + r]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()  # [p + r, V]
    return logits[len(prompt) - 1:len(prompt) + len(response) - 1] / temperature


@pytest.mark.parametrize("temperature", [1.0, 0.6, 1.2])
def test_response_logprobs_equal_reference(policy, batch, temperature):
    model, _ = policy
    _, _, pb = batch
    with torch.no_grad():
        logp, ent = response_logprobs(model, pb.input_ids, pb.attention_mask, pb.response_len, temperature=temperature)
        ref = sequence_logprobs_reference(model, pb.input_ids, pb.attention_mask, pb.response_len, temperature)
    assert ent is None
    assert logp.shape == ref.shape == (len(QUESTIONS), max(RESPONSE_LENGTHS))  # [B, R]
    m = pb.response_mask.bool()
    torch.testing.assert_close(logp[m], ref[m], atol=1e-5, rtol=1e-5)
    assert (logp[m] <= 0).all()


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_response_logprobs_and_entropy_equal_unpadded_direct(policy, batch, temperature):
    """Padding (left-padded prompts, right-padded responses, skipped positions) changes nothing."""
    model, _ = policy
    prompts, responses, pb = batch
    with torch.no_grad():
        logp, ent = response_logprobs(model, pb.input_ids, pb.attention_mask, pb.response_len,
                                      temperature=temperature, with_entropy=True)
    assert ent.shape == logp.shape
    for i, (p, r) in enumerate(zip(prompts, responses)):
        logits = unpadded_logits(model, p, r, temperature)  # [r, V]
        want_logp = [float(torch.log_softmax(logits[t], -1)[tok]) for t, tok in enumerate(r)]
        probs = torch.softmax(logits.double(), -1)  # [r, V]
        want_ent = [-float(sum(pv * math.log(pv) for pv in probs[t].tolist() if pv > 0)) for t in range(len(r))]
        torch.testing.assert_close(logp[i, :len(r)], torch.tensor(want_logp), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(ent[i, :len(r)], torch.tensor(want_ent), atol=1e-4, rtol=1e-4)
    m = pb.response_mask.bool()
    assert torch.isfinite(logp[m]).all() and torch.isfinite(ent[m]).all()


def test_entropy_grows_with_temperature(policy, batch):
    model, tok = policy
    _, _, pb = batch
    ents = []
    with torch.no_grad():
        for temp in (0.5, 1.0, 2.0):
            ents.append(response_logprobs(model, pb.input_ids, pb.attention_mask, pb.response_len,
                                          temperature=temp, with_entropy=True)[1])
    m = pb.response_mask.bool()
    assert (ents[0][m] < ents[1][m]).all() and (ents[1][m] < ents[2][m]).all()
    assert (ents[2][m] <= math.log(len(tok)) + 1e-5).all() and (ents[0][m] >= 0).all()


def test_temperature_scales_logits(policy, batch):
    # log p_T(x) = z_x / T - logsumexp(z / T): recover it from the T=1 log-probs of every token
    model, _ = policy
    prompts, responses, _ = batch
    p, r = prompts[2], responses[2]
    pb = pad_batch([p], [r], 0)
    logits = unpadded_logits(model, p, r)  # [r, V]
    with torch.no_grad():
        lp2 = response_logprobs(model, pb.input_ids, pb.attention_mask, pb.response_len, temperature=2.0)[0][0]
    want = torch.stack([logits[t, tok] / 2.0 - torch.logsumexp(logits[t] / 2.0, -1) for t, tok in enumerate(r)])
    torch.testing.assert_close(lp2, want, atol=1e-4, rtol=1e-4)


def test_entropy_from_logits_direct():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0], [math.log(3.0), 0.0, -1e9, -1e9]])
    # uniform over 4: ln 4; one-hot: 0; (3/4, 1/4): -(.75 ln .75 + .25 ln .25) = .562335
    torch.testing.assert_close(entropy_from_logits(logits), torch.tensor([math.log(4), 0.0, 0.562335]), atol=1e-5, rtol=0)


def test_logprobs_carry_gradients(policy, batch):
    model, _ = policy
    _, _, pb = batch
    model.zero_grad()
    logp, _ = response_logprobs(model, pb.input_ids, pb.attention_mask, pb.response_len)
    (logp * pb.response_mask).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    model.zero_grad()


def test_position_ids_skip_left_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])  # [B, L]
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2, 2], [0, 1, 2, 3, 4, 5]]


# --------------------------------------------------------------------------- tiny model round trip

def test_tiny_save_reload_round_trip(tmp_path):
    from prorl.models.tiny import SPECIAL_TOKENS, build_model, build_tokenizer, save_tiny

    built = build_tokenizer()
    out = save_tiny(build_model(built), built, tmp_path / "tiny")
    model, tok = load_policy(out)
    model.eval()
    # same seed, same config -> the in-memory model that was saved
    fresh = build_model(tok).eval()
    ids = torch.tensor([tok.apply_chat_template([{"role": "user", "content": "What is 1+2?"}], tokenize=True,
                                                add_generation_prompt=True, return_dict=False)])  # [1, L]
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, fresh(input_ids=ids).logits
        again = load_policy(out)[0].eval()(input_ids=ids).logits
    assert torch.equal(a, b) and torch.equal(a, again)
    assert model.config.tie_word_embeddings
    assert torch.equal(model.get_input_embeddings().weight, model.get_output_embeddings().weight)
    # the tokenizer comes back with its special tokens and chat template
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert all(t in tok.get_vocab() for t in SPECIAL_TOKENS)
    assert model.generation_config.eos_token_id == tok.eos_token_id
    text = tok.decode(ids[0])
    assert text == "<|im_start|>user\nWhat is 1+2?<|im_end|>\n<|im_start|>assistant\n"
    assert [tok.decode([t]) for t in tok("123")["input_ids"]] == ["1", "2", "3"]  # digits split
