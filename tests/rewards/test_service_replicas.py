"""Replicas as real ``prorl serve-rewards`` subprocesses on loopback: drain on SIGTERM with requests
in flight, and a replica SIGKILLed under load while the multi-URL client fails over."""

from __future__ import annotations

import signal
import threading
import time

from rewards_testverifiers import item, register_all
from service_helpers import replica, request

from prorl.rewards.client import RewardClient
from prorl.verifiers.base import Status

register_all()  # for the in-process servers (subprocess replicas register their own)
TOKEN = "drain-tok-51c0"


def test_sigterm_drains_requests_in_flight_and_exits_0(tmp_path):
    tf = tmp_path / "token"
    tf.write_text(TOKEN)
    with replica("--workers", "2", "--token-file", str(tf), "--verbose", "--drain-timeout", "30") as r:
        answers: dict[int, tuple] = {}

        def send(k: int) -> None:  # 2 items of 1.5 s each per request: ~3 s with 2 workers busy
            answers[k] = request(r.url, "POST", "/score", {"items": [item("t_sleep", sleep=1.5, id=f"{k}-{j}")
                                                                     for j in range(2)]}, token=TOKEN)

        threads = [threading.Thread(target=send, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while request(r.url, "GET", "/health")[2]["inflight_requests"] < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        request(r.url, "GET", "/metrics", token="not-the-token-either")  # a 401 to (not) log
        r.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        code, headers, body = request(r.url, "POST", "/score", {"items": [item("t_echo")]}, token=TOKEN)
        assert code == 503 and headers["retry-after"] == "1" and "draining" in body["error"]
        assert request(r.url, "GET", "/ready")[0] == 503
        for t in threads:
            t.join(60)
        assert r.proc.wait(30) == 0
        log = r.stderr()
    for k in range(3):  # everything accepted before SIGTERM was answered, with its own verdicts
        code, _, body = answers[k]
        assert code == 200, answers[k]
        assert [x["status"] for x in body["results"]] == ["correct"] * 2
        assert [x["reason"] for x in body["results"]] == [f"id={k}-{j} slept" for j in range(2)]
    assert "SIGTERM, draining" in log and "stopped" in log and "POST /score" in log  # verbose: requests logged
    assert TOKEN not in log and "not-the-token-either" not in log


def test_replica_sigkilled_under_load_every_item_one_verdict_from_the_other():
    with replica("--workers", "1") as a, replica("--workers", "1") as b:
        results: dict[str, list] = {}
        errors: list[BaseException] = []
        done = [0]
        lock = threading.Lock()

        def client(t: int) -> None:
            c = RewardClient([a.url, b.url], retries=4, backoff_s=0.05, batch_size=8, timeout_s=60)
            try:
                for r in range(6):
                    ids = [f"{t}-{r}-{k}" for k in range(16)]
                    batch = [item("t_echo", "y" if k % 3 else "n", "y", id=i) for k, i in enumerate(ids)]
                    out = c.score(batch)
                    with lock:
                        for i, v in zip(ids, out):
                            results.setdefault(i, []).append(v)
                        done[0] += 1
            except BaseException as e:  # noqa: BLE001 - surfaced below
                errors.append(e)

        threads = [threading.Thread(target=client, args=(t,)) for t in range(12)]
        for t in threads:
            t.start()
        while done[0] < 20 and not errors:
            time.sleep(0.005)
        a.proc.kill()  # SIGKILL mid-load: its in-flight batches die with it
        killed_at = done[0]
        for t in threads:
            t.join(120)
        assert a.proc.wait(10) == -signal.SIGKILL
        served_b = request(b.url, "GET", "/health")[2]["server"]["items"]
    assert not errors, errors[:3]
    assert killed_at < 12 * 6
    assert len(results) == 12 * 6 * 16 and all(len(v) == 1 for v in results.values())
    for i, (v,) in results.items():  # its own verdict, none scored wrong (or infra_error) by the kill
        k = int(i.rsplit("-", 1)[1])
        assert v.reason.startswith(f"id={i} "), (i, v)
        assert v.status is (Status.CORRECT if k % 3 else Status.WRONG), (i, v)
    assert served_b > 12 * 6 * 16 / 2  # b took over a's share after the kill


def test_drain_timeout_answers_infra_error_and_the_client_rescores_elsewhere():
    """A request still unfinished when the drain deadline passes is answered ``infra_error`` (pool
    closed), never dropped, and the multi-URL client scores those items on the other replica."""
    from prorl.rewards.pool import VerifierPool
    from prorl.rewards.server import RewardServer

    with VerifierPool(1, timeout_s=10.0) as pa, VerifierPool(1, timeout_s=10.0) as pb, \
            RewardServer(pa) as a, RewardServer(pb) as b:
        assert pa.wait_ready(60) and pb.wait_ready(60)
        client = RewardClient([a.url, b.url], retries=3, backoff_s=0.05)  # the first batch goes to a
        out: list = []
        t = threading.Thread(target=lambda: out.extend(client.score(
            [item("t_sleep", sleep=3.0, id="slow"), item("t_echo", "x", "x", id="quick")])))
        t.start()
        deadline = time.monotonic() + 10
        while a.inflight_requests < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not a.drain(0.3)  # still in flight at the deadline
        pa.close()  # what `serve-rewards` does then: the rest is answered infra_error
        assert a.drain(5.0)
        t.join(30)
        text = a.metrics_text()
    assert [(v.status, v.reason.split()[0]) for v in out] == [(Status.CORRECT, "id=slow"), (Status.CORRECT, "id=quick")]
    assert 'prorl_reward_items_total{domain="t_sleep",status="infra_error"} 1' in text
