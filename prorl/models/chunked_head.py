"""Per-token log-probs and entropy through the LM head in token chunks, without materialising the
``[N, V]`` logits of a whole micro-batch (a 151,936-word vocabulary at 16k tokens is ~10 GB in fp32).

:func:`chunked_logprobs` is a custom autograd function: the forward keeps only each token's
log-sum-exp and entropy (``[N]`` fp32); the backward recomputes each chunk's logits and writes the
gradient of the hidden states and of the head weight directly, so at most a few ``[chunk, V]`` fp32
blocks exist at a time in either direction (plus the head-weight gradient, summed in fp32). The
result equals the plain ``log_softmax(h @ W.T / T)`` path in value and gradient up to float rounding:
``tests/models/test_chunked_head.py`` checks 1e-10 in fp64 and 1e-5 in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _head_params(weight: torch.Tensor, bias: torch.Tensor | None, fp32: bool):
    """The head's weight and bias in the matmul dtype (cast once per call, not per chunk)."""
    if not fp32:
        return weight, bias
    return weight.float(), None if bias is None else bias.float()


def _chunk_logits(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """``(h @ w.T + b) / T``, upcast to fp32, a fresh tensor the caller may modify. # [C, H], [V, H] -> [C, V]"""
    z = F.linear(h.to(w.dtype), w, b)  # fp32 head: w is fp32; else only the [C, V] block is upcast
    z = z.to(torch.promote_types(z.dtype, torch.float32))
    return z.div_(temperature) if temperature != 1.0 else z


class _ChunkedLogprobs(torch.autograd.Function):
    """Per chunk, forward: z = logits / T, lse, logp = z[y] - lse, H = -sum p log p (kept: lse, H).
    Backward: d logp / dz = onehot(y) - p and dH / dz = -p (log p + H), so
    dz = onehot(y) g - p (g + g_H (log p + H)), computed in place in the recomputed chunk."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, chunk, fp32, with_entropy):
        n = hidden.shape[0]
        out_dtype = torch.promote_types(hidden.dtype, torch.float32)  # fp32 (fp64 inputs stay fp64)
        logp = hidden.new_empty(n, dtype=out_dtype)
        lse = hidden.new_empty(n, dtype=out_dtype)
        ent = hidden.new_empty(n, dtype=out_dtype) if with_entropy else hidden.new_zeros(0, dtype=out_dtype)
        w, b = _head_params(weight, bias, fp32)
        for s in range(0, n, chunk):
            z = _chunk_logits(hidden[s:s + chunk], w, b, temperature)  # [C, V]
            lse_c = torch.logsumexp(z, -1)  # [C]
            lse[s:s + chunk] = lse_c
            logp[s:s + chunk] = z.gather(-1, targets[s:s + chunk, None]).squeeze(-1) - lse_c
            if with_entropy:
                z.sub_(lse_c[:, None])  # log p
                p = z.exp()
                ent[s:s + chunk] = -(p.unsqueeze(1) @ z.unsqueeze(2)).view(-1)  # -sum p log p, no [C, V] temporary
            del z
        ctx.save_for_backward(hidden, weight, bias, targets, lse, ent)
        ctx.temperature, ctx.chunk, ctx.fp32 = temperature, chunk, fp32
        ctx.set_materialize_grads(False)  # unused outputs get None, not zero [N] tensors
        if not with_entropy:
            ctx.mark_non_differentiable(ent)
        return logp, ent

    @staticmethod
    def backward(ctx, g_logp, g_ent):
        hidden, weight, bias, targets, lse, ent = ctx.saved_tensors
        T, chunk, fp32 = ctx.temperature, ctx.chunk, ctx.fp32
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        n = hidden.shape[0]
        use_ent = g_ent is not None and ent.numel() == n
        if g_logp is None and not use_ent:
            return (None,) * 8
        grad_h = torch.empty_like(hidden) if need_h else None
        # the head gradient is accumulated over chunks in fp32 (a transient 4 * V * H bytes)
        acc = torch.promote_types(weight.dtype, torch.float32)
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=acc, device=bias.device) if need_b else None
        w, b = _head_params(weight, bias, fp32)
        for s in range(0, n, chunk):
            h = hidden[s:s + chunk].to(w.dtype)
            z = _chunk_logits(h, w, b, T).sub_(lse[s:s + chunk, None])  # [C, V] log p
            p = z.exp()
            g = g_logp[s:s + chunk, None] if g_logp is not None else torch.zeros_like(lse[s:s + chunk, None])
            if use_ent:  # z <- -p (g + g_H (log p + H))
                z.add_(ent[s:s + chunk, None]).mul_(g_ent[s:s + chunk, None]).add_(g).mul_(p).neg_()
                dz = z
            else:
                dz = p.mul_(-g)
            del p, z
            dz.scatter_add_(-1, targets[s:s + chunk, None], g)
            if T != 1.0:
                dz.div_(T)
            dz_mm = dz.to(w.dtype)
            if need_h:
                grad_h[s:s + chunk] = (dz_mm @ w).to(hidden.dtype)
            if need_w and dz_mm.dtype == acc:
                grad_w.addmm_(dz_mm.t(), h)
            elif need_w:  # bf16/fp16 head: the chunk's [V, H] product in that dtype, summed in fp32
                grad_w += dz_mm.t() @ h
            if need_b:
                grad_b += dz.sum(0).to(acc)
            del dz, dz_mm
        return (grad_h, None if grad_w is None else grad_w.to(weight.dtype),
                None if grad_b is None else grad_b.to(bias.dtype), None, None, None, None, None)


def chunked_logprobs(
    hidden: torch.Tensor,  # [N, H]
    weight: torch.Tensor,  # [V, H]
    targets: torch.Tensor,  # [N] long
    *,
    bias: torch.Tensor | None = None,  # [V]
    temperature: float = 1.0,
    chunk_tokens: int = 2048,
    fp32: bool = False,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of ``targets`` under ``softmax((hidden @ weight.T + bias) / temperature)`` and
    optionally that distribution's entropy, both fp32 ``[N]``, differentiable in ``hidden``,
    ``weight`` and ``bias``. At most ``chunk_tokens`` rows of logits exist at a time (forward and
    backward). ``fp32`` runs the head matmuls in fp32 (else in the weight's dtype, logits upcast)."""
    if hidden.ndim != 2 or targets.shape != hidden.shape[:1]:
        raise ValueError(f"hidden must be [N, H] and targets [N]; got {tuple(hidden.shape)}, {tuple(targets.shape)}")
    chunk = max(1, int(chunk_tokens)) if chunk_tokens > 0 else max(1, hidden.shape[0])
    logp, ent = _ChunkedLogprobs.apply(hidden, weight, bias, targets.long(), float(temperature), chunk, bool(fp32),
                                       bool(with_entropy))
    return logp, (ent if with_entropy else None)


def reference_logprobs(hidden, weight, targets, *, bias=None, temperature=1.0, fp32=False, with_entropy=False):
    """The plain (unchunked, autograd) version of :func:`chunked_logprobs`, for tests. # -> [N], [N] | None"""
    z = _chunk_logits(hidden, *_head_params(weight, bias, fp32), temperature)
    logp_all = z.log_softmax(-1)
    logp = logp_all.gather(-1, targets[:, None]).squeeze(-1)
    ent = -(logp_all.exp() * logp_all).sum(-1) if with_entropy else None
    return logp, ent
