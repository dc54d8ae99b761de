"""The seccomp syscall filter of every sandboxed process: the whole policy is in this module.

The filter is compiled by libseccomp (through its Python bindings: the official ``seccomp``
module when installed, else ``pyseccomp``, ctypes bindings to the same shared library) in the
trusted host process, exported as a raw BPF program and handed to bubblewrap (``--seccomp FD``),
which installs it just before it executes the sandboxed interpreter, so it binds every sandboxed
process and everything they start. It is never hand-written BPF.

Policy: a deny list with a default of ALLOW, covering everything Docker's default profile denies
to an unprivileged container and a little more. A deny list (rather than an allow list of what
CPython needs) keeps threads, ``multiprocessing``, ``subprocess`` and whatever glibc does next
working; the other layers (namespaces, no capabilities, an unprivileged uid, rlimits) already
stop what these calls would need privileges for. The filter closes the kernel attack surface
that is reachable *without* privileges. Denied calls fail with ``EPERM`` (Python code probing
them gets a clean ``OSError``), never a kill.

==========================  =====================================================================
group                       calls (denied with EPERM unless noted)
==========================  =====================================================================
io_uring                    io_uring_setup, io_uring_enter, io_uring_register
keyrings                    keyctl, add_key, request_key
BPF / perf / userfaultfd    bpf, perf_event_open, userfaultfd
other processes             ptrace, process_vm_readv, process_vm_writev, kcmp, pidfd_getfd,
                            process_madvise
mount API                   mount, umount2, pivot_root, chroot, fsopen, fsconfig, fsmount,
                            fspick, open_tree, move_mount, mount_setattr
namespaces                  unshare, setns; clone with any CLONE_NEW* flag; clone3 -> ENOSYS
                            (its flags sit in memory that seccomp cannot read; glibc then falls
                            back to clone, exactly as under Docker)
kernel modules, kexec       init_module, finit_module, delete_module, create_module,
                            get_kernel_syms, query_module, kexec_load, kexec_file_load
system administration       reboot, swapon, swapoff, acct, quotactl, quotactl_fd, syslog,
                            sethostname, setdomainname, vhangup, iopl, ioperm, lookup_dcookie,
                            nfsservctl, uselib, ustat, sysfs, _sysctl, fanotify_init
clocks                      clock_settime, clock_adjtime, settimeofday, adjtimex, stime
NUMA memory policy          mbind, set_mempolicy, get_mempolicy, move_pages, migrate_pages
file handles                name_to_handle_at, open_by_handle_at
personality                 any persona other than 0 (PER_LINUX, the default) and 0xffffffff
                            (query)
other architectures         syscalls made through another ABI (i386 ``int 0x80``, x32) -> EPERM
==========================  =====================================================================
"""

from __future__ import annotations

import errno
import functools
import os
from types import ModuleType

# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET (linux/sched.h)
CLONE_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000,
                         0x20000000, 0x40000000)
PERSONALITY_QUERY = 0xFFFFFFFF

DENIED: dict[str, tuple[str, ...]] = {
    "io_uring": ("io_uring_setup", "io_uring_enter", "io_uring_register"),
    "keyrings": ("keyctl", "add_key", "request_key"),
    "bpf, perf, userfaultfd": ("bpf", "perf_event_open", "userfaultfd"),
    "other processes": ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
                        "process_madvise"),
    "mount API": ("mount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount",
                  "fspick", "open_tree", "move_mount", "mount_setattr"),
    "namespaces": ("unshare", "setns"),
    "kernel modules, kexec": ("init_module", "finit_module", "delete_module", "create_module",
                              "get_kernel_syms", "query_module", "kexec_load",
                              "kexec_file_load"),
    "system administration": ("reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd",
                              "syslog", "sethostname", "setdomainname", "vhangup", "iopl",
                              "ioperm", "lookup_dcookie", "nfsservctl", "uselib", "ustat",
                              "sysfs", "_sysctl", "fanotify_init"),
    "clocks": ("clock_settime", "clock_adjtime", "settimeofday", "adjtimex", "stime"),
    "NUMA memory policy": ("mbind", "set_mempolicy", "get_mempolicy", "move_pages",
                           "migrate_pages"),
    "file handles": ("name_to_handle_at", "open_by_handle_at"),
}
# denied only for some arguments (rules below), or with another errno
CONDITIONAL = ("clone", "clone3", "personality")


class FilterUnavailable(RuntimeError):
    """libseccomp or its Python bindings are missing (or failed to build the filter)."""


def _bindings() -> ModuleType:
    """The official libseccomp bindings if installed, else pyseccomp (same API, ctypes)."""
    errors = []
    for name in ("seccomp", "pyseccomp"):
        try:
            return __import__(name)
        except (ImportError, OSError, RuntimeError) as e:  # pyseccomp raises RuntimeError
            errors.append(f"{name}: {e}")
    raise FilterUnavailable("libseccomp Python bindings not found (pip install pyseccomp; "
                            "apt-get install libseccomp2): " + "; ".join(errors))


def denied_names() -> tuple[str, ...]:
    """Every syscall the filter denies outright (EPERM), in table order."""
    return tuple(n for group in DENIED.values() for n in group)


def _resolve(sc: ModuleType, name: str) -> int | None:
    """libseccomp's number for ``name`` on the native arch (negative: a pseudo-number for a call
    this arch lacks, which rules accept and ignore); ``None`` if libseccomp does not know it."""
    try:
        nr = sc.resolve_syscall(sc.Arch.NATIVE, name)
    except ValueError:
        return None
    return None if not isinstance(nr, int) or nr == -1 else nr


def syscall_numbers() -> dict[str, int]:
    """Native syscall numbers of the denied and conditional calls that exist on this arch."""
    sc = _bindings()
    out = {}
    for name in (*denied_names(), *CONDITIONAL):
        nr = _resolve(sc, name)
        if nr is not None and nr >= 0:
            out[name] = nr
    return out


def _personality_rules(sc: ModuleType) -> list:
    """Deny every persona except 0 and the 0xffffffff query.

    libseccomp allows one comparison per argument and rule, so "0 < x < 0xffffffff" is written
    as: some upper bit set, or some bit i set while its cyclic neighbour i+1 is clear (a 32-bit
    value has no such pair exactly when it is all zeros or all ones)."""
    rules = [sc.Arg(0, sc.GT, PERSONALITY_QUERY)]
    for i in range(32):
        j = (i + 1) % 32
        rules.append(sc.Arg(0, sc.MASKED_EQ, (1 << i) | (1 << j), 1 << i))
    return rules


def build_filter() -> "object":
    """The libseccomp filter object (not yet exported)."""
    sc = _bindings()
    eperm = sc.ERRNO(errno.EPERM)
    f = sc.SyscallFilter(sc.ALLOW)
    f.set_attr(sc.Attr.ACT_BADARCH, eperm)
    try:  # libseccomp >= 2.5: a binary tree over syscall numbers instead of a linear scan, so
        f.set_attr(sc.Attr.CTL_OPTIMIZE, 2)  # an allowed call costs ~log2(70) jumps, not ~70
    except (AttributeError, OSError):
        pass
    for name in denied_names():
        if _resolve(sc, name) is not None:  # skip calls unknown to this libseccomp
            f.add_rule(eperm, name)
    for flag in CLONE_NAMESPACE_FLAGS:
        f.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    if _resolve(sc, "clone3") is not None:
        f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for rule in _personality_rules(sc):
        f.add_rule(eperm, "personality", rule)
    return f


@functools.lru_cache(maxsize=1)
def bpf_program() -> bytes:
    """The compiled BPF program (``struct sock_filter[]``) for ``bwrap --seccomp``; cached."""
    try:
        f = build_filter()
        with os.fdopen(os.memfd_create("prorl-seccomp", os.MFD_CLOEXEC), "w+b") as out:
            f.export_bpf(out)
            out.seek(0)
            data = out.read()
    except FilterUnavailable:
        raise
    except Exception as e:  # a libseccomp too old for a rule, an unsupported arch, ...
        raise FilterUnavailable(f"libseccomp failed to build the syscall filter: {e}") from e
    if not data or len(data) % 8:
        raise FilterUnavailable(f"libseccomp exported an invalid BPF program ({len(data)} bytes)")
    return data


def status() -> tuple[bool, str]:
    """``(True, description)`` when the filter can be built here, else ``(False, reason)``."""
    try:
        prog = bpf_program()
    except FilterUnavailable as e:
        return False, str(e)
    sc = _bindings()
    return True, (f"seccomp filter by libseccomp ({sc.__name__}), {len(prog) // 8} BPF "
                  f"instructions, {len(denied_names())} calls denied + clone namespace flags, "
                  f"clone3 (ENOSYS), personality")


__all__ = ["CLONE_NAMESPACE_FLAGS", "CONDITIONAL", "DENIED", "FilterUnavailable", "bpf_program",
           "build_filter", "denied_names", "status", "syscall_numbers"]
