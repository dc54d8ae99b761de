"""The math verifier on the real benchmark answers (AIME 24/25, AMC 23, all of MATH-500, the
SimpleRL training parquet), wrong answers, and expression bombs through the hard-limited pool."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

from prorl.verifiers.base import Status, verify_one
from prorl.verifiers.math import answers_match, canonical, gold_to_text, last_boxed, sympy_equal, verify_math

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _rows(name: str) -> list[dict]:
    path = DATA / "math" / f"{name}.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not available")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------ extraction


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{5}.", "5"),
        ("first \\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}"),
        ("set \\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\boxed 7 is it", "7"),
        ("\\fbox{12}", "12"),
        ("\\boxed{3} and finally \\fbox{4}", "4"),
        ("\\boxed{\\text{(C)}}", "\\text{(C)}"),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text)[0] == expected


def test_no_box_unclosed_box_and_empty_box():
    assert verify_math("The answer is 5.", "5", {}).status is Status.NO_ANSWER
    v = verify_math("\\boxed{4} hmm, actually \\boxed{5", "5", {})
    assert v.status is Status.NO_ANSWER and "not closed" in v.reason
    assert verify_math("\\boxed{}", "5", {}).status is Status.NO_ANSWER
    assert verify_math("\\boxed{5}", "", {}).status is Status.ERROR
    assert verify_math("\\boxed{5}", None, {}).status is Status.ERROR


def test_gold_types():
    assert gold_to_text(25) == ["25"]
    assert gold_to_text(27.0) == ["27"]
    assert gold_to_text(2.5) == ["2.5"]
    assert gold_to_text("025") == ["025"] and canonical("025") == "25"
    assert gold_to_text("$\\frac{1}{2}$") == ["\\frac{1}{2}"]
    assert gold_to_text("The answer is \\boxed{7}") == ["7"]
    assert gold_to_text(["3", 4]) == ["3", "4"]
    assert gold_to_text("\\boxed{\\boxed{5}}") == ["5"]
    assert canonical("\\boxed{1} + \\boxed{2}") == "\\boxed{1}+\\boxed{2}"  # not one box: kept whole
    for gold in (25, 25.0, "25", "025", "25.0", ["24", "25"]):
        assert verify_math("The answer is \\boxed{25}.", gold, {}).score == 1.0, gold
        assert verify_math("The answer is \\boxed{26}.", gold, {}).score == 0.0, gold


def test_last_box_counts_and_think_is_stripped():
    assert verify_math("\\boxed{25} no wait, \\boxed{24}", "25", {}).status is Status.WRONG
    v = verify_one("aime24", "math", "<think>maybe \\boxed{25}</think> Final: \\boxed{24}", "024", {})
    assert v.status is Status.CORRECT
    v = verify_one("aime24", "math", "<think>maybe \\boxed{25}</think> no box here", "025", {})
    assert v.status is Status.NO_ANSWER


def test_equivalent_forms():
    assert answers_match("\\frac{14}{3}", "\\dfrac{14}{3}")
    assert answers_match("\\frac{1}{2}", "0.5")
    assert answers_match("\\sqrt{51}", "51^{1/2}")
    assert answers_match("[2, 5)", "[2,5)")
    assert answers_match("\\text{(C)}", "C")
    assert answers_match("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)")
    assert answers_match("11,\\! 111,\\! 111,\\! 100", "11111111100")
    assert not answers_match("\\frac{14}{3}", "\\frac{14}{5}")
    assert not answers_match("[2, 5)", "(2, 5)")
    assert not answers_match("\\text{(C)}", "D")
    assert not answers_match("\\sqrt{51}", "\\sqrt{52}")


# ------------------------------------------------------------------ real answer sets


def test_aime24_zero_padded_golds():
    for r in _rows("aime24"):
        gold = r["answer"]
        n = int(gold)
        for resp in (f"The answer is \\boxed{{{n}}}.", f"$\\boxed{{{gold}}}$", f"**Final Answer** \\boxed{{ {n} }}"):
            v = verify_math(resp, gold, {})
            assert v.status is Status.CORRECT, (gold, resp, v)
        assert verify_math(f"The answer is \\boxed{{{n + 1}}}.", gold, {}).status is Status.WRONG


def test_aime25_int_golds():
    for r in _rows("aime25"):
        gold = r["answer"]
        assert isinstance(gold, int)
        assert verify_math(f"Thus the answer is $\\boxed{{{gold}}}$.", gold, {}).score == 1.0
        assert verify_math(f"\\boxed{{{gold:03d}}}", gold, {}).score == 1.0
        assert verify_math(f"\\boxed{{{gold - 1}}}", gold, {}).score == 0.0


def test_amc23_float_golds():
    for r in _rows("amc23"):
        gold = r["answer"]
        assert isinstance(gold, float)
        n = int(gold)
        assert verify_math(f"The answer is \\boxed{{{n}}}.", gold, {}).score == 1.0, gold
        assert verify_math(f"\\boxed{{{gold}}}", gold, {}).score == 1.0, gold
        assert verify_math(f"\\boxed{{{n + 2}}}", gold, {}).score == 0.0, gold


def _variants(ans: str) -> set[str]:
    """Usual ways of writing the same MATH answer."""
    out = {ans, ans.replace("\\dfrac", "\\frac"), ans.replace("\\frac", "\\dfrac"),
           ans.replace("\\left", "").replace("\\right", ""), re.sub(r",\\!\s*", "", ans),
           ans.replace(" ", ""), ans.replace("^\\circ", "")}
    m = re.fullmatch(r"\\text\{\(([A-Z])\)\}", ans)
    if m:
        out |= {m.group(1), f"({m.group(1)})"}
    m = re.fullmatch(r"(.+?)\s*\\text\{\s*[a-z ]+\}", ans)  # "5.4 \text{ cents}" -> "5.4"
    if m:
        out.add(m.group(1))
    return {v for v in out if v.strip()}


def test_all_math500_answers_verify_against_themselves():
    rows = _rows("math500")
    assert len(rows) == 500
    failures = []
    for r in rows:
        gold = r["answer"]
        # the full path (fast exact match) and, separately, math-verify's sympy path on every answer
        if verify_math(f"The final answer is $\\boxed{{{gold}}}$.", gold, {}).status is not Status.CORRECT:
            failures.append(("verify_math", gold))
        g = gold_to_text(gold)[0]
        if not sympy_equal(g, g):
            failures.append(("sympy", gold))
        for v in _variants(gold):
            if verify_math(f"So the answer is \\boxed{{{v}}}", gold, {}).status is not Status.CORRECT:
                failures.append(("variant", gold, v))
    assert not failures, failures[:20]


def test_math500_wrong_answers_fail():
    rows = _rows("math500")
    checked = 0
    for i, r in enumerate(rows):
        gold = r["answer"]
        other = rows[(i + 1) % len(rows)]["answer"]
        # skip identical answers, and "x = 5" vs "5" (math-verify treats assignments as their value)
        if canonical(other) == canonical(gold) or "=" in other or "=" in gold:
            continue
        v = verify_math(f"\\boxed{{{other}}}", gold, {})
        assert v.status is Status.WRONG and v.score == 0.0, (gold, other)
        checked += 1
    assert checked > 400


def test_math_train_parquet_ground_truths():
    path = DATA / "math_train" / "simplelr_math_level3to5_train.parquet"
    if not path.exists():
        pytest.skip(f"{path} not available")
    import pyarrow.parquet as pq

    rows = pq.read_table(path, columns=["data_source", "ability", "reward_model"]).to_pylist()
    assert len(rows) == 8523
    empty = 0
    for k, r in enumerate(rows):
        gt = r["reward_model"]["ground_truth"]
        v = verify_one(r["data_source"], r["ability"], f"... \\boxed{{{gt}}}", gt, {})
        if not gt:  # two rows of the parquet have an empty ground truth
            empty += 1
            assert v.status is Status.ERROR
            continue
        assert v.status is Status.CORRECT, (k, gt, v)
        if k % 40 == 0:  # the sympy path on a spread sample
            assert sympy_equal(gt, gt), gt
    assert empty == 2


def test_works_off_the_main_thread():
    out = []
    t = threading.Thread(target=lambda: out.append(verify_math("\\boxed{\\dfrac{2}{4}}", "\\frac{1}{2}", {})))
    t.start()
    t.join(30)
    assert out and out[0].status is Status.CORRECT


# ------------------------------------------------------------------ bombs, through the pool


def test_expression_bombs_time_out_in_the_pool():
    from prorl.rewards.pool import VerifierPool

    bombs = ["9^{9^{9^{9}}}", "1000000!", "10^{10^{10^{10}}}"]
    items = [{"data_source": "aime24", "ability": "math", "response": f"\\boxed{{{b}}}", "ground_truth": "025",
              "extra_info": {}} for b in bombs]
    items.insert(1, {"data_source": "math500", "ability": "math", "response": "\\boxed{\\dfrac{14}{3}}",
                     "ground_truth": "\\frac{14}{3}", "extra_info": {}})
    with VerifierPool(2, timeout_s=2.0) as pool:
        assert pool.wait_ready(60)
        t0 = time.monotonic()
        out = pool.map(items, timeout=60)
        took = time.monotonic() - t0
    assert out[1].status is Status.CORRECT
    for v in (out[0], out[2], out[3]):
        assert v.status is Status.TIMEOUT and v.score == 0.0, v
    # three bombs on two workers: two limits back to back, plus restart slack
    assert took < 2 * 2.0 + 6, took
