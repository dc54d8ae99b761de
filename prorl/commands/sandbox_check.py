"""``prorl sandbox-check``: print which sandbox protections are active on this machine.

Exit status 0 when every required protection holds, 1 otherwise (2 if the probe itself crashed).
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.add_argument("--allow-unsafe", action="store_true",
                        help="also probe the unsafe (no isolation) fallback when bwrap is missing")


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from prorl.sandbox.selfcheck import format_table, self_check

    checks = self_check(allow_unsafe=args.allow_unsafe)
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        print(format_table(checks))
    missing = [c.name for c in checks if c.required and not c.active]
    if missing:
        print(f"\nMISSING required protections: {', '.join(missing)}")
        return 1
    if not args.json:
        print("\nall required protections are active")
    return 0
