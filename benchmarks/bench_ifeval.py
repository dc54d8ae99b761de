"""Throughput of the IFEval verifier on the official GPT-4 responses (541 prompts).

Usage: ``python benchmarks/bench_ifeval.py [--repeat N]``. Prints the four accuracies and the
time per response for strict-only rewards (what training uses) and strict+loose evaluation.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from prorl.verifiers.ifeval import evaluate_responses, ifeval_to_rows, verify_ifeval

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ifeval"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    inp, resp = DATA / "input_data.jsonl", DATA / "input_response_data_gpt4_20231107_145030.jsonl"
    rows = ifeval_to_rows(inp)
    by_prompt = {}
    with open(resp, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            by_prompt[r["prompt"]] = r["response"]
    pairs = [(by_prompt[r["prompt"][0]["content"]], r["reward_model"]["ground_truth"], r["extra_info"]) for r in rows]
    verify_ifeval(*pairs[0])  # warm up (langdetect loads its profiles once)

    t0 = time.perf_counter()
    for _ in range(args.repeat):
        scores = [verify_ifeval(*x).score for x in pairs]
    dt = (time.perf_counter() - t0) / (args.repeat * len(pairs))
    print(f"verify_ifeval strict: {1e3 * dt:.2f} ms/response, mean score {sum(scores) / len(scores):.4f}")

    t0 = time.perf_counter()
    res = evaluate_responses(inp, resp)
    dt = time.perf_counter() - t0
    print(f"evaluate_responses (strict+loose, {len(pairs)} prompts): {dt:.2f} s")
    for mode in ("strict", "loose"):
        print(f"  {mode}: prompt-level {100 * res[mode]['prompt_level']:.2f}  "
              f"instruction-level {100 * res[mode]['instruction_level']:.2f}")


if __name__ == "__main__":
    main()
