"""Throughput and HTTP overhead of the reward service (``prorl serve-rewards``) on loopback.

    python benchmarks/bench_reward_service.py [--workers 2] [--clients 64] [--items 10000] [--batch 16]

Starts 1 and then 2 replicas as real subprocesses (each with ``--workers`` verifier processes) and
prints, for trivial ``builtin`` items (so the numbers are the service's own cost, not a verifier's):

* ``overhead``: one client, sequential requests of 1 item and of 256 items, through HTTP versus
  the same items through an in-process ``VerifierPool`` of the same size; the difference per
  request and per item is what the HTTP layer (JSON, sockets, the server) adds.
* ``throughput``: ``--clients`` concurrent client threads sending ``--batch`` items per request,
  ``--items`` in all, items/s with 1 and with 2 replicas (the client spreads over both URLs).

Every verdict is checked (all must be ``correct``), so a fast wrong answer cannot pass as speed.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prorl.rewards.client import RewardClient  # noqa: E402
from prorl.rewards.pool import VerifierPool  # noqa: E402


def builtin_items(n: int, start: int = 0) -> list[dict]:
    return [{"data_source": "builtin", "ability": "builtin", "response": f"so \\boxed{{{k}}}",
             "ground_truth": str(k), "extra_info": {}} for k in range(start, start + n)]


def start_replica(workers: int) -> tuple[subprocess.Popen, str]:
    """A ``prorl serve-rewards`` subprocess on a free loopback port; returns it and its URL."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "prorl.cli", "serve-rewards", "--port", "0", "--workers",
                             str(workers), "--max-queue", "100000"], stderr=subprocess.PIPE, text=True, env=env,
                            cwd=REPO)
    for line in proc.stderr:
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        if m:
            url = m.group(1)
            break
    else:
        raise RuntimeError("replica did not start")
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep draining its log
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url + "/health", timeout=10) as r:
            if json.loads(r.read())["workers_alive"] >= workers:
                return proc, url
        time.sleep(0.1)
    raise RuntimeError("replica workers did not start")


def make_client(urls: list[str]) -> RewardClient:
    """The multi-URL client when this checkout has one, else the single-URL client on ``urls[0]``."""
    kw = dict(retries=5, backoff_s=0.05, timeout_s=120, batch_size=100_000)
    try:
        return RewardClient(urls if len(urls) > 1 else urls[0], **kw)
    except (TypeError, AttributeError):
        return RewardClient(urls[0], **kw)


def _check(verdicts: list) -> None:
    bad = [v for v in verdicts if v.status.value != "correct"]
    if bad:
        raise AssertionError(f"{len(bad)} verdicts not correct, e.g. {bad[0]}")


def overhead(url: str, workers: int, reps: int) -> dict:
    """Median seconds per request of 1 and 256 items, via HTTP and via an in-process pool."""
    client = make_client([url])
    out = {}
    with VerifierPool(workers, timeout_s=10.0) as pool:
        assert pool.wait_ready(120)
        for n in (1, 256):
            items = builtin_items(n)
            for name, fn in (("http", client.score), ("pool", pool.map)):
                _check(fn(items))  # warm
                ts = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    _check(fn(items))
                    ts.append(time.perf_counter() - t0)
                out[(name, n)] = statistics.median(ts)
    return out


def throughput(urls: list[str], clients: int, total: int, batch: int) -> float:
    """Items/s with ``clients`` concurrent threads, each with its own client, ``batch`` items per request."""
    per_client = max(1, total // (clients * batch))
    errors: list[BaseException] = []
    multi = "urls" in inspect.signature(RewardClient.__init__).parameters or len(urls) == 1

    def run(t: int) -> None:
        # without a multi-URL client, spread the threads over the replicas by hand
        c = make_client(urls) if multi else make_client([urls[t % len(urls)]])
        try:
            for r in range(per_client):
                _check(c.score(builtin_items(batch, start=t * 1000 + r)))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(clients)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    took = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return clients * per_client * batch / took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2, help="verifier processes per replica")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=50)
    args = ap.parse_args()
    procs: list[subprocess.Popen] = []
    try:
        p1, u1 = start_replica(args.workers)
        procs.append(p1)
        o = overhead(u1, args.workers, args.reps)
        print(f"overhead (median of {args.reps}, {args.workers} workers):")
        for n in (1, 256):
            h, p = o[("http", n)], o[("pool", n)]
            print(f"  {n:4d} item(s)/request: http {h * 1e3:8.2f} ms, in-process pool {p * 1e3:8.2f} ms, "
                  f"HTTP adds {(h - p) * 1e3:7.2f} ms/request = {(h - p) / n * 1e6:7.1f} us/item")
        r1 = throughput([u1], args.clients, args.items, args.batch)
        print(f"throughput, 1 replica : {r1:8.0f} items/s ({args.clients} clients x {args.batch} items/request)")
        p2, u2 = start_replica(args.workers)
        procs.append(p2)
        r2 = throughput([u1, u2], args.clients, args.items, args.batch)
        print(f"throughput, 2 replicas: {r2:8.0f} items/s ({args.clients} clients x {args.batch} items/request)")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
