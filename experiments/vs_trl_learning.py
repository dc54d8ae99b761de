"""prorl vs TRL's GRPOTrainer for the same wall-clock minutes: held-out pass@1 / pass@16 (issue 9, section 3).

Warm start ``prorl/assets/chain-warmstart``; training prompts: the built-in counting chains chain3-6
(train split, exactly the rows prorl's own setup builds, written to ``OUT/train.jsonl`` for TRL);
scored on both sides by prorl's verifier ``prorl.verifiers.builtin.verify_builtin``. Shared
hyper-parameters: 16 prompts x 8 samples per batch, temperature 1.2, top-p 1, at most 32 new
tokens, AdamW lr 2e-4 constant (weight decay 0.01, grad clip 1), KL beta 1e-3 (k3), clip 0.2 / 0.4
without a dual clip (TRL's default ``delta=None``; prorl ``algo.clip_ratio_c=none``), token-level loss
(TRL ``loss_type="dapo"``), group-std advantages, 2 optimizer updates of 64 samples per batch
(prorl: train_batch_size 16, ppo_mini_batch_size 8; TRL: per_device_train_batch_size 64,
steps_per_generation 2, num_iterations 1, so TRL's old log-probs and clipping apply to the second
update too), one torch thread per arm. prorl keeps its recipe's dynamic sampling (up to 4
generation rounds to fill a batch with groups whose rewards differ); TRL has no equivalent. No
in-run validation on either side.

Both arms start together, each in its own subprocess (TRL in its own venv, ``--trl-venv``, created
on first use by ``benchmarks/vs_trl.py``), and are timed from their own process start (imports and
model loading count). At the first batch boundary at or after each mark (``--marks``, minutes) each
arm saves its policy and tokenizer to ``OUT/ARM/minM``; after the last mark it stops. Then the warm
start and every saved policy are evaluated identically (``boundary_expansion.eval_model``: held-out
chain5 / chain6, 32 prompts x 16 samples, temperature 0.6, top-p 0.95, at most 40 new tokens).
"steps" are batches of 16 prompts x 8 samples (TRL: optimizer steps / 2). Writes ``OUT/results.json``,
``OUT/table.md`` (plus prorl - TRL per mark), ``OUT/vs_trl_learning.png``; arm logs in ``OUT/ARM.log``.

``--task boundary`` (issue 21 section 3) runs the same comparison on the boundary experiment: the
number-coverage warm start (``--warmstart``, built by ``boundary_expansion.py`` when missing), the last
stage's mix (chain3 at weight 0.5, chain7-9; TRL gets the same mixture as row counts, ``trl_rows``) with
48 new tokens, marks at 5 / 15 / 30 minutes, scored on held-out chain9 (32 prompts x 64 samples, 48 tokens).
``--seed`` sets both arms' seed; ``--report`` stores ``results.json`` as
``experiments/vs_trl_results/TASK_seedS.json`` and regenerates the RESULTS.md section over the stored seeds
(``experiments/vs_trl_report.py``).

    python experiments/vs_trl_learning.py --out runs/vs_trl_learning [--minutes 10] [--marks 2 5 10]
                                          [--trl-venv DIR] [--eval-only] [--quick]
    python experiments/vs_trl_learning.py --task boundary --seed 0 --warmstart runs/widen_boundary/warmstart \
                                          --out runs/vs_trl_boundary_s0 --report
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(HERE)]
from vs_trl import DEFAULT_TRL_VENV, ArmProcess, ensure_trl_venv  # noqa: E402  (stdlib-only at import)

WARM = ROOT / "prorl" / "assets" / "chain-warmstart"
ARMS = ("trl", "prorl")


@dataclass(frozen=True)
class Task:
    """What both arms train on and how they are scored: levels, their mixture weights, held-out levels."""

    train_levels: tuple[str, ...]
    eval_levels: tuple[str, ...]
    weights: tuple[float, ...] | None = None  # mixture weight per train level (None: equal)
    max_new_tokens: int = 32
    eval_k: int = 16
    eval_max_new_tokens: int = 40
    marks: tuple[float, ...] = (2.0, 5.0, 10.0)


TASKS = {
    # issue 9's comparison: the shipped chain warm start on chain3-6
    "chains": Task(("chain3", "chain4", "chain5", "chain6"), ("chain5", "chain6")),
    # the boundary experiment (issue 21 section 3): the number-coverage warm start, the recipe's last-stage mix
    # (chain3 at weight 0.5, chain7-9) with its 48-token limit from step 1 (= its no-curriculum arm: TRL has no
    # stages), scored on held-out chain9 at pass@64 as the boundary runs are
    "boundary": Task(("chain3", "chain7", "chain8", "chain9"), ("chain9",), (0.5, 1.0, 1.0, 1.0), max_new_tokens=48,
                     eval_k=64, eval_max_new_tokens=48, marks=(5.0, 15.0, 30.0)),
}


@dataclass(frozen=True)
class Setting:
    """The hyper-parameters both arms share."""

    task: str = "chains"
    prompts: int = 16
    n: int = 8
    updates: int = 2  # optimizer updates per batch of prompts x n samples
    temperature: float = 1.2
    lr: float = 2e-4
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    beta: float = 1e-3
    eps_low: float = 0.2
    eps_high: float = 0.4
    seed: int = 0
    threads: int = 1
    train_size: int = 3000  # per level, capped by prorl at 80% of a level's train split (1140 for chain3-7)


def prorl_overrides(s: Setting, run_dir: Path, warm: Path = WARM) -> list[str]:
    """prorl's config (over the tiny preset, as ``experiments/plan/common.py``'s BASE) for ``s``."""
    task = TASKS[s.task]
    weights = [] if task.weights is None else ["data.domain_weights={" + ", ".join(
        f"builtin/{lvl}: {w}" for lvl, w in zip(task.train_levels, task.weights)) + "}"]
    return [
        f"model.path={warm}", f"data.builtin_tasks=[{', '.join(task.train_levels)}]", *weights,
        f"data.builtin_train_size={s.train_size}",
        "data.builtin_val_size=64", "data.max_prompt_length=64", f"rollout.n={s.n}", f"rollout.temperature={s.temperature}",
        "rollout.top_p=1.0", f"rollout.max_response_length={task.max_new_tokens}", f"algo.kl_coef={s.beta}",
        "algo.kl_estimator=k3", f"algo.eps_low={s.eps_low}", f"algo.eps_high={s.eps_high}", "algo.clip_ratio_c=none",
        "algo.loss_agg_mode=token-mean", "algo.entropy_coef=0.0", "algo.dynamic_sampling=true", "algo.max_gen_rounds=4",
        f"actor.lr={s.lr}",
        "actor.lr_warmup_steps=0", f"actor.weight_decay={s.weight_decay}", f"actor.grad_clip={s.grad_clip}",
        f"actor.train_batch_size={s.prompts}", f"actor.ppo_mini_batch_size={s.prompts // s.updates}", "actor.ppo_epochs=1",
        f"actor.micro_batch_size={s.prompts * s.n}", "validation.every=0", "validation.at_start=false",
        "trainer.total_steps=1000000", "trainer.save_every=0", "trainer.max_minutes=0", f"trainer.seed={s.seed}",
        f"trainer.threads={s.threads}", "trainer.device=cpu", "trainer.tensorboard=false", "trainer.progress_bar=false",
        f"trainer.run_dir={run_dir}",
        # the stored results were measured before the defaults changed (issue 20 section 4): fp32 compute,
        # fp32 rollouts, the padded update; pinned so that the script reproduces them
        "model.autocast=none", "rollout.dtype=float32", "actor.max_tokens_per_micro_batch=0",
    ]


class MarkSaver:
    """Saves a model + tokenizer to ``OUT/minM`` at the first batch end at or after each mark."""

    def __init__(self, spec: dict):
        self.t0, self.marks, self.out = spec["t0"], spec["marks"], Path(spec["out"])
        self.saved: list[dict] = []
        self.first_step_s: float | None = None

    def step_end(self, save: Callable[[Path], Any], steps: int, samples: int) -> bool:
        """Call at a batch end (``save(dir)`` writes model + tokenizer); True once every mark has its
        checkpoint (time to stop)."""
        now = time.time() - self.t0
        if self.first_step_s is None:
            self.first_step_s = now
        for m in self.marks[len(self.saved):]:
            if now < m * 60:
                break
            d = self.out / f"min{m:g}"
            save(d)
            self.saved.append({"minutes": m, "steps": steps, "samples": samples, "at_s": round(now, 2), "path": str(d)})
        return len(self.saved) == len(self.marks)

    def result(self, **extra: Any) -> dict:
        return {"marks": self.saved, "first_step_end_s": self.first_step_s, "wall_s": time.time() - self.t0, **extra}


def prorl_worker(spec: dict) -> dict:
    """prorl's trainer, through the controller's callbacks: after each step the policy is saved at
    the marks, and the run stops after the last one."""
    import torch

    torch.set_num_threads(1)
    from prorl.config import load_config
    from prorl.trainer.controller import Trainer

    s = Setting(**spec["setting"])
    cfg = load_config(None, prorl_overrides(s, Path(spec["run_dir"]), Path(spec["model_dir"])))
    saver = MarkSaver(spec)

    class SaveAtMarks:
        samples, done = 0, False

        def on_step_end(self, step: int, metrics: dict) -> None:
            self.samples += int(metrics.get("dynamic_sampling/generated_groups", s.prompts)) * s.n
            self.done = saver.step_end(trainer.export_policy, step, self.samples)

        def should_stop(self) -> bool:
            return self.done

    trainer = Trainer(cfg, overwrite=True, log=lambda *a, **k: None, callbacks=[SaveAtMarks()])
    trainer.fit()
    return saver.result(torch_threads=torch.get_num_threads())


def trl_worker(spec: dict) -> dict:
    """TRL's GRPOTrainer (in the TRL venv) with the same rows, reward and hyper-parameters; a
    callback saves at the marks (at batch boundaries: every ``updates`` optimizer steps) and stops."""
    import torch

    torch.set_num_threads(1)
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from prorl.verifiers.builtin import verify_builtin  # stdlib-only: prorl's scorer

    s = Setting(**spec["setting"])
    rows = [json.loads(line) for line in Path(spec["data"]).read_text().splitlines() if line.strip()]
    dataset = Dataset.from_list([{"prompt": r["prompt"], "answer": r["reward_model"]["ground_truth"]} for r in rows])
    tok = AutoTokenizer.from_pretrained(spec["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)

    def reward(completions: list, answer: list[str], **_: Any) -> list[float]:
        return [verify_builtin(c[0]["content"] if isinstance(c, list) else c, a, {}).score
                for c, a in zip(completions, answer)]

    saver, threads = MarkSaver(spec), []

    class Marks(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step % s.updates == 0:
                batches = state.global_step // s.updates
                threads.append(torch.get_num_threads())
                if saver.step_end(lambda d: (model.save_pretrained(d, safe_serialization=True), tok.save_pretrained(d)),
                                  batches, batches * s.prompts * s.n):
                    control.should_training_stop = True

    cfg = GRPOConfig(
        output_dir=spec["run_dir"], max_steps=10**7, per_device_train_batch_size=s.prompts * s.n // s.updates,
        gradient_accumulation_steps=1, steps_per_generation=s.updates, num_iterations=1, num_generations=s.n,
        max_completion_length=TASKS[s.task].max_new_tokens, temperature=s.temperature, top_p=1.0, top_k=0, beta=s.beta,
        epsilon=s.eps_low, epsilon_high=s.eps_high, loss_type="dapo", scale_rewards="group", learning_rate=s.lr,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=s.weight_decay, adam_beta1=0.9, adam_beta2=0.999,
        max_grad_norm=s.grad_clip, seed=s.seed, use_cpu=True, bf16=False, logging_steps=1, save_strategy="no",
        report_to="none", disable_tqdm=True, dataloader_num_workers=0, log_completions=False)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=dataset, processing_class=tok,
                          callbacks=[Marks()])
    trainer.train()
    return saver.result(torch_threads=sorted(set(threads)),
                        versions={"trl": trl.__version__, "transformers": transformers.__version__,
                                  "torch": torch.__version__})


def trl_rows(rows: list[dict], task: Task) -> list[dict]:
    """prorl's training rows with the task's mixture as row counts (TRL samples its dataset uniformly, prorl
    draws each level with probability proportional to its weight): level ``i`` keeps its first
    ``weights[i] * M`` rows, M as large as every level's rows allow."""
    if task.weights is None:
        return rows
    weight = {f"builtin/{lvl}": w for lvl, w in zip(task.train_levels, task.weights)}
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["data_source"], []).append(r)
    m = min(len(rs) / weight[src] for src, rs in by.items())
    kept = {id(r) for src, rs in by.items() for r in rs[:round(weight[src] * m)]}
    return [r for r in rows if id(r) in kept]


def run_arms(out: Path, s: Setting, marks: list[float], trl_venv: Path, warm: Path) -> dict[str, dict]:
    """Both arms at once, each in a fresh subprocess timed from its own start; their result dicts."""
    from prorl.config import load_config
    from prorl.trainer.setup import load_dataset_rows

    rows, _ = load_dataset_rows(load_config(None, prorl_overrides(s, out / "prorl" / "run", warm)))
    rows = trl_rows(rows, TASKS[s.task])
    data = out / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pythons = {"trl": str(ensure_trl_venv(trl_venv)), "prorl": sys.executable}
    procs = {}
    for arm in ARMS:
        spec = {"setting": dataclasses.asdict(s), "marks": marks, "out": str(out / arm), "run_dir": str(out / arm / "run"),
                "model_dir": str(warm), "data": str(data), "t0": time.time()}
        procs[arm] = ArmProcess(arm, pythons[arm], spec, out, lockstep=False, script=Path(__file__).resolve())
    print(f"training both arms for {marks[-1]:g} min ({len(rows)} training prompts); logs in {out}/ARM.log", flush=True)
    return {arm: p.finish() for arm, p in procs.items()}


def evaluate_all(out: Path, arms: dict[str, dict], tasks: dict[str, tuple[int, int]], max_new_tokens: int,
                 warm: Path = WARM) -> list[dict]:
    """Evaluate the warm start and every saved policy the same way; one row per (arm, mark)."""
    import torch
    from transformers.utils import logging as hf_logging

    from boundary_expansion import eval_model

    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    prompts, k = max(p for p, _ in tasks.values()), max(kk for _, kk in tasks.values())
    todo = [("warm start", {"minutes": 0.0, "steps": 0, "samples": 0, "at_s": 0.0, "path": str(warm)})]
    todo += [(arm, m) for arm in ARMS for m in arms[arm]["marks"]]
    rows = []
    for arm, m in todo:
        ej = out / "eval" / f"{arm.replace(' ', '_')}_min{m['minutes']:g}_{len(tasks)}x{prompts}x{k}.json"
        if ej.exists():
            res = json.loads(ej.read_text())["results"]
        else:
            res = eval_model(m["path"], tasks, ej, max_new_tokens=max_new_tokens)
        row = {"arm": arm, **{key: m[key] for key in ("minutes", "steps", "samples", "at_s")}}
        for t in tasks:
            row |= {f"{t} pass@1": res[f"builtin/{t}"]["pass@1"], f"{t} pass@{k}": res[f"builtin/{t}"][f"pass@{k}"]}
        rows.append(row)
        print(f"  {arm} @ {m['minutes']:g} min: " + ", ".join(f"{c} {v:.3f}" for c, v in row.items() if " pass@" in c),
              flush=True)
    return rows


def metric_cols(rows: list[dict]) -> list[str]:
    return [c for c in rows[0] if " pass@" in c]


def table(rows: list[dict]) -> str:
    """Markdown: arm, minutes, steps (batches of prompts x n), when saved, pass@1 / pass@k per level."""
    cols = metric_cols(rows)
    lines = ["| arm | minutes | steps | saved at (min) | " + " | ".join(cols) + " |", "|---" * (4 + len(cols)) + "|"]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['minutes']:g} | {r['steps']} | {r['at_s'] / 60:.2f} | "
                     + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
    return "\n".join(lines)


def comparison(rows: list[dict]) -> list[str]:
    """Per mark: prorl minus TRL, averaged over the evaluated levels, for pass@1 and pass@k."""
    cols = metric_cols(rows)
    lines = []
    for mark in sorted({r["minutes"] for r in rows if r["arm"] != "warm start"}):
        by = {r["arm"]: r for r in rows if r["minutes"] == mark}
        if set(ARMS) <= set(by):
            diffs = {}
            for metric in sorted({c.split(" ")[1] for c in cols}, key=lambda x: int(x.split("@")[1])):
                diffs[metric] = statistics.mean(by["prorl"][c] - by["trl"][c] for c in cols if c.endswith(" " + metric))
            lines.append(f"{mark:g} min: prorl - TRL (mean over levels): "
                         + ", ".join(f"{k} {v:+.3f}" for k, v in diffs.items())
                         + f"; steps prorl {by['prorl']['steps']} vs TRL {by['trl']['steps']}")
    return lines


def plot(rows: list[dict], out_png: Path) -> None:
    """pass@1 and pass@k vs minutes: one line per (arm, level), the warm start at 0 on every line."""
    from matplotlib.figure import Figure

    cols = metric_cols(rows)
    metrics = sorted({c.split(" ")[1] for c in cols}, key=lambda x: int(x.split("@")[1]))
    levels = sorted({c.split(" ")[0] for c in cols})
    warm = next(r for r in rows if r["arm"] == "warm start")
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, len(metrics))
    for ax, metric in zip(axes, metrics):
        for arm, color in zip(ARMS, ("tab:orange", "tab:blue")):
            pts = sorted((r["minutes"], r) for r in rows if r["arm"] == arm)
            for level, style in zip(levels, ("-", "--", ":")):
                c = f"{level} {metric}"
                ax.plot([0.0] + [m for m, _ in pts], [warm[c]] + [r[c] for _, r in pts], style, color=color,
                        marker="o", label=f"{arm} {level}")
        ax.set(title=f"held-out {metric}", xlabel="wall-clock minutes", ylim=(0, 1))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/vs_trl_learning"))
    ap.add_argument("--task", choices=sorted(TASKS), default="chains",
                    help="chains: the shipped warm start on chain3-6; boundary: the boundary experiment's warm start, "
                         "mix and chain9 pass@64")
    ap.add_argument("--seed", type=int, default=0, help="both arms' seed")
    ap.add_argument("--warmstart", type=Path,
                    help="the boundary task's warm start (default runs/boundary_wide/warmstart, built when missing)")
    ap.add_argument("--minutes", type=float, help="training wall-clock per arm, the last mark (default: the task's)")
    ap.add_argument("--marks", type=float, nargs="+", help="checkpoint marks, minutes (default: the task's)")
    ap.add_argument("--eval-prompts", type=int, default=32, help="held-out prompts per level")
    ap.add_argument("-k", type=int, help="samples per held-out prompt (pass@1 and pass@k; default: the task's)")
    ap.add_argument("--eval-max-new-tokens", type=int, help="default: the task's")
    ap.add_argument("--trl-venv", type=Path, default=DEFAULT_TRL_VENV, help="TRL's venv (created when missing)")
    ap.add_argument("--eval-only", action="store_true", help="reuse OUT's trained arms; (re-)evaluate and report")
    ap.add_argument("--quick", action="store_true", help="smoke run: marks 0.2 0.4, evals 4 prompts x 4 samples")
    ap.add_argument("--report", action="store_true", help="store results.json as experiments/vs_trl_results/"
                    "TASK_seedS.json and regenerate RESULTS.md's section over the stored seeds")
    args = ap.parse_args(argv)
    task = TASKS[args.task]
    args.marks = list(args.marks or task.marks)
    args.minutes = args.minutes or args.marks[-1]
    args.k, args.eval_max_new_tokens = args.k or task.eval_k, args.eval_max_new_tokens or task.eval_max_new_tokens
    if args.quick:
        args.marks, args.minutes, args.eval_prompts, args.k = [0.2, 0.4], 0.4, 4, 4
    marks = sorted(m for m in args.marks if m < args.minutes) + [args.minutes]
    out, setting = args.out.resolve(), Setting(task=args.task, seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    warm = WARM
    if args.task == "boundary":
        from boundary_expansion import build_warmstart

        warm = build_warmstart((args.warmstart or ROOT / "runs" / "boundary_wide" / "warmstart").resolve(), quick=args.quick)
    t = time.time()
    if args.eval_only:
        arms = {arm: json.loads((out / f"{arm}-out.json").read_text()) for arm in ARMS}
    else:
        arms = run_arms(out, setting, marks, args.trl_venv, warm)
    for arm in ARMS:
        print(f"{arm}: first step done at {arms[arm]['first_step_end_s']:.0f} s; "
              + ", ".join(f"{m['minutes']:g} min: {m['steps']} steps" for m in arms[arm]["marks"]), flush=True)
    tasks = {lvl: (args.eval_prompts, args.k) for lvl in task.eval_levels}
    rows = evaluate_all(out, arms, tasks, args.eval_max_new_tokens, warm)
    md = table(rows) + "\n\n" + "\n".join(comparison(rows))
    results = {"setting": dataclasses.asdict(setting), "marks": [m["minutes"] for m in arms["prorl"]["marks"]],
               "eval_tasks": {k: list(v) for k, v in tasks.items()}, "eval_max_new_tokens": args.eval_max_new_tokens,
               "warmstart": str(warm), "arms": arms, "rows": rows,
               "prorl_overrides": prorl_overrides(setting, out / "prorl" / "run", warm)}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "table.md").write_text(md + "\n")
    plot(rows, out / "vs_trl_learning.png")
    print(md)
    print(f"done in {(time.time() - t) / 60:.1f} min; {out}/results.json, table.md, vs_trl_learning.png", flush=True)
    if args.report and not args.quick:
        import vs_trl_report

        (vs_trl_report.RESULTS_DIR / f"{args.task}_seed{args.seed}.json").write_text(json.dumps(results, indent=1))
        vs_trl_report.write()
    return results


def _worker_main(arm: str, spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    res = (trl_worker if arm == "trl" else prorl_worker)(spec)
    Path(out_path).write_text(json.dumps(res))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1].startswith("--_worker="):
        _worker_main(sys.argv[1].split("=", 1)[1], sys.argv[2], sys.argv[3])
    else:
        main()
