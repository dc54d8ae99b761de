"""Functional behaviour of the sandbox runner, the protocol session and the plain-data codec."""

from __future__ import annotations

import math
import shutil

import pytest

from prorl.sandbox import (Limits, PythonSession, RemoteError, SandboxUnavailable, SessionDied,
                           SessionTimeout, configure, get_config, run_python)
from prorl.sandbox import plaindata

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed")


@needs_bwrap
def test_stdout_stdin_exit_code_and_argv():
    r = run_python("import sys\nname = input()\nprint('hi', name, sys.argv[1:])\nsys.exit(3)",
                   stdin="wörld\n", argv=("a", "b"))
    assert r.sandboxed
    assert r.exit_code == 3 and r.killed_by is None
    assert r.stdout_text == "hi wörld ['a', 'b']\n"
    r = run_python("print('ok')")
    assert r.ok and r.stdout == b"ok\n" and r.stderr == b""


@needs_bwrap
def test_exception_goes_to_stderr_and_exit_builtin_works():
    r = run_python("raise ValueError('boom')")
    assert r.exit_code == 1 and b"ValueError: boom" in r.stderr
    r = run_python("print(1)\nexit(0)\nprint(2)")  # exit() exists although site is skipped
    assert r.ok and r.stdout == b"1\n"


@needs_bwrap
def test_files_are_placed_in_the_working_dir_and_importable():
    r = run_python("import helper, os\nprint(helper.X, open('data/in.txt').read(), os.getcwd())",
                   files={"helper.py": "X = 41 + 1", "data/in.txt": b"payload"})
    assert r.ok, r.stderr_text
    assert r.stdout_text.split() == ["42", "payload", "/tmp"]
    with pytest.raises(ValueError):
        run_python("pass", files={"../escape": "x"})
    with pytest.raises(ValueError):
        run_python("pass", files={"/etc/x": "x"})


@needs_bwrap
def test_large_stdin_and_stdout_round_trip():
    data = b"x" * (3 << 20)
    r = run_python("import sys\nd = sys.stdin.buffer.read()\nsys.stdout.buffer.write(d[::-1])",
                   stdin=data, limits=Limits(max_output=4 << 20))
    assert r.ok and r.stdout == data


@needs_bwrap
def test_call_session_round_trips_plain_values_and_exceptions():
    code = (
        "def f(a, b=1):\n    print('noise')\n    return [a, b, (a,), {a: b}, {1, 2}, 2**70, 1.5,"
        " None, True, b'x', 1+2j, frozenset([3])]\n"
        "def boom(x):\n    raise KeyError(x)\n"
        "class Custom(Exception): pass\n"
        "def custom():\n    raise Custom('c')\n"
        "def gen(n):\n    return (i * i for i in range(n))\n"
        "def counter():\n    import collections\n    return collections.Counter('aab')\n"
        "class Solution:\n    def twice(self, x):\n        return 2 * x\n"
    )
    with PythonSession(code, "call", budget_s=10) as s:
        assert s.syntax_error is None and s.load_error is None
        got = s.call("f", [3], {"b": 4})
        assert got == [3, 4, (3,), {3: 4}, {1, 2}, 2 ** 70, 1.5, None, True, b"x", 1 + 2j,
                       frozenset([3])]
        assert type(got[2]) is tuple and type(got[5]) is int
        with pytest.raises(KeyError):
            s.call("boom", [1])
        with pytest.raises(RemoteError, match="Custom"):
            s.call("custom")
        assert list(s.call("gen", [4])) == [0, 1, 4, 9]
        c = s.call("counter")
        assert type(c) is dict and c == {"a": 2, "b": 1}
        assert s.call("twice", [21]) == 42  # LeetCode-style Solution class
        with pytest.raises(NameError):
            s.call("missing")


@needs_bwrap
def test_stdio_session_runs_each_input_in_a_fresh_process():
    code = "import sys\nn = int(input())\nprint(n * 2)\nif n == 3:\n    sys.exit(7)\n"
    with PythonSession(code, "stdio", budget_s=10) as s:
        results = [s.run_stdin(f"{i}\n") for i in range(5)]
    assert [r.stdout for r in results] == [f"{2 * i}\n" for i in range(5)]
    assert [r.exit_code for r in results] == [0, 0, 0, 7, 0]


@needs_bwrap
def test_session_reports_syntax_errors_and_times_out():
    with PythonSession("def f(:\n", "call", budget_s=5) as s:
        assert s.syntax_error and "SyntaxError" in s.syntax_error
    with PythonSession("def f():\n    while True: pass\n", "call", budget_s=1) as s:
        with pytest.raises(SessionTimeout):
            s.call("f")
    with PythonSession("import os\ndef f():\n    os._exit(0)\n", "call", budget_s=5) as s:
        with pytest.raises(SessionDied):
            s.call("f")


def test_plaindata_is_strict():
    class Sneaky(int):
        def __eq__(self, other):
            return True

    with pytest.raises(plaindata.PlainDataError):
        plaindata.encode(Sneaky(1))
    with pytest.raises(plaindata.PlainDataError):
        plaindata.encode([object()])
    for bad in ({"x": 1}, {"t": 1}, {"d": [[1]]}, {"I": 5}, {"h": "1"}, {"s": [1], "t": [2]}):
        with pytest.raises(plaindata.PlainDataError):
            plaindata.decode(bad)
    deep: list = []
    cur = deep
    for _ in range(500):
        cur.append([])
        cur = cur[0]
    with pytest.raises(plaindata.PlainDataError):
        plaindata.decode(deep)
    value = {"k": (1, [2.5, None], {3}), (1, 2): frozenset({b"z"}), "big": -(10 ** 40)}
    assert plaindata.decode(plaindata.encode(value)) == value
    assert math.isnan(plaindata.decode(plaindata.loads(plaindata.dumps(float("nan")))))
    ref = plaindata.decode({"h": 3, "type": "Foo"})
    assert ref == ref and ref != plaindata.decode({"h": 3, "type": "Foo"}) and ref != 3


def test_unavailable_sandbox_is_an_error_unless_unsafe_is_explicit():
    old = get_config()
    try:
        configure(bwrap="/nonexistent/bwrap", allow_unsafe=False)
        with pytest.raises(SandboxUnavailable, match="bwrap"):
            run_python("print(1)")
        r = run_python("print(1)", allow_unsafe=True)  # explicit opt-in only
        assert r.stdout == b"1\n" and r.sandboxed is False
        configure(allow_unsafe=True)
        assert run_python("print(2)").stdout == b"2\n"
    finally:
        configure(**{k: getattr(old, k) for k in old.__dataclass_fields__})
