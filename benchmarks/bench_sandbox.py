"""Sandbox throughput: start-up overhead, trivial executions/s with N workers, and code
verifications/s on a HumanEval sample.

    python benchmarks/bench_sandbox.py [--workers 2] [--repeats 5] [--he-sample 20]

Prints medians over ``--repeats`` repeats. The project floor is 40 trivial executions/s with
2 workers on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prorl.sandbox import available, run_python  # noqa: E402
from prorl.verifiers.code import verify_code  # noqa: E402

HUMANEVAL = REPO / ".." / "shared" / "data" / "code" / "HumanEval.jsonl"


def startup_ms(n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        r = run_python("pass")
        times.append(time.perf_counter() - t)
        assert r.ok, r
    return statistics.median(times) * 1000


def execs_per_s(workers: int, n: int) -> float:
    def one(_: int) -> bool:
        return run_python("print(sum(range(100)))").stdout == b"4950\n"

    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        ok = list(pool.map(one, range(n)))
    dt = time.perf_counter() - t
    assert all(ok)
    return n / dt


def verifications_per_s(workers: int, rows: list[dict]) -> tuple[float, float]:
    def one(r: dict) -> float:
        resp = "```python\n" + r["prompt"] + r["canonical_solution"] + "\n```"
        gt = {"test": r["test"], "entry_point": r["entry_point"], "prompt": r["prompt"]}
        return verify_code(resp, gt, {}).score

    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        scores = list(pool.map(one, rows))
    dt = time.perf_counter() - t
    return len(rows) / dt, sum(scores) / len(scores)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--execs", type=int, default=100, help="trivial runs per repeat")
    ap.add_argument("--he-sample", type=int, default=20, help="HumanEval problems per repeat")
    args = ap.parse_args()
    ok, why = available()
    print(f"sandbox: {why}")
    if not ok:
        return 1
    run_python("pass")  # warm the probe cache
    start = [startup_ms(10) for _ in range(args.repeats)]
    rates = [execs_per_s(args.workers, args.execs) for _ in range(args.repeats)]
    result = {"startup_ms_median": statistics.median(start),
              "startup_ms_all": [round(x, 1) for x in start],
              f"trivial_execs_per_s_{args.workers}_workers": statistics.median(rates),
              "trivial_execs_all": [round(x, 1) for x in rates]}
    if HUMANEVAL.exists():
        rows = [json.loads(x) for x in HUMANEVAL.read_text().splitlines() if x.strip()]
        step = max(1, len(rows) // args.he_sample)
        sample = rows[::step][:args.he_sample]
        ver = [verifications_per_s(args.workers, sample) for _ in range(args.repeats)]
        result[f"humaneval_verifications_per_s_{args.workers}_workers"] = \
            statistics.median(v for v, _ in ver)
        result["humaneval_verifications_all"] = [round(v, 1) for v, _ in ver]
        result["humaneval_mean_score"] = ver[0][1]
    for k, v in result.items():
        print(f"{k}: {round(v, 2) if isinstance(v, float) else v}")
    floor = result[f"trivial_execs_per_s_{args.workers}_workers"]
    print(f"floor 40/s with 2 workers: {'OK' if floor >= 40 else 'BELOW'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
