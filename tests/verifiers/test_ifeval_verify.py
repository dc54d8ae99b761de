"""verify_ifeval (the reward), its input formats, the row converter and the metric arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prorl.verifiers.base import Status, verify_one
from prorl.verifiers.ifeval import evaluate_responses, follow_strict, ifeval_to_rows, parse_spec, verify_ifeval

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ifeval"

GT = {
    "instruction_id_list": ["punctuation:no_comma", "keywords:existence", "startend:quotation"],
    "kwargs": [{}, {"keywords": ["moon"]}, {}],
}


def test_score_is_fraction_followed_and_reason_lists_failures():
    v = verify_ifeval('"The moon, tonight"', GT, {})
    assert v.status is Status.WRONG
    assert v.score == pytest.approx(2 / 3)
    assert "punctuation:no_comma" in v.reason and "keywords:existence" not in v.reason
    v = verify_ifeval('"The moon tonight"', GT, {})
    assert (v.score, v.status) == (1.0, Status.CORRECT)
    v = verify_ifeval("sun, sun", GT, {})
    assert (v.score, v.status) == (0.0, Status.WRONG)
    assert verify_ifeval("   ", GT, {}).status is Status.NO_ANSWER


def test_ground_truth_formats_are_equivalent():
    hf_style = {  # Hugging Face exports carry every kwarg key, mostly null
        "instruction_id_list": GT["instruction_id_list"],
        "kwargs": [{"keywords": None, "num_words": None}, {"keywords": ["moon"], "relation": None}, {}],
    }
    forms = [
        (GT, {}),
        (json.dumps(GT), {}),
        (hf_style, {}),
        (None, dict(GT)),
        ("", {"ground_truth": json.dumps(GT)}),
        (GT["instruction_id_list"], {"kwargs": GT["kwargs"]}),
    ]
    for gt, extra in forms:
        assert verify_ifeval('"The moon, tonight"', gt, extra).score == pytest.approx(2 / 3), (gt, extra)


def test_loose_mode_from_extra_info():
    gt = {"instruction_id_list": ["startend:quotation"], "kwargs": [{}]}
    resp = 'Sure, here it is:\n"Quoted answer"'
    assert verify_ifeval(resp, gt, {}).score == 0.0
    assert verify_ifeval(resp, gt, {"ifeval_mode": "loose"}).score == 1.0
    with pytest.raises(ValueError):
        verify_ifeval(resp, gt, {"ifeval_mode": "lenient"})


def test_bad_specs_raise_and_verify_one_turns_them_into_errors():
    with pytest.raises(ValueError):
        parse_spec({"no": "ids"})
    with pytest.raises(ValueError):  # missing required kwarg
        verify_ifeval("x", {"instruction_id_list": ["keywords:existence"], "kwargs": [{}]}, {})
    with pytest.raises(ValueError):  # ids and kwargs of different lengths
        parse_spec({"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}, {}]})
    v = verify_one("ifeval", "ifeval", "hi", {"instruction_id_list": ["no:such"], "kwargs": [{}]}, {})
    assert v.status is Status.ERROR and "no:such" in v.reason


def test_registry_routes_ifeval_rows_and_strips_thinking():
    v = verify_one("google/IFEval", None, "<think>a, b, c</think>\nno commas here",
                   {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}, {})
    assert (v.score, v.status) == (1.0, Status.CORRECT)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_evaluate_responses_arithmetic(tmp_path):
    inputs = _write(tmp_path / "in.jsonl", [
        {"key": 1, "prompt": "p1", "instruction_id_list": ["punctuation:no_comma", "startend:quotation"],
         "kwargs": [{}, {}]},
        {"key": 2, "prompt": "p2", "instruction_id_list": ["keywords:existence"], "kwargs": [{"keywords": ["x"]}]},
    ])
    responses = _write(tmp_path / "out.jsonl", [
        {"prompt": "p1", "response": 'Intro, line\n"quoted"'},  # strict: F F; loose: T T
        {"prompt": "p2", "response": "has x"},                  # T
    ])
    r = evaluate_responses(inputs, responses)
    assert (r["strict"]["prompt_correct"], r["strict"]["instruction_correct"]) == (1, 1)
    assert r["strict"]["prompt_level"] == 0.5 and r["strict"]["instruction_level"] == pytest.approx(1 / 3)
    assert (r["loose"]["prompt_level"], r["loose"]["instruction_level"]) == (1.0, 1.0)
    assert r["strict"]["by_category"] == {"keywords": 1.0, "punctuation": 0.0, "startend": 0.0}
    assert r["per_prompt"][0]["strict"] == [False, False]
    _write(responses, [{"prompt": "p1", "response": "x"}])
    with pytest.raises(KeyError):
        evaluate_responses(inputs, responses)


def test_ifeval_to_rows_on_the_real_input_file():
    path = DATA / "input_data.jsonl"
    if not path.exists():
        pytest.skip("shared IFEval data not present")
    rows = ifeval_to_rows(path)
    assert len(rows) == 541
    r0 = rows[0]
    assert r0["data_source"] == "ifeval" and r0["ability"] == "ifeval"
    assert r0["prompt"][0]["role"] == "user" and "Raymond_III" in r0["prompt"][0]["content"]
    assert r0["reward_model"]["style"] == "rule"
    assert r0["extra_info"]["key"] == 1000
    gt = r0["reward_model"]["ground_truth"]
    assert gt["instruction_id_list"] == ["punctuation:no_comma", "detectable_format:number_highlighted_sections",
                                         "length_constraints:number_words"]
    assert gt["kwargs"][2] == {"relation": "at least", "num_words": 300}
    # Every row's spec is usable by the verifier; a 300+ word comma-free answer with highlights passes.
    good = "*One* and *Two* and *Three*\n" + " ".join(["word"] * 300)
    assert verify_ifeval(good, gt, r0["extra_info"]).score == 1.0
    for row in rows:
        ids, kws = parse_spec(row["reward_model"]["ground_truth"])
        assert len(follow_strict("a response.", ids, kws)) == len(ids)


def test_rows_survive_a_parquet_round_trip(tmp_path):
    """Parquet merges the kwargs structs (every key, mostly null); scores must not change."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = DATA / "input_data.jsonl"
    if not path.exists():
        pytest.skip("shared IFEval data not present")
    rows = ifeval_to_rows(path)[:60]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "ifeval.parquet")
    back = pq.read_table(tmp_path / "ifeval.parquet").to_pylist()
    assert None in back[0]["reward_model"]["ground_truth"]["kwargs"][0].values()
    response = "*A* *B* *C* [x] [y] <<T>>\n" + " ".join(["word"] * 40) + ". P.S. done"
    for a, b in zip(rows, back):
        va = verify_ifeval(response, a["reward_model"]["ground_truth"], a["extra_info"])
        vb = verify_ifeval(response, b["reward_model"]["ground_truth"], b["extra_info"])
        assert va == vb
