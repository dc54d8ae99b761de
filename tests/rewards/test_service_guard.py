"""The reward service as a shared component: token, bind refusal, limits (413), slow clients,
/metrics, /health vs /ready. In-process servers on loopback, plus the command's start-up refusal."""

from __future__ import annotations

import http.client
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
from rewards_testverifiers import item, register_all
from service_helpers import REPO, env, request

from prorl.rewards.client import RewardClient, RewardServiceError
from prorl.rewards.guard import ServerLimits, bearer_ok, load_token, refuse_insecure_bind
from prorl.rewards.pool import VerifierPool
from prorl.rewards.server import InsecureBind, RewardServer
from prorl.verifiers.base import Status

register_all()
TOKEN = "tok-7f3a9c1e5b"


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(1, timeout_s=5.0, max_pending=1000) as p:
        assert p.wait_ready(60)
        yield p


@pytest.fixture
def guarded(pool):
    with RewardServer(pool, token=TOKEN, limits=ServerLimits(max_body_mb=0.01, max_items=4,
                                                             request_timeout_s=1.5)) as server:
        yield server


def test_401_without_or_with_a_wrong_token_and_nothing_queued(guarded, pool):
    before = pool.stats()["submitted"]
    batch = {"items": [item("t_echo", "x", "x")]}
    for token in (None, "bogus-Q9", TOKEN + "x", ""):
        code, headers, body = request(guarded.url, "POST", "/score", batch, token=token)
        assert code == 401 and "bearer token" in body["error"], (token, body)
        assert headers["www-authenticate"].startswith("Bearer")
        assert TOKEN not in str(body) and (not token or token not in str(body))
    assert request(guarded.url, "GET", "/metrics")[0] == 401
    assert pool.stats()["submitted"] == before  # rejected before anything was read or queued
    code, _, body = request(guarded.url, "POST", "/score", batch, token=TOKEN)
    assert code == 200 and body["results"][0]["status"] == "correct"
    for path in ("/health", "/ready"):  # probes need no token
        assert request(guarded.url, "GET", path)[0] == 200
    assert guarded.metrics.code_count(401) == 5


def test_client_sends_the_token_from_a_file(guarded, tmp_path, monkeypatch):
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    assert RewardClient(guarded.url, token_file=str(f)).score([item("t_echo", "x", "x")])[0].status is Status.CORRECT
    monkeypatch.setenv("PRORL_REWARD_TOKEN_FILE", str(f))
    assert load_token() == TOKEN
    assert RewardClient(guarded.url).score([item("t_echo", "x", "x")])[0].status is Status.CORRECT
    f.write_text("wrong-token")
    with pytest.raises(RewardServiceError, match="HTTP 401") as e:
        RewardClient(guarded.url, token_file=str(f)).score([item("t_echo")])
    assert "wrong-token" not in str(e.value)
    f.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        load_token(str(f))


def test_bearer_comparison():
    assert bearer_ok(f"Bearer {TOKEN}", TOKEN)
    assert not bearer_ok(TOKEN, TOKEN) and not bearer_ok(None, TOKEN) and not bearer_ok("Bearer x", TOKEN)
    assert not bearer_ok(f"Basic {TOKEN}", TOKEN)


def test_non_loopback_without_token_is_refused(pool):
    assert refuse_insecure_bind("0.0.0.0", None, False) is not None
    assert refuse_insecure_bind("10.1.2.3", None, False) is not None
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.5"):
        assert refuse_insecure_bind(host, None, False) is None, host
    assert refuse_insecure_bind("0.0.0.0", TOKEN, False) is None
    assert refuse_insecure_bind("0.0.0.0", None, True) is None
    with pytest.raises(InsecureBind, match="refusing to listen on 0.0.0.0 without a token"):
        RewardServer(pool, "0.0.0.0")
    # the command: one clear line, exit 2, before any worker starts
    p = subprocess.run([sys.executable, "-m", "prorl.cli", "serve-rewards", "--host", "0.0.0.0", "--port", "0"],
                       capture_output=True, text=True, env=env(), cwd=REPO, timeout=60)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to listen on 0.0.0.0 without a token" in lines[0]
    assert "--token-file" in lines[0] and "--insecure" in lines[0]


def test_413_over_the_body_size_and_item_limits(guarded):
    big = {"items": [item("t_echo", "x" * 20_000, "x")]}  # > 0.01 MB
    code, _, body = request(guarded.url, "POST", "/score", big, token=TOKEN)
    assert code == 413 and "exceeds the limit of 10485 bytes" in body["error"] and body["limit_bytes"] == 10485
    code, _, body = request(guarded.url, "POST", "/score", {"items": [item("t_echo")] * 5}, token=TOKEN)
    assert code == 413 and "5 items exceed the limit of 4 per request" in body["error"] and body["limit_items"] == 4
    # a chunked body (no Content-Length) is cut off at the limit too
    c = http.client.HTTPConnection(*guarded.address, timeout=10)
    c.request("POST", "/score", body=iter([b'{"items": ["' + b"y" * 8000, b"z" * 8000 + b'"]}']),
              headers={"Authorization": f"Bearer {TOKEN}"}, encode_chunked=True)
    r = c.getresponse()
    assert r.status == 413 and b"exceeds the limit" in r.read()
    c.close()
    # the client splits a batch the service finds too large
    out = RewardClient(guarded.url, token=TOKEN).score([item("t_echo", "x", "x", id=i) for i in range(9)])
    assert [v.reason.split()[0] for v in out] == [f"id={i}" for i in range(9)]
    assert guarded.metrics.code_count(413) == 3 + 2  # ours, plus the client's 9 -> 4+5 -> ... splits


def _slow_sender(address: tuple[str, int], head: bytes, drip: bytes, results: dict, key: str) -> None:
    """Send ``head`` at once, then ``drip`` one byte a second; record when the server gave up on us."""
    s = socket.create_connection(address, timeout=30)
    t0 = time.monotonic()
    s.sendall(head)
    try:
        for b in drip:
            s.sendall(bytes([b]))
            s.settimeout(1.0)
            try:
                data = s.recv(4096)
                if data or True:
                    results[key] = (time.monotonic() - t0, data)
                    return
            except socket.timeout:
                continue
        results[key] = (time.monotonic() - t0, b"(sent everything)")
    except OSError as e:  # reset: the server closed on us
        results[key] = (time.monotonic() - t0, repr(e).encode())
    finally:
        s.close()


def test_slow_clients_are_cut_off_and_do_not_block_others(guarded):
    """One byte a second, in the head or in the body: the server gives up after request_timeout_s
    (1.5 s here) and meanwhile answers everyone else at once."""
    results: dict = {}
    body_head = (b"POST /score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                 + b"\r\nContent-Type: application/json\r\nContent-Length: 60\r\n\r\n")
    threads = [
        threading.Thread(target=_slow_sender, args=(guarded.address, body_head, b'{"items": []}' + b" " * 47,
                                                    results, "body")),
        threading.Thread(target=_slow_sender, args=(guarded.address, b"POST /score HTTP/1.1\r\n",
                                                    b"Host: slowloris.example\r\n" * 3, results, "head")),
    ]
    for t in threads:
        t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    for _ in range(5):  # others are served meanwhile
        code, _, body = request(guarded.url, "POST", "/score", {"items": [item("t_echo", "x", "x")]}, token=TOKEN)
        assert code == 200
    assert time.monotonic() - t0 < 2.0
    for t in threads:
        t.join(30)
    took, data = results["body"]
    assert 1.0 < took < 5.0 and b" 408 " in data, results
    took, data = results["head"]
    assert 1.0 < took < 5.0, results  # connection closed (empty read) or reset


def test_metrics_after_a_scored_batch(pool):
    with RewardServer(pool) as server:
        items = [{"data_source": "math500", "response": "\\boxed{\\frac{1}{2}}", "ground_truth": "0.5"},
                 {"data_source": "math500", "response": "\\boxed{3}", "ground_truth": "0.5"},
                 {"data_source": "math500", "response": "no box", "ground_truth": "0.5"},
                 item("t_echo", "x", "x"), {"data_source": "nope_xyz", "response": "x", "ground_truth": "x"}]
        assert RewardClient(server.url).score(items)[0].status is Status.CORRECT
        request(server.url, "POST", "/score", {"items": "x"})
        code, headers, text = request(server.url, "GET", "/metrics")
    assert code == 200 and headers["content-type"].startswith("text/plain")
    lines = text.splitlines()
    for line in lines:  # the exposition format: comments or `name{labels} value`
        assert line.startswith("# ") or re.fullmatch(r'[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [-+0-9.e]+',
                                                      line), line
    for expected in ('prorl_reward_items_total{domain="math",status="correct"} 1',
                     'prorl_reward_items_total{domain="math",status="wrong"} 1',
                     'prorl_reward_items_total{domain="math",status="no_answer"} 1',
                     'prorl_reward_items_total{domain="t_echo",status="correct"} 1',
                     'prorl_reward_items_total{domain="unknown",status="error"} 1',
                     'prorl_reward_http_responses_total{path="/score",code="200"} 1',
                     'prorl_reward_http_responses_total{path="/score",code="400"} 1',
                     'prorl_reward_request_seconds_count 1', 'prorl_reward_request_seconds_bucket{le="+Inf"} 1',
                     "prorl_reward_queue_depth 0", "prorl_reward_inflight_items 0", "prorl_reward_workers_alive 1",
                     "prorl_reward_ready 1", "prorl_reward_draining 0"):
        assert expected in lines, expected
    assert any(x.startswith("prorl_reward_worker_restarts_total ") for x in lines)
    assert "# TYPE prorl_reward_request_seconds histogram" in lines


def test_ready_and_health_apart(pool):
    with RewardServer(pool) as server:
        assert request(server.url, "GET", "/ready")[0] == 200
        assert server.drain(5.0)
        code, _, body = request(server.url, "GET", "/ready")
        assert code == 503 and body == {"ready": False, "reason": "draining"}
        code, _, body = request(server.url, "GET", "/health")  # alive, though not ready
        assert code == 200 and body["status"] == "draining"
        code, headers, body = request(server.url, "POST", "/score", {"items": [item("t_echo")]})
        assert code == 503 and headers["retry-after"] == "1" and "draining" in body["error"]
