"""The ``prorl`` command line. Each subcommand lives in ``prorl/commands/<name>.py`` and exposes
``add_arguments(parser)`` (cheap: no heavy imports) and ``run(args) -> int``."""

from __future__ import annotations

import argparse
import importlib
import sys

# (subcommand, module, one-line help)
COMMANDS: list[tuple[str, str, str]] = [
    ("train", "prorl.commands.train", "train a policy with GRPO/DAPO (default: the built-in tiny CPU run)"),
    ("sft", "prorl.commands.sft", "supervised warm start (builds the built-in tiny warm-start checkpoint)"),
    ("eval", "prorl.commands.eval", "evaluate a model on datasets: pass@1, pass@k, maj@k, length"),
    ("score", "prorl.commands.score", "score responses in a JSONL file with the verifiers"),
    ("serve-rewards", "prorl.commands.serve_rewards", "run the HTTP reward service"),
    ("sandbox-check", "prorl.commands.sandbox_check", "report which sandbox protections are active here"),
    ("data", "prorl.commands.data", "build datasets (built-in tasks, Reasoning Gym, hitori, HumanEval/MBPP)"),
    ("plot", "prorl.commands.plot", "plot a run's dashboard or pass@k curves"),
    ("reset", "prorl.commands.reset", "ask a running job to reset its reference policy"),
    ("rollout-worker", "prorl.commands.rollout_worker", "serve an asynchronous trainer's rollouts (rollout.mode=async)"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prorl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, help_text in COMMANDS:
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # dotted overrides may come after flags: `prorl train --resume rollout.n=4`
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
