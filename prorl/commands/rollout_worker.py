"""``prorl rollout-worker --connect HOST:PORT``: an asynchronous-RL rollout worker for a trainer
started with ``rollout.mode=async`` (``rollout.async_remote_workers`` > 0 for workers on other
machines). It takes its config, model and weights from the trainer; ``PRORL_ROLLOUT_AUTHKEY`` must
be the trainer's. It exits when the trainer does."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connect", required=True, metavar="HOST:PORT",
                   help="the trainer's rollout.async_listen address (printed when it starts)")


def run(args: argparse.Namespace) -> int:
    from prorl.asyncrl.worker import run_worker

    run_worker(args.connect)
    return 0
