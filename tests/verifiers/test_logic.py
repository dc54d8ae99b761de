"""Logic verifier on real Reasoning Gym rows (scored by the tasks' own score_answer) and hitori."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from prorl.data import reasoning_gym_tasks as rg
from prorl.data.dataset import read_rows
from prorl.data.io import write_rows
from prorl.verifiers.base import Status, verify_one
from prorl.verifiers import reasoning_gym_entry as rge
from prorl.verifiers.answer_tags import extract_answer
from prorl.verifiers.logic import verify_logic

REPO = Path(__file__).resolve().parents[2]


def _score(row: dict, response: str):
    return verify_one(row["data_source"], row["ability"], response,
                      row["reward_model"]["ground_truth"], row["extra_info"])


def _json(row: dict) -> dict:
    return json.loads(json.dumps(row))


def _graph_coloring(entry_meta: dict) -> str:
    """An independent valid colouring of graph_color's puzzle (backtracking), as the JSON the task wants."""
    puzzle = entry_meta["puzzle"]
    verts, edges, colors = puzzle["vertices"], [tuple(e) for e in puzzle["edges"]], puzzle["color_options"]
    adj = {v: set() for v in verts}
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    assign: dict = {}

    def rec(i: int) -> bool:
        if i == len(verts):
            return True
        v = verts[i]
        for c in colors:
            if all(assign.get(u) != c for u in adj[v]):
                assign[v] = c
                if rec(i + 1):
                    return True
                del assign[v]
        return False

    assert rec(0)
    return json.dumps({str(v): c for v, c in assign.items()})


def test_extract_answer():
    assert extract_answer("x <answer> 1 </answer> y <answer>2</answer>") == "2"
    assert extract_answer("<answer>unclosed") is None
    assert extract_answer("no tags") is None


@pytest.fixture(scope="module")
def rows() -> dict[str, dict]:
    tasks = ["graph_color", "sudoku", "countdown", "arc_1d", "knights_knaves", "word_sorting", "rearc"]
    got = rg.generate_rows(tasks, len(tasks), seed=3, split="train")
    return {r["extra_info"]["task"]: _json(r) for r in got}


@pytest.mark.parametrize("task", ["sudoku", "countdown", "arc_1d", "knights_knaves", "word_sorting", "rearc"])
def test_oracle_answer_scores_one_after_json_round_trip(rows, task):
    row = rows[task]
    gt = row["reward_model"]["ground_truth"]
    assert isinstance(gt, str) and gt
    v = _score(row, f"<think>working</think>Done.\n<answer>\n{gt}\n</answer>")
    assert (v.score, v.status) == (1.0, Status.CORRECT), v


def test_wrong_and_missing_answers(rows):
    row = rows["sudoku"]
    gt = row["reward_model"]["ground_truth"]
    flipped = gt.replace("1", "#").replace("2", "1").replace("#", "2")
    v = _score(row, f"<answer>{flipped}</answer>")
    assert v.status == Status.WRONG and v.score < 1.0
    assert _score(row, gt).status == Status.NO_ANSWER  # the right grid without tags
    assert _score(row, "<answer>  </answer>").status == Status.NO_ANSWER
    assert _score(row, "<answer>not a sudoku</answer>").status == Status.WRONG


def test_countdown_checks_the_expression_not_the_string(rows):
    row = rows["countdown"]
    entry = rge.loads_entry(row["extra_info"]["entry"])
    target, numbers = entry["metadata"]["target"], entry["metadata"]["numbers"]
    assert _score(row, f"<answer>{' + '.join(map(str, numbers))}</answer>").status == (
        Status.CORRECT if sum(numbers) == target else Status.WRONG)
    # any other expression reaching the target with the same numbers is accepted by the task
    gt = row["reward_model"]["ground_truth"]
    assert _score(row, f"<answer>({gt})</answer>").status == Status.CORRECT


def test_graph_color_has_no_single_answer_and_any_valid_colouring_scores(rows):
    row = rows["graph_color"]
    assert row["reward_model"]["ground_truth"] is None
    meta = rge.loads_entry(row["extra_info"]["entry"])["metadata"]
    mine = _graph_coloring(meta)
    assert _score(row, f"<answer>{mine}</answer>").status == Status.CORRECT
    # an invalid colouring: both ends of the first edge the same colour
    bad = json.loads(mine)
    a, b = meta["puzzle"]["edges"][0]
    bad[str(b)] = bad[str(a)]
    v = _score(row, f"<answer>{json.dumps(bad)}</answer>")
    assert v.status == Status.WRONG and 0 < v.score < 1  # the task's own partial credit (0.01)


def test_partial_credit_is_passed_through(rows):
    row = rows["arc_1d"]
    gt = row["reward_model"]["ground_truth"]
    v = _score(row, f"<answer>{gt} 0</answer>")  # the default scorer gives len(gold)/len(answer)
    assert v.status == Status.WRONG and 0.5 < v.score < 1.0


def test_plain_json_metadata_loses_types_but_our_entry_does_not(rows):
    row = rows["rearc"]
    gt = row["reward_model"]["ground_truth"]
    entry = rge.loads_entry(row["extra_info"]["entry"])
    lossy = {"task": "rearc", "metadata": json.loads(json.dumps(entry["metadata"]))}
    assert verify_logic(f"<answer>{gt}</answer>", gt, lossy).score < 1.0  # why the tagged codec exists
    assert verify_logic(f"<answer>{gt}</answer>", gt, row["extra_info"]).score == 1.0


def test_rebuild_from_seed_and_index_and_data_source(rows):
    row = rows["word_sorting"]
    info = {k: v for k, v in row["extra_info"].items() if k not in ("entry", "task")}
    gt = row["reward_model"]["ground_truth"]
    v = verify_one(row["data_source"], "logic", f"<answer>{gt}</answer>", gt, info)
    assert v.status == Status.CORRECT, v
    v = verify_one("reasoning_gym/nonexistent_task", "logic", "<answer>x</answer>", "x", {})
    assert v.status == Status.ERROR


def test_parquet_round_trip_and_fresh_worker_process(rows, tmp_path):
    """Rows written to parquet and scored by a new interpreter that only sees the file."""
    from prorl.data import hitori

    table = list(rows.values()) + hitori.generate_rows(2, seed=5, split="train")
    path = tmp_path / "rows.parquet"
    write_rows(table, path)
    responses = []
    for r in read_rows(path):
        gt = r["reward_model"]["ground_truth"]
        if r["extra_info"]["task"] == "graph_color":
            gt = _graph_coloring(rge.loads_entry(r["extra_info"]["entry"])["metadata"])
        responses.append(f"<answer>{gt}</answer>")
    (tmp_path / "responses.json").write_text(json.dumps(responses))
    script = (
        "import json, sys\n"
        "from prorl.data.dataset import read_rows\n"
        "from prorl.verifiers.base import verify_one\n"
        "rows = read_rows(sys.argv[1]); resp = json.load(open(sys.argv[2]))\n"
        "print(json.dumps([verify_one(r['data_source'], r['ability'], x, r['reward_model']['ground_truth'],"
        " r['extra_info']).to_dict() for r, x in zip(rows, resp)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "responses.json")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    verdicts = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(verdicts) == len(table)
    assert all(v["status"] == "correct" and v["score"] == 1.0 for v in verdicts), verdicts


def test_hitori_through_the_registry():
    from prorl.data import hitori

    for source in ("hitori", "reasoning_gym/hitori"):
        row = _json(hitori.generate_rows(1, seed=11, split="train", data_source=source)[0])
        gt = row["reward_model"]["ground_truth"]
        info = {k: v for k, v in row["extra_info"].items() if k != "task"}  # data_source alone suffices
        assert verify_one(source, "logic", f"<answer>\n{gt}\n</answer>", gt, info).status == Status.CORRECT
        unshaded = hitori.render_grid(row["extra_info"]["puzzle"])
        assert verify_one(source, "logic", f"<answer>\n{unshaded}\n</answer>", gt, info).status == Status.WRONG
        assert verify_one(source, "logic", gt, gt, info).status == Status.NO_ANSWER


@pytest.mark.slow
def test_every_task_round_trips_its_oracle_answer():
    """Every reasoning-gym task: generate, JSON round trip, score the oracle answer (about 15 s)."""
    failures = []
    for task in rg.available_tasks():
        row = _json(rg.generate_rows([task], 1, seed=7, split="train")[0])
        gt = row["reward_model"]["ground_truth"]
        if gt is None:
            continue
        v = _score(row, f"<answer>{gt}</answer>")
        if v.score != 1.0:
            failures.append((task, v))
    assert not failures
