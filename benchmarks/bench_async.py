"""Synchronous vs asynchronous RL (``rollout.mode=async``) on the same machine, arms alternating in one command.

The setting is ``benchmarks/vs_trl.py``'s (a random-init Qwen2, hidden 256, 4 layers, vocabulary 512,
arithmetic prompts; built and cached under ``benchmarks/.vs_trl/`` by its :func:`build_assets`): 8
prompts x 16 samples x at most 128 new tokens per step, temperature 1.2, one update per step, no
dynamic sampling (every step trains on exactly 8 groups), the HF engine, fp32, prorl's default settings
plus the padding-free update (``actor.max_tokens_per_micro_batch=65536``, one of ``vs_trl.PRORL_FAST``:
with a long tail the padded update pays for every sequence at the longest one's length; ``--padded``
drops it). Arms, each a fresh ``python -m prorl train CONFIG.yaml`` subprocess with its own run dir:

* ``sync``: ``rollout.mode=sync``, ``trainer.threads=2`` (``OMP_NUM_THREADS=2``);
* ``async_k1`` / ``async_k2``: ``rollout.mode=async``, ``rollout.max_staleness`` 1 / 2, one local
  worker, the default thread split (``default_threads``: on 2 cores, 1 thread for the trainer and 1 for
  the worker; ``OMP_NUM_THREADS`` set to the trainer's share), ``rollout.async_segment_tokens``
  ``--segment-tokens`` (default 256: whole responses here);
* ``async_kK_sS`` (with ``--arms``): staleness K with S-token segments (finished sequences leave the
  worker's batch and queued groups join it every S tokens: continuous batching at segment granularity).

Arms alternate within each round (sync, K=1, K=2, sync, ...; ``--arms`` picks and orders them). From each run's ``metrics.jsonl``,
pooled over rounds, steps 2..N (step 1 holds the start-up): seconds per step, trainer updates/s
(1 / median ``timing_s/step``), trained samples/s (``dynamic_sampling/kept_groups * rollout.n`` per
step over its time), generated tokens/s (``dynamic_sampling/generated_groups * rollout.n *
response_length/mean``: what arrived during the step, summed and divided by the summed step time),
the phase medians (``timing_s/*``) and, for async, staleness and the behaviour/trainer log-prob
mismatch (``rollout_corr/*``).

Length distributions (``--shape``):

* ``longtail`` (default): a copy of the model saved to disk with two changes, so that its own
  sampling gives most responses short and a few at the 128 limit. (1) An EOS bias: one hidden
  dimension of every token embedding is set to a constant (so after the final RMSNorm it carries a
  constant feature) and the EOS row of ``lm_head`` (untied in this model) reads it: about
  ``--p-eos`` chance of EOS per token. (2) A "rambling" mode, as real models that fall into a
  repetition loop: 16 ordinary tokens flip that feature and switch on a second one that makes the
  same 16 tokens likely (``--p-stay`` per token) and EOS near impossible; from normal text they are
  entered with ``--p-enter`` per token. Nothing else changes; the distribution is measured (mean,
  median, p90, max, share at the limit) by sampling the model as the training arms do, and the
  runs' ``response_length/*`` are reported too.
* ``uniform``: the unmodified random model (EOS has 1/512 chance per token: most responses hit 128).

The arithmetic printed at the end: with measured phase times ``t_gen`` (generation + scoring) and
``t_train`` (the rest of a synchronous step), the ideal overlap speedup when generation and training
each get their own hardware (``(t_gen + t_train) / max(t_gen, t_train)``), what that leaves at equal
total hardware, and how much of the synchronous generation is spent waiting for the tail.

Usage::

    python benchmarks/bench_async.py [--steps 6] [--rounds 2] [--shape longtail|uniform | --uniform]
                                     [--arms sync async_k1 async_k2 [async_k1_s32 ...]] [--segment-tokens 256]
                                     [--padded] [--set KEY=VALUE ...] [--json OUT] [--smoke]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import vs_trl  # noqa: E402  (the shared setting, its assets and prorl's overrides)

ARMS = ("sync", "async_k1", "async_k2")
# the padding-free update (one of vs_trl.PRORL_FAST's settings; it changes how, not what, is computed): with a
# long tail the padded update would pay for every sequence at the longest one's length
PACKED = ("actor.max_tokens_per_micro_batch=65536",)
PHASES = ("gen", "reward", "wait_rollouts", "old_log_prob", "update_actor", "weight_sync")
ASYNC_KEYS = ("async/staleness_mean", "async/staleness_max", "async/stale_token_fraction", "async/dropped_stale",
              "async/mixed_version_samples", "async/ready_groups", "async/inflight_groups",
              "rollout_corr/abs_logp_diff_mean", "rollout_corr/abs_logp_diff_max", "rollout_corr/ratio_min",
              "rollout_corr/ratio_max", "actor/entropy", "actor/pg_clipfrac")


@dataclass(frozen=True)
class LongTail:
    """The long-tail model's knobs (probabilities at the training temperature)."""

    p_eos: float = 0.06  # EOS per token in normal text
    p_enter: float = 0.003  # a rambling token per token in normal text
    p_stay: float = 0.998  # rambling continues (no EOS inside it)
    markers: int = 16  # how many tokens ramble
    feature: float = 0.5  # the constant written into the two embedding dimensions
    dims: tuple[int, int] = (7, 11)
    seed: int = 0

    def key(self) -> str:
        return hashlib.sha256(repr(dataclasses.astuple(self)).encode()).hexdigest()[:10]


# ---------------------------------------------------------------- the model


def _prompts(tok, data: Path, count: int) -> list[list[int]]:
    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()][:count]
    out = []
    for r in rows:
        ids = tok.apply_chat_template(r["prompt"], tokenize=True, add_generation_prompt=True)
        out.append(list(ids if isinstance(ids, list) else ids["input_ids"]))
    return out


def build_longtail(setting: vs_trl.Setting, lt: LongTail, cache: Path = vs_trl.CACHE, log=print) -> tuple[Path, Path]:
    """(model dir, data) of the long-tail copy of ``setting``'s model, built once next to it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, data = vs_trl.build_assets(setting, cache)
    out = model_dir.parent / f"model_longtail_{lt.key()}"
    if (out / "config.json").exists():
        return out, data
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    if emb.data_ptr() == head.data_ptr():
        raise RuntimeError("tied embeddings: this construction needs a separate lm_head")
    V, T = head.shape[0], setting.temperature
    eos, special = tok.eos_token_id, set(tok.all_special_ids)
    rng = random.Random(lt.seed)
    markers = sorted(rng.sample([i for i in range(V) if i not in special], lt.markers))
    d, d2 = lt.dims
    with torch.no_grad():
        emb[:, d] = lt.feature  # the constant feature every ordinary token carries ...
        emb[markers, d] = -lt.feature  # ... flipped by the rambling tokens,
        emb[:, d2] = 0.0
        emb[markers, d2] = lt.feature  # which also carry a second one
        head[:, d] = 0.0
        head[:, d2] = 0.0
        # what the last layer's (normed) hidden state holds in those dimensions after ordinary / rambling tokens
        prompts = _prompts(tok, data, 8)
        ordinary = [i for i in range(V) if i not in special and i not in markers]
        g = torch.Generator().manual_seed(lt.seed)
        normal_ctx = [p + [ordinary[j] for j in torch.randint(len(ordinary), (40,), generator=g).tolist()] for p in prompts]
        ramble_ctx = [c[:-20] + [markers[j] for j in torch.randint(len(markers), (20,), generator=g).tolist()]
                      for c in normal_ctx]
        model.eval()
        h_n = torch.cat([model.model(torch.tensor([c])).last_hidden_state[0, len(p):] for c, p in zip(normal_ctx, prompts)])
        h_m = torch.cat([model.model(torch.tensor([c])).last_hidden_state[0, -20:] for c in ramble_ctx])
        a_n, b_n = h_n[:, d].mean().item(), h_n[:, d2].mean().item()
        a_m, b_m = h_m[:, d].mean().item(), h_m[:, d2].mean().item()
        # logits (before temperature) that give the wanted probabilities; "others" have logits near 0
        others = V - 1 - lt.markers
        rest = 1.0 - lt.p_eos - lt.p_enter
        z = T * math.log(lt.p_eos * others / rest)  # EOS in normal text
        e = T * math.log(lt.p_enter * others / rest / lt.markers)  # each rambling token in normal text
        y = T * math.log(lt.p_stay * others / ((1 - lt.p_stay) * lt.markers))  # each rambling token while rambling
        head[eos, d] = z / a_n  # while rambling (a_m < 0) EOS gets about -z
        alpha, beta = torch.linalg.solve(torch.tensor([[a_n, b_n], [a_m, b_m]], dtype=torch.float64),
                                         torch.tensor([e, y], dtype=torch.float64)).tolist()
        head[markers, d], head[markers, d2] = alpha, beta
    log(f"long-tail model: feature dims {lt.dims} (normed value {a_n:.2f} / {a_m:.2f} after ordinary / rambling tokens), "
        f"EOS logit {z:.2f}, rambling logits {e:.2f} (enter) / {y:.2f} (stay), markers {markers}")
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "longtail.json").write_text(json.dumps({**dataclasses.asdict(lt), "marker_ids": markers,
                                                   "eos_logit": z, "enter_logit": e, "stay_logit": y}, indent=1))
    if out.exists():
        import shutil

        shutil.rmtree(tmp)
    else:
        tmp.rename(out)
    return out, data


def length_distribution(model_dir: Path, data: Path, setting: vs_trl.Setting, prompts: int = 16, seed: int = 0,
                        threads: int = 2) -> dict:
    """Sample ``prompts`` x ``setting.n`` responses as a training step does (HF engine, same temperature,
    same limit) and summarise their lengths."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prorl.rollout.hf import HFRolloutEngine

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    engine = HFRolloutEngine(model, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    groups = engine.generate(_prompts(tok, data, prompts), n=setting.n, temperature=setting.temperature, top_p=1.0,
                             max_new_tokens=setting.max_new_tokens)
    secs = time.perf_counter() - t0
    lengths = sorted(len(c.token_ids) for g in groups for c in g)
    per_group_max = [max(len(c.token_ids) for c in g) for g in groups]
    return {"samples": len(lengths), "mean": statistics.mean(lengths), "median": statistics.median(lengths),
            "p90": _pct(lengths, 0.9), "max": max(lengths), "at_limit": sum(x >= setting.max_new_tokens for x in lengths) / len(lengths),
            "group_max_median": statistics.median(per_group_max), "gen_s": secs, "lengths": lengths}


def _pct(sorted_xs: list, q: float) -> float:
    return float(sorted_xs[min(len(sorted_xs) - 1, int(q * len(sorted_xs)))])


# ---------------------------------------------------------------- the arms


def parse_arm(arm: str) -> tuple[int | None, int | None]:
    """``sync`` -> (None, None); ``async_kK`` -> (K, None); ``async_kK_sS`` -> (K, segment tokens S)."""
    if arm == "sync":
        return None, None
    parts = arm.split("_")
    if parts[0] != "async" or len(parts) not in (2, 3) or not parts[1].startswith("k") \
            or (len(parts) == 3 and not parts[2].startswith("s")):
        raise ValueError(f"arm {arm!r}: expected sync, async_kK or async_kK_sS")
    return int(parts[1][1:]), (int(parts[2][1:]) if len(parts) == 3 else None)


def arm_overrides(arm: str, segment_tokens: int) -> list[str]:
    k, seg = parse_arm(arm)
    if k is None:
        return ["rollout.mode=sync", "trainer.threads=2"]
    return ["rollout.mode=async", f"rollout.max_staleness={k}", "rollout.async_workers=1",
            f"rollout.async_segment_tokens={seg if seg is not None else segment_tokens}", "trainer.threads=0",
            "rollout.async_worker_threads=0", "rollout.async_timeout_s=600",
            "algo.use_rollout_logprobs_as_old=false"]  # the trainer recomputes the old log-probs, as in the stored runs


def arm_config(arm: str, setting: vs_trl.Setting, *, model_dir: Path, data: Path, run_dir: Path, steps: int,
               segment_tokens: int, extra: list[str] = ()):
    return vs_trl.prorl_config(setting, model_dir=model_dir, data=data, run_dir=run_dir, steps=steps,
                               extra=[*arm_overrides(arm, segment_tokens), *extra])


def trainer_threads(cfg) -> int:
    """The trainer process's torch threads (what OMP_NUM_THREADS is set to)."""
    if cfg.rollout.mode == "sync":
        return cfg.trainer.threads or (os.cpu_count() or 1)
    from prorl.asyncrl.pool import default_threads

    return default_threads(cfg)[0]


def run_arm(arm: str, cfg, workdir: Path, log=print) -> dict:
    """``python -m prorl train CONFIG.yaml`` in a fresh process; its per-step metrics."""
    import yaml

    from prorl.config import to_dict

    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = workdir / f"{arm}.yaml"
    cfg_path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    threads = str(trainer_threads(cfg))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
           "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false",
           "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    log_path = workdir / f"{arm}.log"
    t0 = time.perf_counter()
    with open(log_path, "w") as fh:
        proc = subprocess.run([sys.executable, "-m", "prorl", "train", str(cfg_path), "--overwrite"], env=env,
                              stdout=fh, stderr=subprocess.STDOUT, cwd=str(ROOT))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{arm} arm failed (exit {proc.returncode}):\n" + log_path.read_text()[-4000:])
    from prorl.trainer.metrics import read_metrics

    steps = [m for m in read_metrics(cfg.trainer.run_dir) if "timing_s/step" in m]
    return {"arm": arm, "process_s": wall, "trainer_threads": int(threads), "steps": [per_step(m, cfg.rollout.n) for m in steps]}


def per_step(m: dict, n: int) -> dict:
    """The numbers of one logged step."""
    out = {"step": m["step"], "step_s": m["timing_s/step"],
           "trained_samples": m.get("dynamic_sampling/kept_groups", 0.0) * n,
           "gen_groups": m.get("dynamic_sampling/generated_groups", 0.0),
           "gen_samples": m.get("dynamic_sampling/generated_groups", 0.0) * n,
           "gen_tokens": m.get("dynamic_sampling/generated_groups", 0.0) * n * m.get("response_length/mean", 0.0),
           "len_mean": m.get("response_length/mean", 0.0), "len_max": m.get("response_length/max", 0.0),
           "at_limit": m.get("response_length/clip_ratio", 0.0)}
    out |= {p: m.get(f"timing_s/{p}", 0.0) for p in PHASES}
    out |= {k: m[k] for k in ASYNC_KEYS if k in m}
    return out


# ---------------------------------------------------------------- summaries


def _med(xs) -> float:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.median(xs) if xs else float("nan")


def _gen_samples(s: dict) -> float:
    if "gen_samples" in s:
        return s["gen_samples"]
    return s["gen_tokens"] / s["len_mean"] if s["len_mean"] else 0.0


def later_steps(run: dict) -> list[dict]:
    """Steps 2..N (all of them when a run has one step)."""
    return run["steps"][1:] if len(run["steps"]) > 1 else run["steps"]


def summarise(runs: list[dict]) -> dict:
    """One arm, pooled over its runs' steps 2..N."""
    steps = [s for r in runs for s in later_steps(r)]
    step_s = [s["step_s"] for s in steps]
    s_med = _med(step_s)
    out = {"steps": len(steps), "s_per_step": s_med, "updates_per_s": 1.0 / s_med if s_med else float("nan"),
           "samples_per_s": _med([s["trained_samples"] / s["step_s"] for s in steps]),
           "samples_per_s_total": sum(s["trained_samples"] for s in steps) / sum(step_s),
           "gen_tokens_per_s": sum(s["gen_tokens"] for s in steps) / sum(step_s),
           "gen_tokens_per_step": _med([s["gen_tokens"] for s in steps]),
           "len_mean": _med([s["len_mean"] for s in steps]), "len_max": _med([s["len_max"] for s in steps]),
           "at_limit": _med([s["at_limit"] for s in steps]),
           "process_s": _med([r["process_s"] for r in runs]),
           "per_run_s_per_step": [_med([s["step_s"] for s in later_steps(r)]) for r in runs],
           "phases": {p: _med([s[p] for s in steps]) for p in PHASES}}
    # the rest of the step (sync: after generation, scoring and the update; async: the workers' gen/reward
    # seconds are not the trainer's, waiting is)
    out["phases"]["other"] = _med([s["step_s"] - s["old_log_prob"] - s["update_actor"] - s["weight_sync"]
                                   - (s["wait_rollouts"] if "async/staleness_mean" in s else s["gen"] + s["reward"])
                                   for s in steps])
    # the trainer's own work per step (what it does while the workers generate): step minus waiting
    out["phases"]["trainer_busy"] = _med([s["step_s"] - s["wait_rollouts"] for s in steps])
    # per step: generation + scoring, and everything else (sync: the two parts of its step)
    out["t_gen"] = _med([s["gen"] + s["reward"] for s in steps])
    out["t_rest"] = _med([s["step_s"] - s["gen"] - s["reward"] for s in steps])
    out["best_run_s_per_step"] = min(out["per_run_s_per_step"])
    # generation seconds for one batch's worth of groups (async: the step's arrivals need not be one batch)
    # (pooled: seconds of all arrivals over steps 2..N per batch of samples generated)
    gen_samples = sum(_gen_samples(s) for s in steps)
    out["gen_s_per_batch"] = sum(s["gen"] + s["reward"] for s in steps) * _med([s["trained_samples"] for s in steps]) \
        / gen_samples if gen_samples else float("nan")
    extra = {k: _med([s.get(k) for s in steps]) for k in ASYNC_KEYS}
    extra["async/dropped_stale_total"] = sum(s.get("async/dropped_stale", 0.0) for s in steps)
    out["async"] = extra
    return out


def overlap_arithmetic(report: dict) -> dict:
    """What the phase times say an overlap could give (printed and stored)."""
    s = report["sync"]
    ph = s["phases"]
    t_gen, t_train = s["t_gen"], max(0.0, s["t_rest"])  # medians over steps of each part
    a = {"sync_t_gen": t_gen, "sync_t_train": t_train,
         "ideal_overlap_dedicated": (t_gen + t_train) / max(t_gen, t_train) if max(t_gen, t_train) else float("nan"),
         "ideal_overlap_equal_hw": (t_gen + t_train) / (2 * max(t_gen, t_train)) if max(t_gen, t_train) else float("nan")}
    # the tail: in a synchronous step every group's decode runs until the longest sample ends
    if s["len_max"] and s["len_mean"]:
        frac = s["len_mean"] / s["len_max"]
        a["sync_useful_decode_fraction"] = frac
        a["ideal_overlap_equal_hw_no_tail"] = (t_gen + t_train) / (2 * max(t_gen * frac, t_train)) \
            if max(t_gen * frac, t_train) else float("nan")
    for arm in [a for a in report if a.startswith("async")]:
        r = report[arm]
        # per step, one worker generates a batch's groups on its thread while the trainer updates on its own
        worker = r["gen_s_per_batch"]
        busy = r["phases"]["trainer_busy"]
        a[f"{arm}_worker_s_per_batch"] = worker
        a[f"{arm}_trainer_busy_s"] = busy
        a[f"{arm}_predicted_s_per_step"] = max(worker, busy)
        a[f"{arm}_gen_slowdown_1_vs_2_threads"] = worker / t_gen if t_gen else float("nan")
        a[f"{arm}_train_slowdown_1_vs_2_threads"] = busy / t_train if t_train else float("nan")
    return a


def print_report(results: dict[str, list[dict]], dist: dict | None, setting: vs_trl.Setting, shape: str) -> dict:
    arms = [a for a in results if results.get(a)]
    asyncs = [a for a in arms if a != "sync"]
    for a in arms:
        for i, r in enumerate(results[a]):
            print(f"{a:13s} run {i + 1} steps (s): " + " ".join(f"{s['step_s']:.2f}" for s in r["steps"])
                  + f"  (process {r['process_s']:.0f} s, trainer threads {r['trainer_threads']})")
    report: dict[str, Any] = {a: summarise(results[a]) for a in arms}
    print(f"\npooled medians over steps 2..N of {len(next(iter(results.values())))} round(s), shape={shape}, "
          f"{setting.prompts_per_step} prompts x {setting.n} samples x <= {setting.max_new_tokens} tokens")
    head = f"{'arm':13s} {'s/step':>7s} {'upd/s':>6s} {'samples/s':>9s} {'x sync':>6s} {'gen tok/s':>9s} " \
           f"{'runs s/step':>15s} {'best x sync':>11s} {'len mean':>8s} {'len max':>7s} {'at lim':>6s} {'stale':>5s} {'|dlogp|':>7s}"
    print(head)
    base = report["sync"]["samples_per_s"] if "sync" in report else float("nan")
    best = report["sync"]["best_run_s_per_step"] if "sync" in report else float("nan")
    for a in arms:
        r = report[a]
        r["speedup_vs_sync"] = r["samples_per_s"] / base if base else float("nan")
        # the least-disturbed run of each arm (a shared machine's load only ever slows a run down)
        r["speedup_vs_sync_best_runs"] = best / r["best_run_s_per_step"]
        runs = "/".join(f"{x:.1f}" for x in r["per_run_s_per_step"])
        print(f"{a:13s} {r['s_per_step']:7.2f} {r['updates_per_s']:6.3f} {r['samples_per_s']:9.1f} "
              f"{r['speedup_vs_sync']:6.2f} {r['gen_tokens_per_s']:9.0f} {runs:>15s} {r['speedup_vs_sync_best_runs']:11.2f} "
              f"{r['len_mean']:8.1f} {r['len_max']:7.0f} "
              f"{r['at_limit']:6.3f} {r['async'].get('async/staleness_mean', float('nan')):5.2f} "
              f"{r['async'].get('rollout_corr/abs_logp_diff_mean', float('nan')):7.4f}")
    print("\nphases (median s over steps 2..N; async gen/reward are the worker's seconds for the step's arrivals):")
    for a in arms:
        print(f"  {a:13s} " + ", ".join(f"{p} {v:.2f}" for p, v in report[a]["phases"].items()))
    for a in asyncs:
        x = report[a]["async"]
        print(f"  {a}: staleness mean {x['async/staleness_mean']:.2f} max {x['async/staleness_max']:.0f}, "
              f"stale-token fraction {x['async/stale_token_fraction']:.3f}, dropped stale {x['async/dropped_stale_total']:.0f}, "
              f"rollout_corr |dlogp| mean {x['rollout_corr/abs_logp_diff_mean']:.4f} max {x['rollout_corr/abs_logp_diff_max']:.3f}, "
              f"ratio [{x['rollout_corr/ratio_min']:.3f}, {x['rollout_corr/ratio_max']:.3f}], entropy {x['actor/entropy']:.3f}")
    if "sync" in report and len(arms) > 1:
        paired = {a: [s / r for s, r in zip([_med([x["step_s"] for x in later_steps(run)]) for run in results["sync"]],
                                             [_med([x["step_s"] for x in later_steps(run)]) for run in results[a]])]
                  for a in asyncs}
        for a, ps in paired.items():
            report[a]["paired_speedup_per_round"] = ps
            print(f"  {a} vs sync, per round (sync s/step / async s/step): " + ", ".join(f"{p:.2f}" for p in ps))
        ar = report["arithmetic"] = overlap_arithmetic(report)
        print("\narithmetic (from the measured phases):")
        print(f"  sync step = t_gen {ar['sync_t_gen']:.2f} s (generation + scoring, 2 threads) + t_train "
              f"{ar['sync_t_train']:.2f} s (log-probs, update, weight sync, bookkeeping)")
        print(f"  ideal overlap, generation and training on their own hardware each (e.g. rollout GPUs + trainer GPUs "
              f"of this speed): (t_gen + t_train) / max(t_gen, t_train) = {ar['ideal_overlap_dedicated']:.2f}x")
        print(f"  ideal overlap at equal total hardware (half each, linear scaling): "
              f"{ar['ideal_overlap_equal_hw']:.2f}x")
        if "sync_useful_decode_fraction" in ar:
            print(f"  the tail: a sync step decodes until its longest sample ends (median max length {report['sync']['len_max']:.0f}, "
                  f"mean {report['sync']['len_mean']:.1f}): useful fraction of the decode {ar['sync_useful_decode_fraction']:.2f}; "
                  f"a continuously fed engine (vLLM on GPUs: decode cost per step ~ flat in batch size) paying only for "
                  f"the mean gives at equal hardware {ar['ideal_overlap_equal_hw_no_tail']:.2f}x")
        for a in asyncs:
            print(f"  {a}: worker {ar[f'{a}_worker_s_per_batch']:.2f} s per batch on 1 thread "
                  f"({ar[f'{a}_gen_slowdown_1_vs_2_threads']:.2f}x sync's 2-thread t_gen), trainer busy "
                  f"{ar[f'{a}_trainer_busy_s']:.2f} s per step ({ar[f'{a}_train_slowdown_1_vs_2_threads']:.2f}x sync's "
                  f"t_train): perfect overlap would give max = {ar[f'{a}_predicted_s_per_step']:.2f} s/step, "
                  f"measured {report[a]['s_per_step']:.2f}")
    if dist:
        print(f"\nlength distribution of the model ({dist['samples']} samples, {dist['samples'] // setting.n} prompts x "
              f"{setting.n}, temperature {setting.temperature}, limit {setting.max_new_tokens}): mean {dist['mean']:.1f}, "
              f"median {dist['median']:.0f}, p90 {dist['p90']:.0f}, max {dist['max']}, at the limit {dist['at_limit']:.3f}, "
              f"median of the per-group max {dist['group_max_median']:.0f}")
    return report


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6, help="training steps per run (the medians skip step 1)")
    ap.add_argument("--rounds", type=int, default=2, help="runs per arm, arms alternating within each round")
    ap.add_argument("--shape", choices=("longtail", "uniform"), default="longtail", help="response-length distribution")
    ap.add_argument("--uniform", action="store_true", help="same as --shape uniform")
    ap.add_argument("--arms", nargs="+", default=list(ARMS),
                    help="sync, async_kK, async_kK_sS (K = max_staleness, S = async_segment_tokens); sync must be one")
    ap.add_argument("--padded", action="store_true",
                    help="prorl's padded update (micro_batch_size sequences) instead of the padding-free one")
    ap.add_argument("--segment-tokens", type=int, default=256, help="rollout.async_segment_tokens of the async arms")
    ap.add_argument("--p-eos", type=float, default=LongTail.p_eos)
    ap.add_argument("--p-enter", type=float, default=LongTail.p_enter)
    ap.add_argument("--p-stay", type=float, default=LongTail.p_stay)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra override for every arm")
    ap.add_argument("--cache", type=Path, default=vs_trl.CACHE, help="where the model and data are cached")
    ap.add_argument("--workdir", type=Path, help="run directories (default: a temporary one)")
    ap.add_argument("--smoke", action="store_true", help="tiny model and sizes, 2 steps, 1 round (a test, not a measurement)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--report-from", type=Path, metavar="JSON", help="only print the report of an earlier --json")
    args = ap.parse_args(argv)
    if args.report_from:
        old = json.loads(args.report_from.read_text())
        return print_report(old["raw"], old["length_distribution"], vs_trl.Setting(**old["setting"]), old["shape"])
    for a in args.arms:
        parse_arm(a)
    extra = ([] if args.padded else list(PACKED)) + args.set
    shape = "uniform" if args.uniform else args.shape
    setting = vs_trl.Setting.quick() if args.smoke else vs_trl.Setting()
    steps, rounds = (2, 1) if args.smoke else (args.steps, args.rounds)
    lt = LongTail(p_eos=args.p_eos, p_enter=args.p_enter, p_stay=args.p_stay)
    if shape == "longtail":
        model_dir, data = build_longtail(setting, lt, args.cache)
    else:
        model_dir, data = vs_trl.build_assets(setting, args.cache)
    dist = length_distribution(model_dir, data, setting, prompts=4 if args.smoke else 16)
    print(f"setting: {json.dumps(dataclasses.asdict(setting))}; shape={shape}; steps/run={steps}, rounds={rounds}, "
          f"async segment tokens {args.segment_tokens}; cores {os.cpu_count()}; model {model_dir}", flush=True)
    print(f"length distribution: mean {dist['mean']:.1f}, median {dist['median']:.0f}, p90 {dist['p90']:.0f}, "
          f"max {dist['max']}, at the limit {dist['at_limit']:.3f} ({dist['samples']} samples)", flush=True)
    results: dict[str, list[dict]] = {a: [] for a in args.arms}
    with tempfile.TemporaryDirectory(prefix="bench_async_") as tmp:
        work = args.workdir or Path(tmp)
        for rnd in range(rounds):
            for arm in args.arms:
                run_dir = work / f"round{rnd}" / arm
                cfg = arm_config(arm, setting, model_dir=model_dir, data=data, run_dir=run_dir / "run", steps=steps,
                                 segment_tokens=args.segment_tokens, extra=extra)
                res = run_arm(arm, cfg, run_dir)
                results[arm].append(res)
                print(f"  round {rnd + 1} {arm:9s}: steps " + " ".join(f"{s['step_s']:.2f}" for s in res["steps"])
                      + f" s (process {res['process_s']:.0f} s)", flush=True)
    report = print_report(results, dist, setting, shape)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"setting": dataclasses.asdict(setting), "shape": shape, "steps": steps,
                                         "rounds": rounds, "segment_tokens": args.segment_tokens, "set": args.set,
                                         "padded": args.padded, "overrides_all_arms": extra,
                                         "longtail": dataclasses.asdict(lt) if shape == "longtail" else None,
                                         "cores": os.cpu_count(), "length_distribution": dist, "report": report,
                                         "raw": results}, indent=1))
    return report


if __name__ == "__main__":
    main()
