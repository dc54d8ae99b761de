"""Assert-style tests (HumanEval ``check`` functions, MBPP ``test_list``) run in the TRUSTED
scoring process, with the solution's functions replaced by proxies into the sandbox.

The dataset's test code never enters the sandbox, so the program cannot read the expected values,
patch ``AssertionError``/``print``/``sys.exit`` or fake a success marker: each call sends plain
arguments in and gets a fresh plain value (or an opaque ``RemoteRef``) back, and every comparison
happens here. Each top-level statement that asserts something about the solution is one test.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import sys
from dataclasses import dataclass, field
from typing import Any

from prorl.sandbox.session import PythonSession, SessionAbort, SessionTimeout

_BUILTIN_NAMES = frozenset(dir(builtins))
_STDLIB = frozenset(getattr(sys, "stdlib_module_names", ()))


class SuiteError(ValueError):
    """The dataset's test code itself is unusable (a data problem, not the model's)."""


class RemoteFunction:
    """Stands for a solution function: calling it calls the sandboxed program."""

    __slots__ = ("_session", "_name")

    def __init__(self, session: PythonSession, name: str) -> None:
        self._session = session
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._session.call(self._name, args, kwargs)

    def __repr__(self) -> str:
        return f"<sandboxed function {self._name}>"


@dataclass
class Step:
    code: Any  # compiled code object
    graded: bool  # one test: passes iff it runs without an exception
    tainted: bool  # uses solution results (a failure poisons the tests that follow)
    label: str


@dataclass
class Suite:
    """Trusted test code split into steps, plus what to bind before running it."""

    setup: list[tuple[str, str]]  # (label, source) trusted code run first, in order
    steps: list[Step]
    proxies: dict[str, str]  # name in the test namespace -> function name in the program
    prefix: str = ""  # code prepended to the program inside the sandbox
    auto_imports: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    passed: int = 0
    total: int = 0
    timed_out: bool = False
    syntax_error: str | None = None
    first_failure: str | None = None
    notes: list[str] = field(default_factory=list)

    def fail(self, why: str) -> None:
        if self.first_failure is None:
            self.first_failure = why[:300]


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _stored(node: ast.AST) -> set[str]:
    out = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)
           and isinstance(n.ctx, (ast.Store, ast.Del))}
    for n in ast.walk(node):
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            out |= {(a.asname or a.name).split(".")[0] for a in n.names}
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
    return out


def _has_assert(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Assert) for n in ast.walk(node))


def _steps(stmts: list[ast.stmt], solution_names: set[str], label: str) -> list[Step]:
    """One step per statement; graded iff it asserts and uses the solution (directly or through
    a variable computed from it)."""
    tainted = set(solution_names)
    steps = []
    for i, stmt in enumerate(stmts):
        uses = bool(_names(stmt) & tainted)
        asserts = _has_assert(stmt)
        if uses and not asserts:
            tainted |= _stored(stmt)
        mod = ast.Module(body=[stmt], type_ignores=[])
        try:
            code = compile(mod, f"<{label}>", "exec")
        except SyntaxError as e:  # e.g. 'return' at the top level of check()
            raise SuiteError(f"cannot split test statement {i}: {e}") from None
        steps.append(Step(code, graded=uses and asserts, tainted=uses,
                          label=f"{label}:{getattr(stmt, 'lineno', i)}"))
    return steps


def _parse(src: str, what: str) -> ast.Module:
    try:
        return ast.parse(src)
    except SyntaxError as e:
        raise SuiteError(f"{what} does not parse: {e}") from None


def humaneval_suite(test: str, entry_point: str, prompt: str = "",
                    prefix: str | None = None, setup: str | None = None) -> Suite:
    """``check(candidate)`` tests: each top-level statement of ``check`` that asserts on the
    candidate is one test. ``prompt`` (trusted) defines helpers such as ``poly``."""
    tree = _parse(test, "test code")
    checks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if len(checks) != 1 or not checks[0].args.args:
        raise SuiteError("test code has no check(candidate) function")
    check = checks[0]
    param = check.args.args[0].arg
    names = {param, entry_point}
    steps = _steps(check.body, names, "check")
    if not any(s.graded for s in steps):  # fall back to the whole check() as one test
        steps = [Step(compile(f"check({param})", "<check>", "exec"), True, True, "check")]
    setup_src = prompt if setup is None else setup
    return Suite(setup=[("prompt", setup_src), ("test", test)], steps=steps,
                 proxies={param: entry_point, entry_point: entry_point},
                 prefix=prompt if prefix is None else prefix)


def mbpp_suite(test_list: list[str], test_imports: list[str] | None = None,
               setup_code: str = "", entry_points: list[str] | None = None,
               prefix: str | None = None) -> Suite:
    """MBPP-style: each string of ``test_list`` is one test (normally one ``assert``)."""
    imports = [str(s) for s in (test_imports or [])]
    setup_src = "\n".join(imports + ([setup_code] if setup_code else []))
    bound = _stored(_parse(setup_src, "test setup")) if setup_src.strip() else set()
    trees = [_parse(str(t), f"test {i}") for i, t in enumerate(test_list)]
    free: set[str] = set()
    for t in trees:
        free |= _names(t) - _stored(t)
    if entry_points:
        solution = {str(n) for n in entry_points}
    else:
        solution = {n for n in free - bound - _BUILTIN_NAMES if n not in _STDLIB}
    if not solution:
        raise SuiteError("the tests do not name any solution function")
    auto = sorted(n for n in free - bound - solution - _BUILTIN_NAMES if n in _STDLIB)
    steps: list[Step] = []
    for i, t in enumerate(trees):
        uses = bool(_names(t) & solution)
        try:
            code = compile(t, f"<test {i}>", "exec")
        except SyntaxError as e:
            raise SuiteError(f"test {i} does not compile: {e}") from None
        steps.append(Step(code, graded=uses, tainted=uses, label=f"test {i}"))
    if not any(s.graded for s in steps):
        raise SuiteError("no test uses the solution")
    return Suite(setup=[("setup", setup_src)], steps=steps,
                 proxies={n: n for n in sorted(solution)},
                 prefix="\n".join(imports) if prefix is None else prefix, auto_imports=auto)


def run_suite(session: PythonSession, suite: Suite) -> Outcome:
    """Run the trusted steps against the sandboxed program; counts graded steps that pass."""
    out = Outcome(total=sum(s.graded for s in suite.steps))
    ns: dict[str, Any] = {"__name__": "__prorl_tests__", "__builtins__": builtins}
    for name in suite.auto_imports:
        try:
            ns[name] = importlib.import_module(name)
        except ImportError:
            pass
    for label, src in suite.setup:
        if src.strip():
            try:
                exec(compile(src, f"<{label}>", "exec"), ns)
            except Exception as e:
                raise SuiteError(f"trusted {label} code failed: {type(e).__name__}: {e}") from None
    for name, target in suite.proxies.items():
        ns[name] = RemoteFunction(session, target)
    poisoned: str | None = None
    aborted: str | None = None
    for step in suite.steps:
        if aborted or (step.graded and poisoned):
            if step.graded:
                out.fail(f"{step.label}: {aborted or poisoned}")
            continue
        try:
            exec(step.code, ns)
        except SessionAbort as e:
            aborted = str(e)
            out.timed_out = isinstance(e, SessionTimeout)
            if step.graded:
                out.fail(f"{step.label}: {aborted}")
            continue
        except Exception as e:
            why = f"{type(e).__name__}: {str(e)[:200]}" if str(e) else type(e).__name__
            if step.graded:
                out.fail(f"{step.label}: {why}")
            elif step.tainted:
                poisoned = f"an earlier statement failed ({why})"
            continue
        if step.graded:
            out.passed += 1
    return out
