"""The hf engine's sampling log-probs (``report_logprobs``, what async workers send with each token):
the same tokens as transformers' own sampling, and the log-probs the trainer computes for them."""

from __future__ import annotations

import torch

from prorl.models.layout import pad_batch
from prorl.models.policy import load_policy, load_tokenizer, resolve_model_path, response_logprobs
from prorl.rollout.hf import HFRolloutEngine


def _engines():
    path = resolve_model_path("builtin:tiny")
    model, _ = load_policy(path)
    tok = load_tokenizer(path)
    kw = {"eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    return model, tok, HFRolloutEngine(model, report_logprobs=True, **kw), HFRolloutEngine(model, **kw)


def _sample(engine, prompts, **kw):
    torch.manual_seed(0)
    return [c for g in engine.generate(prompts, n=3, max_new_tokens=10, **kw) for c in g]


def test_hf_sampling_logprobs_match_the_trainer_and_change_no_token():
    model, tok, with_lp, plain = _engines()
    prompts = [tok("Compute 12+34.")["input_ids"], tok("Sort: 3 1 2")["input_ids"]]
    for kw, exact in (({"temperature": 1.2, "top_p": 1.0}, True), ({"temperature": 0.9, "top_p": 0.6}, False)):
        got, ref = _sample(with_lp, prompts, **kw), _sample(plain, prompts, **kw)
        assert [c.token_ids for c in got] == [c.token_ids for c in ref]  # sampling itself is unchanged
        assert plain.report_logprobs is False and all(c.logprobs is None for c in ref)
        seqs = pad_batch([p for p in prompts for _ in range(3)], [c.token_ids for c in got], tok.pad_token_id)
        train = response_logprobs(model, seqs.input_ids, seqs.attention_mask, seqs.response_len,
                                  temperature=kw["temperature"])[0]
        for i, c in enumerate(got):
            assert len(c.logprobs) == len(c.token_ids)
            diff = torch.tensor(c.logprobs) - train[i, :len(c.token_ids)]
            if exact:  # the tempered distribution itself
                assert diff.abs().max() < 1e-4, diff
            else:  # renormalised over the nucleus: >= the full distribution's log-prob, by -log(nucleus mass)
                assert (diff >= -1e-5).all() and diff.max() > 0


def test_greedy_logprobs_are_those_of_temperature_one():
    model, tok, with_lp, _ = _engines()
    prompt = tok("Compute 5+6.")["input_ids"]
    (c, *_), = with_lp.generate([prompt], n=2, temperature=0.0, top_p=1.0, max_new_tokens=6)
    seqs = pad_batch([prompt], [c.token_ids], tok.pad_token_id)
    train = response_logprobs(model, seqs.input_ids, seqs.attention_mask, seqs.response_len, temperature=1.0)[0]
    assert torch.allclose(torch.tensor(c.logprobs), train[0, :len(c.token_ids)], atol=1e-4)
