"""The seccomp filter's construction and the refusal without it, and cgroup v2 detection and
per-run cgroups (on a fake cgroup tree: this machine has no delegated cgroup v2)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from prorl.sandbox import Limits, SandboxUnavailable, configure, get_config, run_python
from prorl.sandbox import cgroups, syscall_filter
from prorl.sandbox.selfcheck import self_check

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed")


@pytest.fixture
def restore_config():
    old = get_config()
    yield
    syscall_filter.bpf_program.cache_clear()
    configure(**{k: getattr(old, k) for k in old.__dataclass_fields__})


# ----------------------------------------------------------------------------- the filter


def test_filter_is_compiled_by_libseccomp_and_covers_the_policy_table():
    ok, why = syscall_filter.status()
    assert ok, why
    prog = syscall_filter.bpf_program()
    assert len(prog) % 8 == 0 and len(prog) // 8 > 50  # struct sock_filter[], 8 bytes each
    doc = syscall_filter.__doc__
    for name in syscall_filter.denied_names():  # the table in the docstring is the policy
        assert name in doc, name
    assert len(set(syscall_filter.denied_names())) == len(syscall_filter.denied_names())


@needs_bwrap
def test_without_libseccomp_untrusted_code_is_refused_unless_unsafe_is_opted_in(
        monkeypatch, restore_config):
    def missing():
        raise syscall_filter.FilterUnavailable("libseccomp Python bindings not found")

    monkeypatch.setattr(syscall_filter, "_bindings", missing)
    syscall_filter.bpf_program.cache_clear()
    configure(allow_unsafe=False)
    with pytest.raises(SandboxUnavailable, match="seccomp"):
        run_python("print(1)")
    checks = {c.name: c for c in self_check()}
    filt = checks["seccomp syscall filter (denied calls fail with EPERM)"]
    assert filt.required and not filt.active and "libseccomp" in filt.detail
    assert checks["bubblewrap isolation available"].active
    r = run_python("print(1)", allow_unsafe=True)  # the explicit opt-in: bwrap, no filter
    assert r.ok and r.sandboxed


# ----------------------------------------------------------------------------- cgroups

HYBRID_SELF = "4:memory:/process_api/abc\n1:cpu:/\n0::/\n"


def _fake_kernel_mkdir(path: Path) -> None:
    """What the kernel does on mkdir in a cgroup2 file system (the files the code uses)."""
    path.mkdir()
    for name, value in (("cgroup.procs", ""), ("memory.max", "max"), ("pids.max", "max"),
                        ("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")):
        (path / name).write_text(value)


def _tree(tmp_path: Path, controllers: str, own: str = "/svc") -> tuple[str, str, Path]:
    root = tmp_path / "cg"
    parent = root / own.lstrip("/")
    parent.mkdir(parents=True)
    (parent / "cgroup.controllers").write_text(controllers + "\n")
    (parent / "cgroup.subtree_control").write_text("\n")
    mounts = tmp_path / "mounts"
    mounts.write_text(f"proc /proc proc rw 0 0\ncgroup2 {root} cgroup2 rw,nosuid 0 0\n")
    cg = tmp_path / "self_cgroup"
    cg.write_text(f"0::{own}\n")
    return str(mounts), str(cg), parent


def test_cgroup_parsing():
    assert cgroups.cgroup2_mounts("cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n"
                                  "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n") == \
        ["/sys/fs/cgroup/unified"]
    assert cgroups.own_cgroup(HYBRID_SELF) == "/"
    assert cgroups.own_cgroup("0::/user.slice/x.service\n") == "/user.slice/x.service"
    assert cgroups.own_cgroup("4:memory:/a\n") is None


def test_cgroup_detection_reasons(tmp_path, monkeypatch):
    monkeypatch.setattr(cgroups, "_make_child", _fake_kernel_mkdir)
    assert "disabled" in cgroups.detect("off").detail
    no_mount = tmp_path / "m0"
    no_mount.write_text("proc /proc proc rw 0 0\n")
    found = cgroups.detect("", str(no_mount), str(tmp_path / "m0"))
    assert not found.available and "no cgroup v2" in found.detail
    mounts, own, parent = _tree(tmp_path / "hybrid", "hugetlb")  # like this machine
    found = cgroups.detect("", mounts, own)
    assert not found.available and "lacks the memory/pids" in found.detail
    mounts, own, parent = _tree(tmp_path / "busy", "cpu memory pids")
    (parent / "cgroup.subtree_control").unlink()
    (parent / "cgroup.subtree_control").mkdir()  # writing it fails, as with EBUSY
    found = cgroups.detect("", mounts, own)
    assert not found.available and "cannot enable memory/pids" in found.detail


def test_cgroup_detection_enables_controllers_and_runs_get_their_limits(tmp_path, monkeypatch):
    monkeypatch.setattr(cgroups, "_make_child", _fake_kernel_mkdir)
    mounts, own, parent = _tree(tmp_path, "cpu memory pids")
    found = cgroups.detect("", mounts, own)
    assert found.available and found.parent == str(parent)
    assert (parent / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert cgroups.detect(str(parent)).parent == str(parent)  # an explicit directory
    limits = Limits(memory_mb=256, nproc=8)
    run = cgroups.RunCgroup(str(parent), limits.cgroup_memory_bytes(), limits.cgroup_pids())
    assert (run.path / "memory.max").read_text() == str(512 << 20)
    assert (run.path / "pids.max").read_text() == "12"
    argv = run.wrap(["/bin/echo", "hi"])
    assert argv[:2] == ["/bin/sh", "-c"] and argv[3] == str(run.path / "cgroup.procs")
    assert not run.oom_killed()
    (run.path / "memory.events").write_text("oom 1\noom_kill 1\n")
    assert run.oom_killed()


def test_cgroup_wrapper_joins_before_exec_and_refuses_otherwise(tmp_path, monkeypatch):
    import subprocess

    monkeypatch.setattr(cgroups, "_make_child", _fake_kernel_mkdir)
    run = cgroups.RunCgroup(str(tmp_path), 1 << 30, 20)
    p = subprocess.run(run.wrap(["/bin/sh", "-c", "echo $$"]), capture_output=True, text=True)
    assert p.returncode == 0
    assert (run.path / "cgroup.procs").read_text().strip() == p.stdout.strip()  # same process
    (run.path / "cgroup.procs").unlink()
    (run.path / "cgroup.procs").mkdir()  # cannot join: the program must not start at all
    p = subprocess.run(run.wrap(["/bin/echo", "started"]), capture_output=True, text=True)
    assert p.returncode == 125 and "started" not in p.stdout


@needs_bwrap
def test_runs_join_their_own_cgroup_and_oom_kills_count_as_memory(tmp_path, monkeypatch,
                                                                    restore_config):
    """The runner's wiring, on the fake tree: one cgroup per run with that run's limits, joined
    before bwrap starts, removed afterwards; an OOM kill there is reported as ``memory``."""
    oom = {"kills": 0}

    def kernel_mkdir(path: Path) -> None:
        _fake_kernel_mkdir(path)
        (path / "memory.events").write_text(f"oom 0\noom_kill {oom['kills']}\n")

    monkeypatch.setattr(cgroups, "_make_child", kernel_mkdir)
    removed: list[Path] = []
    monkeypatch.setattr(cgroups.RunCgroup, "remove", lambda self: removed.append(self.path))
    parent = tmp_path / "delegated"
    parent.mkdir()
    (parent / "cgroup.controllers").write_text("cpu memory pids\n")
    (parent / "cgroup.subtree_control").write_text("memory pids\n")
    configure(cgroup_parent=str(parent), allow_unsafe=False)
    from prorl.sandbox import backend

    assert backend().cgroup_parent == str(parent) and backend().seccomp
    r = run_python("print('hi')", limits=Limits(memory_mb=300, nproc=10))
    assert r.ok, r.stderr_text
    run = removed[-1]
    assert (run / "memory.max").read_text() == str(600 << 20)
    assert (run / "pids.max").read_text() == "14"
    assert (run / "cgroup.procs").read_text().strip().isdigit()  # joined by the wrapper
    oom["kills"] = 1
    r = run_python("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert r.killed_by == "memory" and removed[-1] != run
