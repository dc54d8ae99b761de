"""Process plumbing for sandboxed runs: uid slots, memfds, and :class:`SandboxProcess` (pipes
read with caps and deadlines; killing the sandbox's pid 1 first so that bwrap reaps it)."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import selectors
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)


class SandboxUnavailable(RuntimeError):
    """No working isolation on this machine (the message says why) and unsafe runs not allowed."""


class SandboxTimeout(Exception):
    """A sandboxed process did not answer before its deadline (it has been killed)."""


class SandboxClosed(Exception):
    """The sandboxed process exited or closed its output (or exceeded the message size)."""


# ----------------------------------------------------------------------------- uid slots


class SlotPool:
    """One dedicated host uid per concurrent run, claimed with a file lock (works across
    processes; a crashed holder releases its slot automatically)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.gettempdir()) / f"prorl-sandbox-slots-{os.geteuid()}"

    def _ensure_dir(self) -> None:
        try:
            self.dir.mkdir(mode=0o700)
        except FileExistsError:
            pass
        st = os.lstat(self.dir)
        if not os.path.isdir(self.dir) or os.path.islink(self.dir) or st.st_uid != os.geteuid():
            raise SandboxUnavailable(f"slot lock dir {self.dir} is not a private directory")

    def acquire(self, n: int, timeout_s: float = 60.0) -> tuple[int, int]:
        """Return ``(slot, lock_fd)``; waits while all ``n`` slots are in use."""
        self._ensure_dir()
        start = os.getpid() + threading.get_ident()
        deadline = time.monotonic() + timeout_s
        while True:
            for i in range(n):
                slot = (start + i) % n
                fd = os.open(self.dir / f"slot-{slot}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                             0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return slot, fd
                except OSError as e:
                    os.close(fd)
                    if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise
            if time.monotonic() > deadline:
                raise SandboxUnavailable(f"all {n} sandbox slots stayed busy for {timeout_s}s")
            time.sleep(0.005)


SLOTS = SlotPool()


# ----------------------------------------------------------------------------- processes


def memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


class SandboxProcess:
    """A running sandboxed interpreter with pipes; always use as a context manager or close()."""

    def __init__(self, popen: subprocess.Popen, cleanups: list[Callable[[], None]],
                 max_output: int, sandboxed: bool, max_stderr: int | None = None) -> None:
        self.popen = popen
        self._cleanups = cleanups
        self.max_output = max_output
        self.max_stderr = max_output if max_stderr is None else max_stderr
        self.sandboxed = sandboxed
        self.started = time.monotonic()
        self._out = bytearray()
        self.stderr = bytearray()
        self.stderr_dropped = 0
        self.stdout_dropped = 0
        self._sel = selectors.DefaultSelector()
        for stream in (popen.stdout, popen.stderr):
            if stream is not None:
                os.set_blocking(stream.fileno(), False)
                self._sel.register(stream, selectors.EVENT_READ)
        self._closed = False
        self.cgroup = None  # the run's cgroups.RunCgroup, when per-run cgroups are in use

    # -- reading
    def _pump(self, timeout: float) -> bool:
        """Read what is available (waiting at most ``timeout``); False once both pipes hit EOF."""
        if not self._sel.get_map():
            return False
        for key, _ in self._sel.select(max(0.0, timeout)):
            try:
                chunk = os.read(key.fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                self._sel.unregister(key.fileobj)
                continue
            if key.fileobj is self.popen.stdout:
                room = self.max_output - len(self._out)
                self._out += chunk[:max(0, room)]
                self.stdout_dropped += max(0, len(chunk) - max(0, room))
            else:
                room = self.max_stderr - len(self.stderr)
                self.stderr += chunk[:max(0, room)]
                self.stderr_dropped += max(0, len(chunk) - max(0, room))
        return bool(self._sel.get_map())

    def read_line(self, deadline: float, max_bytes: int | None = None) -> bytes:
        """Next stdout line (protocol modes). Raises SandboxTimeout / SandboxClosed."""
        limit = max_bytes or self.max_output
        while True:
            nl = self._out.find(b"\n")
            if nl >= 0:
                line = bytes(self._out[:nl])
                del self._out[:nl + 1]
                return line
            if len(self._out) >= limit or self.stdout_dropped:
                self.kill()
                raise SandboxClosed(f"message larger than {limit} bytes")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise SandboxTimeout("no answer before the deadline")
            if self.popen.stdout not in [k.fileobj for k in self._sel.get_map().values()]:
                raise SandboxClosed(
                    f"sandboxed process closed its output (exit={self.popen.poll()})")
            self._pump(min(remaining, 1.0))

    def write(self, data: bytes, deadline: float) -> None:
        """Write to the process's stdin without ever blocking past ``deadline``."""
        fd = self.popen.stdin.fileno()
        os.set_blocking(fd, False)
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.kill()
                    raise SandboxTimeout("sandboxed process did not read its input in time")
                self._pump(min(remaining, 0.05))  # keep draining its output meanwhile
            except (BrokenPipeError, ConnectionResetError) as e:
                raise SandboxClosed(f"sandboxed process closed its input ({e})") from None

    def wait_exit(self, deadline: float) -> bool:
        """Wait (without polling delays) until the process exits; False at the deadline."""
        if self.popen.poll() is not None:
            return True
        try:
            pidfd = os.pidfd_open(self.popen.pid)
        except (AttributeError, OSError):  # old kernel / Python: fall back to Popen's polling
            try:
                self.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
                return True
            except subprocess.TimeoutExpired:
                return False
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(pidfd, selectors.EVENT_READ)
                while self.popen.poll() is None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    sel.select(remaining)
            return True
        finally:
            os.close(pidfd)

    # -- lifetime
    def kill(self) -> None:
        """Kill everything. The sandbox's pid 1 is killed first, so that bwrap itself reaps it
        and exits (killing bwrap first would leave pid 1 as a zombie for the host's init)."""
        if self.popen.poll() is not None:
            return
        if self.sandboxed:
            killed = [pid for pid in _children(self.popen.pid) if _kill_child(self.popen.pid, pid)]
            if killed and self.wait_exit(time.monotonic() + 2.0):
                return
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                self.popen.kill()
            except ProcessLookupError:
                pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.kill()
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - the kernel owes us this one
            log.error("sandboxed process %s did not die", self.popen.pid)
        self._sel.close()
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        for fn in self._cleanups:
            try:
                fn()
            except Exception:  # pragma: no cover
                log.exception("sandbox cleanup failed")

    def __enter__(self) -> "SandboxProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (via /proc; empty if unknown)."""
    try:
        kids: list[int] = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(k) for k in f.read().split()]
        return kids
    except (OSError, ValueError):
        return []


def _kill_child(parent: int, pid: int) -> bool:
    """SIGKILL ``pid`` through a pidfd, after checking it is still ``parent``'s child (no pid
    reuse race: a child cannot be recycled before its parent reaps it)."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        if ppid != parent:
            return False
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        return True
    except (OSError, ValueError, IndexError):
        return False
    finally:
        os.close(pidfd)
