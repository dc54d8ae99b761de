"""Boundary expansion in miniature: does prolonged RL make the hardest chain level solvable?

1. builds the warm start (``prorl sft --builtin`` on the easy chain levels only) unless it exists;
2. evaluates it: pass@k (k = 1..64) on the hard level, pass@1..k on the easy levels;
3. per seed, trains ``experiments/boundary/recipe.yaml`` (stages with harder levels and longer
   responses, resets on entering each stage, KL, dynamic sampling) and evaluates every checkpoint
   the same way;
4. writes ``OUT/results.json`` and ``OUT/table.md``, pass@k curves per seed drawn by
   ``prorl plot --passk`` (``OUT/seedS/passk.png``), and response length, entropy and held-out
   accuracy over the run (``OUT/seedS/run.png``).

With ``--select-best`` the run validates on problems the evaluation never sees (held-out rows after the
evaluated ones, ``OUT/selection_val.jsonl``) and checkpoints at every validation, so the trainer's best
checkpoint (its rollback target: the best blended validation) is the best validated policy; that checkpoint
is evaluated too, as the run's selected result (``"selected": "best"``).

Every number comes from real runs of ``prorl.trainer.controller.train`` and ``prorl.trainer.evaluate``.

    python experiments/boundary_expansion.py --out runs/boundary --seeds 0 1 2
    python experiments/boundary_expansion.py --out runs/boundary_quick --quick   # smoke run
    python experiments/boundary_expansion.py --out runs/bw_best --select-best --ablation no_curriculum
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

RECIPE = Path(__file__).resolve().parent / "boundary" / "recipe.yaml"
EASY = ("chain2", "chain3", "chain4")
EVAL_POOL = 64  # held-out rows per level (the trainer's data.builtin_val_size); the evaluation takes the first ones
HARD = "chain9"
# the warm start: the noisy step-wise teacher on the easy levels only (see recipe.yaml)
# (number_coverage: easy problems that start above 36, so the warm start has also written the numbers up to 99
# that hard levels reach; without them chain9 stalled near 0.5 because every target above 72 failed)
SFT = {"tasks": EASY, "correct_prob": 0.45, "size_per_task": 6000, "steps": 900, "batch_size": 48, "lr": 3e-3,
       "seed": 0, "number_coverage": 0.5}


def build_warmstart(path: Path, quick: bool = False) -> Path:
    """The warm start at ``path``, built by the same code as ``prorl sft --builtin`` when missing."""
    if (path / "model.safetensors").exists():
        return path
    from prorl.trainer.sft import build_builtin_warmstart

    kw = dict(SFT, steps=30, size_per_task=300) if quick else dict(SFT)
    print(f"building the warm start in {path} ({kw})", flush=True)
    return build_builtin_warmstart(path, **kw, progress=False)


def eval_model(model: str | Path, tasks: dict[str, tuple[int, int]], out_json: Path, *, max_new_tokens: int,
               temperature: float = 0.6, top_p: float = 0.95, seed: int = 0) -> dict:
    """``prorl eval MODEL builtin:TASK ...`` in-process: ``tasks`` maps a task to (prompts, samples);
    held-out split, the same seed and settings as the command. Writes the command's JSON format."""
    import torch

    from prorl.data.builtin_tasks import generate_rows
    from prorl.data.dataset import build_examples
    from prorl.models.policy import load_policy
    from prorl.rewards.scorer import RewardScorer
    from prorl.rollout.hf import HFRolloutEngine
    from prorl.trainer.evaluate import evaluate
    from prorl.trainer.setup import resolve_model_path

    policy, tok = load_policy(resolve_model_path(str(model)))
    engine = HFRolloutEngine(policy, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    results: dict = {}
    with RewardScorer(num_workers=1, timeout_s=10.0) as scorer:
        for task, (prompts, k) in tasks.items():
            torch.manual_seed(seed)
            examples, _ = build_examples(generate_rows(task, EVAL_POOL, 1234, "val")[:prompts], tok, max_prompt_length=10**9)
            results |= evaluate(engine, tok, scorer, examples, n=k, temperature=temperature, top_p=top_p,
                                max_new_tokens=max_new_tokens)
    results.pop("all", None)
    out = {"model": str(model), "samples_per_prompt": max(k for _, k in tasks.values()),
           "temperature": temperature, "top_p": top_p, "results": results}
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(out, indent=1))
    return results


def summary_row(results: dict, hard: str) -> dict:
    """The numbers the target is about: pass@1 / pass@64 (or the largest k) on the hard level, pass@1 on the easy levels."""
    h = results[f"builtin/{hard}"]
    kmax = max(int(k.split("@")[1]) for k in h if k.startswith("pass@"))
    row = {"hard_pass@1": h["pass@1"], f"hard_pass@{kmax}": h[f"pass@{kmax}"], "hard_len": h["mean_response_length"]}
    for ds, r in results.items():
        if ds != f"builtin/{hard}":
            row[f"{ds.split('/')[1]}_pass@1"] = r["pass@1"]
    return row


def plot_run_curves(run_dir: Path, out_png: Path, hard: str) -> None:
    """Response length, entropy and held-out accuracy per level over the run, stage changes marked."""
    from matplotlib.figure import Figure

    from prorl.trainer.metrics import read_metrics

    metrics = read_metrics(run_dir)
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()] \
        if (run_dir / "events.jsonl").exists() else []
    fig = Figure(figsize=(15, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, key, title in ((axes[0], "response_length/mean", "training response length (tokens)"),
                           (axes[1], "actor/entropy", "policy entropy")):
        pts = [(m["step"], m[key]) for m in metrics if key in m]
        ax.plot([p[0] for p in pts], [p[1] for p in pts])
        ax.set(title=title, xlabel="step")
    val_keys = sorted({k for m in metrics for k in m if k.startswith("val-core/builtin/") and "/acc/mean@" in k},
                      key=lambda k: int(k.split("/chain")[1].split("/")[0]) if "/chain" in k else 0)
    for key in val_keys:
        pts = [(m["step"], m[key]) for m in metrics if key in m]
        axes[2].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=key.split("/")[2])
    axes[2].set(title=f"held-out pass@1 (hard level: {hard})", xlabel="step", ylim=(0, 1))
    axes[2].legend(fontsize=7)
    for ax in axes:
        for e in events:
            if e.get("type") in ("stage", "reset"):
                ax.axvline(e["step"], color="red" if e["type"] == "reset" else "gray", ls=":", lw=1)
    fig.savefig(out_png, dpi=100)


def write_selection_split(path: Path, tasks: list[str], skip: int, prompts: int) -> Path:
    """Held-out rows ``skip .. skip + prompts`` of every task (the evaluation takes the first ``skip``):
    what a run validates on when its best checkpoint must be chosen without seeing the evaluation."""
    from prorl.data.builtin_tasks import generate_rows

    rows = []
    for task in tasks:
        val = generate_rows(task, EVAL_POOL, 1234, "val")  # the rows eval_model takes its first ones from
        chosen, evaluated = val[skip:skip + prompts], {r["prompt"][-1]["content"] for r in val[:skip]}
        if len(chosen) < prompts or any(r["prompt"][-1]["content"] in evaluated for r in chosen):
            raise ValueError(f"{task}: no {prompts} held-out problems left after the {skip} evaluated ones")
        rows += chosen
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def best_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    """The trainer's best checkpoint (by validation) as its last checkpoint records it."""
    from prorl.trainer.checkpoint import latest_checkpoint, load_trainer_state

    last = latest_checkpoint(run_dir)
    step = load_trainer_state(last).get("best_ckpt_step") if last else None
    return (step, run_dir / "checkpoints" / f"step_{step}") if step else None


def ablate(cfg, ablation: str):
    """The recipe without one ingredient: ``no_resets`` keeps the stages but resets nothing on
    entering them; ``no_curriculum`` trains on the last stage's levels and length from step 1 (one
    stage, so no resets either)."""
    import dataclasses

    from prorl.config import apply_overrides

    if ablation == "no_resets":
        return dataclasses.replace(cfg, stages=[dataclasses.replace(st, reset_on_enter=False) for st in cfg.stages])
    if ablation == "no_curriculum":
        return apply_overrides(dataclasses.replace(cfg, stages=[]), dict(cfg.stages[-1].overrides))
    return cfg


def run_seed(out: Path, seed: int, warm: Path, args: argparse.Namespace, eval_tasks: dict, base_eval: Path) -> list[dict]:
    from prorl import plotting
    from prorl.config import load_config
    from prorl.trainer.checkpoint import list_checkpoints
    from prorl.trainer.controller import train

    run_dir = out / f"seed{seed}" / "run"
    # the stored results were measured before the defaults changed (issue 20 section 4): fp32 compute,
    # fp32 rollouts, the padded update; pinned so that the script reproduces them
    overrides = [f"model.path={warm}", f"trainer.run_dir={run_dir}", f"trainer.seed={seed}",
                 "trainer.progress_bar=false", "model.autocast=none", "rollout.dtype=float32", "actor.max_tokens_per_micro_batch=0", *args.override]
    if args.quick:
        overrides += ["trainer.total_steps=6", "trainer.save_every=3", "validation.every=3", "data.val_max_prompts=4",
                      "data.builtin_train_size=200", "stages=[{name: easy, until_step: 3}, {name: hard, reset_on_enter: true,"
                      " overrides: {rollout.max_response_length: 48, data.domain_weights: {builtin/chain9: 1.0}}}]"]
    cfg = ablate(load_config(str(args.recipe), overrides), args.ablation)
    if args.select_best:  # validate on unevaluated problems; a checkpoint at every validation
        import dataclasses

        split = write_selection_split(out / "selection_val.jsonl", cfg.data.builtin_tasks,
                                      max(args.hard_prompts, args.easy_prompts), cfg.data.val_max_prompts or 16)
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, val_files=[str(split)]),
                                  trainer=dataclasses.replace(cfg.trainer, save_every=cfg.validation.every))
    t0 = time.time()
    if not args.eval_only:
        train(cfg, overwrite=True, log=lambda *a: print(*a, flush=True))
    minutes = (time.time() - t0) / 60
    rows, jsons, labels = [], [base_eval], ["warm start"]
    cps = list_checkpoints(run_dir)
    for step, path in cps:
        if step == 0 or (args.eval_every and step % args.eval_every and step != cps[-1][0]):
            continue
        ej = out / f"seed{seed}" / f"eval_step{step}.json"
        if not ej.exists():
            eval_model(path, eval_tasks, ej, max_new_tokens=args.max_new_tokens)
        res = json.loads(ej.read_text())["results"]
        rows.append({"seed": seed, "step": step, **summary_row(res, args.hard)})
        jsons.append(ej)
        labels.append(f"step {step}")
        print(f"seed {seed} step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[-1].items()
                                                      if isinstance(v, float)), flush=True)
    if rows:
        rows[-1]["train_minutes"] = minutes
    if args.select_best and (best := best_checkpoint(run_dir)):
        step, path = best
        ej = out / f"seed{seed}" / f"eval_step{step}.json"
        if not ej.exists():
            eval_model(path, eval_tasks, ej, max_new_tokens=args.max_new_tokens)
        rows.append({"seed": seed, "step": step, "selected": "best",
                     **summary_row(json.loads(ej.read_text())["results"], args.hard)})
        jsons.append(ej)
        labels.append(f"best (step {step})")
        print(f"seed {seed} best checkpoint, step {step}: hard_pass@1 {rows[-1]['hard_pass@1']:.3f}", flush=True)
    elif args.select_best:
        print(f"seed {seed}: no checkpoint validated above the starting policy; nothing selected", flush=True)
    plotting.plot_passk(jsons, out / f"seed{seed}" / "passk.png", labels=labels)
    plot_run_curves(run_dir, out / f"seed{seed}" / "run.png", args.hard)
    return rows


def table(base: dict, rows: list[dict]) -> str:
    keys = [k for k in base if k != "hard_len"] + ["hard_len"]
    lines = ["| seed | step | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys),
             "| - | warm start | " + " | ".join(f"{base[k]:.3f}" for k in keys) + " |"]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['step']}{' (best)' if r.get('selected') else ''} | " + " | ".join(f"{r.get(k, float('nan')):.3f}" for k in keys) + " |")
    finals = {}
    for r in rows:
        finals[r["seed"]] = r
    if len(finals) > 1:
        for k in keys:
            xs = [f[k] for f in finals.values()]
            lines.append(f"\nlast checkpoint, mean ± sd over {len(xs)} seeds: {k} {statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/boundary")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--recipe", default=str(RECIPE))
    ap.add_argument("--warmstart", help="warm start directory (default OUT/warmstart, built when missing)")
    ap.add_argument("--hard", default=HARD, help="the hard level pass@k is measured on")
    ap.add_argument("--hard-prompts", type=int, default=32)
    ap.add_argument("--easy-prompts", type=int, default=16)
    ap.add_argument("--easy-k", type=int, default=16)
    ap.add_argument("-k", type=int, default=64, help="samples per hard-level prompt (pass@k up to this k)")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--eval-every", type=int, default=50, help="evaluate checkpoints at multiples of this step (and the last)")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny warm start, 6 steps, small evals")
    ap.add_argument("--ablation", choices=["none", "no_resets", "no_curriculum"], default="none",
                    help="the recipe without its resets, or without its staged curriculum (use its own --out)")
    ap.add_argument("--select-best", action="store_true",
                    help="validate on held-out problems the evaluation does not use, checkpoint at every validation, "
                         "and evaluate the trainer's best checkpoint as the run's result")
    ap.add_argument("--eval-only", action="store_true", help="re-evaluate and re-plot existing runs in --out")
    ap.add_argument("--set", nargs="+", default=[], dest="override", metavar="KEY=VALUE",
                    help="extra dotted config overrides for the recipe, e.g. trainer.max_minutes=20")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    if args.quick:
        args.hard_prompts, args.easy_prompts, args.k, args.easy_k, args.eval_every = 4, 4, 8, 4, 0
    warm = build_warmstart(Path(args.warmstart) if args.warmstart else out / "warmstart", args.quick)
    eval_tasks = {t: (args.easy_prompts, args.easy_k) for t in EASY if t != args.hard}
    eval_tasks[args.hard] = (args.hard_prompts, args.k)
    base_eval = out / "eval_warmstart.json"
    if not base_eval.exists():
        eval_model(warm, eval_tasks, base_eval, max_new_tokens=args.max_new_tokens)
    base = summary_row(json.loads(base_eval.read_text())["results"], args.hard)
    print("warm start: " + ", ".join(f"{k} {v:.3f}" for k, v in base.items()), flush=True)
    rows = []
    for seed in args.seeds:
        rows += run_seed(out, seed, warm, args, eval_tasks, base_eval)
    md = table(base, rows)
    (out / "results.json").write_text(json.dumps({"warmstart": base, "checkpoints": rows, "hard": args.hard}, indent=1))
    (out / "table.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
