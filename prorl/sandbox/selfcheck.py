"""Probe, on this machine, each protection the sandbox claims (``prorl sandbox-check``).

Every check actually tries the forbidden thing from inside a sandbox (connect to a server the
host opened on 127.0.0.1, read host files and the host's environment, write outside the scratch
dir, fork past the limit, call each syscall the seccomp filter denies, ...) and reports whether
it was stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from prorl.sandbox import cgroups, runner, syscall_filter
from prorl.sandbox.config import Limits
from prorl.sandbox.policy import SANDBOX_BOOT, SANDBOX_WORK, Backend
from prorl.sandbox.process import SandboxUnavailable


@dataclass
class Check:
    name: str
    active: bool
    detail: str
    required: bool = True


_ISOLATION_PROBE = r'''
import json, os, socket, sys
port, secret_name, secret, host_pid = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
paths = sys.argv[5:]
r = {}
def attempt(fn):
    try:
        fn()
        return True
    except BaseException:
        return False
r["loopback"] = attempt(lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close())
r["internet"] = attempt(lambda: socket.create_connection(("1.1.1.1", 53), timeout=2).close())
r["dns"] = attempt(lambda: socket.getaddrinfo("example.com", 80))
def peek(p):
    return os.listdir(p) if os.path.isdir(p) else open(p, "rb").read(1)
r["readable"] = [p for p in paths if attempt(lambda p=p: peek(p))]
targets = ["/x", "/etc/x", "/usr/x", "/dev/x", "/proc/x", "/sandbox/x",
           os.path.dirname(os.__file__) + "/x"]
r["writable"] = [p for p in targets if attempt(lambda p=p: open(p, "w").write("x"))]
r["scratch_ok"] = attempt(lambda: open("/tmp/probe.txt", "w").write("x"))
env_hits = [k for k, v in os.environ.items() if secret in v or k == secret_name]
for pid in [p for p in os.listdir("/proc") if p.isdigit()] + ["self"]:
    try:
        if secret.encode() in open("/proc/%s/environ" % pid, "rb").read():
            env_hits.append("/proc/%s/environ" % pid)
    except OSError:
        pass
r["env_hits"] = env_hits
r["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
r["kill_host"] = attempt(lambda: os.kill(host_pid, 0)) if host_pid not in r["pids"] else None
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
r["cap_eff"] = status["CapEff"].strip()
r["uid"] = os.getuid()
try:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    r["nested_userns"] = "worked" if libc.unshare(0x10000000) == 0 else \
        "refused (errno %d)" % ctypes.get_errno()
except Exception as e:
    r["nested_userns"] = "not probed (%s)" % type(e).__name__
print(json.dumps(r))
'''

_FORK_BOMB = r'''
import os, time
n = 0
try:
    for _ in range(10000):
        if os.fork() == 0:
            time.sleep(3)
            os._exit(0)
        n += 1
except OSError:
    pass
print(n)
'''


# Calls each syscall named in argv ("name=number") with harmless arguments (zeros, or values
# that are safe even where nothing stops them) and prints {name: "ok" | errno name}.
SYSCALL_PROBE = r"""
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
special = {
    "clone": [0x10000000 | 17],  # CLONE_NEWUSER | SIGCHLD: a fork into a new user namespace
    "ptrace": [0xFFFF],  # an invalid request (PTRACE_TRACEME = 0 would trace us)
    "personality": [0x0040000],  # ADDR_NO_RANDOMIZE
    "personality_query": [0xFFFFFFFF],  # reading the persona stays allowed
    "setns": [-1],
    "userfaultfd": [1],  # UFFD_USER_MODE_ONLY: allowed to unprivileged users by the kernel
}
out = {}
for item in sys.argv[1:]:
    name, nr = item.split("=")
    args = (special.get(name, []) + [0] * 6)[:6]
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(int(nr)), *[ctypes.c_long(a) for a in args])
    if r == 0 and name == "clone":
        os._exit(0)  # the child of an unfiltered clone
    if r > 0 and name == "clone":
        os.waitpid(r, 0)
    out[name] = "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
print(json.dumps(out))
"""


def syscall_probe_argv() -> tuple[str, ...]:
    """``name=number`` for every call the filter denies (that exists here), plus the allowed
    persona query and an x32-ABI call (must be refused as a foreign architecture)."""
    nums = syscall_filter.syscall_numbers()
    items = [f"{n}={nr}" for n, nr in nums.items()]
    if "personality" in nums:
        items.append(f"personality_query={nums['personality']}")
    if "keyctl" in nums and os.uname().machine == "x86_64":
        items.append(f"x32_keyctl={nums['keyctl'] | 0x40000000}")
    return tuple(items)


def expected_syscall_result(name: str) -> str:
    """What a probed call must give under the filter."""
    if name == "clone3":
        return "ENOSYS"  # so that glibc falls back to clone, whose flags the filter can read
    if name == "personality_query":
        return "ok"
    return "EPERM"


def probe_syscalls(allow_unsafe: bool = False) -> dict[str, str]:
    """Run :data:`SYSCALL_PROBE` in the sandbox; ``{name: "ok" | errno name}``."""
    res = runner.run_python(SYSCALL_PROBE, argv=syscall_probe_argv(), limits=Limits(wall_s=30),
                            allow_unsafe=allow_unsafe)
    if res.exit_code != 0:
        raise RuntimeError(f"syscall probe failed: exit={res.exit_code} "
                           f"stderr={res.stderr_text[-300:]}")
    return json.loads(res.stdout_text)


def _check_filter(allow_unsafe: bool) -> Check:
    name = "seccomp syscall filter (denied calls fail with EPERM)"
    try:
        got = probe_syscalls(allow_unsafe)
    except (RuntimeError, ValueError, syscall_filter.FilterUnavailable) as e:
        return Check(name, False, str(e))
    wrong = {k: v for k, v in got.items() if v != expected_syscall_result(k)}
    if wrong:
        return Check(name, False, f"{len(wrong)} of {len(got)} probes got through or gave the "
                                  f"wrong errno: {dict(sorted(wrong.items()))}")
    return Check(name, True, f"{len(got)} probes from inside: every denied call EPERM "
                             f"(clone3 ENOSYS, persona query allowed)")


def _check_cgroups(b: Backend | None) -> Check:
    name = "per-run cgroup v2 limits (total memory, processes)"
    if b is not None and b.cgroup_parent:
        return Check(name, True, f"per-run cgroups under {b.cgroup_parent}", required=False)
    found = cgroups.detect(runner.get_config().cgroup_parent)
    detail = f"not available: {found.detail}" if not found.available else \
        f"detected under {found.parent} but not in use (it failed the self-test)"
    return Check(name, False, detail, required=False)


def host_probe_paths(b: Backend | None, marker: str) -> list[str]:
    """Host paths the sandbox must not see: well-known ones, this repository, and ``marker``
    (a file the host made in its own temp dir). Paths the sandbox legitimately has in its own
    view (``/proc``, the interpreter's read-only binds, ...), what lies below them and their
    parents (e.g. ``/tmp`` when the repository is cloned there: inside, ``/tmp`` is the run's
    own scratch dir) are left out: seeing those says nothing about the host. Below the scratch
    dir nothing is legitimate, so a host file in ``/tmp`` stays a probe."""
    repo = Path(__file__).resolve().parents[2]
    cands = ["/etc/shadow", "/etc/passwd", "/root", "/home", str(repo), str(repo.parent),
             "/var", "/run", "/sys/fs/cgroup", "/usr/share", "/usr/local", marker]
    shown = [str(PurePosixPath(SANDBOX_BOOT).parent), "/proc", "/dev", "/etc/ld.so.cache"]
    if b is not None:
        shown += [*b.ro_binds, *b.masks, *(link for _, link in b.symlinks)]

    def inside(p: str, q: str) -> bool:  # p is q or below it
        p, q = p.rstrip("/") or "/", q.rstrip("/") or "/"
        return p == q or p.startswith(q.rstrip("/") + "/")

    def legit(p: str) -> bool:
        return inside(SANDBOX_WORK, p) or any(inside(p, q) or inside(q, p) for q in shown)

    return [p for p in dict.fromkeys(cands) if not legit(p)]


def _host_uids(pid: int) -> set[int]:
    """Real uids of ``pid`` and all its descendants, as the host sees them."""
    uids: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("Uid:"):
                    uids.add(int(line.split()[1]))
            for task in os.listdir(f"/proc/{p}/task"):
                kids = Path(f"/proc/{p}/task/{task}/children").read_text().split()
                todo += [int(k) for k in kids]
        except OSError:
            continue
    return uids


def _check_uid(allow_unsafe: bool) -> Check:
    try:
        with runner.spawn_python("pass", "call", limits=Limits(wall_s=20),
                                 allow_unsafe=allow_unsafe) as proc:
            proc.read_line(time.monotonic() + 20)  # hello: the sandbox is fully up
            uids = _host_uids(proc.popen.pid)
    except (runner.SandboxClosed, runner.SandboxTimeout) as e:
        return Check("non-root uid on the host", False, f"probe failed: {e}")
    return Check("non-root uid on the host", bool(uids) and 0 not in uids,
                 f"host uids of the sandbox processes: {sorted(uids)}")


def _serve_once(sock: socket.socket, hits: list) -> None:
    sock.settimeout(15)
    try:
        conn, _ = sock.accept()
        hits.append(1)
        conn.close()
    except OSError:
        pass


def self_check(allow_unsafe: bool = False) -> list[Check]:
    """Run every probe; ``active`` tells whether the protection held."""
    ok, why = runner.available()
    degraded = None if ok else runner.degraded_backend()
    b = runner.backend() if ok else degraded
    checks = [Check("bubblewrap isolation available", b is not None,
                    why if ok else (degraded.describe() if degraded else why))]
    if not ok and not allow_unsafe:  # nothing may run: say why
        if b is not None:  # bwrap works, the filter does not
            checks.append(Check("seccomp syscall filter (denied calls fail with EPERM)", False,
                                why))
        return checks
    secret_name, secret = "PRORL_SELFCHECK_SECRET", uuid.uuid4().hex
    os.environ[secret_name] = secret
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    hits: list = []
    t = threading.Thread(target=_serve_once, args=(server, hits), daemon=True)
    t.start()
    marker_dir = tempfile.mkdtemp(prefix="prorl-selfcheck-")
    marker = os.path.join(marker_dir, "host-only")
    Path(marker).write_text(secret)
    os.chmod(marker_dir, 0o755)
    os.chmod(marker, 0o644)  # readable to the sandbox's uid, were the host's /tmp visible
    host_paths = host_probe_paths(b, marker)
    try:
        res = runner.run_python(
            _ISOLATION_PROBE, limits=Limits(wall_s=30), allow_unsafe=allow_unsafe,
            argv=(str(server.getsockname()[1]), secret_name, secret, str(os.getpid()),
                  *host_paths))
    finally:
        os.environ.pop(secret_name, None)
        server.close()
        shutil.rmtree(marker_dir, ignore_errors=True)
    try:
        r = json.loads(res.stdout_text)
    except ValueError:
        checks.append(Check("isolation probe ran", False,
                            f"exit={res.exit_code} stderr={res.stderr_text[-300:]}"))
        return checks
    net_ok = not (r["loopback"] or r["internet"] or r["dns"] or hits)
    checks += [
        Check("no network (host loopback server, internet, DNS)", net_ok,
              f"loopback={r['loopback'] or bool(hits)} internet={r['internet']} dns={r['dns']}"),
        Check("host files unreadable", not r["readable"],
              f"readable: {r['readable']}" if r["readable"] else f"{len(host_paths)} paths hidden"),
        Check("no writes outside the private scratch dir", not r["writable"] and r["scratch_ok"],
              f"writable: {r['writable']}, scratch writable: {r['scratch_ok']}"),
        Check("host environment not visible", not r["env_hits"],
              f"secret found in: {r['env_hits']}" if r["env_hits"] else "secret env var not found"),
        Check("separate pid namespace (cannot signal the scorer)",
              r["kill_host"] is False and max(r["pids"] or [0]) < 100,
              f"pids visible inside: {r['pids'][:10]}, can signal host pid: {r['kill_host']}"),
        Check("no capabilities", int(r["cap_eff"], 16) == 0, f"CapEff={r['cap_eff']}"),
        Check("nested user namespaces blocked", r["nested_userns"].startswith("refused"),
              f"unshare(CLONE_NEWUSER) {r['nested_userns']}", required=False),
        _check_uid(allow_unsafe),
    ]
    if b is not None and b.kind == "bwrap":  # (with the unsafe opt-in: what gets through)
        checks += [_check_filter(allow_unsafe), _check_cgroups(b)]
    checks += _limit_checks(allow_unsafe)
    return checks


def _limit_checks(allow_unsafe: bool) -> list[Check]:
    out = []
    run = runner.run_python
    r = run("while True: pass", limits=Limits(cpu_s=1, wall_s=15), allow_unsafe=allow_unsafe)
    out.append(Check("CPU time limit (RLIMIT_CPU)", r.killed_by == "cpu",
                     f"busy loop with cpu_s=1: killed_by={r.killed_by} after {r.wall_s:.1f}s"))
    r = run("import time\ntime.sleep(60)", limits=Limits(wall_s=1), allow_unsafe=allow_unsafe)
    out.append(Check("wall-clock limit", r.killed_by == "timeout" and r.wall_s < 5,
                     f"sleep(60) with wall_s=1: killed_by={r.killed_by} after {r.wall_s:.1f}s"))
    r = run("x = bytearray(2 << 30)", limits=Limits(memory_mb=256), allow_unsafe=allow_unsafe)
    out.append(Check("memory limit (RLIMIT_AS)", r.killed_by == "memory",
                     f"2 GiB allocation with memory_mb=256: killed_by={r.killed_by}"))
    r = run(_FORK_BOMB, limits=Limits(nproc=8, wall_s=15), allow_unsafe=allow_unsafe)
    forks = int(r.stdout_text.strip() or -1) if r.stdout_text.strip().isdigit() else -1
    host_ok = subprocess.run(["true"], timeout=10).returncode == 0
    out.append(Check("process limit (fork bomb contained)", 0 <= forks < 8 and host_ok,
                     f"fork bomb with nproc=8 got {forks} children; host can still spawn: "
                     f"{host_ok}"))
    r = run("import os\ntry:\n    open('big', 'wb').write(b'x' * (8 << 20))\n"
            "except OSError as e:\n    print('errno', e.errno)\nprint(os.path.getsize('big'))",
            limits=Limits(fsize_mb=1), allow_unsafe=allow_unsafe)
    size = r.stdout_text.split()[-1:] or ["?"]
    out.append(Check("file size limit (RLIMIT_FSIZE)",
                     size[0].isdigit() and int(size[0]) <= 1 << 20,
                     f"8 MiB write with fsize_mb=1: {r.stdout_text.strip()!r} (bytes written)"))
    r = run("import sys\nwhile True: sys.stdout.write('x' * 65536)",
            limits=Limits(max_output=1 << 16, wall_s=15), allow_unsafe=allow_unsafe)
    out.append(Check("output limit", r.killed_by == "output" and len(r.stdout) <= 1 << 16,
                     f"endless output with max_output=64 KiB: killed_by={r.killed_by}, "
                     f"kept {len(r.stdout)} bytes"))
    return out


def format_table(checks: list[Check]) -> str:
    w = max(len(c.name) for c in checks)
    lines = [f"{'protection':<{w}}  status    detail", "-" * (w + 40)]
    for c in checks:
        status = "ACTIVE" if c.active else ("MISSING" if c.required else "missing*")
        lines.append(f"{c.name:<{w}}  {status:<8}  {c.detail}")
    if any(not c.active and not c.required for c in checks):
        lines.append("* optional hardening")
    return "\n".join(lines)


__all__ = ["Check", "SandboxUnavailable", "format_table", "self_check"]
