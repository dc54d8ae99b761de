"""The built-in preset's step time under prorl's defaults, the previous defaults, and with ``actor.compile``.

    python benchmarks/bench_defaults.py [--steps 40] [--rounds 2] [--threads 2] [--arms ...]

Each arm runs ``prorl train`` (the tiny preset: 16 prompts x 8 samples, hf engine) for ``--steps``
steps in a fresh process with validation and checkpoints off, the arms taking turns round by round
(so load from other processes hits them alike). Every compiling run gets an empty inductor cache
(``TORCHINDUCTOR_CACHE_DIR``): its first step carries the whole cold compile, the worst case.
Reported per arm: step 1 (start-up work that lands in it: compilation, first-call allocations),
the median of steps 2..N, process wall time, and for compiling arms the steps after which the
compile has paid for itself against ``defaults``: (extra step-1 seconds) / (seconds saved per step).

Arms:
- ``previous``: the defaults before issue 20 section 4: fp32 compute, fp32 rollouts, padded update;
- ``defaults``: what ``prorl train`` runs (bf16 where native, the padding-free update);
- ``compile``: the defaults + ``actor.compile=true model.attn_implementation=eager``;
- ``packed_fp32`` / ``bf16_padded``: one of the two default changes without the other.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARMS: dict[str, list[str]] = {
    "previous": ["model.autocast=none", "rollout.dtype=float32", "actor.max_tokens_per_micro_batch=0"],
    "defaults": [],
    "compile": ["actor.compile=true", "model.attn_implementation=eager"],
    # the two changes one at a time
    "packed_fp32": ["model.autocast=none", "rollout.dtype=float32"],
    "bf16_padded": ["actor.max_tokens_per_micro_batch=0"],
}
RUN = ["validation.every=0", "validation.at_start=false", "trainer.save_every=0", "trainer.tensorboard=false",
       "trainer.progress_bar=false", "trainer.max_minutes=0"]


def run_arm(arm: str, steps: int, threads: int, tmp: Path) -> dict:
    """One ``prorl train`` process; its per-step seconds from metrics.jsonl and its wall time."""
    run_dir = tmp / f"{arm}-{time.monotonic_ns()}"
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(run_dir / "inductor-cache"), "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "prorl", "train", *RUN, *ARMS[arm], f"trainer.total_steps={steps}",
           f"trainer.threads={threads}", f"trainer.run_dir={run_dir}"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    step_s = [m["timing_s/step"] for m in rows if "timing_s/step" in m]
    return {"step_s": step_s, "wall_s": wall}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arms", nargs="+", choices=list(ARMS), default=["previous", "defaults", "compile"])
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    args = ap.parse_args(argv)
    results: dict[str, list[dict]] = {a: [] for a in args.arms}
    with tempfile.TemporaryDirectory(prefix="bench_defaults_") as tmp:
        for rnd in range(args.rounds):
            for arm in args.arms if rnd % 2 == 0 else args.arms[::-1]:
                r = run_arm(arm, args.steps, args.threads, Path(tmp))
                results[arm].append(r)
                print(f"round {rnd + 1} {arm:9s} step 1 {r['step_s'][0]:6.2f} s, median 2..N "
                      f"{statistics.median(r['step_s'][1:]):.3f} s, wall {r['wall_s']:.0f} s", flush=True)
    report = {}
    for arm, runs in results.items():
        report[arm] = {"step1_s": statistics.median(r["step_s"][0] for r in runs),
                       "median_s": statistics.median(s for r in runs for s in r["step_s"][1:]),
                       "wall_s": statistics.median(r["wall_s"] for r in runs)}
    base = report.get("defaults")
    print(f"\n{args.steps} steps x {args.rounds} rounds, {args.threads} threads; medians over rounds")
    print(f"{'arm':9s} {'step 1 s':>9s} {'s/step (2..N)':>14s} {'vs defaults':>12s} {'wall s':>7s} {'payback steps':>14s}")
    for arm, r in report.items():
        ratio = base["median_s"] / r["median_s"] if base else float("nan")
        saved = (base["median_s"] - r["median_s"]) if base else 0.0
        extra = (r["step1_s"] - base["step1_s"]) if base else 0.0
        payback = "-" if arm == "defaults" or not base else (f"{max(extra, 0.0) / saved:.0f}" if saved > 0 else "never")
        r["payback_steps"] = payback
        print(f"{arm:9s} {r['step1_s']:9.2f} {r['median_s']:14.3f} {ratio:11.2f}x {r['wall_s']:7.0f} {payback:>14s}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "report": report,
                                         "raw": results}, indent=1))
    return report


if __name__ == "__main__":
    main()
