"""Tests of the padding-free update path (prorl/models/packing.py): the packed layout, packed
log-probs / entropy / gradients equal to the padded path on the shipped tiny model, the flash-attention
varlen plumbing (through a reference varlen attention registered with transformers), token-budget
micro-batches, and the Actor's use of them (its micro-batches and its no-grad log-probs, packed vs
padded) through :class:`prorl.trainer.actor.Actor` itself."""

from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.nn.functional as F

from prorl.config import load_config
from prorl.models.layout import pad_batch
from prorl.models.packing import (
    default_row_tokens,
    pack_padded,
    pack_sequences,
    packed_response_logprobs,
    token_budget_micro_batches,
    unpad,
)
from prorl.models.policy import BUILTIN_TINY, entropy_from_logits, position_ids_from_mask, response_logprobs
from prorl.trainer.actor import Actor
from prorl.trainer.distributed import World
from tests.trainer.test_actor import EXACT

PROMPT_LENS = [3, 40, 7, 25, 12, 5, 30, 2, 9]
RESPONSE_LENS = [200, 1, 57, 3, 128, 0, 15, 90, 6]  # very different lengths, one empty


@pytest.fixture(scope="module")
def batch(policy):
    _, tok = policy
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, len(tok), (n,), generator=g).tolist() for n in PROMPT_LENS]
    responses = [torch.randint(3, len(tok), (n,), generator=g).tolist() for n in RESPONSE_LENS]
    return prompts, responses, pad_batch(prompts, responses, tok.pad_token_id)


def make_actor(*overrides: str) -> Actor:
    """An Actor on the shipped tiny warm start (no reference), built as training builds it."""
    cfg = load_config(None, ["trainer.threads=1", *EXACT, *overrides])
    return Actor(cfg, World(), model_path=str(BUILTIN_TINY), needs_reference=False)


def seq_lengths(pb) -> list[int]:
    """Real tokens (prompt + response) of each row of a padded batch."""
    return pb.attention_mask.sum(-1).tolist()


# --------------------------------------------------------------------------- layout

def test_pack_layout_hand_written():
    prompts, responses = [[11, 12], [21], [31, 32, 33]], [[13, 14, 15], [22], []]
    pk = pack_sequences(prompts, responses, max_tokens_per_row=6, pad_id=0)
    # lengths 5 and 2 (the third has no response: left out); 5 + 2 > 6, so two rows of L = 5
    assert pk.input_ids.tolist() == [[11, 12, 13, 14, 15], [21, 22, 0, 0, 0]]
    assert pk.position_ids.tolist() == [[0, 1, 2, 3, 4], [0, 1, 0, 1, 2]]
    assert pk.cu_seqlens.tolist() == [0, 5, 7, 10] and pk.max_seqlen == 5
    assert pk.seq_row == [0, 1, -1] and pk.seq_start == [0, 0, 0]
    # outputs at flat positions 1, 2, 3 predict 13, 14, 15; position 5 (row 1, col 0) predicts 22
    assert pk.logit_index.tolist() == [1, 2, 3, 5] and pk.target_ids.tolist() == [13, 14, 15, 22]
    assert pk.out_index.tolist() == [0, 1, 2, 3] and pk.response_len == 3  # [B, R] = [3, 3]
    assert pk.num_tokens == 7 and pk.num_padding == 3
    out = pk.scatter(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert out.tolist() == [[1, 2, 3], [4, 0, 0], [0, 0, 0]]
    one = pack_sequences(prompts, responses)  # one row, no padding at all
    assert one.input_ids.tolist() == [[11, 12, 13, 14, 15, 21, 22]] and one.position_ids.tolist() == [[0, 1, 2, 3, 4, 0, 1]]
    assert one.logit_index.tolist() == [1, 2, 3, 5] and one.num_padding == 0


@pytest.mark.parametrize("seed", range(4))
def test_pack_random_rows_hold_every_sequence_once(seed):
    rnd = random.Random(seed)
    B = rnd.randint(1, 30)
    prompts = [[rnd.randint(1, 99) for _ in range(rnd.randint(1, 20))] for _ in range(B)]
    responses = [[rnd.randint(1, 99) for _ in range(rnd.choice([0, 1, rnd.randint(1, 80)]))] for _ in range(B)]
    limit = rnd.choice([16, 50, 120])
    pk = pack_sequences(prompts, responses, max_tokens_per_row=limit, pad_id=0)
    N, L = pk.input_ids.shape
    for i, (p, r) in enumerate(zip(prompts, responses)):
        if not r:
            assert pk.seq_row[i] == -1
            continue
        row, s = pk.seq_row[i], pk.seq_start[i]
        assert pk.input_ids[row, s:s + len(p) + len(r)].tolist() == p + r
        assert pk.position_ids[row, s:s + len(p) + len(r)].tolist() == list(range(len(p) + len(r)))
    for n in range(N):
        members = [i for i in range(B) if pk.seq_row[i] == n]
        used = sum(len(prompts[i]) + len(responses[i]) for i in members)
        assert used <= limit or len(members) == 1  # only a lone over-long sequence exceeds the row limit
        assert (pk.position_ids[n, used:] == torch.arange(L - used)).all()  # padding only at the end
    assert pk.num_tokens == sum(len(p) + len(r) for p, r in zip(prompts, responses) if r)
    # every response token scored once, at the right target, into its own [B, R] slot
    assert sorted(pk.out_index.tolist()) == [i * pk.response_len + t for i, r in enumerate(responses) for t in range(len(r))]
    flat = pk.input_ids.view(-1)
    assert torch.equal(flat[pk.logit_index + 1], pk.target_ids)


def test_unpad_round_trip_and_pack_padded_subset(batch):
    prompts, responses, pb = batch
    assert unpad(pb) == (prompts, responses)
    assert seq_lengths(pb) == [p + r for p, r in zip(PROMPT_LENS, RESPONSE_LENS)]
    pk = pack_padded(pb, [4, 0], max_tokens_per_row=64)
    assert pk.num_sequences == 2 and pk.response_len == pb.response_len
    assert pk.num_tokens == PROMPT_LENS[4] + RESPONSE_LENS[4] + PROMPT_LENS[0] + RESPONSE_LENS[0]


def test_cu_seqlens_match_transformers_flash_kwargs():
    from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

    pk = pack_sequences([[1, 2], [3], [4, 5, 6], [7]], [[8], [9, 9, 9], [1], [2, 3]], max_tokens_per_row=7)
    (cu_q, cu_k), (mq, mk) = prepare_fa_kwargs_from_position_ids(pk.position_ids)
    assert torch.equal(pk.cu_seqlens, cu_q) and int(mq) == pk.max_seqlen


# --------------------------------------------------------------------------- log-probs

@pytest.mark.parametrize("row_tokens", [0, 64, 256])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_packed_logprobs_and_entropy_equal_padded(policy, batch, row_tokens, temperature):
    """fp32: within 1e-5 at T = 1. Both paths are ~1e-5 from the fp64 values (logits up to ~35 / T in
    fp32), and dividing the logits by T scales that rounding by 1 / T, so the tolerance is 1e-5 / T;
    the fp64 test below shows the two paths are the same computation."""
    model, _ = policy
    _, _, pb = batch
    pk = pack_padded(pb, max_tokens_per_row=row_tokens)
    with torch.no_grad():
        want_lp, want_ent = response_logprobs(model, pb.input_ids, pb.attention_mask, pb.response_len,
                                              temperature=temperature, with_entropy=True)
        lp, ent = packed_response_logprobs(model, pk, temperature=temperature, with_entropy=True, chunk_tokens=50)
    assert lp.shape == ent.shape == (len(PROMPT_LENS), max(RESPONSE_LENS))
    m = pb.response_mask.bool()
    assert int(m.sum()) == pk.target_ids.numel()
    tol = 1e-5 / temperature
    torch.testing.assert_close(lp[m], want_lp[m], atol=tol, rtol=1e-5)
    torch.testing.assert_close(ent[m], want_ent[m], atol=tol, rtol=1e-5)
    assert (lp[~m] == 0).all() and (ent[~m] == 0).all()


def test_packed_logprobs_exact_in_float64(policy, batch):
    """In fp64 the packed and padded paths agree to rounding (1e-10): nothing leaks across sequences."""
    model, _ = policy
    _, _, pb = batch
    m64 = copy.deepcopy(model).double()
    R, T = pb.response_len, 0.6
    with torch.no_grad():  # the padded path in fp64 (response_logprobs itself upcasts to fp32 only)
        logits = m64(input_ids=pb.input_ids, attention_mask=pb.attention_mask, use_cache=False,
                     position_ids=position_ids_from_mask(pb.attention_mask)).logits[:, -R - 1:-1] / T  # [B, R, V]
        want = logits.log_softmax(-1).gather(-1, pb.input_ids[:, -R:, None]).squeeze(-1)  # [B, R]
        want_ent = entropy_from_logits(logits)
        got, ent = packed_response_logprobs(m64, pack_padded(pb, max_tokens_per_row=128), chunk_tokens=64,
                                            temperature=T, with_entropy=True)
    m = pb.response_mask.bool()
    assert got.dtype == torch.float64
    torch.testing.assert_close(got[m], want[m], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(ent[m], want_ent[m], atol=1e-10, rtol=1e-10)


def test_packed_gradients_equal_padded(policy, batch):
    model, _ = policy
    _, _, pb = batch
    m = pb.response_mask
    g = torch.Generator().manual_seed(1)
    w = torch.randn(m.shape, generator=g)  # [B, R] per-token loss weights (an advantage-like signal)

    def grads(fn):
        model.zero_grad(set_to_none=True)
        lp, ent = fn()
        ((lp * w * m).sum() / m.sum() - 0.1 * (ent * m).sum() / m.sum()).backward()
        out = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad(set_to_none=True)
        return out

    want = grads(lambda: response_logprobs(model, pb.input_ids, pb.attention_mask, pb.response_len,
                                           temperature=0.8, with_entropy=True))
    got = grads(lambda: packed_response_logprobs(model, pack_padded(pb, max_tokens_per_row=100), temperature=0.8,
                                                 with_entropy=True, chunk_tokens=33))
    assert want.keys() == got.keys() and len(want) > 10
    for name in want:
        scale = want[name].abs().max().item()
        assert scale > 0, name
        torch.testing.assert_close(got[name], want[name], atol=1e-5 * scale, rtol=1e-4, msg=name)


def _reference_varlen_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                                cu_seq_lens_q=None, cu_seq_lens_k=None, max_length_q=None, max_length_k=None, **kw):
    """What ``flash_attn_varlen_func`` computes, in plain torch: causal attention within each
    ``cu_seqlens`` segment of the flattened tokens. # q [B, h, L, D] -> [B, L, h, D]"""
    assert attention_mask is None and cu_seq_lens_q is not None and torch.equal(cu_seq_lens_q, cu_seq_lens_k)
    assert int(max_length_q) == int((cu_seq_lens_q[1:] - cu_seq_lens_q[:-1]).max())
    B, nh, L, D = query.shape
    rep = nh // key.shape[1]
    q = query.transpose(1, 2).reshape(B * L, nh, D)
    k = key.repeat_interleave(rep, 1).transpose(1, 2).reshape(B * L, nh, D)
    v = value.repeat_interleave(rep, 1).transpose(1, 2).reshape(B * L, nh, D)
    outs = [F.scaled_dot_product_attention(q[s:e].transpose(0, 1), k[s:e].transpose(0, 1), v[s:e].transpose(0, 1),
                                           is_causal=True, scale=scaling).transpose(0, 1)
            for s, e in zip(cu_seq_lens_q[:-1].tolist(), cu_seq_lens_q[1:].tolist())]
    return torch.cat(outs).view(B, L, nh, D), None


def test_flash_varlen_path_passes_cu_seqlens(policy, batch):
    """With a flash-attention implementation the packed forward hands ``cu_seq_lens_*`` to every
    layer (checked with a reference varlen attention registered under a 'flash' name)."""
    from transformers import AttentionInterface

    AttentionInterface.register("flash_varlen_reference", _reference_varlen_attention)
    model, _ = policy
    _, _, pb = batch
    flash = copy.deepcopy(model)
    flash.config._attn_implementation = "flash_varlen_reference"
    assert default_row_tokens(flash, seq_lengths(pb)) == 0  # flash: one row per micro-batch
    assert default_row_tokens(model, seq_lengths(pb)) == max(seq_lengths(pb))
    m = pb.response_mask.bool()
    with torch.no_grad():
        want, want_ent = response_logprobs(model, pb.input_ids, pb.attention_mask, pb.response_len, with_entropy=True)
        for rows in (0, 128):
            got, ent = packed_response_logprobs(flash, pack_padded(pb, max_tokens_per_row=rows), with_entropy=True)
            torch.testing.assert_close(got[m], want[m], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(ent[m], want_ent[m], atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- micro-batches

@pytest.mark.parametrize("seed", range(6))
def test_token_budget_micro_batches(seed):
    rnd = random.Random(seed)
    lengths = [int(2 ** rnd.uniform(4, 10)) for _ in range(rnd.randint(1, 200))]  # 16..1024, log-uniform
    budget = rnd.choice([512, 1024, 3000])
    mbs = token_budget_micro_batches(lengths, budget)
    assert sorted(i for mb in mbs for i in mb) == list(range(len(lengths)))  # every sequence exactly once
    for mb in mbs:
        assert mb == sorted(mb) and mb
        assert sum(lengths[i] for i in mb) <= budget or len(mb) == 1
    loads = [sum(lengths[i] for i in mb) for mb in mbs]
    # first-fit: no two micro-batches could have been one
    assert all(a + b > budget for j, a in enumerate(loads) for b in loads[j + 1:])
    assert mbs == token_budget_micro_batches(list(lengths), budget)  # deterministic


def test_token_budget_edge_cases():
    assert token_budget_micro_batches([], 100) == []
    assert token_budget_micro_batches([100, 90, 80, 10, 10, 5], 10_000) == [[0, 1, 2, 3, 4, 5]]
    assert token_budget_micro_batches([400, 300, 300], 600) == [[0], [1, 2]]
    assert token_budget_micro_batches([700, 5], 600) == [[0], [1]]  # over the budget: alone
    with pytest.raises(ValueError):
        token_budget_micro_batches([5], 0)


def _check_actor_micro_batches(pb, idx: torch.Tensor, chunks: list, budget: int) -> None:
    """``chunks`` hold each row of ``idx`` once (tensors of batch rows) and, with a token budget,
    at most ``budget`` real tokens each (a longer row alone), first-fit (no two could merge)."""
    assert all(isinstance(c, torch.Tensor) for c in chunks)
    assert sorted(i for c in chunks for i in c.tolist()) == sorted(idx.tolist())
    loads = [int(pb.attention_mask[c].sum()) for c in chunks]
    for c, load in zip(chunks, loads):
        assert load <= budget or len(c) == 1, (c, load)
    assert all(a + b > budget for j, a in enumerate(loads) for b in loads[j + 1:])


@pytest.mark.parametrize("budget", [60, 300, 10_000])
def test_actor_micro_batches_respect_the_token_budget(batch, budget):
    """The micro-batches the Actor runs (old / reference log-probs and every update step) with
    ``actor.max_tokens_per_micro_batch``: on the whole batch and on a shuffled mini-batch of rows."""
    actor = make_actor(f"actor.max_tokens_per_micro_batch={budget}", "actor.micro_batch_size=2")
    _, _, pb = batch
    B = pb.input_ids.shape[0]
    for idx in (torch.arange(B), torch.tensor([7, 2, 5, 0, 8])):
        chunks = actor._micro_batches(pb, idx)
        _check_actor_micro_batches(pb, idx, chunks, budget)
        if budget == 10_000:
            assert len(chunks) == 1  # everything fits: one forward pass
    assert actor._micro_batches(pb, torch.tensor([], dtype=torch.long)) == []


def test_actor_micro_batches_fall_back_to_sequence_count(batch):
    """``actor.max_tokens_per_micro_batch=0``: consecutive runs of ``actor.micro_batch_size`` rows of ``idx``."""
    actor = make_actor("actor.max_tokens_per_micro_batch=0", "actor.micro_batch_size=3")
    _, _, pb = batch
    idx = torch.tensor([8, 1, 4, 6, 0, 3, 2])
    chunks = actor._micro_batches(pb, idx)
    assert [c.tolist() for c in chunks] == [[8, 1, 4], [6, 0, 3], [2]]


def test_packed_gradients_with_activation_checkpointing(policy, batch):
    """Activation checkpointing (recomputing each layer in the backward) leaves the packed gradients unchanged."""
    model, _ = policy
    _, _, pb = batch
    pk = pack_padded(pb, max_tokens_per_row=100)

    def grads(m):
        m.zero_grad(set_to_none=True)
        lp, ent = packed_response_logprobs(m, pk, with_entropy=True, chunk_tokens=40)
        (lp.sum() + ent.sum()).backward()
        return {n: p.grad.clone() for n, p in m.named_parameters()}

    ckpt = copy.deepcopy(model).train()
    getattr(ckpt, "activation_checkpointing_enable", ckpt.gradient_checkpointing_enable)()
    assert ckpt.model.gradient_checkpointing
    want, got = grads(copy.deepcopy(model).train()), grads(ckpt)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-5 * want[name].abs().max().item(), rtol=1e-4, msg=name)


def test_empty_micro_batch_runs_a_dummy_forward_and_backward(policy):
    """A micro-batch with nothing to score (empty responses, or the padding micro-batch that keeps
    FSDP ranks in step) still runs one forward and backward, with zero gradients."""
    model, _ = policy
    for prompts, responses in (([[5, 6]], [[]]), ([], [])):
        pk = pack_sequences(prompts, responses)
        assert pk.target_ids.numel() == 0 and pk.input_ids.shape == (1, 1)  # one padding token
        model.zero_grad(set_to_none=True)
        lp, ent = packed_response_logprobs(model, pk, with_entropy=True)
        assert lp.shape == ent.shape == (len(prompts), 1)
        (lp.sum() + ent.sum()).backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and not g.abs().any() for g in grads)
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("budget", [60, 300])
def test_actor_packed_logprobs_equal_padded(batch, budget):
    """``Actor.logprobs`` (old / reference log-probs, no grad) with token-budget micro-batches of
    packed rows equals the padded path of the same Actor settings and the whole batch's padded
    forward; the model's train/eval mode is restored."""
    _, _, pb = batch
    padded = make_actor("actor.max_tokens_per_micro_batch=0", "actor.micro_batch_size=4")
    packed = make_actor(f"actor.max_tokens_per_micro_batch={budget}", "actor.logprob_chunk_tokens=64")
    assert len(packed._micro_batches(pb, torch.arange(pb.input_ids.shape[0]))) > 1
    with torch.no_grad():
        want, _ = response_logprobs(packed.model.eval(), pb.input_ids, pb.attention_mask, pb.response_len,
                                    temperature=1.2)
    got_padded = padded.logprobs(pb, temperature=1.2)
    packed.model.train()
    got = packed.logprobs(pb, temperature=1.2)
    assert packed.model.training  # the mode is restored
    m = pb.response_mask.bool()
    assert got.shape == want.shape == got_padded.shape and not got.requires_grad
    torch.testing.assert_close(got[m], want[m], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[m], got_padded[m], atol=1e-5, rtol=1e-5)
    assert (got[~m] == 0).all()
