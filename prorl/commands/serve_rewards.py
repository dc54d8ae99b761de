"""``prorl serve-rewards``: the HTTP reward service (``POST /score``, ``/health``, ``/ready``, ``/metrics``).

On SIGTERM (or SIGINT) it drains: new requests get 503 with ``Retry-After`` (a multi-URL client
sends them to another replica), requests already accepted are finished within ``--drain-timeout``
seconds, then it stops the workers and exits 0. Requests still unfinished at the deadline are
answered with ``infra_error`` verdicts (the client retries those items elsewhere): nothing
accepted is left without an answer.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from prorl.rewards.guard import TOKEN_FILE_ENV, ServerLimits

_D = ServerLimits()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="bind address (default 127.0.0.1; any other needs --token-file or --insecure)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    parser.add_argument("--workers", type=int, default=2, help="verifier worker processes (default 2)")
    parser.add_argument("--max-queue", type=int, default=8192,
                        help="items queued or in flight before answering 503 (default 8192)")
    parser.add_argument("--timeout", type=float, default=10.0, help="hard limit per item, seconds (default 10)")
    parser.add_argument("--max-memory-mb", type=int, default=2048,
                        help="address-space cap per verifier worker, MB (default 2048; 0 = none)")
    parser.add_argument("--token-file", default=None,
                        help=f"file holding the shared bearer token (or set {TOKEN_FILE_ENV}); "
                             "requests without it get 401")
    parser.add_argument("--insecure", action="store_true",
                        help="allow a non-loopback --host without a token (anyone reaching it can run code)")
    parser.add_argument("--max-body-mb", type=float, default=_D.max_body_mb,
                        help=f"largest request body, MB (default {_D.max_body_mb:g}); larger gets 413")
    parser.add_argument("--max-items", type=int, default=_D.max_items,
                        help=f"most items per request (default {_D.max_items}); more gets 413")
    parser.add_argument("--request-timeout", type=float, default=_D.request_timeout_s,
                        help=f"seconds a client has to send a request head, then its body, and an idle "
                             f"keep-alive connection stays open (default {_D.request_timeout_s:g})")
    parser.add_argument("--drain-timeout", type=float, default=60.0,
                        help="on SIGTERM, seconds to finish accepted requests (default 60)")
    parser.add_argument("--no-strip-think", action="store_true", help="verify the whole response, <think> included")
    parser.add_argument("--verbose", action="store_true", help="log every request (never the token)")


def _say(msg: str) -> None:
    print(f"prorl serve-rewards: {msg}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from prorl.rewards.guard import TokenError, load_token, refuse_insecure_bind
    from prorl.rewards.pool import VerifierPool
    from prorl.rewards.server import InsecureBind, RewardServer

    try:
        token = load_token(args.token_file)
    except TokenError as e:
        _say(str(e))
        return 2
    why = refuse_insecure_bind(args.host, token, args.insecure)
    if why is not None:  # before any worker starts: one clear line
        _say(why)
        return 2
    if args.verbose:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        _say(f"{signal.Signals(signum).name}, draining (new requests get 503)")
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    limits = ServerLimits(max_body_mb=args.max_body_mb, max_items=args.max_items,
                          request_timeout_s=args.request_timeout)
    pool = VerifierPool(args.workers, args.timeout, max_pending=args.max_queue, strip_think=not args.no_strip_think,
                        max_memory_mb=args.max_memory_mb or None)
    try:
        server = RewardServer(pool, args.host, args.port, token=token, insecure=args.insecure, limits=limits,
                              verbose=args.verbose)
    except (OSError, InsecureBind) as e:
        pool.close()
        _say(f"cannot listen on {args.host}:{args.port}: {e}")
        return 1
    try:
        _say(f"listening on {server.url} (workers={args.workers}, max_queue={args.max_queue}, "
             f"timeout={args.timeout:g}s, auth={'token' if token else 'none'}, max_items={args.max_items}, "
             f"max_body={args.max_body_mb:g}MB)")
        while not stop.wait(0.5):
            pass
        if not server.drain(args.drain_timeout):
            _say(f"{server.inflight_requests} requests unfinished after {args.drain_timeout:g}s; "
                 "their remaining items are answered infra_error")
            pool.close()
            server.drain(10.0)
    finally:
        server.shutdown()
        pool.close()
        for s, h in old.items():
            signal.signal(s, h)
    _say("stopped")
    return 0
