"""The built-in preset (`prorl train`) in sync and async modes over seeds: how much held-out accuracy
each mode gains in the preset's 150 steps, and how much that varies from run to run.

Why: the slow test `tests/trainer/test_default_run.py::test_default_preset_learns_in_async_mode`
asks for a gain on every built-in task; its threshold and statistic have to come from measured
run-to-run spread, not one run. Async runs are not reproducible even on one seed (which groups
are ready when a batch is taken depends on timing), so each (arm, seed) may be repeated
(`--repeats`).

Arms (each `python -m prorl train` on the preset plus these overrides, 150 steps, one at a time):

* ``sync``: the default run;
* ``async_k0``: ``rollout.mode=async rollout.max_staleness=0`` (on-policy);
* ``async_k1``: ``rollout.mode=async``, the old policy the trainer's recompute
  (``algo.use_rollout_logprobs_as_old=false``, the async default before these runs), no correction;
* ``async_k1_tis``: the same with ``algo.rollout_correction=tis`` (AReaL's decoupled objective);
* ``async_k1_behaviour``: ``rollout.mode=async algo.use_rollout_logprobs_as_old=true`` (PPO's clip
  relative to the sampling policy: what async with K >= 1 now does by default).

The stored runs of ``async_k1`` and ``async_k1_tis`` ran before the default changed, without the
explicit ``=false`` (the default was false then): the same setting.

Per run and task: the first validation (step 0), the last, and the mean of the last three
(steps 130-150: one validation is 64 prompts x 4 samples, and a 0.8M-parameter policy moves by
several points between looks). ``OUT/<arm>/seed<S>[_r<R>]`` holds each run; finished runs are
skipped, and the table covers every finished run under ``OUT`` (runs of earlier invocations
included). ``--report`` writes ``experiments/async_results/preset.json``.

    python experiments/async_preset.py --out runs/async_preset --seeds 1 2 3 4 --report
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from prorl.trainer.metrics import read_metrics

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "async_results" / "preset.json"
STEPS = 150
TAIL = 3  # validations averaged at the end of a run
ARMS: dict[str, list[str]] = {
    "sync": [],
    "async_k0": ["rollout.mode=async", "rollout.max_staleness=0"],
    "async_k1": ["rollout.mode=async", "algo.rollout_correction=none", "algo.use_rollout_logprobs_as_old=false"],
    "async_k1_tis": ["rollout.mode=async", "algo.rollout_correction=tis", "algo.use_rollout_logprobs_as_old=false"],
    "async_k1_behaviour": ["rollout.mode=async", "algo.rollout_correction=none", "algo.use_rollout_logprobs_as_old=true"],
}
TASKS = ("add", "sort")


def run_dir(out: Path, arm: str, seed: int, repeat: int) -> Path:
    return out / arm / (f"seed{seed}" if repeat == 0 else f"seed{seed}_r{repeat}")


def _seed_repeat(name: str) -> tuple[int, int]:
    """``seed3`` -> (3, 0), ``seed0_r2`` -> (0, 2)."""
    seed, _, rep = name.removeprefix("seed").partition("_r")
    return int(seed), int(rep or 0)


def curves(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Held-out acc (mean@4) per task, as (step, value), from a run's metrics.jsonl (none yet: empty)."""
    metrics = read_metrics(path)
    keys = {t: f"val-core/builtin/{t}/acc/mean@4" for t in TASKS}
    return {t: [(int(m["step"]), float(m[k])) for m in metrics if k in m] for t, k in keys.items()}


def finished(c: dict[str, list[tuple[int, float]]]) -> bool:
    """Whether these curves (:func:`curves`) reach the last step on every task."""
    return all(c[t] and c[t][-1][0] >= STEPS for t in TASKS)


def summarise(c: dict[str, list[tuple[int, float]]]) -> dict:
    res = {}
    for t in TASKS:
        vals = [v for _, v in c[t]]
        tail = statistics.mean(vals[-TAIL:])
        res[t] = {"first": vals[0], "last": vals[-1], "tail_mean": tail,
                  "gain_last": vals[-1] - vals[0], "gain_tail": tail - vals[0], "curve": c[t]}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/async_preset"))
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4])
    ap.add_argument("--repeats", type=int, default=1, help="runs per (arm, seed)")
    ap.add_argument("--report", action="store_true", help=f"write {RESULTS.relative_to(HERE.parent)}")
    args = ap.parse_args()
    runs = []
    for seed in args.seeds:
        for arm in args.arms:
            for r in range(args.repeats):
                path = run_dir(args.out, arm, seed, r)
                if not finished(curves(path)):
                    cmd = [sys.executable, "-m", "prorl", "train", *ARMS[arm], f"trainer.seed={seed}",
                           f"trainer.total_steps={STEPS}", "trainer.progress_bar=false", f"trainer.run_dir={path}"]
                    print("+", " ".join(cmd[2:]), flush=True)
                    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    for arm in args.arms:  # every finished run of the arm under OUT (earlier invocations' seeds and repeats too)
        for path in sorted((args.out / arm).glob("seed*"), key=lambda p: _seed_repeat(p.name)):
            c = curves(path)
            if finished(c):
                seed, r = _seed_repeat(path.name)
                runs.append({"arm": arm, "seed": seed, "repeat": r, **summarise(c)})
    print(f"\nheld-out gain over {STEPS} steps (mean of the last {TAIL} validations - step 0), per run:")
    for arm in args.arms:
        mine = [x for x in runs if x["arm"] == arm]
        for t in TASKS:
            gains = [x[t]["gain_tail"] for x in mine]
            sd = statistics.stdev(gains) if len(gains) > 1 else 0.0
            print(f"  {arm:20s} {t:5s} {statistics.mean(gains):+.3f} ± {sd:.3f}  min {min(gains):+.3f}  "
                  f"[{' '.join(f'{g:+.3f}' for g in gains)}]  tail {statistics.mean(x[t]['tail_mean'] for x in mine):.3f}")
    if args.report:
        RESULTS.write_text(json.dumps({"steps": STEPS, "tail": TAIL, "arms": ARMS, "runs": runs}, indent=1) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
