"""Tests of the chunked LM head (prorl/models/chunked_head.py): equal to the plain full-logits path
in value and gradient, and never holding a whole ``[N, V]`` block of logits for the backward."""

from __future__ import annotations

import pytest
import torch

from prorl.models.chunked_head import chunked_logprobs, reference_logprobs

N, H, V = 37, 16, 50


def _inputs(dtype: torch.dtype, seed: int = 0, bias: bool = True):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, H, generator=g, dtype=dtype).requires_grad_()
    w = (torch.randn(V, H, generator=g, dtype=dtype) * 0.5).requires_grad_()
    b = torch.randn(V, generator=g, dtype=dtype).requires_grad_() if bias else None
    y = torch.randint(0, V, (N,), generator=g)
    gl, ge = torch.randn(N, generator=g, dtype=dtype), torch.randn(N, generator=g, dtype=dtype)
    return h, w, b, y, gl, ge


def _value_and_grads(fn, h, w, b, y, gl, ge, with_entropy, **kw):
    logp, ent = fn(h, w, y, bias=b, with_entropy=with_entropy, **kw)
    loss = (logp * gl).sum() + ((ent * ge).sum() if with_entropy else 0)
    params = [t for t in (h, w, b) if t is not None]
    return logp, ent, torch.autograd.grad(loss, params)


@pytest.mark.parametrize("chunk", [1, 7, N, 0])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
@pytest.mark.parametrize("with_entropy", [False, True])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_chunked_equals_unchunked_value_and_gradient(chunk, temperature, with_entropy, dtype, tol):
    h, w, b, y, gl, ge = _inputs(dtype)
    lp, ent, grads = _value_and_grads(chunked_logprobs, h, w, b, y, gl, ge, with_entropy, temperature=temperature,
                                      chunk_tokens=chunk)
    rlp, rent, rgrads = _value_and_grads(reference_logprobs, h, w, b, y, gl, ge, with_entropy, temperature=temperature)
    assert lp.shape == (N,) and lp.dtype == dtype
    torch.testing.assert_close(lp, rlp, atol=tol, rtol=tol)
    if with_entropy:
        torch.testing.assert_close(ent, rent, atol=tol, rtol=tol)
    else:
        assert ent is None
    for got, want in zip(grads, rgrads):
        torch.testing.assert_close(got, want, atol=tol * want.abs().max().item(), rtol=tol)


def test_entropy_only_gradient_and_no_bias():
    h, w, _, y, _, ge = _inputs(torch.float64, seed=1, bias=False)
    _, ent = chunked_logprobs(h, w, y, chunk_tokens=5, with_entropy=True)
    g = torch.autograd.grad((ent * ge).sum(), [h, w])
    _, rent = reference_logprobs(h, w, y, with_entropy=True)
    rg = torch.autograd.grad((rent * ge).sum(), [h, w])
    for got, want in zip(g, rg):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_gradcheck():
    h, w, b, y, _, _ = _inputs(torch.float64, seed=2)
    h, y = h[:6].detach().requires_grad_(), y[:6]
    assert torch.autograd.gradcheck(
        lambda h, w, b: chunked_logprobs(h, w, y, bias=b, chunk_tokens=4, temperature=0.8, with_entropy=True),
        (h, w, b))


def test_fp32_head_on_bf16_weights():
    """fp32_lm_head: the head runs in fp32 on the bf16 values (= the fp32 reference); without it the
    head runs in bf16 and is measurably further off."""
    h, w, b, y, _, _ = _inputs(torch.float32, seed=3, bias=False)
    h16, w16 = h.detach().bfloat16(), w.detach().bfloat16()
    want, _ = reference_logprobs(h16.float(), w16.float(), y)
    lp32, _ = chunked_logprobs(h16, w16, y, chunk_tokens=8, fp32=True)
    lp16, _ = chunked_logprobs(h16, w16, y, chunk_tokens=8, fp32=False)
    assert lp32.dtype == lp16.dtype == torch.float32
    torch.testing.assert_close(lp32, want, atol=1e-5, rtol=1e-5)
    assert (lp16 - want).abs().max() > 1e-3
    # gradients flow to the bf16 parameters in their own dtype
    w16.requires_grad_()
    chunked_logprobs(h16, w16, y, chunk_tokens=8, fp32=True)[0].sum().backward()
    assert w16.grad.dtype == torch.bfloat16 and w16.grad.abs().sum() > 0


def test_no_full_logits_saved_for_backward():
    """What autograd keeps between forward and backward is O(N * H + V * H), never the [N, V] logits
    (the plain path keeps several [N, V] tensors)."""
    n, hid, vocab = 64, 8, 1000
    h = torch.randn(n, hid, requires_grad=True)
    w = torch.randn(vocab, hid, requires_grad=True)
    y = torch.randint(0, vocab, (n,))

    def saved_numels(fn, **kw):
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            lp, ent = fn(h, w, y, with_entropy=True, **kw)
            (lp.sum() + ent.sum()).backward()
        return sizes

    chunked = saved_numels(chunked_logprobs, chunk_tokens=16)
    plain = saved_numels(reference_logprobs)
    assert max(chunked) <= vocab * hid  # the weight itself is the largest thing kept
    assert sum(s >= n * vocab for s in plain) >= 1  # the check can see full logits when they are kept
