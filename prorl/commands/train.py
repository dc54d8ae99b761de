"""``prorl train [CONFIG.yaml] [section.key=value ...] [--resume] [--nproc-per-node N]``.

``--nproc-per-node N`` re-launches the same command under torchrun with N processes on this
machine; a multi-node job runs ``torchrun --nnodes ... -m prorl train ...`` on every node.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML config (default: the built-in tiny CPU preset)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. algo.eps_high=0.28 rollout.n=16")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in trainer.run_dir")
    p.add_argument("--overwrite", action="store_true", help="start over in an existing trainer.run_dir")
    p.add_argument("--help-config", action="store_true", help="list every config key with its default and meaning")
    p.add_argument("--nproc-per-node", type=int, default=1, metavar="N",
                   help="train with N processes on this machine (torchrun; gloo on CPU, NCCL + FSDP2 on GPUs)")


def torchrun_command(argv: list[str], nproc: int) -> list[str]:
    """The torchrun command line that runs ``prorl train argv`` (without --nproc-per-node) on ``nproc``
    local processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "prorl", "train", *argv]


def run(args: argparse.Namespace) -> int:
    from prorl.config import ConfigError, describe_fields, load_config

    if args.help_config:
        for key, default, doc in describe_fields():
            print(f"{key:36s} {default:24s} {doc}")
        return 0
    if args.nproc_per_node > 1 and "WORLD_SIZE" not in os.environ:
        argv = ([args.config] if args.config else []) + list(args.overrides) \
            + (["--resume"] if args.resume else []) + (["--overwrite"] if args.overwrite else [])
        import subprocess

        return subprocess.call(torchrun_command(argv, args.nproc_per_node))
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not config.endswith((".yaml", ".yml")):
        overrides.insert(0, config)  # `prorl train rollout.n=4` with no file
        config = None
    try:
        cfg = load_config(config, overrides)
        from prorl.trainer.controller import train

        train(cfg, resume=args.resume, overwrite=args.overwrite)
    except ConfigError as e:
        print(f"prorl train: config error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from prorl.asyncrl.pool import WorkersLost
        from prorl.data.dataset import DataError

        if isinstance(e, DataError):
            print(f"prorl train: data error: {e}", file=sys.stderr)
            return 2
        if isinstance(e, WorkersLost):  # the last checkpoint stands; --resume continues once workers are back
            print(f"prorl train: stopped: {e}", file=sys.stderr)
            return 1
        raise
    return 0
