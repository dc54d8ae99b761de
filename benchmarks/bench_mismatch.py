"""Rollout/training mismatch on a real rollout: vLLM samples from the tiny warm start (in
``--engine-dtype``), the trainer recomputes the same tokens' log-probs in fp32, and every
``algo.rollout_correction`` mode reports its ``rollout_corr/`` metrics on that batch.

With both in fp32 the two agree to ~1e-6 (nothing to correct); a bf16 engine against the fp32
trainer shows the mismatch that a real deployment has (other kernels and precision).

Usage: python benchmarks/bench_mismatch.py [--engine-dtype bfloat16] [--prompts 32] [--n 8] [--max-new-tokens 32]
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine-dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=1.2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from prorl.algo.rollout_correction import ROLLOUT_CORRECTIONS, rollout_correction
    from prorl.config import RolloutConfig
    from prorl.data.builtin_tasks import generate_rows
    from prorl.data.dataset import build_examples
    from prorl.models.policy import BUILTIN_TINY as _BUILTIN_TINY
    from prorl.models.policy import load_policy
    from prorl.rollout import make_engine
    from prorl.models.policy import response_logprobs
    from prorl.models.layout import pad_batch, pad_logprobs

    model, tok = load_policy(_BUILTIN_TINY)
    rows = generate_rows("add", 64, 0, "val") + generate_rows("sort", 64, 0, "val")
    prompts = [ex.prompt_ids for ex in build_examples(rows, tok, 10**9)[0]]
    prompts = [prompts[(i * 7) % len(prompts)] for i in range(args.prompts)]
    engine = make_engine(RolloutConfig(engine="vllm", cpu_kv_cache_gib=0.25), str(_BUILTIN_TINY),
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, dtype=args.engine_dtype,
                         seed=0, device="cpu")
    torch.set_num_threads(args.threads)
    groups = engine.generate(prompts, n=args.n, temperature=args.temperature, top_p=1.0,
                             max_new_tokens=args.max_new_tokens)
    flat = [c for g in groups for c in g]
    batch = pad_batch([p for p in prompts for _ in range(args.n)], [c.token_ids for c in flat], tok.pad_token_id)
    with torch.no_grad():  # [B, R] the trainer's fp32 old log-probs
        logp_train = torch.cat([response_logprobs(model.eval(), batch.input_ids[s:s + 64], batch.attention_mask[s:s + 64],
                                                  batch.response_len, temperature=args.temperature)[0]
                                for s in range(0, len(flat), 64)])
    logp_rollout = pad_logprobs([c.logprobs for c in flat], batch.response_len)  # [B, R]
    print(f"engine {args.engine_dtype} vs trainer float32: {len(flat)} responses, "
          f"{int(batch.response_mask.sum())} tokens, temperature {args.temperature}")
    bounds = {"geo_seq": (0.99, 1.01)}
    for mode in ROLLOUT_CORRECTIONS:
        low, high = bounds.get(mode, (0.5, 5.0))
        _, _, metrics = rollout_correction(logp_train, logp_rollout, batch.response_mask, mode=mode,
                                           tis_cap=2.0, low=low, high=high)
        print(f"{mode:>9s} " + "  ".join(f"{k.split('/')[1]}={v:.3g}" for k, v in metrics.items()))


if __name__ == "__main__":
    main()
