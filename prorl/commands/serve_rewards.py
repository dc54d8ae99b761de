"""``prorl serve-rewards``: the HTTP reward service (``POST /score``, ``GET /health``).

Runs until SIGTERM/SIGINT, then stops accepting, lets in-flight requests finish and stops the
worker processes.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    parser.add_argument("--workers", type=int, default=2, help="verifier worker processes (default 2)")
    parser.add_argument("--max-queue", type=int, default=8192,
                        help="items queued or in flight before answering 503 (default 8192)")
    parser.add_argument("--timeout", type=float, default=10.0, help="hard limit per item, seconds (default 10)")
    parser.add_argument("--no-strip-think", action="store_true", help="verify the whole response, <think> included")
    parser.add_argument("--verbose", action="store_true", help="log every request")


def run(args: argparse.Namespace) -> int:
    from prorl.rewards.pool import VerifierPool
    from prorl.rewards.server import RewardServer

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        print(f"prorl serve-rewards: {signal.Signals(signum).name}, shutting down", file=sys.stderr, flush=True)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    pool = VerifierPool(args.workers, args.timeout, max_pending=args.max_queue, strip_think=not args.no_strip_think)
    try:
        server = RewardServer(pool, args.host, args.port, verbose=args.verbose)
    except OSError as e:
        pool.close()
        print(f"prorl serve-rewards: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    try:
        server.start()
        print(f"prorl serve-rewards: listening on {server.url} (workers={args.workers}, "
              f"max_queue={args.max_queue}, timeout={args.timeout:g}s)", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        pool.close()
        for s, h in old.items():
            signal.signal(s, h)
    print("prorl serve-rewards: stopped", file=sys.stderr, flush=True)
    return 0
