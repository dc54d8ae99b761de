"""Trainer throughput on this machine, in one process:

- rollout tokens/s (HF generate, sampling, the tiny warm start),
- update tokens/s (one actor update: forward + backward + AdamW over the batch),
- the update's achieved FLOP/s as a fraction of a plain fp32 matmul's FLOP/s measured here.

Prints medians over repeats. Usage: python benchmarks/bench_trainer.py [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch


def matmul_flops(threads: int, size: int = 1024, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        times.append((time.perf_counter() - t) / 4)
    return 2 * size**3 / statistics.median(times)


def model_flops_per_token(model, context: int, head_fraction: float) -> float:
    """Forward FLOPs per token: 2 x (linear weights) + attention scores/values (2 x 2 x layers x context x hidden);
    the LM head only runs on the ``head_fraction`` of positions whose logits are kept."""
    cfg = model.config
    head = model.get_output_embeddings()
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)
    attn = 2 * 2 * cfg.num_hidden_layers * context * cfg.hidden_size
    return 2 * linear + 2 * head.weight.numel() * head_fraction + attn


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from prorl.config import load_config
    from prorl.data.builtin_tasks import generate_rows
    from prorl.data.dataset import build_examples
    from prorl.models.layout import pad_batch
    from prorl.rollout.hf import HFRolloutEngine
    from prorl.trainer.actor import Actor, TrainBatch
    from prorl.trainer.distributed import World
    from prorl.trainer.setup import BUILTIN_TINY

    cfg = load_config(None, [f"actor.ppo_mini_batch_size={args.prompts}", f"actor.train_batch_size={args.prompts}",
                             "actor.micro_batch_size=128", "algo.kl_coef=0", "actor.lr=1e-5"])
    actor = Actor(cfg, World(), model_path=str(BUILTIN_TINY), needs_reference=False)
    model, tok = actor.model, actor.tokenizer
    rows = generate_rows("add", args.prompts, 0, "train")
    examples, _ = build_examples(rows, tok, 10**6)
    engine = HFRolloutEngine(model, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)

    gen_tps, upd_tps, upd_flops, mm = [], [], [], []
    for r in range(args.repeats):
        mm.append(matmul_flops(args.threads))
        t = time.perf_counter()
        groups = engine.generate([e.prompt_ids for e in examples], n=args.n, temperature=1.2, top_p=1.0,
                                 max_new_tokens=args.max_new_tokens)
        dt = time.perf_counter() - t
        responses = [c.token_ids for g in groups for c in g]
        gen_tps.append(sum(map(len, responses)) / dt)

        seqs = pad_batch([e.prompt_ids for e in examples for _ in range(args.n)], responses, tok.pad_token_id)
        batch = TrainBatch(seqs, torch.randn(seqs.input_ids.shape[0]), seqs.response_mask, args.n, 1.2)
        t = time.perf_counter()
        actor.update(batch, rng=random.Random(r))  # on-policy: no old-log-prob pass
        dt = time.perf_counter() - t
        tokens = int(seqs.input_ids.numel())  # the update runs over padded [B, P + R]
        upd_tps.append(tokens / dt)
        head_fraction = (seqs.response_len + 1) / seqs.input_ids.shape[1]
        upd_flops.append(3 * model_flops_per_token(model, seqs.input_ids.shape[1], head_fraction) * tokens / dt)

    med = statistics.median
    print(f"threads={args.threads} prompts={args.prompts} n={args.n} max_new_tokens={args.max_new_tokens} repeats={args.repeats}")
    print(f"rollout tokens/s (generated):   {med(gen_tps):10.0f}")
    print(f"update tokens/s (fwd+bwd+adam): {med(upd_tps):10.0f}")
    print(f"update achieved FLOP/s:         {med(upd_flops) / 1e9:10.2f} GFLOP/s")
    print(f"plain fp32 matmul FLOP/s:       {med(mm) / 1e9:10.2f} GFLOP/s (1024^3)")
    print(f"update / matmul:                {med(upd_flops) / med(mm):10.3f}")


if __name__ == "__main__":
    main()
