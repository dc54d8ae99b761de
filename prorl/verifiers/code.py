"""Code verifier: run the program from the response's last fenced code block against the tests.

``verify_code(response, ground_truth, extra_info) -> Verdict``; score = fraction of tests passed.
Accepted ``ground_truth`` (a dict or its JSON string; an APPS-style ``{"input_output": ...}``
wrapper is unpacked):

* stdin/stdout: ``{"inputs": [...], "outputs": [...]}`` - the program runs once per input in a
  fresh forked process; stdout is compared HERE, per line with whitespace normalised (and
  numeric tokens with a small tolerance when the expected token is a non-integer number);
* call-based: ``{"fn_name": "f", "inputs": [[args...], ...], "outputs": [...]}`` - ``f`` (or
  ``Solution().f``) is called in the sandbox, results come back as plain data and are compared
  here (APPS convention: an expected value wrapped in a one-element list also matches);
* HumanEval: ``{"test": "<def check(candidate)...>", "entry_point": "f", "prompt": "..."}``;
* MBPP: ``{"test_list": [...], "test_imports": [...], "entry_points": [...]}``.
  For these two the dataset's assert code runs in the trusted process (``code_tests.py``).

A syntax error scores 0 (``wrong``); running past the time limit (``extra_info["timeout_s"]``,
default ``DEFAULT_TIMEOUT_S``) scores 0 (``timeout``); no code block gives ``no_answer``.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from prorl.sandbox import Limits, PythonSession, SandboxUnavailable
from prorl.sandbox.session import SessionAbort, SessionTimeout
from prorl.verifiers.base import Status, Verdict
from prorl.verifiers.code_tests import Outcome, SuiteError, humaneval_suite, mbpp_suite, run_suite

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MEMORY_MB = 1024
_PY_LANGS = {"", "python", "py", "python3", "py3", "python2"}
_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)^[ \t]*```", re.M | re.S)


def extract_code(response: str) -> str | None:
    """The body of the last fenced code block tagged as Python (or untagged), else None."""
    blocks = [m.group(2) for m in _FENCE.finditer(response or "")
              if m.group(1).lower() in _PY_LANGS]
    if not blocks or not blocks[-1].strip():
        return None
    return blocks[-1]


def parse_ground_truth(gt: Any) -> dict:
    """Accept a dict or a JSON string of one; unwrap ``input_output``."""
    if isinstance(gt, (bytes, bytearray)):
        gt = gt.decode("utf-8")
    if isinstance(gt, str):
        try:
            gt = json.loads(gt)
        except json.JSONDecodeError as e:
            raise ValueError(f"code ground truth is not JSON: {e}") from None
    if not isinstance(gt, dict):
        raise ValueError(f"code ground truth must be a dict, got {type(gt).__name__}")
    if "input_output" in gt and not ({"inputs", "test", "test_list"} & set(gt)):
        inner = parse_ground_truth(gt["input_output"])
        gt = {**{k: v for k, v in gt.items() if k != "input_output"}, **inner}
    return gt


def detect_format(gt: dict) -> str:
    if gt.get("test") and gt.get("entry_point"):
        return "humaneval"
    if gt.get("test_list"):
        return "mbpp"
    if "inputs" in gt and "outputs" in gt:
        return "call" if gt.get("fn_name") else "stdio"
    raise ValueError(f"unrecognised code ground truth (keys: {sorted(gt)[:10]})")


# ------------------------------------------------------------------------- comparisons

def _as_text(x: Any) -> str:
    if isinstance(x, list):
        return "\n".join(map(str, x))
    return "" if x is None else str(x)


def _lines(s: str) -> list[str]:
    return [ln.strip() for ln in s.strip().splitlines()]


_INT_TOKEN = re.compile(r"[+-]?\d+")


def _token_match(got: str, exp: str) -> bool:
    if got == exp:
        return True
    if _INT_TOKEN.fullmatch(exp):  # integers must match exactly
        return False
    try:
        g, e = float(got), float(exp)
    except ValueError:
        return False
    if not (math.isfinite(g) and math.isfinite(e)):
        return False
    return abs(g - e) <= 1e-6 * max(1.0, abs(e))


def stdout_matches(got: str, expected: str) -> bool:
    """Per-line comparison ignoring surrounding whitespace; then token-wise with a float
    tolerance for non-integer expected numbers."""
    if _lines(got) == _lines(expected):
        return True
    g, e = got.split(), expected.split()
    return len(g) == len(e) and all(_token_match(a, b) for a, b in zip(g, e))


def _norm(x: Any) -> Any:
    t = type(x)
    if t is tuple or t is list:
        return [_norm(i) for i in x]
    if t is dict:
        return {k: _norm(v) for k, v in x.items()}
    return x


def call_result_matches(got: Any, expected: Any) -> bool:
    """Exact equality of plain data (tuples == lists), or APPS' ``[value]`` wrapping."""
    g, e = _norm(got), _norm(expected)
    if g == e:
        return True
    return type(e) is list and len(e) == 1 and g == e[0]


def _call_args(inp: Any) -> list:
    if isinstance(inp, list):
        return inp
    if isinstance(inp, str):  # LiveCodeBench: one JSON value per line
        try:
            return [json.loads(ln) for ln in inp.splitlines() if ln.strip()]
        except json.JSONDecodeError:
            return [inp]
    return [inp]


# ------------------------------------------------------------------------- runners

def _session(code: str, mode: str, budget: float, extra_info: dict) -> PythonSession:
    limits = Limits(cpu_s=budget + 1.0,
                    memory_mb=int(extra_info.get("memory_mb") or DEFAULT_MEMORY_MB))
    return PythonSession(code, mode, budget_s=budget, limits=limits,
                         module_name="solution" if mode == "call" else "__main__")


def _run_stdio(code: str, gt: dict, budget: float, extra_info: dict) -> Outcome:
    inputs, outputs = list(gt["inputs"]), list(gt["outputs"])
    if len(inputs) != len(outputs):
        raise ValueError("inputs and outputs differ in length")
    out = Outcome(total=len(inputs))
    with _session(code, "stdio", budget, extra_info) as s:
        if s.syntax_error:
            out.syntax_error = s.syntax_error
            return out
        for i, (inp, exp) in enumerate(zip(inputs, outputs)):
            try:
                r = s.run_stdin(_as_text(inp))
            except SessionAbort as e:
                out.timed_out = isinstance(e, SessionTimeout)
                out.fail(f"test {i}: {e}")
                break
            if r.exit_code != 0:
                tail = r.stderr.strip().splitlines()[-1:] or [""]
                out.fail(f"test {i}: exit code {r.exit_code} {tail[0][:200]}")
            elif r.truncated or not stdout_matches(r.stdout, _as_text(exp)):
                out.fail(f"test {i}: wrong output")
            else:
                out.passed += 1
    return out


def _run_call(code: str, gt: dict, budget: float, extra_info: dict) -> Outcome:
    inputs, outputs = list(gt["inputs"]), list(gt["outputs"])
    if len(inputs) != len(outputs):
        raise ValueError("inputs and outputs differ in length")
    fn = str(gt["fn_name"])
    out = Outcome(total=len(inputs))
    with _session(gt.get("prefix", "") + "\n" + code, "call", budget, extra_info) as s:
        if s.syntax_error:
            out.syntax_error = s.syntax_error
            return out
        for i, (inp, exp) in enumerate(zip(inputs, outputs)):
            try:
                got = s.call(fn, _call_args(inp))
            except SessionAbort as e:
                out.timed_out = isinstance(e, SessionTimeout)
                out.fail(f"test {i}: {e}")
                break
            except Exception as e:
                out.fail(f"test {i}: {type(e).__name__}: {str(e)[:200]}")
                continue
            if call_result_matches(got, exp):
                out.passed += 1
            else:
                out.fail(f"test {i}: wrong result")
    return out


def _run_asserts(code: str, gt: dict, kind: str, budget: float, extra_info: dict) -> Outcome:
    if kind == "humaneval":
        suite = humaneval_suite(str(gt["test"]), str(gt["entry_point"]), str(gt.get("prompt", "")),
                                prefix=gt.get("prefix"), setup=gt.get("setup"))
    else:
        suite = mbpp_suite(list(gt["test_list"]), gt.get("test_imports"),
                           str(gt.get("test_setup_code") or ""), gt.get("entry_points"),
                           prefix=gt.get("prefix"))
    program = (suite.prefix + "\n" + code) if suite.prefix else code
    with _session(program, "call", budget, extra_info) as s:
        if s.syntax_error:
            out = Outcome(total=len(suite.steps))
            out.syntax_error = s.syntax_error
            return out
        out = run_suite(s, suite)
        if s.load_error:
            out.notes.append(f"error while loading: {s.load_error}")
        return out


def _verdict(out: Outcome, budget: float) -> Verdict:
    if out.syntax_error:
        return Verdict(0.0, Status.WRONG, f"syntax error: {out.syntax_error}")
    if out.timed_out:
        return Verdict(0.0, Status.TIMEOUT,
                       f"time limit {budget:g}s exceeded ({out.passed}/{out.total} passed before)")
    if out.total <= 0:
        return Verdict(0.0, Status.ERROR, "no tests")
    if out.passed == out.total:
        return Verdict(1.0, Status.CORRECT, f"passed {out.total}/{out.total} tests")
    why = f"passed {out.passed}/{out.total} tests; first failure: {out.first_failure}"
    if out.notes:
        why += "; " + "; ".join(out.notes)
    return Verdict(out.passed / out.total, Status.WRONG, why[:500])


def verify_code(response: str, ground_truth: Any, extra_info: dict | None) -> Verdict:
    """Score a response's last Python code block by the fraction of tests it passes."""
    extra_info = extra_info or {}
    code = extract_code(response)
    if code is None:
        return Verdict(0.0, Status.NO_ANSWER, "no fenced Python code block")
    try:
        gt = parse_ground_truth(ground_truth)
        kind = detect_format(gt)
    except (ValueError, TypeError) as e:
        return Verdict(0.0, Status.ERROR, f"bad ground truth: {e}")
    budget = float(extra_info.get("timeout_s") or DEFAULT_TIMEOUT_S)
    try:
        if kind == "stdio":
            out = _run_stdio(code, gt, budget, extra_info)
        elif kind == "call":
            out = _run_call(code, gt, budget, extra_info)
        else:
            out = _run_asserts(code, gt, kind, budget, extra_info)
    except SandboxUnavailable as e:
        return Verdict(0.0, Status.ERROR, f"sandbox unavailable: {e}"[:500])
    except SuiteError as e:
        return Verdict(0.0, Status.ERROR, f"unusable tests: {e}"[:500])
    except SessionAbort as e:  # died or timed out while starting / loading
        if isinstance(e, SessionTimeout):
            return Verdict(0.0, Status.TIMEOUT, f"time limit {budget:g}s exceeded: {e}"[:500])
        return Verdict(0.0, Status.WRONG, f"program ended the sandbox: {e}"[:500])
    return _verdict(out, budget)
