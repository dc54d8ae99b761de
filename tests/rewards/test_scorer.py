"""RewardScorer: in-process vs pool routing, math through the pool, custom domains, the HTTP path."""

from __future__ import annotations

import os
import socket

import pytest
from rewards_testverifiers import item, register_all

from prorl.rewards.client import RewardServiceError
from prorl.rewards.pool import VerifierPool
from prorl.rewards.scorer import RewardScorer, item_from_row
from prorl.rewards.server import RewardServer
from prorl.verifiers.base import Status

register_all()


def _math(resp: str, gold, source: str = "math500") -> dict:
    return {"data_source": source, "ability": "math", "response": resp, "ground_truth": gold, "extra_info": {}}


def test_math_and_custom_domains_through_the_pool():
    items = [
        _math("<think>\\boxed{1}</think> so \\boxed{25}", "025", "aime24"),
        item("t_echo", "hello", "hello", id="a"),
        _math("\\boxed{\\dfrac{14}{3}}", "\\frac{14}{3}"),
        _math("no box", "3"),
        item("t_hang", id="h"),
        _math("\\boxed{7}", 8.0, "amc23"),
        {"data_source": "nonexistent_source", "response": "x", "ground_truth": "x"},
        "not a dict",
    ]
    with RewardScorer(num_workers=2, timeout_s=1.5) as scorer:
        out = scorer.score(items)
        pids = scorer.pool.worker_pids()
    assert [v.status for v in out] == [Status.CORRECT, Status.CORRECT, Status.CORRECT, Status.NO_ANSWER,
                                      Status.TIMEOUT, Status.WRONG, Status.ERROR, Status.ERROR]
    assert [v.score for v in out] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    worker_pid = int(out[1].reason.split("pid=")[1])
    assert worker_pid != os.getpid() and "nonexistent_source" in out[6].reason
    assert pids


def test_inprocess_domains_never_start_the_pool():
    with RewardScorer(inprocess_domains=("t_echo",)) as scorer:
        out = scorer.score([item("t_echo", "x", "x", id=i) for i in range(5)])
        assert scorer._pool is None  # lazily started only when needed
        assert all(int(v.reason.split("pid=")[1]) == os.getpid() for v in out)
        mixed = scorer.score([item("t_echo", "x", "x", id=0), _math("\\boxed{2}", "2")])
        assert scorer._pool is not None
        assert [v.score for v in mixed] == [1.0, 1.0]


def test_strip_think_flag():
    resp = "<think>\\boxed{3}</think>"
    with RewardScorer(strip_think=False) as s:
        assert s.score([_math(resp, "3")])[0].status is Status.CORRECT
    with RewardScorer(strip_think=True) as s:
        assert s.score([_math(resp, "3")])[0].status is Status.NO_ANSWER


def test_item_from_verl_row():
    row = {"data_source": "simplelr_qwen", "ability": "math", "prompt": [{"role": "user", "content": "q"}],
           "reward_model": {"ground_truth": "\\frac{1}{4}", "style": "rule"}, "extra_info": {"index": 3},
           "response": "\\boxed{0.25}"}
    it = item_from_row(row)
    assert it == {"data_source": "simplelr_qwen", "ability": "math", "response": "\\boxed{0.25}",
                  "ground_truth": "\\frac{1}{4}", "extra_info": {"index": 3}}


def test_scorer_through_the_http_service():
    with VerifierPool(2, timeout_s=1.5) as pool, RewardServer(pool) as server:
        items = [_math("\\boxed{25}", "025", "aime24"), item("t_echo", "a", "b", id=1), item("t_hang"),
                 item("t_echo", "z", "z", id=2)]
        with RewardScorer(server_url=server.url, inprocess_domains=("t_echo",)) as scorer:
            out = scorer.score(items)
            assert scorer._pool is None
        assert [v.status for v in out] == [Status.CORRECT, Status.WRONG, Status.TIMEOUT, Status.CORRECT]
        # the in-process item ran here; the others in the service's workers
        assert int(out[1].reason.split("pid=")[1]) == os.getpid()
        assert server.health()["server"]["items"] == 2


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


def test_unreachable_service_is_infra_error_not_a_zero_score():
    urls = [f"http://127.0.0.1:{_free_port()}", f"http://127.0.0.1:{_free_port()}"]
    scorer = RewardScorer(server_url=urls, client_retries=3)
    scorer._client.backoff_s = 0.01
    out = scorer.score([_math("\\boxed{1}", "1"), _math("\\boxed{2}", "1")])
    scorer.close()
    assert [v.status for v in out] == [Status.INFRA_ERROR] * 2
    assert "failed 4 attempts over 2 replica(s)" in out[0].reason and "ConnectionRefusedError" in out[0].reason


def test_a_rejected_request_raises():
    with VerifierPool(1, timeout_s=5) as pool, RewardServer(pool, token="s3cret") as server:
        scorer = RewardScorer(server_url=server.url)  # no token
        with pytest.raises(RewardServiceError, match="HTTP 401.*server_token_file"):
            scorer.score([_math("\\boxed{1}", "1")])
        scorer.close()


def test_builtin_rows_are_scored_in_process_by_default():
    pytest.importorskip("prorl.verifiers.builtin")
    items = [{"data_source": "builtin", "ability": "builtin", "response": "\\boxed{12}", "ground_truth": "12",
              "extra_info": {}},
             {"data_source": "builtin", "ability": "builtin", "response": "\\boxed{13}", "ground_truth": "12",
              "extra_info": {}}]
    with RewardScorer() as scorer:
        out = scorer.score(items)
        assert scorer._pool is None  # no worker process was needed
    assert [v.status for v in out] == [Status.CORRECT, Status.WRONG]
