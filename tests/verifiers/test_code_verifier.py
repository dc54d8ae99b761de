"""The code verifier on each ground-truth format: extraction, partial credit, errors, timeouts."""

from __future__ import annotations

import json
import shutil

import pytest

from prorl.verifiers.base import Status, verify_one
from prorl.verifiers.code import (call_result_matches, extract_code, stdout_matches, detect_format,
                                  verify_code)

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed")


def fenced(code: str, lang: str = "python") -> str:
    return f"Let me think.\n```{lang}\n{code}\n```\nDone."


STDIO_GT = {"inputs": ["1 2\n", "3 4\n", "10 -5\n"], "outputs": ["3\n", "7\n", "5"]}
CALL_GT = {"fn_name": "add", "inputs": [[1, 2], [3, 4], [10, -5]], "outputs": [3, 7, 5]}
HE_GT = {"prompt": "def add(a, b):\n    \"\"\"Add.\"\"\"\n", "entry_point": "add",
         "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n"
                 "    assert candidate(3, 4) == 7\n    assert True\n"
                 "    assert candidate(10, -5) == 5\n    assert candidate(0, 0) == 0\n"}
MBPP_GT = {"test_list": ["assert add(1, 2) == 3", "assert add(3, 4) == 7",
                         "assert add(10, -5) == 5", "assert math.isclose(add(0.1, 0.2), 0.3)"],
           "test_imports": ["import math"]}


def test_extract_code_takes_the_last_python_block():
    text = "```python\nx = 1\n```\nthen\n```\ny = 2\n```\n```text\nnot code\n```"
    assert extract_code(text) == "y = 2\n"
    assert extract_code("no code here") is None
    assert extract_code("```python\nunterminated") is None
    assert extract_code("```cpp\nint main(){}\n```") is None
    assert extract_code("```python\n\n```") is None
    assert extract_code("  ```py\n  a = 1\n  ```") == "  a = 1\n"


def test_comparators():
    assert stdout_matches("3 \n7\n\n", "3\n7")
    assert stdout_matches("0.3333333", "0.33333333")
    assert not stdout_matches("1000000001", "1000000000")  # integers compare exactly
    assert not stdout_matches("3\n", "4\n")
    assert not stdout_matches("", "0")
    assert call_result_matches((1, 2), [1, 2])
    assert call_result_matches(3, [3])  # APPS wraps the expected value in a list
    assert not call_result_matches(3, [4])
    assert not call_result_matches([3, 4], [[3, 5]])
    assert detect_format({"inputs": [], "outputs": []}) == "stdio"
    assert detect_format(CALL_GT) == "call"
    assert detect_format(HE_GT) == "humaneval"
    assert detect_format(MBPP_GT) == "mbpp"


@needs_bwrap
@pytest.mark.parametrize("gt", [STDIO_GT, CALL_GT, HE_GT, MBPP_GT],
                         ids=["stdio", "call", "humaneval", "mbpp"])
def test_correct_solution_scores_one_for_every_format(gt):
    if "fn_name" in gt or "test" in gt or "test_list" in gt:
        code = "def add(a, b):\n    return a + b"
    else:
        code = "a, b = map(int, input().split())\nprint(a + b)"
    v = verify_code(fenced(code), gt, {})
    assert v.status == Status.CORRECT and v.score == 1.0, v
    # ground truth given as a JSON string works too (how parquet rows store it)
    assert verify_code(fenced(code), json.dumps(gt), {}).score == 1.0


@needs_bwrap
def test_partial_credit_is_the_fraction_of_tests_passed():
    buggy_fn = "def add(a, b):\n    return a + b if a < 5 else 0"
    v = verify_code(fenced(buggy_fn), CALL_GT, {})
    assert v.status == Status.WRONG and v.score == pytest.approx(2 / 3), v
    v = verify_code(fenced(buggy_fn), HE_GT, {})  # 'assert True' is not a test of the solution
    assert v.score == pytest.approx(3 / 4), v
    v = verify_code(fenced(buggy_fn), MBPP_GT, {})
    assert v.score == pytest.approx(3 / 4), v
    buggy_io = "a, b = map(int, input().split())\nprint(a + b if a < 5 else 0)"
    v = verify_code(fenced(buggy_io), STDIO_GT, {})
    assert v.score == pytest.approx(2 / 3) and "test 2" in v.reason, v


@needs_bwrap
def test_stdio_runtime_error_and_nonzero_exit_fail_that_test_only():
    code = "import sys\na, b = map(int, input().split())\nprint(a + b)\nif a == 3:\n    sys.exit(1)"
    v = verify_code(fenced(code), STDIO_GT, {})
    assert v.score == pytest.approx(2 / 3) and "exit code 1" in v.reason


@needs_bwrap
def test_syntax_error_no_answer_and_bad_ground_truth():
    for gt in (STDIO_GT, CALL_GT, HE_GT, MBPP_GT):
        v = verify_code(fenced("def add(a, b)\n    return a + b"), gt, {})
        assert v.status == Status.WRONG and v.score == 0 and "syntax error" in v.reason, v
    v = verify_code("I think the answer is add(a, b) = a + b.", CALL_GT, {})
    assert v.status == Status.NO_ANSWER
    v = verify_code(fenced("x = 1"), {"weird": 1}, {})
    assert v.status == Status.ERROR
    v = verify_code(fenced("x = 1"), "not json", {})
    assert v.status == Status.ERROR


@needs_bwrap
@pytest.mark.parametrize("gt", [STDIO_GT, CALL_GT, HE_GT, MBPP_GT],
                         ids=["stdio", "call", "humaneval", "mbpp"])
def test_timeout_scores_zero_with_status_timeout(gt):
    if "inputs" in gt and "fn_name" not in gt:
        code = "a, b = map(int, input().split())\nif a == 3:\n    while True: pass\nprint(a + b)"
    else:
        code = "def add(a, b):\n    while a == 3:\n        pass\n    return a + b"
    v = verify_code(fenced(code), gt, {"timeout_s": 0.5})
    assert v.status == Status.TIMEOUT and v.score == 0.0, v
    v = verify_code(fenced("import time\ntime.sleep(30)"), gt, {"timeout_s": 0.5})
    assert v.status == Status.TIMEOUT and v.score == 0.0, v


@needs_bwrap
def test_call_based_variants():
    leet = "class Solution:\n    def add(self, a: int, b: int) -> int:\n        return a + b"
    assert verify_code(fenced(leet), CALL_GT, {}).score == 1.0
    lcb = {"fn_name": "add", "inputs": ["1\n2", "3\n4"], "outputs": [3, 7]}  # JSON per line
    assert verify_code(fenced("def add(a, b):\n    return a + b"), lcb, {}).score == 1.0
    wrapped = {"input_output": json.dumps({"fn_name": "pair", "inputs": [[1], [2]],
                                           "outputs": [[[1, 1]], [[2, 2]]]})}
    assert verify_code(fenced("def pair(x):\n    return (x, x)"), wrapped, {}).score == 1.0


@needs_bwrap
def test_dispatch_through_the_registry():
    v = verify_one("humaneval", "code", "<think>hmm</think>" + fenced(
        "def add(a, b):\n    return a + b"), json.dumps(HE_GT), {})
    assert v.status == Status.CORRECT
    v = verify_one("codecontests", None, fenced("print(input())"),
                   {"inputs": ["x\n"], "outputs": ["x\n"]}, {})
    assert v.status == Status.CORRECT
