"""``prorl score`` (malformed lines, summary, exit codes) and ``prorl serve-rewards`` (a real
subprocess: health, scoring, graceful SIGTERM shutdown)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    return env


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _row(resp: str, gold, source: str = "math500", **extra) -> dict:
    return {"data_source": source, "ability": "math", "prompt": [{"role": "user", "content": "q"}],
            "reward_model": {"ground_truth": gold, "style": "rule"}, "extra_info": {"index": 0}, "response": resp,
            **extra}


def test_score_command(tmp_path):
    lines = [
        json.dumps(_row("so \\boxed{25}", "025", "aime24")),
        "{this is not json",
        json.dumps(_row("\\boxed{\\frac{1}{2}}", "0.5")),
        json.dumps({"data_source": "math500", "reward_model": {"ground_truth": "1"}}),  # no response
        "",
        json.dumps(_row("no answer", "3")),
        json.dumps({"data_source": "math500", "response": "\\boxed{1}"}),  # no ground truth
        json.dumps(_row("\\boxed{9}", 10.0, "amc23")),
    ]
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    p = subprocess.run([sys.executable, "-m", "prorl.cli", "score", str(inp), "-o", str(out), "--workers", "1",
                        "--timeout", "5"], capture_output=True, text=True, env=_env(), cwd=REPO, timeout=120)
    assert p.returncode == 1, p.stderr
    assert re.search(r"in\.jsonl:2: bad JSON", p.stderr)
    assert re.search(r"in\.jsonl:4: missing or non-string field 'response'", p.stderr)
    assert re.search(r"in\.jsonl:7: missing field 'reward_model.ground_truth'", p.stderr)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["score"], r["status"]) for r in rows] == [(1.0, "correct"), (1.0, "correct"), (0.0, "no_answer"),
                                                         (0.0, "wrong")]
    assert rows[0]["prompt"] == [{"role": "user", "content": "q"}] and rows[0]["reason"]
    assert "scored 4 rows: mean score 0.5000" in p.stderr and "malformed lines: 3" in p.stderr
    assert "correct=2" in p.stderr and "no_answer=1" in p.stderr and "wrong=1" in p.stderr

    good = tmp_path / "good.jsonl"
    good.write_text(lines[0] + "\n")
    p = subprocess.run([sys.executable, "-m", "prorl.cli", "score", str(good), "--workers", "1"],
                       capture_output=True, text=True, env=_env(), cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["status"] == "correct"


def test_serve_rewards_subprocess_and_sigterm():
    proc = subprocess.Popen([sys.executable, "-m", "prorl.cli", "serve-rewards", "--port", "0", "--workers", "1",
                             "--timeout", "2", "--max-queue", "64"], stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=REPO)
    try:
        seen, m = [], None
        for line in proc.stderr:  # stop at the "listening on" line (warnings may come first)
            seen.append(line)
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
            if m or len(seen) > 50:
                break
        assert m, seen
        url = m.group(1)
        deadline = time.monotonic() + 60
        while True:
            with urllib.request.urlopen(url + "/health", timeout=10) as r:
                health = json.loads(r.read())
            if health["workers_alive"] == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert health["status"] == "ok" and health["queue_depth"] == 0
        items = [{"data_source": "aime24", "response": "\\boxed{73}", "ground_truth": "073"},
                 {"data_source": "aime24", "response": "\\boxed{9^{9^{9^{9}}}}", "ground_truth": "073"}]
        req = urllib.request.Request(url + "/score", data=json.dumps({"items": items}).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            res = json.loads(r.read())["results"]
        assert [x["status"] for x in res] == ["correct", "timeout"]
        worker_pids = health["pool"]["pids"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        rest = proc.stderr.read()
        assert "SIGTERM, draining" in rest and "stopped" in rest
        deadline = time.monotonic() + 10
        while any(_running(p) for p in worker_pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_running(p) for p in worker_pids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
