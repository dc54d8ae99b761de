"""``prorl data``: build verl-schema datasets (Reasoning Gym, hitori, HumanEval/MBPP, IFEval, built-in).

Split-producing subcommands (``reasoning-gym``, ``hitori``) write ``DIR/train.<fmt>`` and
``DIR/val.<fmt>``; converters write the single file ``-o PATH`` (parquet if it ends in ``.parquet``,
JSONL otherwise). Heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

_SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _split_outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=1000, help="training rows (default 1000)")
    p.add_argument("--val-size", type=int, default=100, help="validation rows, 0 for none (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", help="output directory (train.* and val.*); required")
    p.add_argument("--format", choices=("parquet", "jsonl"), default="parquet")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SOURCE", required=True)

    p = sub.add_parser("reasoning-gym", help="Reasoning Gym tasks (train + val, no shared question)")
    p.add_argument("--tasks", help="comma-separated task names (hitori allowed), or 'all'; --size is split evenly")
    p.add_argument("--config", default=None,
                   help='JSON object: task -> extra dataset config, e.g. \'{"sudoku": {"min_empty": 20}}\'')
    _split_outputs(p)
    p.add_argument("--list", action="store_true", help="print the available task names and exit")

    p = sub.add_parser("hitori", help="seeded hitori puzzles with unique solutions")
    p.add_argument("--min-size", type=int, default=4, help="smallest grid side (default 4)")
    p.add_argument("--max-size", type=int, default=6, help="largest grid side (default 6)")
    p.add_argument("--data-source", default="hitori", choices=("hitori", "reasoning_gym/hitori"))
    _split_outputs(p)

    for name, default, help_text in (
        ("humaneval", _SHARED / "code" / "HumanEval.jsonl", "HumanEval JSONL -> code rows"),
        ("mbpp", _SHARED / "code" / "sanitized-mbpp.json", "MBPP (sanitized JSON) -> code rows"),
        ("ifeval", _SHARED / "ifeval" / "input_data.jsonl", "IFEval input_data.jsonl -> ifeval rows"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--input", default=str(default), help=f"source file (default {default})")
        p.add_argument("-o", "--output", required=True, help="output file (.jsonl or .parquet)")

    p = sub.add_parser("builtin", help="built-in procedurally generated tasks (CPU runs)")
    p.add_argument("--task", required=True, help="task name: add, sort, or a counting-chain level chain2 ... chain9")
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train")
    p.add_argument("-o", "--output", required=True, help="output file (.jsonl or .parquet)")


def _write_splits(train: list[dict], val: list[dict], out_dir: str, fmt: str) -> None:
    from prorl.data.io import write_rows

    out = Path(out_dir)
    for name, rows in (("train", train), ("val", val)):
        if rows:
            write_rows(rows, out / f"{name}.{fmt}")
            print(f"wrote {len(rows)} rows to {out / f'{name}.{fmt}'}")


def _write_one(rows: list[dict], path: str) -> None:
    from prorl.data.io import write_rows

    write_rows(rows, path)
    print(f"wrote {len(rows)} rows to {path}")


def _reasoning_gym(args: argparse.Namespace) -> int:
    from prorl.data import reasoning_gym_tasks as rg

    if args.list:
        print("\n".join(rg.available_tasks()))
        return 0
    if not args.tasks or not args.output:
        raise ValueError("--tasks and -o/--output are required (see --list for task names)")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if tasks == ["all"]:
        tasks = rg.available_tasks()
    config = json.loads(args.config) if args.config else None
    if config is not None and not isinstance(config, dict):
        raise ValueError("--config must be a JSON object mapping task names to config dicts")
    train, val = rg.generate_splits(tasks, args.size, max(0, args.val_size), args.seed, config=config)
    _write_splits(train, val, args.output, args.format)
    return 0


def _hitori(args: argparse.Namespace) -> int:
    from prorl.data import hitori

    if not args.output:
        raise ValueError("-o/--output is required")
    kw = dict(min_size=args.min_size, max_size=args.max_size, data_source=args.data_source)
    train, val = hitori.generate_splits(args.size, max(0, args.val_size), args.seed, **kw)
    _write_splits(train, val, args.output, args.format)
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen source; errors in the inputs are reported, not raised."""
    try:
        cmd = args.data_command
        if cmd == "reasoning-gym":
            return _reasoning_gym(args)
        if cmd == "hitori":
            return _hitori(args)
        if cmd in ("humaneval", "mbpp"):
            from prorl.data import converters

            fn = converters.humaneval_to_rows if cmd == "humaneval" else converters.mbpp_to_rows
            _write_one(fn(args.input), args.output)
            return 0
        if cmd == "ifeval":
            from prorl.verifiers.ifeval import ifeval_to_rows

            _write_one(ifeval_to_rows(args.input), args.output)
            return 0
        if cmd == "builtin":
            from prorl.data.builtin_tasks import generate_rows

            _write_one(generate_rows(args.task, args.size, args.seed, args.split), args.output)
            return 0
    except (ValueError, KeyError, FileNotFoundError, json.JSONDecodeError) as e:
        print(f"prorl data {args.data_command}: error: {e}", file=sys.stderr)
        return 2
    raise AssertionError(f"unhandled data source {args.data_command!r}")
