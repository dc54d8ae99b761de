"""Helpers for the reward-service tests: a real ``prorl serve-rewards`` subprocess (with the test
verifiers registered) and raw HTTP on loopback."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[2]

_BOOT = ("import sys; from rewards_testverifiers import register_all; register_all(); "
         "from prorl.cli import main; sys.exit(main(['serve-rewards'] + sys.argv[1:]))")


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO), str(Path(__file__).parent), e.get("PYTHONPATH", "")])
    return e


class Replica:
    """A running ``prorl serve-rewards`` subprocess; its stderr is collected in :attr:`log`."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _BOOT, "--port", "0", *args], stderr=subprocess.PIPE,
                                     text=True, env=env(), cwd=REPO)
        self.log: list[str] = []
        self.url = ""
        for line in self.proc.stderr:  # warnings may come first
            self.log.append(line)
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
            if m:
                self.url = m.group(1)
                break
        if not self.url:
            self.proc.wait(10)
            raise RuntimeError("replica did not start: " + "".join(self.log))
        self._reader = threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True)
        self._reader.start()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if request(self.url, "GET", "/ready")[0] == 200:
                return
            time.sleep(0.05)
        raise TimeoutError("replica not ready")

    def stderr(self) -> str:
        self._reader.join(10)
        return "".join(self.log)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@contextlib.contextmanager
def replica(*args: str) -> Iterator[Replica]:
    r = Replica(*args)
    try:
        r.wait_ready()
        yield r
    finally:
        r.kill()


def request(url: str, method: str, path: str, payload: object = None, *, token: str | None = None,
            raw: bytes | None = None, timeout: float = 30.0) -> tuple[int, dict, object]:
    """One request on a fresh connection: (status, lower-cased headers, JSON body or text)."""
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = raw if raw is not None else (None if payload is None else json.dumps(payload).encode())
    try:
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
    finally:
        c.close()
    try:
        return r.status, hdrs, json.loads(data)
    except ValueError:
        return r.status, hdrs, data.decode("utf-8", "replace")
