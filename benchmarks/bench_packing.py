"""Update throughput, padded vs packed, on a batch with a realistic length spread.

    python benchmarks/bench_packing.py [--threads 1] [--repeats 3] [--sequences 16] [--budget 4096]

A small Qwen2 built with ``from_config`` (no download; hidden 256, 4 layers, vocab 8192, sdpa),
prompts of 32-128 tokens and responses log-uniform in 16-1024 tokens. One "update" is forward +
backward (log-prob loss, gradients accumulated over micro-batches; the optimizer step is the same
for both and not timed) over the whole batch:

- padded: today's layout (``pad_batch``: every sequence padded to the longest prompt + response,
  micro-batches of ``--micro-batch-size`` sequences, full ``[b, R, V]`` fp32 logits);
- packed: ``token_budget_micro_batches`` of ``--budget`` tokens, rows from ``default_row_tokens``,
  ``packed_response_logprobs`` with the chunked LM head.

Tokens/s counts real (prompt + response) tokens, the same for both. Useful FLOPs per sequence:
3 x (2 x linear weights x tokens + causal attention 2 x 2 x layers x hidden x L(L+1)/2 + LM head
2 x V x H x response tokens); divided by the time and by a plain fp32 matmul's FLOP/s measured in
the same process (as ``bench_trainer.py``). Prints medians over repeats (after one warm-up), timed
both by the wall clock and by this process's CPU time: on a shared machine the CPU time of a
1-thread run is the steadier measure (the matmul reference is timed the same way).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def build_model(vocab: int, hidden: int, layers: int, seed: int = 0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
                      num_attention_heads=max(1, hidden // 64), num_key_value_heads=max(1, hidden // 128),
                      max_position_embeddings=4096, tie_word_embeddings=True, attn_implementation="sdpa")
    return Qwen2ForCausalLM(cfg).train()


def make_batch(n: int, vocab: int, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    """Prompts 32-128 tokens; responses log-uniform in 16-1024 tokens."""
    rnd = random.Random(seed)
    prompts = [[rnd.randrange(3, vocab) for _ in range(rnd.randint(32, 128))] for _ in range(n)]
    responses = [[rnd.randrange(3, vocab) for _ in range(int(round(math.exp(rnd.uniform(math.log(16), math.log(1024))))))]
                 for _ in range(n)]
    return prompts, responses


def useful_flops(model, prompts, responses) -> float:
    """Forward + backward FLOPs of the real tokens only (causal attention, LM head on responses)."""
    cfg = model.config
    head = model.get_output_embeddings()
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)
    total = 0.0
    for p, r in zip(prompts, responses):
        L = len(p) + len(r)
        total += 2 * linear * L + 2 * 2 * cfg.num_hidden_layers * cfg.hidden_size * L * (L + 1) / 2
        total += 2 * head.weight.numel() * len(r)
    return 3 * total


def matmul_flops(size: int = 1024, repeats: int = 5) -> tuple[float, float]:
    """FLOP/s of a plain fp32 ``size^3`` matmul: (by wall clock, by process CPU time)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(2):
        a @ b
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        for _ in range(4):
            a @ b
        wall.append((time.perf_counter() - t) / 4)
        cpu.append((time.process_time() - c) / 4)
    return 2 * size**3 / statistics.median(wall), 2 * size**3 / statistics.median(cpu)


def padded_update(model, batch, micro_batch_size: int) -> None:
    from prorl.models.policy import response_logprobs

    m = batch.response_mask
    for s in range(0, m.shape[0], micro_batch_size):
        sl = slice(s, s + micro_batch_size)
        lp, _ = response_logprobs(model, batch.input_ids[sl], batch.attention_mask[sl], batch.response_len)
        (-(lp * m[sl]).sum() / m.sum()).backward()


def packed_update(model, batch, budget: int, chunk_tokens: int, row_tokens: int) -> int:
    from prorl.models.packing import default_row_tokens, pack_padded, packed_response_logprobs
    from prorl.models.packing import token_budget_micro_batches

    m = batch.response_mask
    lengths = batch.attention_mask.sum(-1).tolist()  # as the Actor's packed micro-batches count tokens
    padding = 0
    for mb in token_budget_micro_batches(lengths, budget):
        packed = pack_padded(batch, mb, max_tokens_per_row=default_row_tokens(model, [lengths[i] for i in mb], row_tokens))
        padding += packed.num_padding
        lp, _ = packed_response_logprobs(model, packed, chunk_tokens=chunk_tokens)
        (-(lp * m[mb]).sum() / m.sum()).backward()
    return padding


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sequences", type=int, default=16)
    ap.add_argument("--micro-batch-size", type=int, default=8, help="padded: sequences per micro-batch")
    ap.add_argument("--budget", type=int, default=4096, help="packed: tokens per micro-batch")
    ap.add_argument("--row-tokens", type=int, default=0, help="packed: tokens per row (0 = auto)")
    ap.add_argument("--chunk-tokens", type=int, default=1024, help="packed: LM-head chunk")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8192)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from prorl.models.layout import pad_batch

    model = build_model(args.vocab, args.hidden, args.layers)
    prompts, responses = make_batch(args.sequences, args.vocab, seed=0)
    batch = pad_batch(prompts, responses, pad_id=0)
    real = sum(len(p) + len(r) for p, r in zip(prompts, responses))
    flops = useful_flops(model, prompts, responses)

    times: dict[tuple[str, str], list[float]] = {(m, c): [] for m in ("padded", "packed") for c in ("wall", "cpu")}
    mm: dict[str, list[float]] = {"wall": [], "cpu": []}
    padding = 0
    for rep in range(args.repeats + 1):  # the first round is a warm-up
        mm_wall, mm_cpu = matmul_flops()
        for mode in ("padded", "packed"):
            model.zero_grad(set_to_none=True)
            t, c = time.perf_counter(), time.process_time()
            if mode == "padded":
                padded_update(model, batch, args.micro_batch_size)
            else:
                padding = packed_update(model, batch, args.budget, args.chunk_tokens, args.row_tokens)
            if rep:
                times[mode, "wall"].append(time.perf_counter() - t)
                times[mode, "cpu"].append(time.process_time() - c)
        if rep:
            mm["wall"].append(mm_wall)
            mm["cpu"].append(mm_cpu)

    med = statistics.median
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: Qwen2 from_config hidden={args.hidden} layers={args.layers} vocab={args.vocab} "
          f"({n_params / 1e6:.1f}M params, sdpa, fp32); threads={args.threads} repeats={args.repeats}")
    print(f"batch: {args.sequences} sequences, prompts 32-128, responses log-uniform 16-1024 "
          f"(min {min(map(len, responses))}, median {int(med(map(len, responses)))}, max {max(map(len, responses))}); "
          f"{real} real tokens")
    print(f"padded: {batch.input_ids.numel()} tokens incl. padding ({batch.input_ids.numel() / real:.2f}x), "
          f"micro-batches of {args.micro_batch_size} sequences")
    print(f"packed: micro-batches of <= {args.budget} tokens, {padding} row-end padding tokens "
          f"({(real + padding) / real:.2f}x), LM-head chunk {args.chunk_tokens}")
    print(f"useful FLOPs per update: {flops / 1e9:.1f} GFLOP")
    print(f"{'clock':5s} {'mode':8s} {'s/update':>9s} {'tokens/s':>9s} {'GFLOP/s':>8s} {'matmul GFLOP/s':>15s} {'of matmul':>9s}")
    for clock in ("wall", "cpu"):
        peak = med(mm[clock])
        for mode in ("padded", "packed"):
            t = med(times[mode, clock])
            print(f"{clock:5s} {mode:8s} {t:9.2f} {real / t:9.0f} {flops / t / 1e9:8.2f} {peak / 1e9:15.2f} "
                  f"{flops / t / peak:9.3f}")
        print(f"{clock:5s} packed / padded tokens/s: {med(times['padded', clock]) / med(times['packed', clock]):.2f}x")


if __name__ == "__main__":
    main()
