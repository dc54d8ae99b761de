"""The Actor's speed settings one at a time: reference log-probs and one update, seconds per call.

    python benchmarks/bench_actor_speed.py [--threads 2] [--repeats 3] [--settings NAME ...]

The model and batch shape of ``benchmarks/vs_trl.py`` (random-init Qwen2, hidden 256, 4 layers,
vocab 512): 8 prompt groups x 16 sequences, prompts of 24-30 tokens, responses of 40-128 tokens
(most at the 128 limit, as a random-init model runs to it). Each setting builds a fresh
:class:`prorl.trainer.actor.Actor` from dotted overrides and times ``Actor.logprobs(reference=True)``
(the reference forward of a step) and ``Actor.update`` (forward + backward + AdamW; on-policy, so no
old-log-prob pass): median of ``--repeats`` after two warm-up calls (compilation and its first
recompile happen there), with the ratio to the first setting measured in the same process. The
settings change how the numbers are computed, not what: ``autocast`` rounds to bf16, the others
agree with the plain run within float noise (``tests/trainer/test_actor_speed.py``).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

SETTINGS: dict[str, list[str]] = {
    "plain (padded, sdpa, fp32)": [],
    "packed": ["actor.max_tokens_per_micro_batch=65536"],
    "compile": ["actor.compile=true"],
    "compile + eager attention": ["actor.compile=true", "model.attn_implementation=eager"],
    "compile + eager + packed": ["actor.compile=true", "model.attn_implementation=eager",
                                 "actor.max_tokens_per_micro_batch=65536"],
    "autocast bf16": ["model.autocast=bfloat16"],
    "autocast + compile + eager + packed": ["model.autocast=bfloat16", "actor.compile=true",
                                            "model.attn_implementation=eager", "actor.max_tokens_per_micro_batch=65536"],
}


def make_batch(vocab: int, pad: int, *, groups: int = 8, n: int = 16, seed: int = 0):
    from prorl.models.layout import pad_batch
    from prorl.trainer.actor import TrainBatch

    rng = random.Random(seed)
    prompts, responses = [], []
    for _ in range(groups):
        prompt = [rng.randrange(3, vocab) for _ in range(rng.randint(24, 30))]
        for _ in range(n):
            length = 128 if rng.random() < 0.7 else rng.randint(40, 127)
            prompts.append(prompt)
            responses.append([rng.randrange(3, vocab) for _ in range(length)])
    seqs = pad_batch(prompts, responses, pad)
    g = torch.Generator().manual_seed(seed)
    return TrainBatch(seqs, torch.randn(len(prompts), generator=g), seqs.response_mask, n, 1.2)


def time_setting(overrides: list[str], model_dir: Path, threads: int, repeats: int) -> dict[str, float]:
    from prorl.config import load_config
    from prorl.trainer.actor import Actor
    from prorl.trainer.distributed import World

    torch._dynamo.reset()  # each setting compiles afresh (and stays clear of the recompile limit)
    cfg = load_config(None, [f"model.path={model_dir}", f"trainer.threads={threads}", "algo.kl_coef=1e-4",
                             "actor.train_batch_size=8", "actor.ppo_mini_batch_size=8", "actor.micro_batch_size=128",
                             "actor.lr=1e-5", *overrides], preset=False)
    torch.manual_seed(0)
    actor = Actor(cfg, World(), model_path=str(model_dir), needs_reference=True)
    batch = make_batch(len(actor.tokenizer), actor.tokenizer.pad_token_id)
    ref, upd = [], []
    for i in range(repeats + 2):
        t = time.perf_counter()
        actor.logprobs(batch.seqs, temperature=batch.temperature, reference=True)
        t1 = time.perf_counter()
        actor.update(batch, rng=random.Random(i))
        t2 = time.perf_counter()
        if i >= 2:
            ref.append(t1 - t)
            upd.append(t2 - t1)
    return {"ref_logprobs_s": statistics.median(ref), "update_s": statistics.median(upd)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--settings", nargs="*", choices=list(SETTINGS), help="a subset (the first one is the baseline)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import vs_trl

    model_dir, _ = vs_trl.build_assets(vs_trl.Setting())
    names = args.settings or list(SETTINGS)
    results = {}
    print(f"{'setting':40s} {'ref log-probs s':>16s} {'update s':>10s} {'ref x':>7s} {'update x':>9s}")
    for name in names:
        r = results[name] = time_setting(SETTINGS[name], model_dir, args.threads, args.repeats)
        base = results[names[0]]
        print(f"{name:40s} {r['ref_logprobs_s']:16.3f} {r['update_s']:10.3f} "
              f"{base['ref_logprobs_s'] / r['ref_logprobs_s']:7.2f} {base['update_s'] / r['update_s']:9.2f}", flush=True)
    return results


if __name__ == "__main__":
    main()
