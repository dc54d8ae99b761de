"""One full prorl RL step on a Qwen2.5-0.5B-shaped model on CPU: seconds, tokens/s and peak RSS
per phase against ``memory_model.cpu_step_prediction``.

    python benchmarks/bench_real_size.py [--arms fp32 bf16 fsdp2 lora] [--json OUT]
    python benchmarks/bench_real_size.py --layers 2 --max-tokens 32 ...   # the slow test's cut-down run

The model (``qwen_shape.model_dir``: hidden 896, 24 layers, 14/2 heads, intermediate 4864, vocab
151,936, tied embeddings, random init) is saved once and loaded through ``from_pretrained`` by the
trainer and by vLLM, as a user's checkpoint. Each arm runs in fresh processes the real path: the
controller (:class:`prorl.trainer.controller.Trainer`, ``trainer.step()``; under torchrun for
``fsdp2``) with ``rollout.engine=vllm`` (colocated, in-process), built-in ``add`` prompts x
``--samples`` samples x up to ``--max-tokens`` tokens (a random model runs to the limit), the reference
log-probs, the packed update (``actor.max_tokens_per_micro_batch``) with the chunked LM head,
gradient checkpointing and fp32 AdamW, then the weight sync into vLLM. Rewards are ~all 0, so
dynamic sampling is off and a small entropy bonus makes the gradient non-zero.

Phases are timed and measured by wrapping the trainer's own objects (``rollouts.collect``,
``actor.logprobs``, ``actor.update``, ``rollouts.publish``): at each phase's start the process's
peak RSS (VmHWM) is reset to its current RSS (``/proc/self/clear_refs``), at its end read. glibc
is told to mmap blocks over 64 KiB (``MALLOC_MMAP_THRESHOLD_``) so freed tensors leave the process.
After the step a greedy probe checks the sync: the engine's log-probs must match the trainer's.

Arms (each sets its precision: prorl's ``auto`` default depends on the CPU): ``fp32`` (one process);
``bf16`` (``model.autocast=bfloat16``, the engine in fp32); ``fsdp2`` (2 processes,
torchrun, gloo, FSDP2, 1 thread each; the engines in bf16, ``rollout.dtype=bfloat16``, so that two
ranks with a whole engine each fit the machine); ``lora`` (``actor.lora_rank=32``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import memory_model as mm  # noqa: E402

# precision explicit in every arm (prorl's default, auto, depends on the CPU: bf16 where it is native)
ARMS: dict[str, dict] = {
    "fp32": dict(world=1, overrides=["model.autocast=none", "rollout.dtype=float32"]),
    "bf16": dict(world=1, overrides=["model.autocast=bfloat16", "rollout.dtype=float32"]),
    "fsdp2": dict(world=2, overrides=["model.autocast=none", "rollout.dtype=bfloat16"]),
    "lora": dict(world=1, overrides=["model.autocast=none", "rollout.dtype=float32", "actor.lora_rank=32",
                                      "actor.lora_alpha=64"]),
}
PHASES = ("generate", "reference", "update", "weight_sync")


def overrides(args: argparse.Namespace, arm: str, run_dir: Path, model: Path) -> list[str]:
    return [f"model.path={model}", "model.gradient_checkpointing=true", "rollout.engine=vllm",
            f"rollout.n={args.samples}", f"rollout.max_response_length={args.max_tokens}",
            f"rollout.cpu_kv_cache_gib={args.kv_gib}", f"rollout.max_model_len={args.max_tokens + 512}",
            f"actor.train_batch_size={args.prompts}", f"actor.ppo_mini_batch_size={args.prompts}",
            f"actor.max_tokens_per_micro_batch={args.micro_tokens}", f"actor.logprob_chunk_tokens={args.chunk}",
            "actor.lr=1e-4", "algo.entropy_coef=0.001", "algo.dynamic_sampling=false", "data.builtin_tasks=[add]",
            "data.builtin_train_size=64", "data.builtin_val_size=4", "validation.every=0", "validation.at_start=false",
            "reward.num_workers=1", "trainer.total_steps=1", "trainer.save_every=0", "trainer.tensorboard=false",
            "trainer.progress_bar=false", "trainer.threads=1", "trainer.max_minutes=0", "trainer.device=cpu",
            f"trainer.run_dir={run_dir}", *ARMS[arm]["overrides"]]


# --------------------------------------------------------------------------- one arm (each rank)

class PhaseMeter:
    """Wraps methods of the trainer's objects: seconds and peak RSS per phase (nested phases end
    the outer phase's segment, so each peak is its own)."""

    def __init__(self) -> None:
        self.phases: dict[str, dict] = {}
        self.open: list[str] = []

    def wrap(self, obj, method: str, phase: str, on_call=None) -> None:
        orig = getattr(obj, method)

        def timed(*a, **k):
            if on_call:
                on_call(*a, **k)
            self._start(phase)
            try:
                return orig(*a, **k)
            finally:
                self._end(phase)

        setattr(obj, method, timed)

    def _start(self, phase: str) -> None:
        if self.open:  # close the outer phase's segment so far
            self._record(self.open[-1])
        self.open.append(phase)
        mm.reset_peak()
        self.phases.setdefault(phase, {"seconds": 0.0, "peak_rss": 0, "calls": 0})
        self.phases[phase]["_t0"] = time.perf_counter()
        self.phases[phase]["calls"] += 1

    def _record(self, phase: str) -> None:
        p = self.phases[phase]
        p["peak_rss"] = max(p["peak_rss"], mm.proc_status("VmHWM"))

    def _end(self, phase: str) -> None:
        self._record(phase)
        p = self.phases[phase]
        p["seconds"] += time.perf_counter() - p.pop("_t0")
        p["rss_end"] = mm.proc_status("VmRSS")
        self.open.pop()
        if self.open:  # the outer phase goes on: its next segment's peak
            mm.reset_peak()


def probe(engine, tokens: int) -> dict:
    """Greedy completions of two fixed prompts with the engine's log-probs."""
    prompts = [[11, 12, 13, 14, 15, 16], [21, 22, 23, 24, 25, 26, 27, 28]]
    groups = engine.generate(prompts, n=1, temperature=0.0, top_p=1.0, max_new_tokens=tokens)
    return {"prompts": prompts, "completions": [g[0] for g in groups]}


def worker(args: argparse.Namespace) -> None:
    import torch

    from prorl.config import load_config
    from prorl.models.packing import token_budget_micro_batches
    from prorl.trainer.controller import Trainer
    from prorl.trainer.precision import autocast_dtype, engine_dtype
    from gpu_check import trainer_vs_engine

    torch.set_num_threads(1)
    arm, out_dir = args.worker, Path(args.out)
    rank = int(os.environ.get("RANK", "0"))
    model = Path(args.model)
    cfg = load_config(None, overrides(args, arm, out_dir / "run", model), preset=False)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, overwrite=True, log=lambda *a, **k: None)
    build_s = time.perf_counter() - t0
    startup_peak = mm.proc_status("VmHWM")
    actor, rollouts, world = trainer.actor, trainer.rollouts, trainer.world
    engine = rollouts.engine
    before = probe(engine, 8)
    seen: dict = {}

    def on_update(batch, **_):
        lengths = batch.seqs.attention_mask.sum(-1).tolist()
        resp = batch.seqs.response_mask.sum(-1).tolist()
        mbs = token_budget_micro_batches(lengths, cfg.actor.max_tokens_per_micro_batch)
        big = max(mbs, key=lambda mb: sum(lengths[i] for i in mb))
        seen.update(sequences=len(lengths), tokens=int(sum(lengths)), response_tokens=int(sum(resp)),
                    micro_batches=len(mbs), micro_tokens=int(sum(lengths[i] for i in big)),
                    micro_response=int(sum(resp[i] for i in big)))

    meter = PhaseMeter()
    meter.wrap(rollouts, "collect", "generate")
    meter.wrap(actor, "update", "update", on_call=on_update)
    meter.wrap(actor, "logprobs", "reference")
    meter.wrap(rollouts, "publish", "weight_sync")
    mm.reset_peak()
    t0 = time.perf_counter()
    metrics = trainer.step()
    step_s = time.perf_counter() - t0
    actor.logprobs = type(actor).logprobs.__get__(actor)  # unwrap: the probe below is not a phase
    after = probe(engine, 8)
    sync = {"before": trainer_vs_engine(actor, world, before), "after": trainer_vs_engine(actor, world, after)}
    ph = meter.phases
    ph["update"]["seconds"] -= ph["reference"]["seconds"]  # the reference pass runs inside Actor.update
    n_seq, tokens, resp = seen["sequences"], seen["tokens"], seen["response_tokens"]
    per_token = {"generate": resp, "reference": tokens, "update": tokens}
    for name, p in ph.items():
        if name in per_token:
            p["tokens"] = per_token[name]
            p["tokens_per_s"] = per_token[name] / p["seconds"]
    lora_params = sum(p.numel() for p in actor.weights.trainable_parameters()) if cfg.actor.lora_rank else 0
    setting = mm.StepSetting(micro_tokens=seen["micro_tokens"], micro_response=seen["micro_response"], gen_seqs=n_seq,
                             kv_cache_bytes=cfg.rollout.cpu_kv_cache_gib * 2**30,
                             engine_bytes=2 if engine_dtype(cfg, world.device, world.distributed) == "bfloat16" else 4,
                             world=world.world_size,
                             checkpointing=cfg.model.gradient_checkpointing, chunk=cfg.actor.logprob_chunk_tokens,
                             autocast=autocast_dtype(cfg.model, world.device, world.distributed) is not None,
                             reference=actor.has_reference,
                             lora_params=lora_params)
    result = {"arm": arm, "rank": rank, "world": world.world_size, "layers": args.layers, "build_s": build_s,
              "step_s": step_s, "startup_peak_rss": startup_peak, "phases": ph, "batch": seen,
              "setting": setting.__dict__, "sync_check": sync,
              "metrics": {k: v for k, v in metrics.items() if k.startswith(("timing_s/", "actor/", "response_length/"))},
              "trainer_params_on_rank": sum(p.numel() for p in actor.model.parameters()), "lora_trainable": lora_params}
    (out_dir / f"rank{rank}.json").write_text(json.dumps(result, indent=1, default=str))
    trainer.close()
    sys.stdout.flush()
    os._exit(0)  # an in-process vLLM engine (and gloo) can hang at interpreter exit


# --------------------------------------------------------------------------- driver

def run_arm(args: argparse.Namespace, arm: str, model: Path, work: Path) -> list[dict]:
    out = work / arm
    out.mkdir(parents=True, exist_ok=True)
    for f in out.glob("rank*.json"):
        f.unlink()
    flags = ["--worker", arm, "--out", str(out), "--model", str(model), "--layers", str(args.layers),
             "--prompts", str(args.prompts), "--samples", str(args.samples), "--max-tokens", str(args.max_tokens),
             "--kv-gib", str(args.kv_gib), "--chunk", str(args.chunk), "--micro-tokens", str(args.micro_tokens)]
    world = ARMS[arm]["world"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}"] \
        if world > 1 else [sys.executable]
    env = {k: v for k, v in os.environ.items() if k != "VLLM_CPU_KVCACHE_SPACE"}  # rollout.cpu_kv_cache_gib rules
    env.update(OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="65536",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p))
    p = subprocess.run([*launch, __file__, *flags], env=env, capture_output=True, text=True, timeout=args.timeout,
                       cwd=str(REPO))
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(world) if (out / f"rank{r}.json").exists()]
    if len(ranks) != world:
        raise RuntimeError(f"arm {arm} failed (rc {p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    return [predict(r) for r in ranks]


def predict(r: dict) -> dict:
    """Attach ``memory_model.cpu_step_prediction`` for the rank's setting (formulas only) and the ratios."""
    shape = mm.Shape(hidden=896, layers=r["layers"], heads=14, kv_heads=2, intermediate=4864, vocab=151936)
    pred = mm.cpu_step_prediction(shape, mm.StepSetting(**r["setting"]))
    ph = r["phases"]
    for name in PHASES:
        ph[name]["predicted_rss"] = pred[f"phase_{name}"]
        ph[name]["ratio"] = ph[name]["peak_rss"] / pred[f"phase_{name}"]
    r["step_peak_rss"] = max(ph[n]["peak_rss"] for n in PHASES)
    r.update(params=shape.params(), prediction=pred, predicted_peak_rss=pred["peak"],
             ratio=r["step_peak_rss"] / pred["peak"])
    return r


def load_arm(work: Path, arm: str) -> list[dict]:
    """An arm's per-rank results already in ``work`` (``--from-work``), with today's prediction."""
    return [predict(json.loads(f.read_text())) for f in sorted((work / arm).glob("rank*.json"))]


def table(results: dict[str, list[dict]]) -> str:
    gb = 1e9
    lines = [f"{'arm':6s} {'rank':>4s} {'phase':12s} {'s':>8s} {'tok/s':>8s} {'peak GB':>8s} {'pred GB':>8s} "
             f"{'ratio':>6s} {'<=20%':>5s}"]
    for arm, ranks in results.items():
        for r in ranks:
            for name in PHASES:
                p = r["phases"][name]
                tps = f"{p['tokens_per_s']:8.1f}" if "tokens_per_s" in p else f"{'':8s}"
                lines.append(f"{arm:6s} {r['rank']:4d} {name:12s} {p['seconds']:8.1f} {tps} {p['peak_rss'] / gb:8.2f} "
                             f"{p['predicted_rss'] / gb:8.2f} {p['ratio']:6.2f} {'yes' if abs(p['ratio'] - 1) <= 0.2 else 'NO':>5s}")
            lines.append(f"{arm:6s} {r['rank']:4d} {'step (max)':12s} {r['step_s']:8.1f} {'':8s} "
                         f"{r['step_peak_rss'] / gb:8.2f} {r['predicted_peak_rss'] / gb:8.2f} {r['ratio']:6.2f} "
                         f"{'yes' if abs(r['ratio'] - 1) <= 0.2 else 'NO':>5s}")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arms", nargs="*", choices=list(ARMS), default=["fp32", "bf16", "fsdp2"])
    ap.add_argument("--layers", type=int, default=24, help="decoder layers (24: the real size)")
    ap.add_argument("--prompts", type=int, default=2, help="prompts per step (actor.train_batch_size)")
    ap.add_argument("--samples", type=int, default=4, help="samples per prompt (rollout.n)")
    ap.add_argument("--max-tokens", type=int, default=512, help="rollout.max_response_length")
    ap.add_argument("--kv-gib", type=float, default=0.25, help="rollout.cpu_kv_cache_gib (per engine)")
    ap.add_argument("--chunk", type=int, default=1024, help="actor.logprob_chunk_tokens")
    ap.add_argument("--micro-tokens", type=int, default=8192, help="actor.max_tokens_per_micro_batch")
    ap.add_argument("--work", default=str(REPO / "benchmarks" / ".bench_real_size"), help="runs and per-rank JSON")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per arm")
    ap.add_argument("--json", default=None, help="write all results here")
    ap.add_argument("--from-work", action="store_true", help="run nothing: report the arms' results in --work")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.worker:
        worker(args)
        return {}
    import qwen_shape

    model = None if args.from_work else qwen_shape.model_dir(args.layers)
    work = Path(args.work)
    results: dict[str, list[dict]] = {}
    for arm in args.arms:
        results[arm] = load_arm(work, arm) if args.from_work else run_arm(args, arm, model, work)
        print(f"{arm} done: step {statistics.median(r['step_s'] for r in results[arm]):.1f} s", flush=True)
    print(table(results))
    summary = {"setting": {k: getattr(args, k) for k in ("layers", "prompts", "samples", "max_tokens", "kv_gib", "chunk",
                                                          "micro_tokens")},
               "machine": {"cpus": os.cpu_count(), "threads_per_process": 1}, "arms": results}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, default=str))
    bad = [a for a, rs in results.items() for r in rs if not math.isfinite(r["metrics"].get("actor/grad_norm", math.nan))]
    if bad:
        print(f"non-finite or missing grad norm in {bad}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
