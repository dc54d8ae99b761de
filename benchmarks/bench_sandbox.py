"""Sandbox throughput: start-up overhead, trivial executions/s with N workers, and code
verifications/s on a HumanEval sample, with and without the seccomp syscall filter.

    python benchmarks/bench_sandbox.py [--workers 2] [--repeats 5] [--he-sample 20]
                                       [--seccomp both|on|off]

Prints medians over ``--repeats`` repeats per arm; with ``--seccomp both`` (the default) the two
arms take turns run by run (start-up, syscall cost) or chunk by chunk (executions/s), so that
the load of a shared machine hits both alike, and the filter's overhead is printed. The project floor is 40 trivial executions/s with 2 workers on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prorl.sandbox import Limits, available, backend, configure, run_python  # noqa: E402
from prorl.sandbox import runner  # noqa: E402
from prorl.sandbox.policy import Backend  # noqa: E402
from prorl.sandbox.runner import degraded_backend  # noqa: E402
from prorl.verifiers.code import verify_code  # noqa: E402

HUMANEVAL = REPO / ".." / "shared" / "data" / "code" / "HumanEval.jsonl"


def paired(code: str, backends: dict[str, Backend], n: int) -> dict[str, list[float]]:
    """Run ``code`` n times per arm, the arms interleaved run by run (so that the load of a
    shared machine hits both alike); wall seconds per run and the program's stdout."""
    out: dict[str, list] = {arm: [] for arm in backends}
    arms = list(backends)
    for i in range(n):
        for arm in (arms if i % 2 == 0 else arms[::-1]):
            t = time.perf_counter()
            # benchmark only: the two backends side by side, bypassing the process-wide choice
            r = runner._run(backends[arm], code, b"", Limits(wall_s=60, cpu_s=60), None, ())
            assert r.ok, r.stderr_text
            out[arm].append((time.perf_counter() - t, r.stdout_text))
    return out


def execs_per_s(workers: int, n: int, backends: dict[str, Backend],
                chunks: int = 10) -> dict[str, float]:
    """Trivial runs per second with ``workers`` threads, per arm; the arms take turns in
    ``chunks`` chunks (order alternating) so that changing load on the machine hits both."""
    def one(b: Backend) -> bool:
        r = runner._run(b, "print(sum(range(100)))", b"", Limits(), None, ())
        return r.stdout == b"4950\n"

    spent = {arm: 0.0 for arm in backends}
    arms = list(backends)
    per_chunk = max(1, n // chunks)
    with ThreadPoolExecutor(workers) as pool:
        for c in range(chunks):
            for arm in (arms if c % 2 == 0 else arms[::-1]):
                t = time.perf_counter()
                ok = list(pool.map(one, [backends[arm]] * per_chunk))
                spent[arm] += time.perf_counter() - t
                assert all(ok)
    return {arm: per_chunk * chunks / spent[arm] for arm in arms}


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


# CPU time (not wall time) of one cheap syscall from Python inside the sandbox: what the filter
# adds to every call a program makes, robust to other load on the machine (best of 3 runs)
SYSCALL_LOOP = """
import os, time
n = 200000
t = time.process_time()
for _ in range(n):
    os.getppid()
print((time.process_time() - t) / n * 1e9)
"""


def use_filter(on: bool) -> str:
    """Switch the sandbox to the arm; the "off" arm is bwrap with everything but the filter."""
    configure(seccomp=on, allow_unsafe=not on)
    ok, why = available()
    if on:
        assert ok, why
        return why
    b = degraded_backend()
    assert b is not None and b.kind == "bwrap" and not b.seccomp, why
    run_python("pass")  # warm the probe cache (and the one-time warning)
    return b.describe()


def humaneval_arm(args: argparse.Namespace, sample: list[dict], arm: str) -> dict[str, float]:
    """Code verifications go through the process-wide sandbox: switch it to the arm."""
    if not sample:
        return {}
    use_filter(arm == "on")
    rate, score = verifications_per_s(args.workers, sample)
    return {"humaneval_verifications_per_s": rate, "humaneval_mean_score": score}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--execs", type=int, default=100, help="trivial runs per repeat")
    ap.add_argument("--he-sample", type=int, default=20, help="HumanEval problems per repeat")
    ap.add_argument("--seccomp", choices=("both", "on", "off"), default="both",
                    help="arms to measure: with the syscall filter, without it, or both")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    arms = {"both": ["on", "off"], "on": ["on"], "off": ["off"]}[args.seccomp]
    sample: list[dict] = []
    if HUMANEVAL.exists() and args.he_sample > 0:
        rows = [json.loads(x) for x in HUMANEVAL.read_text().splitlines() if x.strip()]
        step = max(1, len(rows) // args.he_sample)
        sample = rows[::step][:args.he_sample]
    for arm in arms:
        print(f"sandbox (filter {arm}): {use_filter(arm == 'on')}")
    if "on" in arms:
        use_filter(True)
        base = backend()
    else:
        base = degraded_backend()
    backends = {arm: replace(base, seccomp=arm == "on") for arm in arms}
    results: dict[str, list[dict[str, float]]] = {arm: [] for arm in arms}
    for _ in range(args.repeats):
        start = paired("pass", backends, 10)
        calls = paired(SYSCALL_LOOP, backends, 3)
        rates = execs_per_s(args.workers, args.execs, backends)
        for arm in arms:
            results[arm].append({
                "startup_ms": statistics.median(t for t, _ in start[arm]) * 1000,
                "getppid_cpu_ns_inside": min(float(out) for _, out in calls[arm]),
                "trivial_execs_per_s": rates[arm], **humaneval_arm(args, sample, arm)})
    medians = {}
    for arm in arms:
        med = {k: statistics.median(r[k] for r in results[arm]) for k in results[arm][0]}
        medians[arm] = med
        print(f"--- seccomp filter {arm} (medians of {args.repeats}, {args.workers} workers)")
        for k, v in med.items():
            runs = [round(r[k], 1) for r in results[arm]]
            print(f"{k}: {v:.2f}  (all: {runs})")
        floor = med["trivial_execs_per_s"]
        print(f"floor 40/s with 2 workers: {'OK' if floor >= 40 else 'BELOW'}")
    if len(arms) == 2:
        on, off = medians["on"], medians["off"]
        print("--- filter overhead (on vs off)")
        for k, unit in (("startup_ms", "ms"), ("getppid_cpu_ns_inside", "ns")):
            print(f"{k}: {on[k] - off[k]:+.2f} {unit} ({100 * (on[k] / off[k] - 1):+.1f}%)")
        for k in ("trivial_execs_per_s", "humaneval_verifications_per_s"):
            if k in on:
                print(f"{k}: {100 * (on[k] / off[k] - 1):+.1f}%")
    configure(seccomp=True, allow_unsafe=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
