"""Host side of the sandbox protocol: load an untrusted program once, then call its functions
(``call`` mode) or run it on test inputs (``stdio`` mode), getting back plain data only.

The time budget starts once the sandbox says hello (start-up latency under load is not charged
to the program) and covers loading the program and every request. Failures that must not be
swallowed by test code (timeout, the sandbox dying) derive from ``BaseException``.
"""

from __future__ import annotations

import builtins
import time
from dataclasses import dataclass
from typing import Any

from prorl.sandbox import plaindata
from prorl.sandbox.runner import (Limits, SandboxClosed, SandboxProcess, SandboxTimeout,
                                  spawn_python)

MAX_MESSAGE = 16 << 20


class SessionAbort(BaseException):
    """The session can no longer answer (derives from BaseException on purpose)."""


class SessionTimeout(SessionAbort):
    """The time budget ran out; the sandbox has been killed."""


class SessionDied(SessionAbort):
    """The sandboxed program exited, broke the protocol or exceeded a size limit."""


class RemoteError(Exception):
    """The sandboxed function raised an exception that is not a plain builtin exception."""


def _remote_exception(name: Any, msg: Any) -> Exception:
    """Rebuild a raised exception as a *builtin* class by name (never a program-defined one)."""
    msg = str(msg)[:500] if isinstance(msg, str) else "?"
    cls = getattr(builtins, name, None) if isinstance(name, str) else None
    if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == "builtins":
        try:
            return cls(msg)
        except Exception:
            pass
    return RemoteError(f"{name}: {msg}")


@dataclass
class StdioResult:
    exit_code: int
    stdout: str
    stderr: str
    truncated: bool


class PythonSession:
    """One sandboxed program, loaded once. Use as a context manager."""

    def __init__(self, code: str, mode: str, *, budget_s: float, limits: Limits | None = None,
                 startup_timeout_s: float = 30.0, module_name: str = "solution",
                 allow_unsafe: bool | None = None, max_message: int = MAX_MESSAGE) -> None:
        self.mode = mode
        self.max_message = max_message
        lim = limits or Limits()
        lim = Limits(**{**lim.__dict__, "wall_s": budget_s + startup_timeout_s,
                        "max_output": max(lim.max_output, max_message + 1)})
        opts = {"module_name": module_name, "max_output": str(lim.max_output)}
        self.proc: SandboxProcess = spawn_python(code, mode, limits=lim, options=opts,
                                                 allow_unsafe=allow_unsafe)
        self.syntax_error: str | None = None
        self.load_error: str | None = None
        self.calls = 0
        try:
            hello = self._recv(time.monotonic() + startup_timeout_s, "start-up")
            if hello != {"hello": True}:
                raise SessionDied(f"unexpected greeting {str(hello)[:100]}")
            self.deadline = time.monotonic() + budget_s  # the budget starts once the sandbox is up
            ready = self._recv(self.deadline, "loading the program")
            if not isinstance(ready, dict) or ready.get("ready") is not True:
                raise SessionDied("malformed ready message")
            se, le = ready.get("syntax_error"), ready.get("load_error")
            self.syntax_error = str(se)[:500] if se is not None else None
            self.load_error = str(le)[:500] if le is not None else None
        except BaseException:
            self.close()
            raise

    # -- plumbing
    def _recv(self, deadline: float, what: str) -> Any:
        try:
            line = self.proc.read_line(deadline, self.max_message)
        except SandboxTimeout:
            raise SessionTimeout(f"time limit exceeded while {what}") from None
        except SandboxClosed as e:
            detail = bytes(self.proc.stderr[-300:]).decode("utf-8", "replace").strip()
            raise SessionDied(f"sandbox ended while {what}: {e}"
                              + (f"; stderr: {detail}" if detail else "")) from None
        try:
            return plaindata.loads(line)
        except plaindata.PlainDataError as e:
            raise SessionDied(str(e)) from None

    def _request(self, req: dict, what: str) -> Any:
        if time.monotonic() >= self.deadline:
            self.proc.kill()
            raise SessionTimeout(f"time limit exceeded before {what}")
        try:
            self.proc.write(plaindata.dumps(req), self.deadline)
        except SandboxTimeout:
            raise SessionTimeout(f"time limit exceeded while sending {what}") from None
        except SandboxClosed as e:
            raise SessionDied(f"sandbox ended before {what}: {e}") from None
        return self._recv(self.deadline, what)

    # -- API
    def call(self, fn: str, args: tuple | list = (), kwargs: dict | None = None) -> Any:
        """Call ``fn(*args, **kwargs)`` in the sandbox; returns a fresh plain value or a
        :class:`~prorl.sandbox.plaindata.RemoteRef`; re-raises remote exceptions as builtins."""
        enc_args = plaindata.encode(list(args))  # PlainDataError (a ValueError) if unencodable
        enc_kwargs = plaindata.encode(dict(kwargs or {}))
        self.calls += 1
        resp = self._request({"fn": str(fn), "args": enc_args, "kwargs": enc_kwargs},
                             f"calling {fn}")
        if not isinstance(resp, dict) or type(resp.get("ok")) is not bool:
            raise SessionDied("malformed response")
        if not resp["ok"]:
            raise _remote_exception(resp.get("exc"), resp.get("msg"))
        try:
            return plaindata.decode(resp.get("v"))
        except plaindata.PlainDataError as e:
            raise RemoteError(f"result is not plain data: {e}") from None

    def run_stdin(self, stdin: str) -> StdioResult:
        """Run the program as ``__main__`` on ``stdin`` (fresh forked process per call)."""
        self.calls += 1
        resp = self._request({"stdin": stdin}, "running a test")
        if not isinstance(resp, dict) or type(resp.get("exit")) is not int \
                or type(resp.get("stdout")) is not str:
            raise SessionDied("malformed stdio response")
        err = resp.get("stderr")
        return StdioResult(resp["exit"], resp["stdout"], err if type(err) is str else "",
                           resp.get("truncated") is True)

    def close(self) -> None:
        self.proc.close()

    def __enter__(self) -> "PythonSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
