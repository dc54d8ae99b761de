"""``prorl eval MODEL DATASET [DATASET ...]``: pass@1, unbiased pass@k, maj@k, length, truncation.

MODEL is a hub name, a local HF directory or a training checkpoint (``runs/x/checkpoints/step_N``);
``builtin:tiny`` is the shipped warm start. A DATASET is a verl-schema parquet/JSONL file, a raw
math benchmark file with ``problem``/``answer`` fields (AIME, AMC, MATH-500 in ../shared/data/math),
or ``builtin:TASK`` for a built-in task's held-out split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="HF name, local directory, checkpoint directory, or builtin:tiny")
    p.add_argument("datasets", nargs="+", help="verl-schema files, raw math benchmark JSONL, or builtin:TASK")
    p.add_argument("-k", "--samples", type=int, default=16, help="samples per prompt (pass@k up to this k)")
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-new-tokens", type=int, default=32768)
    p.add_argument("--max-prompts", type=int, default=0, help="only the first N prompts per dataset (0 = all)")
    p.add_argument("--workers", type=int, default=2, help="verifier worker processes")
    p.add_argument("--timeout", type=float, default=10.0, help="per-verification limit, seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engine", choices=("hf", "vllm"), default="hf",
                   help="rollout engine, as rollout.engine (vllm: `bash scripts/install.sh --vllm`)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="the engine's weight dtype (bfloat16: faster on GPUs and AMX CPUs)")
    p.add_argument("-o", "--output", help="JSON results file (default: print only)")


def benchmark_rows(path: Path) -> list[dict]:
    """Raw benchmark rows (``problem``/``answer``) as verl-schema math rows."""
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        r = json.loads(line)
        answer = r["answer"]
        if isinstance(answer, float) and answer.is_integer():
            answer = int(answer)
        rows.append({"data_source": path.stem, "ability": "math",
                     "prompt": [{"role": "user", "content": f"{r['problem']}\n{MATH_INSTRUCTION}"}],
                     "reward_model": {"ground_truth": str(answer), "style": "rule"},
                     "extra_info": {"index": i, "id": r.get("id", r.get("unique_id"))}})
    return rows


def dataset_rows(spec: str, seed: int) -> list[dict]:
    from prorl.data.dataset import load_rows, read_rows

    if spec.startswith("builtin:"):
        from prorl.data.builtin_tasks import generate_rows

        return generate_rows(spec.split(":", 1)[1], 64, 1234, "val")
    path = Path(spec)
    first = read_rows(path)[:1]
    if first and "problem" in first[0] and "answer" in first[0] and "prompt" not in first[0]:
        return benchmark_rows(path)
    return load_rows([path])


def run(args: argparse.Namespace) -> int:
    import torch

    from transformers import AutoTokenizer

    from prorl.config import RolloutConfig
    from prorl.data.dataset import DataError, build_examples
    from prorl.rewards.scorer import RewardScorer
    from prorl.rollout import make_engine
    from prorl.trainer.evaluate import evaluate
    from prorl.trainer.setup import resolve_model_path

    torch.manual_seed(args.seed)
    try:
        rows = []
        for spec in args.datasets:
            r = dataset_rows(spec, args.seed)
            rows += r[:args.max_prompts] if args.max_prompts else r
    except (DataError, KeyError, FileNotFoundError, json.JSONDecodeError) as e:
        print(f"prorl eval: {e}", file=sys.stderr)
        return 2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    path = resolve_model_path(args.model)
    tok = AutoTokenizer.from_pretrained(path)
    examples, dropped = build_examples(rows, tok, max_prompt_length=10**9)
    engine = make_engine(RolloutConfig(engine=args.engine), path, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                         dtype=args.dtype, seed=args.seed, device=device)
    with RewardScorer(num_workers=args.workers, timeout_s=args.timeout) as scorer:
        results = evaluate(engine, tok, scorer, examples, n=args.samples, temperature=args.temperature,
                           top_p=args.top_p, max_new_tokens=args.max_new_tokens, progress=True)
    print_table(results)
    if args.output:
        out = {"model": args.model, "samples_per_prompt": args.samples, "temperature": args.temperature,
               "top_p": args.top_p, "results": results}
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(out, indent=1))
        print(f"results written to {args.output}")
    return 0


def print_table(results: dict[str, dict]) -> None:
    """One row per data_source; ``infra`` counts samples the reward machinery could not score
    (left out of every score column, see :mod:`prorl.trainer.evaluate`)."""
    keys = [k for k in next(iter(results.values())) if k.startswith(("pass@", "maj@"))] if results else []
    header = ["data_source", "prompts", *keys, "len", "trunc", "infra"]
    print("  ".join(f"{h:>12s}" for h in header))
    for ds, r in results.items():
        vals = [ds[-12:], str(r["num_prompts"]), *(_cell(r.get(k)) for k in keys),
                f"{r['mean_response_length']:.1f}", f"{r['truncation_rate']:.3f}", str(r["infra_errors"])]
        print("  ".join(f"{v:>12s}" for v in vals))
    lost = sum(r["infra_errors"] for ds, r in results.items() if ds != "all")
    if lost:
        print(f"{lost} samples could not be scored (infra_error: a reward worker died or the service was "
              "unreachable); the score columns are over the scored samples only")


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
