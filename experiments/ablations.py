"""The ProRL/DAPO ablations in miniature, on the built-in CPU task, several seeds each.

1. clip-higher: decoupled (eps_low 0.2, eps_high 0.4) vs symmetric (0.2 / 0.2) clipping, on-policy
   (2 updates per batch) and off-policy (16 updates per batch);
2. dynamic vs static sampling (on addition + sorting, where sorting saturates early);
3. after a degradation (a stage with a 30x, or 10x, learning rate), continuing with no reset, with a
   hard reset (reference + optimizer) to the current policy, or with a reset that rolls back to
   the best checkpoint.

Writes ``OUT/results.json``, ``OUT/table.md`` and ``OUT/<ablation>.png`` (validation and entropy
curves, mean over seeds) and prints the table. Every number comes from real runs of
``prorl.trainer.controller.train``.

    python experiments/ablations.py --out runs/ablations --seeds 0 1 2 --steps 40
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from prorl.config import load_config
from prorl.trainer.controller import train
from prorl.trainer.metrics import read_metrics

BASE = [
    "data.builtin_tasks=[add]", "data.builtin_val_size=64", "validation.every=5", "validation.n=4",
    "trainer.tensorboard=false", "trainer.progress_bar=false", "trainer.max_minutes=0", "trainer.save_every=5",
    "trainer.keep_checkpoints=3", "rollout.n=8", "actor.train_batch_size=16", "actor.ppo_mini_batch_size=8",
    # the stored results were measured before the defaults changed (issue 20 section 4): fp32 compute,
    # fp32 rollouts, the padded update; pinned so that the script reproduces them
    "model.autocast=none", "rollout.dtype=float32", "actor.max_tokens_per_micro_batch=0",
]
DEGRADE_AT, RECOVER_AT = 10, 16
DEGRADE = (f"stages=[{{name: normal, until_step: {DEGRADE_AT}}}, "
           f"{{name: degrade, until_step: {RECOVER_AT - 1}, overrides: {{actor.lr: LR}}}}, "
           "{name: recover, reset_on_enter: RESET}]")


def _reset_arms(lr: str) -> dict[str, list[str]]:
    stages = DEGRADE.replace("LR", lr)
    return {
        "no reset": [stages.replace("RESET", "false"), "algo.kl_coef=0.05"],
        "reset": [stages.replace("RESET", "true"), "algo.kl_coef=0.05"],
        "reset + rollback to best": [stages.replace("RESET", "true"), "algo.kl_coef=0.05", "reset.rollback_to_best=true"],
    }


ABLATIONS: dict[str, dict[str, list[str]]] = {
    "clip": {"decoupled 0.2/0.4": ["algo.eps_high=0.4"], "symmetric 0.2/0.2": ["algo.eps_high=0.2"]},
    # 4 epochs x 4 mini-batches = 16 updates per batch: the ratio drifts far enough for the clip to bite
    "clip_offpolicy": {"decoupled 0.2/0.4": ["algo.eps_high=0.4", "actor.ppo_epochs=4", "actor.ppo_mini_batch_size=4"],
                       "symmetric 0.2/0.2": ["algo.eps_high=0.2", "actor.ppo_epochs=4", "actor.ppo_mini_batch_size=4"]},
    # both tasks: sorting saturates within ~10 steps, so static batches fill up with zero-advantage groups
    "sampling": {"dynamic": ["algo.dynamic_sampling=true", "data.builtin_tasks=[add,sort]"],
                 "static": ["algo.dynamic_sampling=false", "data.builtin_tasks=[add,sort]"]},
    "reset": _reset_arms("6.0e-3"),  # 30x the learning rate for 5 steps: a collapse
    "reset_mild": _reset_arms("2.0e-3"),  # 10x: a milder degradation
}


def val_curve(metrics: list[dict]) -> dict[int, float]:
    key = "val-core/builtin/add/acc/mean@4"
    return {m["step"]: m[key] for m in metrics if key in m}


def summarise(metrics: list[dict], target: float) -> dict:
    val = val_curve(metrics)
    ent = {m["step"]: m["actor/entropy"] for m in metrics if "actor/entropy" in m}  # steps with an update
    steps = sorted(val)
    reached = next((s for s in steps if val[s] >= target), None)
    after = [val[s] for s in steps if s >= RECOVER_AT]
    updates = sorted(ent)
    return {"val_start": val[steps[0]], "val_end": val[steps[-1]],
            "entropy_end": statistics.mean(ent[s] for s in updates[-3:]), "update_steps": len(updates),
            "steps_to_target": reached, "val_after_intervention": statistics.mean(after) if after else None,
            "val": val, "entropy": ent}


def run_all(out: Path, seeds: list[int], steps: int, target: float, only: list[str], replot: bool = False) -> dict:
    results: dict = {}
    for name, arms in ABLATIONS.items():
        if only and name not in only:
            continue
        for arm, overrides in arms.items():
            for seed in seeds:
                run_dir = out / name / arm.replace(" ", "_").replace("/", "-") / f"seed{seed}"
                t = time.time()
                if not replot:
                    cfg = load_config(None, BASE + overrides + [f"trainer.seed={seed}", f"trainer.total_steps={steps}",
                                                                f"trainer.run_dir={run_dir}"])
                    train(cfg, overwrite=True, log=lambda *_: None)
                s = summarise(read_metrics(run_dir), target)
                results.setdefault(name, {}).setdefault(arm, []).append(s)
                print(f"{name:9s} {arm:26s} seed {seed}: val {s['val_start']:.3f} -> {s['val_end']:.3f}, "
                      f"entropy {s['entropy_end']:.3f}, {time.time() - t:.0f}s", flush=True)
    return results


def table(results: dict) -> str:
    def ms(xs):
        xs = [x for x in xs if x is not None]
        if not xs:
            return "n/a"
        return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"

    lines = ["| ablation | arm | val start | val end | entropy at end | steps to target | val after intervention | steps with an update |",
             "|---|---|---|---|---|---|---|---|"]
    for name, arms in results.items():
        for arm, runs in arms.items():
            reached = [r["steps_to_target"] for r in runs]
            steps = f"{statistics.mean([s for s in reached if s is not None]):.1f} ({sum(s is not None for s in reached)}/{len(runs)} reached)" \
                if any(s is not None for s in reached) else f"never (0/{len(runs)})"
            lines.append(f"| {name} | {arm} | {ms([r['val_start'] for r in runs])} | {ms([r['val_end'] for r in runs])} | "
                         f"{ms([r['entropy_end'] for r in runs])} | {steps} | "
                         f"{ms([r['val_after_intervention'] for r in runs]) if name.startswith('reset') else '-'} | "
                         f"{ms([r['update_steps'] for r in runs])} |")
    return "\n".join(lines)


def plot(results: dict, out: Path) -> None:
    from matplotlib.figure import Figure

    for name, arms in results.items():
        fig = Figure(figsize=(11, 4))
        ax_v, ax_e = fig.subplots(1, 2)
        for arm, runs in arms.items():
            steps = sorted(runs[0]["val"])
            ax_v.plot(steps, [statistics.mean(r["val"].get(s, float("nan")) for r in runs) for s in steps], marker="o", label=arm)
            e_steps = sorted({s for r in runs for s in r["entropy"]})  # mean over the seeds that updated at a step
            ax_e.plot(e_steps, [statistics.mean(r["entropy"][s] for r in runs if s in r["entropy"]) for s in e_steps], label=arm)
        if name.startswith("reset"):
            for ax in (ax_v, ax_e):
                ax.axvspan(DEGRADE_AT + 0.5, RECOVER_AT - 0.5, color="red", alpha=0.1, label="degradation stage (lr raised)")
        ax_v.set(title=f"{name}: held-out accuracy (mean over seeds)", xlabel="step", ylabel="val acc")
        ax_e.set(title=f"{name}: policy entropy", xlabel="step", ylabel="entropy")
        ax_v.legend()
        ax_e.legend()
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/ablations")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--target", type=float, default=0.75, help="validation accuracy for 'steps to target'")
    ap.add_argument("--only", nargs="*", default=[], choices=sorted(ABLATIONS))
    ap.add_argument("--replot", action="store_true", help="rebuild table and plots from existing run dirs in --out")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = run_all(out, args.seeds, args.steps, args.target, args.only, args.replot)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    md = table(results)
    (out / "table.md").write_text(md + "\n")
    plot(results, out)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
