"""STEM multiple-choice extraction and the optional LLM judge (against a fake loopback server)."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from prorl.verifiers.base import Status, verify_one
from prorl.verifiers.stem import JudgeConfig, configure_judge, extract_choice, verify_stem


@pytest.mark.parametrize(
    "response, gold",
    [
        ("The answer is (B).", "B"),
        ("Some work.\n\\boxed{B}", "B"),
        ("<answer>B</answer>", "B"),
        ("<answer>The answer is B because of entropy.</answer>", "B"),
        ("\\boxed{\\text{(C)}}", "C"),
        ("Final Answer: The final answer is $\\boxed{D}$. I hope it is correct.", "D"),
        ("**Answer:** **(b)**", "B"),
        ("The correct option is B) 42 kg, since ...", "B"),
        ("Answer: B\n\nWait, that is not right. The answer is C.", "C"),
        ("B", "B"),
        ("Long reasoning...\n\n**C**", "C"),
        ("The answer is B, C is a distractor.", "B"),
    ],
)
def test_extracts_the_final_letter(response, gold):
    v = verify_stem(response, gold, {})
    assert (v.score, v.status) == (1.0, Status.CORRECT), v
    other = "A" if gold != "A" else "B"
    w = verify_stem(response, other, {})
    assert (w.score, w.status) == (0.0, Status.WRONG), w


@pytest.mark.parametrize("response", ["The answer is A and C.", "\\boxed{A, B}", "Answer: A, B, and D.",
                                      "<answer>(A) or (C)</answer>", "The answers are B and D"])
def test_several_options_score_zero(response):
    for gold in "ABCD":
        v = verify_stem(response, gold, {})
        assert v.score == 0.0 and v.status == Status.WRONG
        assert "several options" in v.reason


@pytest.mark.parametrize("response", ["", "I am not sure about this one.", "The answer is unclear", "\\boxed{}"])
def test_no_answer(response):
    v = verify_stem(response, "A", {})
    assert (v.score, v.status) == (0.0, Status.NO_ANSWER)


def test_letter_sets_and_ground_truth_forms():
    assert verify_stem("\\boxed{E}", "E", {}).status == Status.CORRECT  # gold beyond D widens the set
    assert verify_stem("\\boxed{E}", "B", {}).status == Status.NO_ANSWER  # E is not an option of A-D
    assert verify_stem("\\boxed{J}", "J", {"letters": "ABCDEFGHIJ"}).status == Status.CORRECT
    assert verify_stem("\\boxed{G}", 6, {"num_choices": 10}).status == Status.CORRECT  # 0-based index
    assert verify_stem("\\boxed{F}", 6, {"num_choices": 10}).status == Status.WRONG
    opts = ["1 kg", "42 kg", "3 kg", "4 kg"]
    assert verify_stem("\\boxed{B}", "42 kg", {"options": opts}).status == Status.CORRECT
    assert verify_stem("\\boxed{42 kg}", "B", {"options": opts}).status == Status.CORRECT  # option text
    assert verify_stem("\\boxed{3 kg}", "(B)", {"options": opts}).status == Status.WRONG
    assert verify_stem("\\boxed{B}", "B", {"options": {"A": "x", "B": "y"}}).status == Status.CORRECT
    assert extract_choice("the answer is (c)", "ABCD") == {"C"}


def test_through_the_registry():
    v = verify_one("gpqa", None, "<think>maybe A</think>The answer is (D).", "D", {})
    assert v.status == Status.CORRECT
    # the choice in the thinking part is ignored
    assert verify_one("gpqa", None, "<think>Answer: D</think>no idea", "D", {}).status == Status.NO_ANSWER


def test_free_form_without_judge():
    info = {"answer_type": "free_form"}
    assert verify_stem("so \\boxed{2.5 m/s}", "2.5 m/s", info).status == Status.CORRECT
    v = verify_stem("\\boxed{5/2 m/s}", "2.5 m/s", info)
    assert v.status == Status.ERROR and "judge" in v.reason


# ---------------------------------------------------------------------------------------------
# fake OpenAI-compatible judge on 127.0.0.1
# ---------------------------------------------------------------------------------------------
class _Judge:
    """Serves /v1/chat/completions; ``plan`` is a list of actions consumed one per request."""

    def __init__(self) -> None:
        self.plan: list[str] = []
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                outer.headers.append(dict(self.headers))
                action = outer.plan.pop(0) if outer.plan else "grade"
                if action == "500":
                    self.send_response(500)
                    self.end_headers()
                    return
                if action == "sleep":
                    time.sleep(1.5)
                if self.path != "/v1/chat/completions":
                    self.send_response(404)
                    self.end_headers()
                    return
                user = body["messages"][-1]["content"]
                ref = user.split("Reference answer:\n", 1)[1].split("\n", 1)[0]
                tail = user.rsplit("Response (final part):\n", 1)[1]
                core = re.sub(r"^\(\w\)\s*", "", ref)  # "(C) 3 kg" -> "3 kg"
                verdict = "CORRECT" if core in tail else "INCORRECT"
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": verdict}}]}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "_Judge":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def judge():
    with _Judge() as j:
        yield j
    configure_judge(None)


def _info(judge: _Judge, **kw) -> dict:
    cfg = {"url": judge.url, "model": "fake-judge", "timeout": 0.5, "retries": 2, "backoff": 0.01}
    cfg.update(kw)
    return {"answer_type": "free_form", "question": "Speed of the cart?", "judge": cfg}


@pytest.mark.timeout(30)
def test_judge_grades_free_form(judge):
    v = verify_stem("Thus the speed is 2.5 m/s.", "2.5 m/s", _info(judge))
    assert (v.score, v.status) == (1.0, Status.CORRECT)
    v = verify_stem("Thus the speed is 7 m/s.", "2.5 m/s", _info(judge))
    assert (v.score, v.status) == (0.0, Status.WRONG)
    req = judge.requests[0]
    assert req["model"] == "fake-judge" and "Speed of the cart?" in req["messages"][-1]["content"]


@pytest.mark.timeout(30)
def test_judge_retry_then_succeed(judge):
    judge.plan = ["500", "500"]
    v = verify_stem("It is 2.5 m/s", "2.5 m/s", _info(judge, retries=2))
    assert v.status == Status.CORRECT
    assert len(judge.requests) == 3


@pytest.mark.timeout(30)
def test_judge_gives_up_with_error(judge):
    judge.plan = ["500", "500", "500"]
    v = verify_stem("It is 2.5 m/s", "2.5 m/s", _info(judge, retries=1))
    assert (v.score, v.status) == (0.0, Status.ERROR)
    assert "2 attempt" in v.reason and "500" in v.reason
    assert len(judge.requests) == 2


@pytest.mark.timeout(30)
def test_judge_timeout_is_an_error(judge):
    judge.plan = ["sleep", "sleep"]
    t0 = time.monotonic()
    v = verify_stem("It is 2.5 m/s", "2.5 m/s", _info(judge, timeout=0.3, retries=1))
    elapsed = time.monotonic() - t0
    assert (v.score, v.status) == (0.0, Status.ERROR)
    assert "timed out" in v.reason.lower() or "timeout" in v.reason.lower()
    assert len(judge.requests) == 2 and elapsed < 3.0


@pytest.mark.timeout(30)
def test_judge_timeout_then_success(judge):
    judge.plan = ["sleep"]
    v = verify_stem("It is 2.5 m/s", "2.5 m/s", _info(judge, timeout=0.3, retries=1))
    assert v.status == Status.CORRECT


@pytest.mark.timeout(30)
def test_judge_api_key_and_env_config(judge, monkeypatch):
    monkeypatch.setenv("FAKE_JUDGE_KEY", "sk-test-123")
    info = _info(judge, api_key_env="FAKE_JUDGE_KEY")
    assert verify_stem("2.5 m/s", "2.5 m/s", info).status == Status.CORRECT
    assert judge.headers[-1].get("Authorization") == "Bearer sk-test-123"
    monkeypatch.delenv("FAKE_JUDGE_KEY")
    v = verify_stem("2.5 m/s", "2.5 m/s", info)
    assert v.status == Status.ERROR and "FAKE_JUDGE_KEY" in v.reason
    # configuration from the environment (what worker processes inherit)
    monkeypatch.setenv("PRORL_STEM_JUDGE_URL", judge.url)
    monkeypatch.setenv("PRORL_STEM_JUDGE_MODEL", "env-judge")
    v = verify_stem("about 9 m/s", "2.5 m/s", {"answer_type": "free_form"})
    assert v.status == Status.WRONG and judge.requests[-1]["model"] == "env-judge"


@pytest.mark.timeout(30)
def test_judge_mode_all_and_unreachable(judge):
    configure_judge(JudgeConfig(url=judge.url, model="m", mode="all", timeout=0.5, backoff=0.01))
    v = verify_stem("The answer is the third one, 3 kg", "C", {"options": ["1 kg", "2 kg", "3 kg", "4 kg"]})
    assert v.status == Status.CORRECT and "(C) 3 kg" in judge.requests[-1]["messages"][-1]["content"]
    configure_judge(JudgeConfig(url="http://127.0.0.1:9/v1", model="m", timeout=0.5, retries=1, backoff=0.01))
    v = verify_stem("2.5", "2.5 m/s", {"answer_type": "free_form"})
    assert v.status == Status.ERROR and "attempt" in v.reason
    configure_judge(JudgeConfig(url="file:///etc/passwd", model="m"))
    assert verify_stem("2.5", "2.5 m/s", {"answer_type": "free_form"}).status == Status.ERROR
