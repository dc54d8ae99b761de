"""Load test of the reward service on loopback: thousands of items from 32 client threads while
worker processes are killed; every item gets exactly one verdict. Plus overload (503) behaviour."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest
from rewards_testverifiers import item, register_all

from prorl.rewards.client import RewardClient, RewardServiceError
from prorl.rewards.pool import VerifierPool
from prorl.rewards.server import RewardServer
from prorl.verifiers.base import Status

register_all()

THREADS = 32
REQUESTS_PER_THREAD = 10
ITEMS_PER_REQUEST = 12
KILLS = 2


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post(url: str, payload: object) -> tuple[int, dict, dict]:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


def test_thousands_of_items_32_threads_with_workers_killed():
    total = THREADS * REQUESTS_PER_THREAD * ITEMS_PER_REQUEST
    results: dict[str, list] = {}
    errors: list[BaseException] = []
    done_requests = [0]
    lock = threading.Lock()
    with VerifierPool(2, timeout_s=5.0, max_pending=100_000) as pool, RewardServer(pool) as server:
        assert pool.wait_ready(60)

        def client(t: int) -> None:
            c = RewardClient(server.url, retries=3, backoff_s=0.05, timeout_s=60)
            try:
                for r in range(REQUESTS_PER_THREAD):
                    ids = [f"{t}-{r}-{k}" for k in range(ITEMS_PER_REQUEST)]
                    batch = [item("t_echo", "y" if k % 2 == 0 else "n", "y", id=i) for k, i in enumerate(ids)]
                    out = c.score(batch)
                    with lock:
                        for i, v in zip(ids, out):
                            results.setdefault(i, []).append(v)
                        done_requests[0] += 1
            except BaseException as e:  # surfaced below
                errors.append(e)

        killed: list[int] = []
        killed_at: list[int] = []

        def killer() -> None:
            n_req = THREADS * REQUESTS_PER_THREAD
            for k in range(KILLS):
                while done_requests[0] < n_req * (k + 1) // (KILLS + 2) and not errors:
                    time.sleep(0.005)
                pid = next(p for p in _get(server.url + "/health")["pool"]["pids"] if p not in killed)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                killed_at.append(done_requests[0])

        t0 = time.monotonic()
        threads = [threading.Thread(target=client, args=(t,)) for t in range(THREADS)]
        kt = threading.Thread(target=killer)
        for t in threads + [kt]:
            t.start()
        for t in threads + [kt]:
            t.join(90)
        took = time.monotonic() - t0
        deadline = time.monotonic() + 30  # the last replacement may still be starting
        while (health := _get(server.url + "/health"))["workers_alive"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)

    assert not errors, errors[:3]
    assert took < 60, took
    assert len(killed) == KILLS and all(d < THREADS * REQUESTS_PER_THREAD for d in killed_at), killed_at
    # every item exactly one verdict, and it is *its* verdict
    assert len(results) == total
    assert all(len(v) == 1 for v in results.values())
    for i, (v,) in results.items():  # a killed worker's item was retried elsewhere, not scored 0
        k = int(i.rsplit("-", 1)[1])
        assert v.reason.startswith(f"id={i} "), (i, v)
        assert v.status is (Status.CORRECT if k % 2 == 0 else Status.WRONG)
    assert health["server"]["items"] == total and health["server"]["overloaded"] == 0
    assert health["pool"]["completed"] == total and health["pool"]["submitted"] == total
    assert health["pool"]["crashes"] == KILLS and health["workers_alive"] == 2
    print(f"\n{total} items, {THREADS} threads, {KILLS} workers killed: {took:.2f}s, {total / took:.0f} items/s")


@pytest.fixture
def small_service():
    with VerifierPool(1, timeout_s=5.0, max_pending=4) as pool, RewardServer(pool) as server:
        assert pool.wait_ready(60)
        yield pool, server


def test_overload_gives_503_with_retry_after(small_service):
    pool, server = small_service
    slow_out = []
    slow = threading.Thread(target=lambda: slow_out.append(
        _post(server.url + "/score", {"items": [item("t_sleep", sleep=0.4, id=i) for i in range(4)]})))
    slow.start()
    deadline = time.monotonic() + 10
    while _get(server.url + "/health")["queue_depth"] < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    code, body, headers = _post(server.url + "/score", {"items": [item("t_echo", id="late")]})
    assert code == 503 and "overloaded" in body["error"]
    assert headers.get("Retry-After") == "1"
    code, body, _ = _post(server.url + "/score", {"items": [item("t_echo")] * 5})
    assert code == 413 and "split" in body["error"]
    # a client with backoff gets through once the queue drains
    c = RewardClient(server.url, retries=10, backoff_s=0.2, max_backoff_s=1.0)
    out = c.score([item("t_echo", "x", "x", id="retry")])
    assert out[0].status is Status.CORRECT
    slow.join(30)
    code, body, _ = slow_out[0]
    assert code == 200 and [r["status"] for r in body["results"]] == ["correct"] * 4
    h = _get(server.url + "/health")
    assert h["server"]["overloaded"] >= 2 and h["queue_depth"] == 0


def test_bad_requests_are_400_and_give_up_client_raises(small_service):
    _, server = small_service
    for payload in ({"nope": 1}, {"items": "x"}, {"items": [1, 2]}, [1]):
        code, body, _ = _post(server.url + "/score", payload)
        assert code == 400 and "error" in body, payload
    req = urllib.request.Request(server.url + "/score", data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 400
    c = RewardClient(server.url, retries=0)
    with pytest.raises(RewardServiceError, match="HTTP 400"):
        c.score([item("t_echo")] * 2 + [[1]])  # an item that is not an object


def test_client_splits_a_batch_over_the_limits(small_service):
    """413 (here: more than the pool's bound of 4) makes the client split the batch, not fail."""
    _, server = small_service
    c = RewardClient(server.url, retries=0, batch_size=10)
    out = c.score([item("t_echo", "x", "x", id=i) for i in range(10)])
    assert [v.reason.split()[0] for v in out] == [f"id={i}" for i in range(10)]
    assert all(v.status is Status.CORRECT for v in out)
