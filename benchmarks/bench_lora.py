"""LoRA vs full fine-tuning: trainable parameters, peak memory (RSS) and seconds per Actor update.

    python benchmarks/bench_lora.py [--threads 1] [--repeats 3] [--models tiny small qwen0.5b] [--rank 32]

Each (model, arm) runs in a fresh process, so its peak RSS (``ru_maxrss``) is its own: it builds an
:class:`prorl.trainer.actor.Actor` (KL penalty on, so full fine-tuning keeps a reference copy and
LoRA disables its adapters instead), then times ``Actor.logprobs(reference=True)`` and
``Actor.update`` (forward + backward + AdamW, on-policy) on one random batch: median of
``--repeats`` after the model's warm-up calls. Reported: trainable / all parameters, tokens in the
batch, peak RSS of the whole process (weights, the reference, gradients, AdamW state, activations
and the ~0.5 GB of Python + torch), and the medians.

Models: ``tiny`` = the built-in preset's 0.8M-parameter warm start (the preset's step shape: 16
prompts of 23-29 tokens x 8 responses of 8-16 tokens); ``small`` = ``benchmarks/bench_actor_speed.py``'s random Qwen2
(hidden 256, 4 layers, vocab 512; 8 x 16 sequences of up to 158 tokens); ``qwen0.5b`` = the shape
of Qwen2.5-0.5B (hidden 896, 24 layers, 14/2 heads, vocab 151936, tied embeddings; random init,
built once under ``benchmarks/.bench_lora/``; 1 x 4 sequences of up to 94 tokens, 1 warm-up).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
CACHE = REPO / "benchmarks" / ".bench_lora"

# model -> (batch: groups, n, prompt range, response range, warm-up calls)
MODELS: dict[str, dict] = {
    "tiny": dict(groups=16, n=8, prompt=(23, 29), response=(8, 16), warmup=2),
    "small": dict(groups=8, n=16, prompt=(24, 30), response=(40, 128), warmup=2),
    "qwen0.5b": dict(groups=1, n=4, prompt=(24, 30), response=(48, 64), warmup=1),
}


def model_dir(name: str) -> Path:
    """The HF directory of a benchmark model (built and cached on first use)."""
    if name == "tiny":
        from prorl.trainer.setup import BUILTIN_TINY

        return Path(BUILTIN_TINY)
    import vs_trl

    small, _ = vs_trl.build_assets(vs_trl.Setting())
    if name == "small":
        return small
    import qwen_shape

    return qwen_shape.model_dir(24, CACHE)


def make_batch(vocab: int, pad: int, *, groups: int, n: int, prompt: tuple[int, int], response: tuple[int, int],
               seed: int = 0, **_):
    from prorl.rollout.base import pad_batch
    from prorl.trainer.actor import TrainBatch

    rng = random.Random(seed)
    prompts, responses = [], []
    for _ in range(groups):
        p = [rng.randrange(3, vocab) for _ in range(rng.randint(*prompt))]
        for _ in range(n):
            prompts.append(p)
            responses.append([rng.randrange(3, vocab) for _ in range(rng.randint(*response))])
    seqs = pad_batch(prompts, responses, pad)
    g = torch.Generator().manual_seed(seed)
    return TrainBatch(seqs, torch.randn(len(prompts), generator=g), seqs.response_mask, n, 1.0)


def worker(model: str, rank: int, threads: int, repeats: int) -> dict:
    """One arm in this process: build, warm up, time; returns the numbers."""
    from prorl.config import load_config
    from prorl.trainer.actor import Actor
    from prorl.trainer.distributed import World

    torch.set_num_threads(threads)
    spec, path = MODELS[model], model_dir(model)
    lr = "1e-3" if rank else "1e-5"
    cfg = load_config(None, [f"model.path={path}", f"trainer.threads={threads}", "algo.kl_coef=1e-4",
                             "actor.train_batch_size=16", f"actor.ppo_mini_batch_size={spec['groups']}",
                             "actor.micro_batch_size=128", f"actor.lr={lr}", f"actor.lora_rank={rank}",
                             "model.autocast=none", "actor.max_tokens_per_micro_batch=0"], preset=False)  # as measured
    torch.manual_seed(0)
    t0 = time.perf_counter()
    actor = Actor(cfg, World(), model_path=str(path), needs_reference=True)
    build_s = time.perf_counter() - t0
    batch = make_batch(len(actor.tokenizer), actor.tokenizer.pad_token_id, **spec)
    ref, upd = [], []
    for i in range(repeats + spec["warmup"]):
        t = time.perf_counter()
        actor.logprobs(batch.seqs, temperature=batch.temperature, reference=True)
        t1 = time.perf_counter()
        actor.update(batch, rng=random.Random(i))
        t2 = time.perf_counter()
        if i >= spec["warmup"]:
            ref.append(t1 - t)
            upd.append(t2 - t1)
    return {"trainable": sum(p.numel() for p in actor.weights.trainable_parameters()),
            "total": sum(p.numel() for p in actor.model.parameters()), "tokens": int(batch.seqs.attention_mask.sum()),
            "build_s": build_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "ref_logprobs_s": statistics.median(ref), "update_s": statistics.median(upd)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared; 2 threads "
                    "contending with other jobs for 2 cores run several times slower)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rank", type=int, default=32, help="LoRA rank of the LoRA arm")
    ap.add_argument("--models", nargs="*", choices=list(MODELS), default=list(MODELS))
    ap.add_argument("--worker", nargs=2, metavar=("MODEL", "RANK"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.threads, args.repeats)))
        return {}
    results = {}
    print(f"{'model':9s} {'arm':8s} {'trainable':>12s} {'of params':>12s} {'tokens':>6s} {'peak RSS MB':>11s} "
          f"{'ref lp s':>8s} {'update s':>8s}", flush=True)
    for model in args.models:
        model_dir(model)  # build once, outside the timed processes
        for arm, rank in (("full", 0), (f"lora r{args.rank}", args.rank)):
            cmd = [sys.executable, __file__, "--worker", model, str(rank), "--threads", str(args.threads),
                   "--repeats", str(args.repeats)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            r = results[(model, arm)] = json.loads(out)
            print(f"{model:9s} {arm:8s} {r['trainable']:12,d} {r['total']:12,d} {r['tokens']:6d} {r['peak_rss_mb']:11.0f} "
                  f"{r['ref_logprobs_s']:8.3f} {r['update_s']:8.3f}", flush=True)
    return results


if __name__ == "__main__":
    main()
