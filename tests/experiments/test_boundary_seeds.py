"""``experiments/boundary_seeds.py``: the boundary arms over seeds, from the stored JSON; the target count is
computed from the per-seed numbers (> 0.9 strictly: 0.875, 28 of 32 problems, misses it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import boundary_seeds as bs  # noqa: E402


def _store(d: Path, arm: str, seed: int, rows: list[tuple[int, float, float]], selected: int | None = None) -> None:
    d.mkdir(exist_ok=True)
    rows_json = [{"seed": seed, "step": s, "hard_pass@1": a, "hard_pass@64": b} for s, a, b in rows]
    if selected is not None:  # as boundary_expansion --select-best appends it: the chosen checkpoint's row again
        rows_json.append(dict(next(r for r in rows_json if r["step"] == selected), selected="best"))
    (d / f"{arm}_seed{seed}.json").write_text(json.dumps({"warmstart": {}, "hard": "chain9", "checkpoints": rows_json}))


def test_table_counts_the_seeds_over_the_target_at_the_last_step(tmp_path, monkeypatch):
    d = tmp_path / "boundary_results"
    _store(d, "no_curriculum", 0, [(100, 0.5, 0.95), (300, 0.8, 0.875)])  # over the target early, not at the end
    _store(d, "no_curriculum", 1, [(100, 0.5, 0.65), (300, 0.9, 0.906)])
    monkeypatch.setattr(bs, "RESULTS_DIR", d)
    monkeypatch.setattr(bs, "WIDEN", tmp_path / "missing.json")
    data = bs.load()
    assert data == {"no_curriculum": {0: {"curve": {100: (0.5, 0.95), 300: (0.8, 0.875)}, "result": 300},
                                      1: {"curve": {100: (0.5, 0.65), 300: (0.9, 0.906)}, "result": 300}}}
    row = bs.table(data).splitlines()[2]
    assert "| 2 | 300 | 0.80, 0.90 | 0.88, 0.91 |" in row and "| 1 of 2 |" in row and "0.80 (2 seeds)" in row


def test_a_selected_checkpoint_is_the_result_not_the_last_one(tmp_path, monkeypatch):
    d = tmp_path / "boundary_results"
    _store(d, "no_curriculum_passk4_best", 0, [(100, 0.5, 0.8), (230, 0.85, 0.94), (300, 0.5, 0.66)], selected=230)
    _store(d, "no_curriculum_passk4_best", 1, [(100, 0.5, 0.8), (300, 0.9, 0.97)], selected=300)
    monkeypatch.setattr(bs, "RESULTS_DIR", d)
    monkeypatch.setattr(bs, "WIDEN", tmp_path / "missing.json")
    data = bs.load()
    assert [data["no_curriculum_passk4_best"][s]["result"] for s in (0, 1)] == [230, 300]
    row = bs.table(data).splitlines()[2]
    assert "| selected: 230, 300 | 0.85, 0.90 | 0.94, 0.97 |" in row and "| 2 of 2 |" in row, row
    last = bs.table(data).splitlines()[3]  # the same runs at their last checkpoint
    assert last.startswith(f"| {bs.ARMS['no_curriculum_passk4_best_last']} |")
    assert "| 300 | 0.50, 0.90 | 0.66, 0.97 |" in last and "| 1 of 2 |" in last, last


def test_the_stored_section_has_every_arm_and_its_seeds(tmp_path):
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n")
    new = bs.write(md, figdir=tmp_path)
    for arm, seeds in [("recipe_passk4", 5), ("recipe_grpo", 5), ("no_resets", 3), ("no_curriculum", 3)]:
        line = next(ln for ln in new.splitlines() if ln.startswith(f"| {bs.ARMS[arm]} |"))
        assert line.split(" | ")[1] == str(seeds), line
    assert md.read_text().startswith("# Results") and bs.BEGIN in md.read_text()
    assert (tmp_path / "boundary_seeds.png").stat().st_size > 0
