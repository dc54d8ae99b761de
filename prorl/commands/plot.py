"""``prorl plot``: a run's dashboard PNG, or pass@k curves comparing eval JSONs.

    prorl plot RUN_DIR [-o out.png]
    prorl plot --passk A.json B.json [--labels base trained] -o out.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the plot options (no heavy imports here)."""
    parser.add_argument("run_dir", nargs="?", help="run directory with metrics.jsonl / events.jsonl")
    parser.add_argument(
        "--passk", nargs="+", metavar="EVAL_JSON", help="plot pass@k curves of these eval JSONs"
    )
    parser.add_argument("--labels", nargs="+", help="legend labels for --passk (one per file)")
    parser.add_argument(
        "-o",
        "--output",
        help="output PNG (default: RUN_DIR/dashboard.png, or passk.png beside the first JSON)",
    )


def run(args: argparse.Namespace) -> int:
    """Draw the requested figure and print its path."""
    if bool(args.passk) == bool(args.run_dir):
        print("prorl plot: give either RUN_DIR or --passk EVAL_JSON ...", file=sys.stderr)
        return 2
    if args.labels and not args.passk:
        print("prorl plot: --labels only applies to --passk", file=sys.stderr)
        return 2
    from prorl import plotting  # matplotlib import deferred to here

    try:
        if args.passk:
            out = args.output or str(Path(args.passk[0]).parent / "passk.png")
            path = plotting.plot_passk(args.passk, out, labels=args.labels)
        else:
            path = plotting.plot_run(args.run_dir, args.output)
    except (FileNotFoundError, ValueError) as e:
        print(f"prorl plot: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0
