"""Shared machinery for the paper's experiment plan (``experiments/plan/*.py``).

An experiment is a base setting plus named arms (config overrides), run for several seeds. Each
(arm, seed) is a real ``prorl.trainer.controller.train`` run in ``OUT/<experiment>/<arm>/seed<S>/run``;
an interrupted experiment resumes from each run's latest checkpoint and skips finished runs.
After training, the final policy is evaluated on held-out problems (pass@1 and pass@k) and a
``summary.json`` is written per run; ``OUT/<experiment>/results.json`` gathers them, and
``experiments/plan/report.py`` turns the JSON into ``experiments/RESULTS.md`` and figures.

A *branch* arm continues another arm's run from its plateau: it copies that run directory, drops
the checkpoints after the plateau step and resumes with its own overrides (``{plateau}`` in an
override is replaced by the first step after the plateau).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
WARM = REPO / "prorl" / "assets" / "chain-warmstart"

# The common setting: the shipped chain warm start (fine-tuned on chain2-4 only), 16 prompts x 8
# samples, lr 2e-4, KL 1e-3, dynamic sampling, one thread per run (two runs share the 2 cores).
BASE = [
    f"model.path={WARM}", "data.builtin_train_size=3000", "data.builtin_val_size=64", "data.val_max_prompts=16",
    "data.max_prompt_length=64", "rollout.n=8", "rollout.temperature=1.2", "algo.kl_coef=1.0e-3",
    "algo.dynamic_sampling=true", "algo.max_gen_rounds=4", "actor.lr=2.0e-4", "actor.train_batch_size=16",
    "actor.ppo_mini_batch_size=8", "actor.micro_batch_size=128", "validation.every=10", "validation.n=4",
    "trainer.save_every=10", "trainer.keep_checkpoints=100", "trainer.threads=1", "trainer.tensorboard=false",
    "trainer.progress_bar=false", "trainer.max_minutes=0",
    # the stored results were measured before the defaults changed (issue 20 section 4): fp32 compute,
    # fp32 rollouts, the padded update; pinned so that the script reproduces them
    "model.autocast=none", "rollout.dtype=float32", "actor.max_tokens_per_micro_batch=0",
]
QUICK = ["data.builtin_train_size=200", "data.val_max_prompts=2", "validation.every=2", "trainer.save_every=2",
         "actor.train_batch_size=4", "actor.ppo_mini_batch_size=2", "rollout.n=4", "algo.max_gen_rounds=1"]


def tasks(levels: range, train: range | None = None) -> list[str]:
    """Overrides for chain levels ``levels`` (all validated), training on ``train`` (default: all)."""
    train = levels if train is None else train
    names = ", ".join(f"chain{k}" for k in levels)
    weights = ", ".join(f"builtin/chain{k}: 1.0" for k in train)
    return [f"data.builtin_tasks=[{names}]", f"data.domain_weights={{{weights}}}"]


@dataclass
class Arm:
    overrides: list[str] = field(default_factory=list)
    branch: str | None = None  # continue this arm's run from its plateau step
    same_as: tuple[str, str] | None = None  # (experiment, arm) with the identical setting: reuse its runs


@dataclass
class Experiment:
    name: str
    title: str
    setting: list[str]  # overrides on top of BASE
    arms: dict[str, Arm]
    steps: int
    eval_tasks: dict[str, tuple[int, int]]  # task -> (held-out prompts, samples per prompt)
    eval_max_new_tokens: int = 40
    seeds: tuple[int, ...] = (0, 1, 2)


# ---------------------------------------------------------------- one run


def slug(arm: str) -> str:
    """An arm's name as a directory name."""
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in arm.replace("/", "-")).strip("_")


def run_dir(out: Path, exp: Experiment, arm: str, seed: int) -> Path:
    return out / exp.name / slug(arm) / f"seed{seed}"


def overrides_for(exp: Experiment, arm: str, seed: int, out: Path, quick: bool, plateau: int | None = None) -> list[str]:
    steps = 4 if quick else exp.steps
    extra = [o.replace("{plateau}", str(plateau)) for o in exp.arms[arm].overrides]
    return [*BASE, *exp.setting, *(QUICK if quick else []), *extra, f"trainer.seed={seed}",
            f"trainer.total_steps={steps}", f"trainer.run_dir={run_dir(out, exp, arm, seed) / 'run'}"]


def val_curve(metrics: list[dict]) -> dict[int, float]:
    """Held-out pass@1 averaged over the validated levels, per validation step."""
    out = {}
    for m in metrics:
        accs = [v for k, v in m.items() if k.startswith("val-core/builtin/") and "/acc/mean@" in k]
        if accs:
            out[m["step"]] = statistics.mean(accs)
    return out


def plateau_step(val: dict[int, float], *, patience: int = 3, min_delta: float = 0.02) -> tuple[int, bool]:
    """The first validation step after which ``patience`` validations brought no gain of ``min_delta``
    over the best so far (the rule of ``reset.plateau_patience``); (midpoint, False) when none."""
    steps = sorted(val)
    for i in range(patience, len(steps) - 1):
        best_before = max(val[s] for s in steps[: i - patience + 1])
        if max(val[s] for s in steps[i - patience + 1: i + 1]) < best_before + min_delta:
            return steps[i], True
    return steps[len(steps) // 2], False


def branch_from(src: Path, dst: Path, step: int) -> None:
    """Copy run directory ``src`` into ``dst`` keeping only checkpoints up to ``step`` (resume truncates the logs)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("tensorboard"))
    for cp in (dst / "checkpoints").iterdir():
        if cp.name.startswith("step_") and int(cp.name.split("_")[1]) > step:
            shutil.rmtree(cp)
    events = dst / "events.jsonl"
    if events.exists():
        keep = [ln for ln in events.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
        events.write_text("".join(ln + "\n" for ln in keep))


def summarise_run(rd: Path) -> dict:
    """Curves and end-of-run numbers from a run directory's metrics and events."""
    from prorl.trainer.metrics import read_metrics

    metrics = read_metrics(rd)
    curves: dict[str, dict[int, float]] = {}
    for key in ("critic/score/mean", "actor/entropy", "actor/kl_loss", "actor/pg_clipfrac", "actor/pg_clipfrac_higher",
                "actor/pg_clipfrac_below_low_bound", "actor/pg_clipfrac_lower", "response_length/mean",
                "response_length/clip_ratio"):
        curves[key] = {m["step"]: m[key] for m in metrics if key in m}
    if not curves["actor/pg_clipfrac_below_low_bound"]:  # logged before the rename: pg_clipfrac_lower then meant
        curves["actor/pg_clipfrac_below_low_bound"] = curves["actor/pg_clipfrac_lower"]  # r < 1 - eps_low, A < 0,
        curves["actor/pg_clipfrac_lower"] = {}  # not verl's dual clip
    curves["val"] = val_curve(metrics)
    for m in metrics:
        for k, v in m.items():
            if k.startswith("val-core/builtin/") and "/acc/mean@" in k:
                curves.setdefault("val/" + k.split("/")[2], {})[m["step"]] = v
    events = [json.loads(ln) for ln in (rd / "events.jsonl").read_text().splitlines() if ln.strip()] \
        if (rd / "events.jsonl").exists() else []

    def tail(key: str, n: int = 5) -> float | None:
        xs = [curves[key][s] for s in sorted(curves[key])[-n:]]
        return statistics.mean(xs) if xs else None

    def mean(key: str) -> float | None:
        return statistics.mean(curves[key].values()) if curves[key] else None

    val = curves["val"]
    return {"curves": {k: {str(s): v for s, v in c.items()} for k, c in curves.items()},
            "resets": [{"step": e["step"], "cause": e.get("message", e.get("cause", ""))}
                       for e in events if e.get("type") == "reset"],
            "val_start": val[min(val)] if val else None, "val_end": val[max(val)] if val else None,
            "val_best": max(val.values()) if val else None,
            "score_start": statistics.mean(curves["critic/score/mean"][s] for s in sorted(curves["critic/score/mean"])[:5]),
            "score_end": tail("critic/score/mean"), "entropy_end": tail("actor/entropy"),
            "entropy_mean": mean("actor/entropy"), "clipfrac_mean": mean("actor/pg_clipfrac"),
            "clipfrac_higher_mean": mean("actor/pg_clipfrac_higher"),
            "clipfrac_below_low_bound_mean": mean("actor/pg_clipfrac_below_low_bound"),
            "clipfrac_dual_mean": mean("actor/pg_clipfrac_lower"),  # verl's pg_clipfrac_lower: the dual clip is active
            "length_end": tail("response_length/mean"), "truncated_end": tail("response_length/clip_ratio"),
            "truncated_max": max(curves["response_length/clip_ratio"].values(), default=None),
            "steps": max(curves["critic/score/mean"], default=0)}


def evaluate_policy(model: Path, eval_tasks: dict[str, tuple[int, int]], out_json: Path, max_new_tokens: int) -> dict:
    """Held-out pass@1 / pass@k of a checkpoint, ``prorl eval``'s settings (temperature 0.6, top-p 0.95)."""
    if str(HERE.parent) not in sys.path:  # experiments/boundary_expansion.py is a script, not a package
        sys.path.insert(0, str(HERE.parent))
    from boundary_expansion import eval_model

    res = eval_model(model, eval_tasks, out_json, max_new_tokens=max_new_tokens)
    return {ds.split("/")[-1]: {k: v for k, v in r.items() if k.startswith("pass@") or k == "mean_response_length"}
            for ds, r in res.items()}


def run_one(exp: Experiment, arm: str, seed: int, out: Path, quick: bool) -> dict:
    """Train (or resume, or skip when finished) one (arm, seed) and return its summary."""
    import torch

    torch.set_num_threads(1)
    from prorl.config import load_config
    from prorl.trainer.checkpoint import latest_checkpoint, list_checkpoints
    from prorl.trainer.controller import train

    base = run_dir(out, exp, arm, seed)
    summary_path = base / "summary.json"
    if summary_path.exists():
        return json.loads(summary_path.read_text())
    rd = base / "run"
    plateau = None
    t0 = time.time()
    if (alias := exp.arms[arm].same_as) is not None:  # an identical run of another experiment
        src = out / alias[0] / slug(alias[1]) / f"seed{seed}" / "summary.json"
        while not src.exists():
            time.sleep(5)
        summary = json.loads(src.read_text()) | {"arm": arm, "same_as": list(alias)}
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(json.dumps(summary))
        return summary
    if (src_arm := exp.arms[arm].branch) is not None:
        src = run_dir(out, exp, src_arm, seed)
        while not (src / "summary.json").exists():  # the arm it branches from runs earlier in the queue
            time.sleep(5)
        src_summary = json.loads((src / "summary.json").read_text())
        plateau = src_summary["plateau_step"]
        done = list_checkpoints(rd)
        if not done or done[-1][0] < plateau:  # not yet branched (or interrupted while copying)
            branch_from(src / "run", rd, plateau)
        plateau += 1
    cfg = load_config(None, overrides_for(exp, arm, seed, out, quick, plateau))
    resume = latest_checkpoint(rd) is not None
    train(cfg, resume=resume, overwrite=not resume, log=lambda *a: None)
    summary = summarise_run(rd) | {"arm": arm, "seed": seed, "minutes": (time.time() - t0) / 60}
    if plateau is not None:
        summary["branched_at"] = plateau - 1
    p, found = plateau_step({int(s): v for s, v in summary["curves"]["val"].items()})
    summary |= {"plateau_step": p, "plateau_found": found}
    final = latest_checkpoint(rd)
    tasks_ = {t: (2, 2) for t in exp.eval_tasks} if quick else exp.eval_tasks
    summary["eval"] = evaluate_policy(final, tasks_, base / "eval.json", exp.eval_max_new_tokens)
    summary_path.write_text(json.dumps(summary))
    print(f"{exp.name} / {arm} / seed {seed}: val {summary['val_start']:.3f} -> {summary['val_end']:.3f}, "
          f"{summary['minutes']:.1f} min", flush=True)
    return summary


def _job(run: Callable[..., Any], args: tuple) -> Any:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return run(*args)


def run_queue(run: Callable[..., Any], queue: list[tuple], jobs: int) -> None:
    """``run(*args)`` for each ``args`` of ``queue``, in order: in this process when ``jobs <= 1`` (as
    the tests do; the caller's torch thread count is restored after), else ``jobs`` spawned
    processes at a time (one thread each)."""
    if jobs <= 1:
        import torch

        threads = torch.get_num_threads()
        try:
            for a in queue:
                run(*a)
        finally:
            torch.set_num_threads(threads)
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            for f in [pool.submit(_job, run, a) for a in queue]:
                f.result()


def run_experiments(exps: list[Experiment], out: Path, *, quick: bool, jobs: int, seeds: list[int] | None = None) -> None:
    """Run every (experiment, arm, seed), ``jobs`` at a time (branch arms queued last), then gather results."""
    queue = []
    for exp in exps:
        for arm, spec in exp.arms.items():
            for seed in (seeds or ([0] if quick else list(exp.seeds))):
                queue.append((spec.branch is not None or spec.same_as is not None, (exp, arm, seed, out, quick)))
    queue.sort(key=lambda q: q[0])
    run_queue(run_one, [a for _, a in queue], jobs)
    for exp in exps:
        gather(exp, out)


def gather(exp: Experiment, out: Path) -> dict:
    """``OUT/<experiment>/results.json``: every finished run's summary, by arm."""
    results: dict = {"name": exp.name, "title": exp.title, "steps": exp.steps, "arms": {},
                     "eval_tasks": {t: list(v) for t, v in exp.eval_tasks.items()},
                     "setting": [*BASE, *exp.setting], "arm_overrides": {a: s.overrides for a, s in exp.arms.items()}}
    for arm in exp.arms:
        runs = []
        for seed_dir in sorted(run_dir(out, exp, arm, 0).parent.glob("seed*")):
            if (seed_dir / "summary.json").exists():
                runs.append(json.loads((seed_dir / "summary.json").read_text()))
        results["arms"][arm] = runs
    (out / exp.name).mkdir(parents=True, exist_ok=True)
    (out / exp.name / "results.json").write_text(json.dumps(results, indent=1))
    return results


def restore(exps: list[Experiment], out: Path, stored: Path = HERE / "results") -> int:
    """Write the stored results' run summaries (``stored/<experiment>/results.json``) into ``out``
    where ``out`` lacks them, so that a fresh checkout runs a new arm or seed next to the stored runs
    instead of redoing them (the run directories themselves are not kept). Returns how many."""
    targets = []
    for exp in exps:
        path = stored / exp.name / "results.json"
        if path.exists():
            targets += [(run_dir(out, exp, arm, int(r["seed"])) / "summary.json", r)
                        for arm, runs in json.loads(path.read_text())["arms"].items() if arm in exp.arms for r in runs]
    return write_missing(targets)


def write_missing(targets: list[tuple[Path, dict]]) -> int:
    """Write each ``(path, summary)`` whose path does not exist yet (a restore never overwrites a run of
    this checkout); returns how many were written."""
    missing = [(path, summary) for path, summary in targets if not path.exists()]
    for path, summary in missing:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary))
    return len(missing)


def main(exps: list[Experiment], argv: list[str] | None = None, doc: str = "") -> int:
    ap = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    ap.add_argument("--out", default="runs/plan", help="where runs and results.json go (resumes what is there)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 4 steps, one seed, tiny batches and evals")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once (one torch thread each)")
    ap.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 2 (quick: 0)")
    ap.add_argument("--report", action="store_true", help="also regenerate experiments/RESULTS.md and the figures")
    ap.add_argument("--restore", action="store_true",
                    help="first copy the stored runs' summaries (experiments/plan/results) into OUT: only new arms run")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.restore:
        print(f"restored {restore(exps, out)} stored run summaries into {out}", flush=True)
    run_experiments(exps, out, quick=args.quick, jobs=args.jobs, seeds=args.seeds)
    if args.report:
        from report import write_report

        write_report(out)
    return 0
