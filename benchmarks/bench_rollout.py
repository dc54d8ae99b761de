"""Rollout seconds per ``generate`` call, vLLM vs the HF engine, in one process with the same
prompts (built-in add + sort validation prompts) and settings.

Each ``--settings P:n:T[:random]`` is ``P`` prompts x ``n`` samples x at most ``T`` new tokens at
temperature 1.2. The tiny warm start answers in a few tokens, so a setting ending in ``:random``
uses a randomly initialised model of the same architecture, which rarely emits EOS and so runs
to ``T`` tokens (the long-response case). Default: 16:8:16 and 16:8:128:random. Prints the median
over ``--repeats`` calls after one warm-up call, generated tokens per second and the ratio.
Engines not installed are reported and skipped.

``--dtype`` is the engines' weight dtype (``rollout.dtype``; bfloat16 uses AMX on recent Xeons) and
``--compiled`` builds vLLM with ``rollout.enforce_eager=false`` (its torch.compile'd graphs).

Usage: python benchmarks/bench_rollout.py [--repeats 5] [--threads 2] [--settings 16:8:16 16:8:128:random]
                                          [--dtype float32|bfloat16] [--compiled]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch


def time_engine(engine, prompts, n: int, max_new_tokens: int, repeats: int) -> tuple[float, float]:
    """(median seconds per call, median generated tokens per call) after one warm-up call."""
    engine.generate(prompts, n=n, temperature=1.2, top_p=1.0, max_new_tokens=max_new_tokens)
    secs, toks = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        groups = engine.generate(prompts, n=n, temperature=1.2, top_p=1.0, max_new_tokens=max_new_tokens)
        secs.append(time.perf_counter() - t)
        toks.append(sum(len(c.token_ids) for g in groups for c in g))
    return statistics.median(secs), statistics.median(toks)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--settings", nargs="+", default=["16:8:16", "16:8:128:random"], help="PROMPTS:N:MAX_NEW_TOKENS[:random]")
    ap.add_argument("--engines", nargs="+", default=["vllm", "hf"], choices=["vllm", "hf"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="the engines' weight dtype")
    ap.add_argument("--compiled", action="store_true", help="vLLM with enforce_eager=false (compiled graphs)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from prorl.config import RolloutConfig
    from prorl.data.builtin_tasks import generate_rows
    from prorl.data.dataset import build_examples
    from prorl.models.policy import BUILTIN_TINY as _BUILTIN_TINY
    from prorl.models.policy import load_policy
    from prorl.rollout import make_engine

    model, tok = load_policy(_BUILTIN_TINY)
    rows = generate_rows("add", 64, 0, "val") + generate_rows("sort", 64, 0, "val")
    all_prompts = [ex.prompt_ids for ex in build_examples(rows, tok, 10**9)[0]]
    settings = [(*(int(x) for x in s.split(":")[:3]), s.endswith(":random")) for s in args.settings]
    max_len = min(model.config.max_position_embeddings, max(len(p) for p in all_prompts) + max(t for _, _, t, _ in settings))
    tmp = tempfile.TemporaryDirectory()
    paths = {False: str(_BUILTIN_TINY), True: tmp.name}
    if any(r for *_, r in settings):
        from transformers import AutoModelForCausalLM

        AutoModelForCausalLM.from_config(model.config).save_pretrained(tmp.name)  # same architecture, random weights
        tok.save_pretrained(tmp.name)

    engines: dict = {}

    def engine(name: str, random_init: bool):
        if (name, random_init) not in engines:
            t0 = time.perf_counter()
            try:
                engines[name, random_init] = make_engine(
                    RolloutConfig(engine=name, max_batch_size=256, cpu_kv_cache_gib=0.5, dtype=args.dtype,
                                  enforce_eager=not args.compiled, max_model_len=max_len if name == "vllm" else 0),
                    paths[random_init], eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                    dtype="float32", seed=0, device="cpu")
                print(f"{name}: engine built in {time.perf_counter() - t0:.1f} s")
            except ImportError as e:
                print(f"{name}: skipped ({e})")
                engines[name, random_init] = None
            torch.set_num_threads(args.threads)
        return engines[name, random_init]

    rows_out = []
    for p, n, t, random_init in settings:
        prompts = [all_prompts[(i * 7) % len(all_prompts)] for i in range(p)]  # a mix of add and sort
        res = {}
        for name in args.engines:
            eng = engine(name, random_init)
            if eng is not None:
                res[name] = time_engine(eng, prompts, n, t, args.repeats)
        rows_out.append((f"{p}x{n}x{t}" + (" random" if random_init else ""), res))
    print(f"dtype {args.dtype}, vLLM {'compiled' if args.compiled else 'eager'}, {args.threads} threads")
    print(f"{'setting':<18s} {'engine':<6s} {'s/call':>8s} {'tokens':>7s} {'tok/s':>8s}")
    for label, res in rows_out:
        for name, (sec, toks) in res.items():
            print(f"{label:<18s} {name:<6s} {sec:8.3f} {toks:7.0f} {toks / sec:8.0f}")
        if len(res) == 2:
            print(f"{label:<18s} hf/vllm {res['hf'][0] / res['vllm'][0]:7.2f}x")

if __name__ == "__main__":
    main()
