"""The verifier pool: order, hard timeouts (kill + replace), crashes, threads, clean shutdown."""

from __future__ import annotations

import os
import threading
import time

import pytest
from rewards_testverifiers import item, register_all

from prorl.rewards.pool import PoolClosed, PoolOverloaded, VerifierPool
from prorl.verifiers.base import Status

register_all()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(2, timeout_s=1.5) as p:
        assert p.wait_ready(60)
        yield p


def test_results_in_input_order_with_batching(pool):
    items = [item("t_echo", str(i % 3), "1", id=i) for i in range(300)]
    out = pool.map(items)
    assert [v.reason.split()[0] for v in out] == [f"id={i}" for i in range(300)]
    assert [v.score for v in out] == [1.0 if i % 3 == 1 else 0.0 for i in range(300)]
    pids = {v.reason.split()[1] for v in out}
    assert len(pids) == 2, "both workers should have taken batches"


def test_hang_times_out_and_others_are_scored(pool):
    before = set(pool.worker_pids())
    items = [item("t_echo", "x", "x", id=0), item("t_hang", id=1)] + [item("t_echo", "x", "x", id=i) for i in range(2, 40)]
    t0 = time.monotonic()
    out = pool.map(items, timeout=30)
    took = time.monotonic() - t0
    assert out[1].status is Status.TIMEOUT and out[1].score == 0.0
    assert "1.5s hard limit" in out[1].reason
    assert all(v.status is Status.CORRECT for i, v in enumerate(out) if i != 1)
    assert took < 1.5 + 5, took
    # the hung worker was killed and replaced
    deadline = time.monotonic() + 10
    while len(pool.worker_pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    after = set(pool.worker_pids())
    assert len(after) == 2 and after != before
    assert not any(_alive(p) for p in before - after)
    assert pool.stats()["timeouts"] >= 1


def test_worker_death_is_retried_then_infra_error_and_batch_continues(pool):
    """A verifier that kills its worker every time: retried on fresh workers (bounded), then
    ``infra_error`` (excluded by the trainer), never a scored ``error``; the rest are scored."""
    before = pool.stats()
    items = [item("t_echo", "a", "a", id=i) for i in range(5)] + [item("t_crash", id=5)] + \
            [item("t_echo", "a", "a", id=i) for i in range(6, 12)]
    out = pool.map(items, timeout=60)
    assert out[5].status is Status.INFRA_ERROR and out[5].score == 0.0
    assert "3 verifier workers died" in out[5].reason and "exit code 7" in out[5].reason
    assert [v.status for i, v in enumerate(out) if i != 5] == [Status.CORRECT] * 11
    after = pool.stats()
    assert after["crashes"] - before["crashes"] == 3 and after["retried"] - before["retried"] == 2
    assert after["infra_errors"] - before["infra_errors"] == 1


def test_worker_killed_mid_item_is_retried_and_scored(pool, tmp_path):
    """An outside SIGKILL while an item is being scored is not a verdict: the item is scored again."""
    out = pool.map([item("t_die_once", "x", "x", id=0, marker=str(tmp_path / "m")), item("t_echo", "y", "x", id=1)],
                   timeout=60)
    assert (tmp_path / "m").exists()  # the first worker really died on it
    assert [v.status for v in out] == [Status.CORRECT, Status.WRONG]


def test_memory_cap_is_named_in_the_verdict_and_the_worker_replaced():
    with VerifierPool(1, timeout_s=20.0, max_memory_mb=700) as p:
        assert p.wait_ready(60)
        out = p.map([item("t_hog", mb=100, id=0), item("t_hog", mb=2000, id=1), item("t_hog", mb=100, id=2),
                     item("t_hog", mb=2000, swallow=True, id=3), item("t_echo", "x", "x", id=4)], timeout=120)
        st = p.stats()
    assert out[0].status is Status.CORRECT and out[2].status is Status.CORRECT and out[4].status is Status.CORRECT
    assert out[1].status is Status.ERROR and "memory cap of 700 MB" in out[1].reason and "MemoryError" in out[1].reason
    assert out[3].status is Status.WRONG and "memory cap of 700 MB" in out[3].reason
    assert st["recycled"] == 2 and st["crashes"] == 0


def test_exception_and_unknown_domain_are_errors(pool):
    out = pool.map([item("t_raise"), item("no_such_domain_xyz"), {"data_source": "t_echo", "response": None},
                    {"data_source": 3, "response": "x"}, {"response": "x", "extra_info": []}])
    assert out[0].status is Status.ERROR and "boom" in out[0].reason
    assert out[1].status is Status.ERROR and "no verifier" in out[1].reason
    assert out[2].status is Status.ERROR and out[2].reason == "malformed item: 'response' must be a string, got NoneType"
    assert out[3].reason == "malformed item: 'data_source' must be a string, got int"
    assert out[4].reason == "malformed item: 'extra_info' must be an object, got list"


def test_unpicklable_item_is_an_error_not_a_dead_pool(pool):
    bad = item("t_echo", id="bad")
    bad["extra_info"]["lock"] = threading.Lock()
    out = pool.map([item("t_echo", "x", "x", id=0), bad, item("t_echo", "x", "x", id=2)], timeout=30)
    assert [v.status for v in out] == [Status.CORRECT, Status.ERROR, Status.CORRECT]
    assert "cannot be sent" in out[1].reason
    assert pool.map([item("t_echo", "x", "x")])[0].status is Status.CORRECT


def test_process_group_killed_on_timeout(pool, tmp_path):
    pidfile = tmp_path / "child.pid"
    out = pool.map([item("t_spawn", pidfile=str(pidfile))], timeout=30)
    assert out[0].status is Status.TIMEOUT
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the verifier's own child process must die with the worker's group"


def test_concurrent_callers_from_threads(pool):
    results: dict[int, list] = {}

    def caller(k: int) -> None:
        results[k] = pool.map([item("t_echo", str(k), str(k), id=f"{k}-{i}") for i in range(50)])

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == list(range(6))
    for k, out in results.items():
        assert [v.reason.split()[0] for v in out] == [f"id={k}-{i}" for i in range(50)]
        assert all(v.score == 1.0 for v in out)


def test_killed_idle_worker_is_replaced(pool):
    pool.map([item("t_echo", id=0)])
    victim = pool.worker_pids()[0]
    os.kill(victim, 9)
    out = pool.map([item("t_echo", "x", "x", id=i) for i in range(20)], timeout=30)
    assert all(v.status is Status.CORRECT for v in out)
    assert victim not in pool.worker_pids()


def test_bounded_queue_and_close_releases_waiters():
    p = VerifierPool(1, timeout_s=5.0, max_pending=4)
    try:
        fut = p.submit([item("t_sleep", sleep=0.3, id=i) for i in range(3)])
        with pytest.raises(PoolOverloaded) as e:
            p.submit([item("t_echo")] * 2)
        assert e.value.retryable
        with pytest.raises(PoolOverloaded) as e:
            p.submit([item("t_echo")] * 5)
        assert not e.value.retryable
        assert [v.status for v in fut.result(30)] == [Status.CORRECT] * 3
        assert p.map([item("t_echo")] * 4)[0].status is Status.CORRECT
        slow = p.submit([item("t_sleep", sleep=3.0)] * 2)
        pids = p.worker_pids()
    finally:
        p.close()
    # callers waiting at close get infra_error verdicts (never hang) and no worker is left behind
    assert all(v.status is Status.INFRA_ERROR for v in slow.result(10))
    with pytest.raises(PoolClosed):
        p.submit([item("t_echo")])
    assert pids and not any(_alive(pid) for pid in pids)


def test_workers_die_with_a_sigkilled_parent():
    """A trainer killed with SIGKILL runs no cleanup; its workers (even one stuck in a hung
    verifier) must not live on."""
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import sys, time\n"
        "from rewards_testverifiers import item, register_all\n"
        "from prorl.rewards.pool import VerifierPool\n"
        "register_all()\n"
        "p = VerifierPool(2, timeout_s=600)\n"
        "assert p.wait_ready(60)\n"
        "p.submit([item('t_hang')])\n"
        "time.sleep(0.5)\n"
        "print(' '.join(map(str, p.worker_pids())), flush=True)\n"
        "time.sleep(600)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        pids = [int(x) for x in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
    finally:
        proc.kill()
        proc.wait(10)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)
