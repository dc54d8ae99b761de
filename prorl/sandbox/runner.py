"""Run untrusted Python inside a bubblewrap sandbox.

Isolation (see ``policy.py`` for how the command line is built):

* fresh user/pid/net/ipc/uts/cgroup/mount namespaces (``bwrap --unshare-all``), no network at all,
  ``--die-with-parent``, ``--new-session``, no nested user namespaces;
* a minimal read-only filesystem: the interpreter, its stdlib and the shared libraries it needs;
  ``/tmp`` (the working dir) is a size-limited tmpfs private to the run and gone afterwards;
  program and data files are copied in from memfds, so nothing is written on the host's disk;
* an empty environment (the host's variables never reach bwrap, let alone the program);
* when the scorer runs as root, bwrap itself is started as a dedicated unprivileged uid, one per
  concurrent slot (root would ignore ``RLIMIT_NPROC``), so the program is not root on the host
  (switched with ``setpriv`` at exec time when available, which keeps spawning cheap from a big
  scorer process);
* rlimits applied inside before any untrusted code runs: CPU, address space, processes (counted
  per user namespace, so one run's fork bomb cannot starve another), file size, open files;
* wall-clock timeout and stdout/stderr caps enforced by the host, which kills the sandbox's
  pid 1 (taking every sandboxed process with it) and then bwrap.

If bwrap is missing or fails its self-test, :class:`SandboxUnavailable` is raised unless the
caller explicitly opted into unsafe execution (``allow_unsafe=True``, ``configure(allow_unsafe=
True)`` or ``PRORL_SANDBOX_ALLOW_UNSAFE=1``): then the program runs with the rlimits in a temp
dir, still as a dedicated uid when we are root, but with NO isolation.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from prorl.sandbox import policy
from prorl.sandbox.process import (SLOTS, SandboxClosed, SandboxProcess, SandboxTimeout,
                                   SandboxUnavailable, memfd)

log = logging.getLogger(__name__)

BOOT_PATH = Path(__file__).with_name("boot.py")


@dataclass(frozen=True)
class Limits:
    """Resource bounds of one sandboxed run."""

    wall_s: float = 10.0  # host-enforced wall clock (kills the whole sandbox)
    cpu_s: float = 10.0  # RLIMIT_CPU per process (SIGXCPU, then SIGKILL one second later)
    memory_mb: int = 1024  # RLIMIT_AS per process
    nproc: int = 16  # RLIMIT_NPROC inside the run's own user namespace (threads count too)
    fsize_mb: int = 32  # RLIMIT_FSIZE: largest file the program may write
    nofile: int = 256  # RLIMIT_NOFILE
    max_output: int = 1 << 20  # bytes kept per stream; the run is killed when exceeded
    tmpfs_mb: int = 64  # size of the private /tmp scratch dir
    shm_mb: int = 16  # size of /dev/shm

    def boot_args(self) -> list[str]:
        return [str(max(1, math.ceil(self.cpu_s))), str(int(self.memory_mb) << 20),
                str(int(self.nproc)), str(int(self.fsize_mb) << 20), str(int(self.nofile))]


@dataclass
class RunResult:
    """Outcome of :func:`run_python`. ``exit_code`` < 0 means killed by that signal."""

    exit_code: int | None
    stdout: bytes
    stderr: bytes
    wall_s: float
    # None | "timeout" | "cpu" | "memory" | "output" | "fsize" | "signal"
    killed_by: str | None = None
    truncated: bool = False
    sandboxed: bool = True

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.killed_by is None

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")


@dataclass
class SandboxConfig:
    """Process-wide settings; environment variables give the defaults (for worker processes)."""

    allow_unsafe: bool = field(default_factory=lambda: _env_flag("PRORL_SANDBOX_ALLOW_UNSAFE"))
    python: str | None = field(default_factory=lambda: os.environ.get("PRORL_SANDBOX_PYTHON"))
    bwrap: str | None = field(default_factory=lambda: os.environ.get("PRORL_SANDBOX_BWRAP"))
    uid_base: int = field(default_factory=lambda: int(os.environ.get("PRORL_SANDBOX_UID_BASE",
                                                                     "1900000000")))
    slots: int = field(default_factory=lambda: int(os.environ.get("PRORL_SANDBOX_SLOTS", "64")))
    extra_ro_binds: tuple[str, ...] = ()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


_CONFIG = SandboxConfig()
_STATE_LOCK = threading.Lock()
_BACKEND: "policy.Backend | None" = None
_BACKEND_ERROR: str | None = None
_WARNED_UNSAFE = False


def configure(**kwargs) -> SandboxConfig:
    """Change the process-wide sandbox settings (e.g. ``allow_unsafe=True``); resets the probe."""
    global _CONFIG, _BACKEND, _BACKEND_ERROR
    with _STATE_LOCK:
        _CONFIG = replace(_CONFIG, **kwargs)
        _BACKEND, _BACKEND_ERROR = None, None
        return _CONFIG


def get_config() -> SandboxConfig:
    return _CONFIG


def backend() -> policy.Backend:
    """The probed isolation backend (cached); raises :class:`SandboxUnavailable` with the reason."""
    global _BACKEND, _BACKEND_ERROR
    with _STATE_LOCK:
        if _BACKEND is None and _BACKEND_ERROR is None:
            try:
                _BACKEND = policy.discover(_CONFIG, _probe)
            except SandboxUnavailable as e:
                _BACKEND_ERROR = str(e)
        if _BACKEND is None:
            raise SandboxUnavailable(_BACKEND_ERROR)
        return _BACKEND


def available() -> tuple[bool, str]:
    """``(True, description)`` when isolation works here, else ``(False, reason)``."""
    try:
        return True, backend().describe()
    except SandboxUnavailable as e:
        return False, str(e)


def _probe(b: policy.Backend) -> None:
    """Self-test of a candidate backend: a trivial program must run and print its answer."""
    res = _run(b, "import os\nprint(6 * 7, os.getuid() != 0 or 'root')", b"", Limits(wall_s=20),
               None, ())
    if res.exit_code != 0 or res.stdout.split() != [b"42", b"True"]:
        raise SandboxUnavailable(
            f"sandbox self-test failed with {b.describe()}: exit={res.exit_code} "
            f"killed_by={res.killed_by} stdout={res.stdout[:200]!r} stderr={res.stderr[-800:]!r}")


_SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin")


def _spawn(b: "policy.Backend", mode: str, code: str, limits: Limits, files: dict | None,
           extra_args: tuple[str, ...], stdin: bytes | None,
           max_stderr: int | None = None) -> SandboxProcess:
    """Start the bootstrap in ``mode``; ``stdin=None`` gives a pipe (protocol modes)."""
    fds: list[int] = []
    cleanups: list[Callable[[], None]] = [lambda: [os.close(fd) for fd in fds]]
    try:
        boot_fd = memfd("boot", BOOT_PATH.read_bytes())
        fds.append(boot_fd)
        file_fds = {"main.py": memfd("main", code.encode("utf-8", "surrogateescape"))}
        fds.append(file_fds["main.py"])
        for name, data in (files or {}).items():
            policy.check_file_name(name)
            raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
            file_fds[name] = memfd("file", raw)
            fds.append(file_fds[name])
        stdin_arg: int = subprocess.PIPE
        if stdin is not None:
            stdin_arg = memfd("stdin", stdin)
            fds.append(stdin_arg)

        user = None
        if b.drop_uid:
            slot, lock_fd = SLOTS.acquire(_CONFIG.slots)
            cleanups.append(lambda: os.close(lock_fd))
            user = _CONFIG.uid_base + slot
        if b.kind == "bwrap":
            argv = policy.bwrap_argv(b, limits, boot_fd, file_fds, mode, extra_args)
            cwd = "/"
        else:  # explicit opt-in: no isolation at all, only rlimits, a temp dir and (as root) a uid
            scratch = tempfile.mkdtemp(prefix="prorl-unsafe-")
            cleanups.append(lambda: shutil.rmtree(scratch, ignore_errors=True))
            file_fds = {".boot.py": boot_fd, **file_fds}
            for name, fd in file_fds.items():
                dest = Path(scratch) / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(os.pread(fd, 1 << 31, 0))
                if user is not None:
                    os.chown(dest.parent, user, user)
                    os.chown(dest, user, user)
            if user is not None:
                os.chown(scratch, user, user)
            argv = [b.python, "-I", "-S", "-B", str(Path(scratch) / ".boot.py"), mode,
                    *limits.boot_args(), scratch, str(Path(scratch) / "main.py"), *extra_args]
            cwd = scratch
        drop: dict = {}
        if user is not None:
            if _SETPRIV:  # exec-time uid switch keeps vfork: forking a big scorer costs ~60 ms
                argv = [_SETPRIV, f"--reuid={user}", f"--regid={user}", "--clear-groups", "--",
                        *argv]
            else:
                drop = {"user": user, "group": user, "extra_groups": []}
        popen = subprocess.Popen(
            argv, stdin=stdin_arg, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            pass_fds=[boot_fd, *file_fds.values()],
            start_new_session=True, close_fds=True, umask=0o077, **drop)
    except BaseException:
        for fn in cleanups:
            fn()
        raise
    # the child holds its own copies of the memfds now
    for fd in fds:
        os.close(fd)
    fds.clear()
    return SandboxProcess(popen, cleanups, limits.max_output, b.kind == "bwrap", max_stderr)


def _run(b: "policy.Backend", code: str, stdin: bytes, limits: Limits, files: dict | None,
         argv: tuple[str, ...]) -> RunResult:
    t0 = time.monotonic()
    deadline = t0 + limits.wall_s
    killed_by = None
    with _spawn(b, "exec", code, limits, files, tuple(argv), stdin) as sp:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                killed_by = "timeout"
                break
            if not sp._pump(min(remaining, 1.0)):
                break
            if sp.stdout_dropped or sp.stderr_dropped:
                killed_by = "output"
                break
        if killed_by is None and not sp.wait_exit(deadline):
            killed_by = "timeout"
        sp.kill()
        sp.popen.wait()
        code_ = sp.popen.returncode
        if killed_by is None:
            code_, killed_by = _classify(code_, bytes(sp.stderr), b.kind == "bwrap")
        elif killed_by == "timeout":
            code_ = None
        return RunResult(code_, bytes(sp._out), bytes(sp.stderr), time.monotonic() - t0,
                         killed_by, bool(sp.stdout_dropped or sp.stderr_dropped),
                         b.kind == "bwrap")


def _classify(code: int, stderr: bytes, via_bwrap: bool) -> tuple[int, str | None]:
    """Turn an exit status into ``(exit_code, killed_by)``; bwrap reports signals as 128+n."""
    sig = -code if code < 0 else (code - 128 if via_bwrap and 128 < code < 160 else 0)
    if sig:
        code = -sig
        return code, {signal.SIGXCPU: "cpu", signal.SIGXFSZ: "fsize"}.get(sig, "signal")
    if code != 0 and b"MemoryError" in stderr[-300:]:
        return code, "memory"
    return code, None


def _resolve_backend(allow_unsafe: bool | None) -> "policy.Backend":
    try:
        return backend()
    except SandboxUnavailable:
        if allow_unsafe or (allow_unsafe is None and _CONFIG.allow_unsafe):
            global _WARNED_UNSAFE
            if not _WARNED_UNSAFE:
                _WARNED_UNSAFE = True
                log.warning("running untrusted code WITHOUT isolation (allow_unsafe=True): %s",
                            _BACKEND_ERROR)
            return policy.unsafe_backend(_CONFIG)
        raise


def run_python(code: str, stdin: bytes | str = b"", *, limits: Limits | None = None,
               files: dict[str, str | bytes] | None = None, argv: tuple[str, ...] = (),
               allow_unsafe: bool | None = None) -> RunResult:
    """Run ``code`` as ``__main__`` in a fresh sandbox, feeding ``stdin``; never raises for
    program failures (see ``RunResult``), raises :class:`SandboxUnavailable` without isolation.

    ``files`` are written (relative names) into the private working dir next to ``main.py``.
    ``allow_unsafe=None`` means "use the process-wide setting".
    """
    b = _resolve_backend(allow_unsafe)
    data = stdin.encode("utf-8") if isinstance(stdin, str) else bytes(stdin)
    return _run(b, code, data, limits or Limits(), files, argv)


def spawn_python(code: str, mode: str, *, limits: Limits | None = None,
                 files: dict[str, str | bytes] | None = None, options: dict[str, str] | None = None,
                 allow_unsafe: bool | None = None) -> SandboxProcess:
    """Start a protocol-mode bootstrap (``call`` or ``stdio``, see ``boot.py``) on ``code``.

    Used by :mod:`prorl.sandbox.session`; the caller owns (and must close) the process.
    """
    if mode not in ("call", "stdio"):
        raise ValueError(f"unknown protocol mode {mode!r}")
    b = _resolve_backend(allow_unsafe)
    extra = tuple(f"{k}={v}" for k, v in (options or {}).items())
    return _spawn(b, mode, code, limits or Limits(), files, extra, None, max_stderr=1 << 16)


__all__ = ["Limits", "RunResult", "SandboxClosed", "SandboxConfig", "SandboxProcess",
           "SandboxTimeout", "SandboxUnavailable", "available", "backend", "configure",
           "get_config", "run_python", "spawn_python"]
