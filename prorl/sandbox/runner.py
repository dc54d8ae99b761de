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
* a seccomp syscall filter built by libseccomp (policy and table: ``syscall_filter.py``),
  installed by bwrap before the interpreter starts: io_uring, keyrings, bpf, ptrace, mount and
  namespace calls, kernel modules, clock setting, ... fail with EPERM;
* per-run cgroup v2 limits on total memory and processes where the host delegates cgroup v2
  (``cgroups.py``; optional hardening);
* rlimits applied inside before any untrusted code runs: CPU, address space, processes (counted
  per user namespace, so one run's fork bomb cannot starve another), file size, open files;
* wall-clock timeout and stdout/stderr caps enforced by the host, which kills the sandbox's
  pid 1 (taking every sandboxed process with it) and then bwrap.

If bwrap is missing or fails its self-test, or the syscall filter cannot be built (no
libseccomp), :class:`SandboxUnavailable` is raised unless the
caller explicitly opted into unsafe execution (``allow_unsafe=True``, ``configure(allow_unsafe=
True)`` or ``PRORL_SANDBOX_ALLOW_UNSAFE=1``): then a missing filter means bwrap without it, and
a missing bwrap means the program runs with the rlimits in a temp dir, still as a dedicated uid
when we are root, but with NO isolation.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from prorl.sandbox import cgroups, policy, syscall_filter
from prorl.sandbox.config import Limits, SandboxConfig
from prorl.sandbox.process import (SLOTS, SandboxClosed, SandboxProcess, SandboxTimeout,
                                   SandboxUnavailable, memfd)

log = logging.getLogger(__name__)

BOOT_PATH = Path(__file__).with_name("boot.py")


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


_CONFIG = SandboxConfig()
_STATE_LOCK = threading.Lock()
_BACKEND: "policy.Backend | None" = None
_BACKEND_ERROR: str | None = None
_DEGRADED: "policy.Backend | None" = None  # bwrap works, but without the syscall filter
_WARNED_UNSAFE = False


def configure(**kwargs) -> SandboxConfig:
    """Change the process-wide sandbox settings (e.g. ``allow_unsafe=True``); resets the probe."""
    global _CONFIG, _BACKEND, _BACKEND_ERROR, _DEGRADED
    with _STATE_LOCK:
        _CONFIG = replace(_CONFIG, **kwargs)
        _BACKEND, _BACKEND_ERROR, _DEGRADED = None, None, None
        return _CONFIG


def get_config() -> SandboxConfig:
    return _CONFIG


def backend() -> policy.Backend:
    """The probed isolation backend (cached); raises :class:`SandboxUnavailable` with the reason."""
    global _BACKEND, _BACKEND_ERROR, _DEGRADED
    with _STATE_LOCK:
        if _BACKEND is None and _BACKEND_ERROR is None:
            try:
                found = _discover()
            except SandboxUnavailable as e:
                _BACKEND_ERROR = str(e)
            else:
                if found.seccomp:
                    _BACKEND = found
                else:  # usable only with the explicit unsafe opt-in
                    _DEGRADED = found
                    _BACKEND_ERROR = f"no seccomp syscall filter: {_filter_status()[1]}"
        if _BACKEND is None:
            raise SandboxUnavailable(_BACKEND_ERROR)
        return _BACKEND


def degraded_backend() -> "policy.Backend | None":
    """The bwrap backend without the syscall filter, when only the filter is missing (used
    only with the explicit unsafe opt-in), else ``None``."""
    try:
        backend()
    except SandboxUnavailable:
        pass
    return _DEGRADED


def available() -> tuple[bool, str]:
    """``(True, description)`` when isolation works here, else ``(False, reason)``."""
    try:
        return True, backend().describe()
    except SandboxUnavailable as e:
        return False, str(e)


def _filter_status() -> tuple[bool, str]:
    if not _CONFIG.seccomp:
        return False, "turned off (seccomp=False / PRORL_SANDBOX_SECCOMP=0)"
    return syscall_filter.status()


def _discover() -> policy.Backend:
    """bwrap + interpreter, with the syscall filter when it can be built, in per-run cgroups
    when the host delegates them (falling back to no cgroups if they break the self-test)."""
    with_filter = _filter_status()[0]
    cg = cgroups.detect(_CONFIG.cgroup_parent)
    if cg.available:
        try:
            return policy.discover(_CONFIG, _probe, with_filter, cg.parent)
        except SandboxUnavailable as e:
            log.warning("per-run cgroups under %s do not work, not using them: %s", cg.parent, e)
    return policy.discover(_CONFIG, _probe, with_filter, None)


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

        seccomp_fd = None
        if b.kind == "bwrap" and b.seccomp:
            seccomp_fd = memfd("seccomp", syscall_filter.bpf_program())
            fds.append(seccomp_fd)
        user = None
        if b.drop_uid:
            slot, lock_fd = SLOTS.acquire(_CONFIG.slots)
            cleanups.append(lambda: os.close(lock_fd))
            user = _CONFIG.uid_base + slot
        if b.kind == "bwrap":
            argv = policy.bwrap_argv(b, limits, boot_fd, file_fds, mode, extra_args, seccomp_fd)
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
        cgroup = None
        if b.kind == "bwrap" and b.cgroup_parent:
            cgroup = cgroups.RunCgroup(b.cgroup_parent, limits.cgroup_memory_bytes(),
                                       limits.cgroup_pids())
            cleanups.append(cgroup.remove)
            argv = cgroup.wrap(argv)
        popen = subprocess.Popen(
            argv, stdin=stdin_arg, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            pass_fds=[boot_fd, *file_fds.values(), *([seccomp_fd] if seccomp_fd else [])],
            start_new_session=True, close_fds=True, umask=0o077, **drop)
    except BaseException:
        for fn in cleanups:
            fn()
        raise
    # the child holds its own copies of the memfds now
    for fd in fds:
        os.close(fd)
    fds.clear()
    sp = SandboxProcess(popen, cleanups, limits.max_output, b.kind == "bwrap", max_stderr)
    sp.cgroup = cgroup
    return sp


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
            if sp.cgroup is not None and killed_by in (None, "signal") and sp.cgroup.oom_killed():
                killed_by = "memory"  # the run's total memory bound (cgroup) was hit
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
    """The isolated backend, or with the explicit unsafe opt-in the best one there is: bwrap
    without the syscall filter when only the filter is missing, else no isolation at all."""
    try:
        return backend()
    except SandboxUnavailable:
        if allow_unsafe or (allow_unsafe is None and _CONFIG.allow_unsafe):
            global _WARNED_UNSAFE
            degraded = _DEGRADED
            if not _WARNED_UNSAFE:
                _WARNED_UNSAFE = True
                what = "without the seccomp filter" if degraded else "WITHOUT isolation"
                log.warning("running untrusted code %s (allow_unsafe=True): %s", what,
                            _BACKEND_ERROR)
            return degraded or policy.unsafe_backend(_CONFIG)
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
           "degraded_backend",
           "get_config", "run_python", "spawn_python"]
