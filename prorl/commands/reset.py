"""``prorl reset RUN_DIR [--cause TEXT]``: ask a running job to hard-reset its reference policy
(and optimizer, as configured) before its next step. The loop checks ``RUN_DIR/RESET_REQUEST``
between steps; ``kill -USR1 <pid>`` does the same."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="the running job's trainer.run_dir")
    p.add_argument("--cause", default="requested by prorl reset", help="reason recorded in events.jsonl")


def run(args: argparse.Namespace) -> int:
    from prorl.trainer.setup import RESET_REQUEST

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").exists():
        print(f"prorl reset: {run_dir} is not a prorl run directory (no config.yaml)")
        return 2
    (run_dir / RESET_REQUEST).write_text(args.cause + "\n")
    print(f"reset requested: {run_dir / RESET_REQUEST}")
    return 0
