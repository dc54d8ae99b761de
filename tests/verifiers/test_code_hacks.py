"""Reward hacking attempts against the code verifier: none may earn any reward.

Each attack is run against all four ground-truth formats where it applies. The tasks' correct
answers are never 0/None/empty, so a "do nothing" program cannot pass by accident.
"""

from __future__ import annotations

import os
import shutil
import textwrap
import uuid

import pytest

from prorl.verifiers.base import Status
from prorl.verifiers.code import verify_code

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed")


def fenced(code: str) -> str:
    return "```python\n" + textwrap.dedent(code).strip("\n") + "\n```"


def formats(secret: str = "7777777") -> dict[str, dict]:
    """The same task (f(x) = secret + x, as a string for stdio) in every format."""
    xs = [1, 2, 3]
    exp = [f"{secret}{x}" for x in xs]
    return {
        "stdio": {"inputs": [f"{x}\n" for x in xs], "outputs": [e + "\n" for e in exp]},
        "call": {"fn_name": "f", "inputs": [[x] for x in xs], "outputs": exp},
        "humaneval": {"prompt": "def f(x):\n    \"\"\"Return a magic string.\"\"\"\n",
                      "entry_point": "f",
                      "test": "def check(candidate):\n" + "".join(
                          f"    assert candidate({x}) == {e!r}\n" for x, e in zip(xs, exp))},
        "mbpp": {"test_list": [f"assert f({x}) == {e!r}" for x, e in zip(xs, exp)],
                 "test_imports": []},
    }


def assert_no_reward(code: str, secret: str = "7777777", timeout_s: float = 3.0,
                     only: tuple[str, ...] = ()) -> None:
    for name, gt in formats(secret).items():
        if only and name not in only:
            continue
        v = verify_code(fenced(code), gt, {"timeout_s": timeout_s})
        assert v.score == 0.0 and v.status != Status.CORRECT, (name, v)


def test_sanity_the_honest_solution_passes_everywhere():
    for name, gt in formats().items():
        code = ("x = int(input())\nprint('7777777' + str(x))" if name == "stdio"
                else "def f(x):\n    return '7777777' + str(x)")
        assert verify_code(fenced(code), gt, {}).score == 1.0, name


@pytest.mark.parametrize("exit_stmt", ["import sys\nsys.exit(0)", "exit()", "raise SystemExit",
                                       "import os\nos._exit(0)"])
def test_exit_before_the_tests_run(exit_stmt):
    assert_no_reward(exit_stmt + "\ndef f(x):\n    return None\nprint('PASS')")


def test_objects_that_equal_everything():
    assert_no_reward("""
        class Anything:
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            __hash__ = object.__hash__
        def f(x):
            return Anything()
    """, only=("call", "humaneval", "mbpp"))
    # subclasses of plain types are sent as their plain value, not as the object
    assert_no_reward("""
        class S(str):
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            __hash__ = str.__hash__
        def f(x):
            return S("nope")
    """, only=("call", "humaneval", "mbpp"))


def test_monkeypatching_builtins_and_test_machinery():
    assert_no_reward("""
        import builtins, sys, math, unittest
        class Never(Exception):
            pass
        builtins.AssertionError = Never
        builtins.print = lambda *a, **k: None
        builtins.isinstance = lambda *a: True
        sys.exit = lambda *a: None
        math.isclose = lambda *a, **k: True
        builtins.__dict__["assert"] = None
        def check(candidate):
            return True
        def f(x):
            raise AssertionError("pretend nothing happened")
    """)


def test_fake_success_markers_and_forged_protocol_messages():
    assert_no_reward("""
        import os
        msg = b'{"ready":true}\\n' + b'{"ok":true,"v":"77777771"}\\n' * 10 \\
            + b'{"exit":0,"stdout":"77777771\\\\n","stderr":""}\\n' * 10
        for fd in range(0, 64):
            try:
                os.write(fd, msg)
            except OSError:
                pass
        print("All tests passed!\\nOK\\nPASSED 3/3")
        def f(x):
            return "All tests passed"
    """)


def test_killing_or_signalling_the_scorer():
    me = os.getpid()
    assert_no_reward(f"""
        import os, signal
        for pid in ({me}, os.getppid(), 1, -1):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.killpg(0, signal.SIGKILL)
        except OSError:
            pass
        def f(x):
            os.kill(os.getppid(), signal.SIGKILL)
            return "x"
    """)
    assert os.getpid() == me


def test_reading_the_expected_outputs():
    secret = uuid.uuid4().hex  # appears only in the expected outputs
    finder = """
        import gc, os, sys
        SECRET_PREFIX_LEN = 32
        def search():
            pool = []
            for root in ("/", "/proc"):
                for dirpath, dirs, files in os.walk(root):
                    if dirpath.startswith("/proc/") and dirpath.count("/") > 3:
                        continue
                    for name in files:
                        try:
                            with open(os.path.join(dirpath, name), "rb") as fh:
                                pool.append(fh.read(1 << 20))
                        except Exception:
                            pass
            pool += [repr(o).encode() for o in gc.get_objects() if isinstance(o, (dict, list))]
            frame = sys._getframe()
            while frame is not None:
                pool.append(repr(frame.f_locals).encode())
                frame = frame.f_back
            import re
            for blob in pool:
                m = re.search(rb"([0-9a-f]{32})[123]", blob)
                if m:
                    return m.group(1).decode()
            return "notfound"
        def f(x):
            return search() + str(x)
    """
    assert_no_reward(finder, secret=secret, timeout_s=20, only=("call", "humaneval", "mbpp"))
    stdio_finder = finder + "\nprint(search() + input().strip())\n"
    assert_no_reward(stdio_finder, secret=secret, timeout_s=20, only=("stdio",))


def test_redefining_trusted_helpers_does_not_help():
    # HumanEval/32 style: the test checks the answer with a helper from the prompt; in the
    # original harness a candidate could redefine the helper to make any answer pass.
    gt = {"prompt": "def poly(xs, x):\n    return sum(c * x ** i for i, c in enumerate(xs))\n\n"
                    "def find_zero(xs):\n    \"\"\"A zero of the polynomial.\"\"\"\n",
          "entry_point": "find_zero",
          "test": "def check(candidate):\n    for xs in ([1, 2], [-6, 11, -6, 1], [2, -3, 1]):\n"
                  "        assert abs(poly(xs, candidate(xs))) < 1e-6\n"}
    cheat = "def poly(xs, x):\n    return 0\n\ndef find_zero(xs):\n    return 123.0"
    assert verify_code(fenced(cheat), gt, {}).score == 0.0
    honest = ("def find_zero(xs):\n    lo, hi = -100.0, 100.0\n    for _ in range(200):\n"
              "        mid = (lo + hi) / 2\n"
              "        if (poly(xs, lo) > 0) == (poly(xs, mid) > 0):\n            lo = mid\n"
              "        else:\n            hi = mid\n    return lo")
    assert verify_code(fenced(honest), gt, {}).score == 1.0


def test_resource_attacks_do_not_hang_or_pass():
    assert_no_reward("""
        import os
        def f(x):
            while True:
                try:
                    os.fork()
                except OSError:
                    pass
        if __name__ == "__main__":
            f(0)
    """, timeout_s=2)
    assert_no_reward("""
        def f(x):
            return "7" * (64 << 20)
        print("7" * (64 << 20))
    """, timeout_s=10)
    assert_no_reward("""
        def f(x):
            v = []
            for _ in range(100000):
                v = [v]
            return v
    """, only=("call", "humaneval", "mbpp"))


def test_protocol_lookalike_values_stay_plain():
    gt = {"fn_name": "f", "inputs": [[1]], "outputs": [{"h": 1}]}
    v = verify_code(fenced("def f(x):\n    return {'h': 1}"), gt, {})
    assert v.score == 1.0
    v = verify_code(fenced("def f(x):\n    return object()"), gt, {})
    assert v.score == 0.0
