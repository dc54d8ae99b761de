"""Shared sandbox types (a leaf module: imports nothing from the package, so ``policy`` and
``runner`` can both use them without importing each other)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field


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
    # where cgroup v2 is delegated to us: the whole run's memory (all its processes, tmpfs pages
    # included) and process count; 0 means "memory_mb x 2" and "nproc + bwrap's own processes"
    total_memory_mb: int = 0
    total_pids: int = 0

    def boot_args(self) -> list[str]:
        return [str(max(1, math.ceil(self.cpu_s))), str(int(self.memory_mb) << 20),
                str(int(self.nproc)), str(int(self.fsize_mb) << 20), str(int(self.nofile))]

    def cgroup_memory_bytes(self) -> int:
        return int(self.total_memory_mb or 2 * self.memory_mb) << 20

    def cgroup_pids(self) -> int:
        return int(self.total_pids or self.nproc + 4)  # + setpriv/bwrap, its pid 1, boot


def _env_flag(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    return raw in {"1", "true", "yes", "on"}


@dataclass
class SandboxConfig:
    """Process-wide settings; environment variables give the defaults (for worker processes).

    ``seccomp=False`` (or ``PRORL_SANDBOX_SECCOMP=0``) turns the syscall filter off, which, like
    a missing libseccomp, is only honoured together with ``allow_unsafe``. ``cgroup_parent`` is a
    delegated cgroup v2 directory for per-run cgroups ("" = detect, "off" = never use)."""

    allow_unsafe: bool = field(default_factory=lambda: _env_flag("PRORL_SANDBOX_ALLOW_UNSAFE"))
    python: str | None = field(default_factory=lambda: os.environ.get("PRORL_SANDBOX_PYTHON"))
    bwrap: str | None = field(default_factory=lambda: os.environ.get("PRORL_SANDBOX_BWRAP"))
    uid_base: int = field(default_factory=lambda: int(os.environ.get("PRORL_SANDBOX_UID_BASE",
                                                                     "1900000000")))
    slots: int = field(default_factory=lambda: int(os.environ.get("PRORL_SANDBOX_SLOTS", "64")))
    extra_ro_binds: tuple[str, ...] = ()
    seccomp: bool = field(default_factory=lambda: _env_flag("PRORL_SANDBOX_SECCOMP", True))
    cgroup_parent: str = field(default_factory=lambda: os.environ.get("PRORL_SANDBOX_CGROUP", ""))


__all__ = ["Limits", "SandboxConfig"]
