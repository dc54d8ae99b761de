"""Probe, on this machine, each protection the sandbox claims (``prorl sandbox-check``).

Every check actually tries the forbidden thing from inside a sandbox (connect to a server the
host opened on 127.0.0.1, read host files and the host's environment, write outside the scratch
dir, fork past the limit, ...) and reports whether it was stopped.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from prorl.sandbox import runner
from prorl.sandbox.runner import Limits, SandboxUnavailable


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
    checks = [Check("bubblewrap isolation available", ok, why)]
    if not ok and not allow_unsafe:
        return checks
    secret_name, secret = "PRORL_SELFCHECK_SECRET", uuid.uuid4().hex
    os.environ[secret_name] = secret
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    hits: list = []
    t = threading.Thread(target=_serve_once, args=(server, hits), daemon=True)
    t.start()
    repo = str(Path(__file__).resolve().parents[2])
    host_paths = ["/etc/shadow", "/etc/passwd", "/root", "/home", repo, str(Path(repo).parent),
                  "/work/shared", "/var", "/run", "/sys/fs/cgroup", "/usr/share", "/usr/local"]
    try:
        res = runner.run_python(
            _ISOLATION_PROBE, limits=Limits(wall_s=30), allow_unsafe=allow_unsafe,
            argv=(str(server.getsockname()[1]), secret_name, secret, str(os.getpid()),
                  *host_paths))
    finally:
        os.environ.pop(secret_name, None)
        server.close()
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
