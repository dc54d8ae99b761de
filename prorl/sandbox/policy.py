"""What the sandbox may see and how bwrap is invoked.

``discover`` finds bubblewrap and an interpreter that works inside it, then works out the
minimal read-only view of the host filesystem that the interpreter needs: the binary, its
stdlib (with any ``site-packages`` masked by an empty tmpfs) and the directories of the shared
libraries that it and its extension modules load (found with ``ldd``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Callable

from prorl.sandbox.config import Limits, SandboxConfig
from prorl.sandbox.process import SandboxUnavailable

SANDBOX_BOOT = "/sandbox/boot.py"
SANDBOX_WORK = "/tmp"
_TOP_LEVEL_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# newer bwrap flags, used when this bwrap has them (older ones still isolate, slightly less)
_OPTIONAL_OPTIONS = ("--disable-userns", "--size", "--perms")
_FALLBACK_LIB_DIRS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib")
_LAYOUT_SCRIPT = (
    "import json, sys, sysconfig\n"
    "p = sysconfig.get_paths()\n"
    "print(json.dumps({'stdlib': p['stdlib'], 'platstdlib': p['platstdlib'],"
    " 'purelib': p['purelib'], 'platlib': p['platlib'],"
    " 'dynload': [x for x in sys.path if x.endswith('lib-dynload')],"
    " 'version': list(sys.version_info[:3])}))\n"
)


@dataclass(frozen=True)
class Backend:
    """How sandboxed programs are run on this machine."""

    kind: str  # "bwrap" or "unsafe"
    python: str  # interpreter path (real path, also its path inside the sandbox)
    bwrap: str = ""
    drop_uid: bool = False  # start bwrap as a dedicated unprivileged uid (we are root)
    ro_binds: tuple[str, ...] = ()
    masks: tuple[str, ...] = ()  # dirs hidden under an empty tmpfs (site-packages)
    symlinks: tuple[tuple[str, str], ...] = ()  # (target, link) for merged-/usr layouts
    version: tuple[int, ...] = ()
    options: frozenset[str] = frozenset(_OPTIONAL_OPTIONS)  # optional bwrap flags supported
    notes: tuple[str, ...] = field(default=())
    seccomp: bool = False  # the syscall filter (syscall_filter.py) is applied to every run
    cgroup_parent: str | None = None  # delegated cgroup v2 dir for per-run cgroups (cgroups.py)

    def describe(self) -> str:
        if self.kind != "bwrap":
            return f"UNSAFE (no isolation), python={self.python}"
        who = "dedicated unprivileged uid per slot" if self.drop_uid else f"uid {os.geteuid()}"
        ver = ".".join(map(str, self.version))
        missing = sorted(set(_OPTIONAL_OPTIONS) - self.options)
        extra = f"; this bwrap lacks {', '.join(missing)}" if missing else ""
        sec = "seccomp filter" if self.seccomp else "NO seccomp filter"
        cg = f", per-run cgroups under {self.cgroup_parent}" if self.cgroup_parent else ""
        return (f"bwrap={self.bwrap}, python={self.python} ({ver}), runs as {who}, "
                f"{sec}{cg}{extra}")


def world_accessible(path: str) -> bool:
    """Whether any uid could execute ``path`` (every parent dir searchable by others)."""
    real = os.path.realpath(path)
    try:
        if not os.stat(real).st_mode & 0o001:
            return False
        return all(os.stat(d).st_mode & 0o001 for d in PurePosixPath(real).parents)
    except OSError:
        return False


def unsafe_backend(cfg: SandboxConfig | None = None) -> Backend:
    """Explicit opt-in only: rlimits and a temp dir but no isolation. As root, the program
    still runs as a dedicated unprivileged uid (so it cannot, e.g., kill every process), which
    needs an interpreter that other uids can execute."""
    if os.geteuid() != 0:
        return Backend("unsafe", python=os.path.realpath(sys.executable))
    cands = [cfg.python] if cfg is not None and cfg.python else \
        ["/usr/bin/python3", "/usr/local/bin/python3", sys.executable]
    for c in cands:
        if c and os.path.exists(c) and world_accessible(c):
            return Backend("unsafe", python=os.path.realpath(c), drop_uid=True)
    raise SandboxUnavailable("no isolation, and allow_unsafe as root needs an interpreter that "
                             "an unprivileged uid can run (set PRORL_SANDBOX_PYTHON)")


def check_file_name(name: str) -> None:
    """Extra files must be plain relative paths inside the working dir."""
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or name in ("main.py",) or "\0" in name:
        raise ValueError(f"invalid sandbox file name {name!r}")


def _interpreter_candidates(cfg: SandboxConfig) -> list[str]:
    if cfg.python:
        return [cfg.python]
    cands = ["/usr/bin/python3", "/usr/local/bin/python3",
             getattr(sys, "_base_executable", "") or "", sys.executable]
    out: list[str] = []
    for c in cands:
        if c and os.path.exists(c):
            real = os.path.realpath(c)
            if real not in out and os.access(real, os.X_OK):
                out.append(real)
    return out


def _layout(python: str) -> dict:
    res = subprocess.run([python, "-I", "-S", "-c", _LAYOUT_SCRIPT], capture_output=True,
                         text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    if res.returncode != 0:
        raise RuntimeError(f"{python} failed: {res.stderr[-300:]}")
    return json.loads(res.stdout)


_LDD_PATH = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")


def _library_dirs(files: list[str]) -> set[str]:
    """Directories of the shared libraries ``files`` load (both literal and resolved)."""
    ldd = shutil.which("ldd")
    if not ldd:
        return {d for d in _FALLBACK_LIB_DIRS if os.path.isdir(d)}
    res = subprocess.run([ldd, *files], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"})
    dirs: set[str] = set()
    for m in _LDD_PATH.finditer(res.stdout):
        lib = m.group(1)
        if os.path.exists(lib):
            dirs.add(os.path.dirname(os.path.realpath(lib)))
            dirs.add(os.path.realpath(os.path.dirname(lib)))
    if not dirs:
        dirs = {d for d in _FALLBACK_LIB_DIRS if os.path.isdir(d)}
    return dirs


def _minimal(paths: set[str]) -> tuple[str, ...]:
    """Drop paths already covered by a parent directory in the set."""
    out: list[str] = []
    for p in sorted(paths, key=lambda s: (s.count("/"), s)):
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return tuple(sorted(out))


def _bwrap_options(bwrap: str) -> frozenset[str]:
    try:
        out = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=30,
                             env={"PATH": "/usr/bin:/bin"})
        text = out.stdout + out.stderr
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(o for o in _OPTIONAL_OPTIONS if re.search(re.escape(o) + r"\b", text))


def plan(python: str, bwrap: str, drop_uid: bool, extra: tuple[str, ...] = ()) -> Backend:
    """Compute the read-only view for ``python`` (no probing yet)."""
    lay = _layout(python)
    stdlib = {os.path.realpath(lay["stdlib"]), os.path.realpath(lay["platstdlib"])}
    dynload = [os.path.realpath(d) for d in lay["dynload"] if os.path.isdir(d)]
    so_files = [python] + [os.path.join(d, f) for d in dynload for f in sorted(os.listdir(d))
                           if f.endswith(".so")]
    binds = {python, *stdlib, *dynload, *_library_dirs(so_files)}
    binds |= {os.path.realpath(p) for p in extra if os.path.exists(p)}
    ro = _minimal(binds)
    masks = tuple(sorted({os.path.realpath(lay[k]) for k in ("purelib", "platlib")
                          if os.path.isdir(lay[k]) and any(
                              os.path.realpath(lay[k]).startswith(b + "/") for b in ro)}))
    links = tuple((os.readlink(f"/{n}"), f"/{n}") for n in _TOP_LEVEL_LINKS
                  if os.path.islink(f"/{n}"))
    return Backend("bwrap", python=python, bwrap=bwrap, drop_uid=drop_uid, ro_binds=ro,
                   masks=masks, symlinks=links, version=tuple(lay["version"]),
                   options=_bwrap_options(bwrap))


def discover(cfg: SandboxConfig, probe: Callable[[Backend], None], seccomp: bool = False,
             cgroup_parent: str | None = None) -> Backend:
    """Return the first bwrap + interpreter combination that passes ``probe`` (run with the
    syscall filter when ``seccomp``, inside a per-run cgroup when ``cgroup_parent``)."""
    bwrap = cfg.bwrap or shutil.which("bwrap") or ""
    if not bwrap or not os.access(bwrap, os.X_OK):
        raise SandboxUnavailable(
            "bubblewrap (bwrap) not found: install it (apt-get install bubblewrap) or pass "
            "allow_unsafe=True to run untrusted code without isolation")
    drop_uid = os.geteuid() == 0
    errors: list[str] = []
    for py in _interpreter_candidates(cfg):
        try:
            b = replace(plan(py, bwrap, drop_uid, tuple(cfg.extra_ro_binds)), seccomp=seccomp,
                        cgroup_parent=cgroup_parent)
            probe(b)
            return b
        except Exception as e:  # try the next interpreter
            errors.append(f"{py}: {e}")
    raise SandboxUnavailable("no interpreter works inside bwrap here: " + " | ".join(errors)
                             if errors else "no Python interpreter found for the sandbox")


def bwrap_argv(b: Backend, limits: Limits, boot_fd: int, file_fds: dict[str, int], mode: str,
               extra_args: tuple[str, ...], seccomp_fd: int | None = None) -> list[str]:
    """The full bwrap command line for one run (``seccomp_fd``: the BPF program to install)."""
    opt = b.options

    def size(mb: int) -> list[str]:
        return ["--size", str(int(mb) << 20)] if "--size" in opt else []

    argv = [b.bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session",
            "--hostname", "sandbox"]
    if "--disable-userns" in opt:
        argv.append("--disable-userns")
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    for target, link in b.symlinks:
        argv += ["--symlink", target, link]
    for p in b.ro_binds:
        argv += ["--ro-bind", p, p]
    for p in b.masks:
        argv += ["--tmpfs", p]
    argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
             "--proc", "/proc", "--dev", "/dev", *size(limits.shm_mb), "--tmpfs", "/dev/shm",
             "--remount-ro", "/dev", *size(limits.tmpfs_mb), "--tmpfs", SANDBOX_WORK,
             "--dir", "/sandbox", "--ro-bind-data", str(boot_fd), SANDBOX_BOOT]
    for name, fd in file_fds.items():
        dest = PurePosixPath(SANDBOX_WORK) / name
        for parent in reversed(dest.parents):
            if len(parent.parts) > 2:  # below /tmp
                argv += ["--dir", str(parent)]
        argv += (["--perms", "0644"] if "--perms" in opt else []) + ["--file", str(fd), str(dest)]
    argv += ["--remount-ro", "/", "--chdir", SANDBOX_WORK, "--clearenv",
             "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", SANDBOX_WORK,
             "--setenv", "TMPDIR", SANDBOX_WORK, "--setenv", "LANG", "C.UTF-8",
             "--", b.python, "-I", "-S", "-B", SANDBOX_BOOT, mode, *limits.boot_args(),
             SANDBOX_WORK, f"{SANDBOX_WORK}/main.py", *extra_args]
    return argv


__all__ = ["Backend", "bwrap_argv", "check_file_name", "discover", "plan", "unsafe_backend"]
