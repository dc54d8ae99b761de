"""``prorl sft``: supervised warm start.

``prorl sft --builtin -o DIR`` rebuilds the shipped tiny warm start (``prorl/assets/tiny-warmstart``)
from scratch: tokenizer, model, and fine-tuning on the built-in tasks' noisy teacher.
``--tasks chain2 chain3 chain4`` builds another warm start the same way on the named tasks (the
boundary-expansion warm start, ``prorl/assets/chain-warmstart``; the tokenizer is then trained on
those tasks' text).
``prorl sft --model PATH --data rows.jsonl -o DIR`` fine-tunes any HF model on verl-schema rows
that carry a ``response`` field (the target completion).
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, help="output directory (HF format)")
    p.add_argument("--builtin", action="store_true", help="build the tiny warm start from scratch on the built-in tasks")
    p.add_argument("--model", help="HF model name or path to fine-tune (with --data)")
    p.add_argument("--data", nargs="*", default=[], help="verl-schema JSONL/parquet rows with a 'response' field")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--correct-prob", type=float, default=0.3, help="--builtin: how often the noisy teacher is right")
    p.add_argument("--tasks", nargs="+", default=["add", "sort"],
                   help="--builtin: the built-in tasks to fine-tune on, e.g. chain2 chain3 chain4 (the easy chain levels)")
    p.add_argument("--size-per-task", type=int, default=4000, help="--builtin: training problems per task")
    p.add_argument("--number-coverage", type=float, default=0.0,
                   help="--builtin, chain tasks: add this fraction of --size-per-task problems that start above the "
                        "task's range (numbers up to 99, in no split), so the warm start has written large numbers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")


def run(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.builtin:
        from prorl.trainer.sft import build_builtin_warmstart

        from prorl.data.builtin_tasks import TASKS

        unknown = [t for t in args.tasks if t not in TASKS]
        if unknown:
            print(f"prorl sft: unknown built-in task(s) {unknown}; available: {', '.join(sorted(TASKS))}")
            return 2
        out = build_builtin_warmstart(args.output, tasks=args.tasks, correct_prob=args.correct_prob,
                                      size_per_task=args.size_per_task, steps=args.steps,
                                      batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                      number_coverage=args.number_coverage)
        print(f"warm start written to {out}")
        return 0
    if not args.model or not args.data:
        print("prorl sft: give --builtin, or --model and --data")
        return 2
    from prorl.data.dataset import DataError, load_rows
    from prorl.models.policy import load_policy, no_transformers_progress_bars
    from prorl.trainer.sft import encode_pairs, sft

    rows = load_rows(args.data)
    missing = [i for i, r in enumerate(rows, 1) if not isinstance(r.get("response"), str)]
    if missing:
        raise DataError(f"rows {missing[:5]} have no string 'response' field")
    from prorl.trainer.setup import resolve_model_path

    model, tok = load_policy(resolve_model_path(args.model))
    sft(model, tok, encode_pairs(tok, [(r["prompt"], r["response"]) for r in rows]), steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    with no_transformers_progress_bars():  # no "Writing model shards" bar
        model.save_pretrained(args.output, safe_serialization=True)
    tok.save_pretrained(args.output)
    print(f"model written to {args.output}")
    return 0
