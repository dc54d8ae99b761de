"""Per-run cgroup v2 limits, where the host delegates cgroup v2 with the memory and pids
controllers to us (optional hardening: rlimits already bound each process).

A run's cgroup bounds the *total* memory (every process of the run, and the pages of its tmpfs
scratch dir) and the total process count, which per-process rlimits cannot (RLIMIT_AS x nproc).
The sandbox is moved into its cgroup by a tiny ``sh`` wrapper that writes its own pid into
``cgroup.procs`` and then executes bwrap, so nothing runs before the limits apply.

Detection (``detect``) needs: a cgroup2 mount, a parent directory (``PRORL_SANDBOX_CGROUP`` or
the cgroup we are in) whose ``cgroup.subtree_control`` has (or accepts) ``memory`` and
``pids``, and permission to create a child there. The file locations are parameters so that the
logic is unit-tested on a fake tree.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

NEEDED = ("memory", "pids")
_COUNTER = itertools.count()


@dataclass(frozen=True)
class CgroupSupport:
    """Where per-run cgroups are made (``parent``), or ``None`` and the reason why not."""

    parent: str | None
    detail: str

    @property
    def available(self) -> bool:
        return self.parent is not None


def cgroup2_mounts(mounts_text: str) -> list[str]:
    """Mount points of cgroup2 file systems in a ``/proc/self/mounts`` text."""
    out = []
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "cgroup2":
            out.append(parts[1].replace("\\040", " "))
    return out


def own_cgroup(cgroup_text: str) -> str | None:
    """Our cgroup v2 path (the ``0::/path`` line of ``/proc/self/cgroup``)."""
    for line in cgroup_text.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    return None


def _words(path: Path) -> set[str]:
    try:
        return set(path.read_text().split())
    except OSError:
        return set()


def _make_child(path: Path) -> None:
    """``mkdir`` in a cgroup file system (the kernel fills in the interface files); a seam for
    the tests' fake tree."""
    path.mkdir(mode=0o755)


def _usable(parent: Path) -> str | None:
    """``None`` when per-run children with memory and pids limits can be made under ``parent``,
    else the reason."""
    if not (parent / "cgroup.controllers").is_file():
        return f"{parent} is not a cgroup v2 directory"
    missing = [c for c in NEEDED if c not in _words(parent / "cgroup.controllers")]
    if missing:
        return f"cgroup v2 at {parent} lacks the {'/'.join(missing)} controller(s)"
    if not all(c in _words(parent / "cgroup.subtree_control") for c in NEEDED):
        try:
            (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in NEEDED))
        except OSError as e:
            return (f"cannot enable memory/pids for children of {parent} ({e.strerror}); set "
                    f"PRORL_SANDBOX_CGROUP to a delegated cgroup with no processes of its own")
    probe = parent / f"prorl-probe-{os.getpid()}-{next(_COUNTER)}"
    try:
        _make_child(probe)
    except OSError as e:
        return f"cannot create cgroups under {parent} ({e.strerror})"
    try:
        if not all((probe / f).is_file() for f in ("memory.max", "pids.max", "cgroup.procs")):
            return f"children of {parent} get no memory.max/pids.max"
    finally:
        _remove_dir(probe)
    return None


def _remove_dir(path: Path) -> bool:
    try:
        path.rmdir()
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


def detect(configured: str = "", mounts: str = "/proc/self/mounts",
           self_cgroup: str = "/proc/self/cgroup") -> CgroupSupport:
    """Find a cgroup v2 directory under which per-run cgroups with memory and pids limits can
    be created (``configured``: an explicit directory, "off", or "" to look at our own)."""
    if configured.strip().lower() in ("off", "0", "no", "false"):
        return CgroupSupport(None, "disabled (PRORL_SANDBOX_CGROUP=off)")
    if configured:
        why = _usable(Path(configured))
        return CgroupSupport(None, why) if why else CgroupSupport(configured, f"under {configured}")
    try:
        roots = cgroup2_mounts(Path(mounts).read_text())
        own = own_cgroup(Path(self_cgroup).read_text())
    except OSError as e:
        return CgroupSupport(None, f"cannot read the cgroup layout ({e})")
    if not roots:
        return CgroupSupport(None, "no cgroup v2 file system mounted")
    if own is None:
        return CgroupSupport(None, "this process is in no cgroup v2 group")
    reasons = []
    for root in roots:
        parent = Path(root) / own.lstrip("/")
        why = _usable(parent)
        if why is None:
            return CgroupSupport(str(parent), f"under {parent}")
        reasons.append(why)
    return CgroupSupport(None, "; ".join(reasons))


class RunCgroup:
    """One run's cgroup: created with its limits, joined by the sandbox at exec, then removed."""

    def __init__(self, parent: str, memory_bytes: int, pids: int) -> None:
        self.path = Path(parent) / f"prorl-{os.getpid()}-{next(_COUNTER)}"
        _make_child(self.path)
        try:
            (self.path / "memory.max").write_text(str(memory_bytes))
            (self.path / "pids.max").write_text(str(pids))
            for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
                if (self.path / name).exists():
                    (self.path / name).write_text(value)
        except BaseException:
            self.remove()
            raise

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` started inside this cgroup (or not at all)."""
        return ["/bin/sh", "-c", 'echo $$ > "$0" || exit 125; exec "$@"',
                str(self.path / "cgroup.procs"), *argv]

    def oom_killed(self) -> bool:
        """Whether the memory bound killed a process of the run."""
        try:
            for line in (self.path / "memory.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        except (OSError, ValueError):
            pass
        return False

    def remove(self) -> None:
        """Kill whatever is left in the cgroup and delete it."""
        for _ in range(50):
            if _remove_dir(self.path):
                return
            if (self.path / "cgroup.kill").exists():
                try:
                    (self.path / "cgroup.kill").write_text("1")
                except OSError:
                    pass
            else:
                for pid in _words(self.path / "cgroup.procs"):
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (OSError, ValueError):
                        pass
            time.sleep(0.01)


__all__ = ["CgroupSupport", "RunCgroup", "cgroup2_mounts", "detect", "own_cgroup"]
