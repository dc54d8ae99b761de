"""Verifications per second, per domain, through the hard-limited worker pool.

    python benchmarks/bench_verifiers.py [--workers 2] [--repeats 3] [--domains math,builtin,...]

Each repeat starts a *fresh* pool (cold per-process caches; start-up is not timed), scores the
domain's items and reports the median wall-clock rate, plus the CPU time per item (workers and
this process): N / (CPU-s per item) is the rate on N cores that nobody else is using. Math items come from MATH-500 (its real solution
texts, reformatted answers, wrong answers and unanswered responses); other domains are built from
their data modules and skipped with the reason when something is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"
sys.path.insert(0, str(REPO))


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def math_items() -> list[dict]:
    """4 responses per MATH-500 problem: its solution text, a reformatted answer, a wrong answer, no answer."""
    rows = _jsonl(DATA / "math" / "math500.jsonl")
    items = []
    for i, r in enumerate(rows):
        gold = r["answer"]
        other = rows[(i + 1) % len(rows)]["answer"]
        alt = gold.replace("\\dfrac", "\\frac").replace("\\left", "").replace("\\right", "").replace(" ", "")
        for resp in (
            r["solution"],
            f"Let me think step by step. ... Therefore the final answer is $\\boxed{{{alt}}}$.",
            f"{r['problem'][:300]} ... so the answer is \\boxed{{{other}}}.",
            re.sub(r"\\boxed", "", r["solution"]),
        ):
            items.append({"data_source": "math500", "ability": "math", "response": resp, "ground_truth": gold,
                          "extra_info": {}})
    return items


def builtin_items() -> list[dict]:
    from prorl.data.builtin_tasks import generate_rows, teacher_response

    rng = random.Random(0)
    items = []
    for task in ("add", "sort"):
        for row in generate_rows(task, 500, 0, "train"):
            gt = row["reward_model"]["ground_truth"]
            items.append({"data_source": row["data_source"], "ability": row["ability"], "ground_truth": gt,
                          "response": teacher_response(task, gt, rng, 0.5), "extra_info": row["extra_info"]})
    return items


def stem_items() -> list[dict]:
    rng = random.Random(0)
    items = []
    for i in range(1000):
        gold, said = rng.choice("ABCD"), rng.choice("ABCD")
        resp = rng.choice([f"Thinking... the correct answer is ({said}).", f"Answer: {said}", f"\\boxed{{{said}}}"])
        items.append({"data_source": "gpqa", "ability": "stem", "response": resp, "ground_truth": gold,
                      "extra_info": {}})
    return items


def logic_items() -> list[dict]:
    import reasoning_gym

    from prorl.data.reasoning_gym_tasks import make_row

    items = []
    for task in ("basic_arithmetic", "leg_counting"):
        ds = reasoning_gym.create_dataset(task, size=250, seed=0)
        for i, entry in enumerate(ds):
            row = make_row(task, entry, index=i, seed=0, split="train")
            ans = entry["answer"] if i % 2 == 0 else "0"
            items.append({"data_source": row["data_source"], "ability": row["ability"],
                          "response": f"... <answer>{ans}</answer>",
                          "ground_truth": row["reward_model"]["ground_truth"], "extra_info": row["extra_info"]})
    return items


def ifeval_items() -> list[dict]:
    specs = {r["prompt"]: r for r in _jsonl(DATA / "ifeval" / "input_data.jsonl")}
    items = []
    for r in _jsonl(DATA / "ifeval" / "input_response_data_gpt4_20231107_145030.jsonl"):
        spec = specs[r["prompt"]]
        gt = {"instruction_id_list": spec["instruction_id_list"], "kwargs": spec["kwargs"]}
        items.append({"data_source": "ifeval", "ability": "ifeval", "response": r["response"], "ground_truth": gt,
                      "extra_info": {}})
    return items


def code_items() -> list[dict]:
    from prorl.data.converters import humaneval_to_rows

    items = []
    for i, row in enumerate(humaneval_to_rows(DATA / "code" / "HumanEval.jsonl")[:40]):
        gt = row["reward_model"]["ground_truth"]  # every other response is a stub that fails the tests
        code = row["extra_info"]["reference"] if i % 2 == 0 else json.loads(gt)["prompt"] + "    pass\n"
        items.append({"data_source": row["data_source"], "ability": row["ability"],
                      "response": f"```python\n{code}```", "ground_truth": row["reward_model"]["ground_truth"],
                      "extra_info": row["extra_info"]})
    return items


BUILDERS: dict[str, Callable[[], list[dict]]] = {
    "math": math_items, "builtin": builtin_items, "stem": stem_items, "logic": logic_items,
    "ifeval": ifeval_items, "code": code_items,
}


def _cpu_s(pid: int) -> float:
    """CPU seconds of a process and its reaped children (e.g. sandboxes): utime+stime+cutime+cstime."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def bench(domain: str, items: list[dict], workers: int, repeats: int, timeout_s: float) -> dict:
    """Wall-clock rate, and CPU seconds per item (workers + this process), which does not depend
    on how busy other users keep the cores."""
    from prorl.rewards.pool import VerifierPool

    rates, cpu_per_item, statuses = [], [], Counter()
    for _ in range(repeats):
        with VerifierPool(workers, timeout_s) as pool:
            if not pool.wait_ready(120):
                raise RuntimeError("workers did not start")
            pids = pool.worker_pids()
            cpu0 = sum(_cpu_s(p) for p in pids) + time.process_time()
            t0 = time.perf_counter()
            out = pool.map(items)
            dt = time.perf_counter() - t0
            cpu = sum(_cpu_s(p) for p in pids) + time.process_time() - cpu0
        rates.append(len(items) / dt)
        cpu_per_item.append(cpu / len(items))
        statuses = Counter(v.status.value for v in out)
    cpu_med = statistics.median(cpu_per_item)
    return {"domain": domain, "items": len(items), "median_per_s": statistics.median(rates),
            "runs_per_s": [round(r, 1) for r in rates], "cpu_ms_per_item": 1000 * cpu_med,
            "cpu_bound_per_s": workers / cpu_med if cpu_med > 0 else float("inf"), "statuses": dict(statuses)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--domains", default=",".join(BUILDERS))
    ap.add_argument("--json", action="store_true", help="print one JSON object per domain")
    args = ap.parse_args(argv)
    print(f"# verifier throughput, pool of {args.workers} workers, median of {args.repeats} fresh-pool runs")
    for domain in args.domains.split(","):
        try:
            items = BUILDERS[domain]()
        except Exception as e:  # a domain whose module or data is missing is skipped, not fatal
            print(f"{domain:8s} skipped: {type(e).__name__}: {e}")
            continue
        res = bench(domain, items, args.workers, args.repeats, args.timeout)
        if args.json:
            print(json.dumps(res))
        else:
            print(f"{domain:8s} {res['median_per_s']:8.1f} verifications/s  ({res['items']} items; runs "
                  f"{res['runs_per_s']}; {res['cpu_ms_per_item']:.2f} CPU-ms/item, i.e. "
                  f"~{res['cpu_bound_per_s']:.0f}/s on {args.workers} idle cores; statuses {res['statuses']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
