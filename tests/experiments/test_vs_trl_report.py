"""``experiments/vs_trl_report.py``: the prorl - TRL differences per mark come from the stored rows (mean over
the scored levels, then over seeds), and the section is written between its markers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import vs_trl_report as vr  # noqa: E402


def _res(prorl: float, trl: float) -> dict:
    row = lambda arm, v, m: {"arm": arm, "minutes": m, "steps": 10, "samples": 80, "at_s": 60.0 * m,  # noqa: E731
                             "chain9 pass@1": v, "chain9 pass@64": min(1.0, v + 0.1)}
    return {"marks": [5.0], "rows": [row("warm start", 0.0, 0.0), row("trl", trl, 5.0), row("prorl", prorl, 5.0)]}


def test_differences_and_section(tmp_path):
    d = tmp_path / "vs_trl_results"
    d.mkdir()
    (d / "boundary_seed0.json").write_text(json.dumps(_res(0.8, 0.5)))
    (d / "boundary_seed1.json").write_text(json.dumps(_res(0.4, 0.5)))
    assert vr.diffs(_res(0.8, 0.5)) == {5.0: {"pass@1": 0.8 - 0.5, "pass@64": (0.9 - 0.6)}}
    md = tmp_path / "RESULTS.md"
    new = vr.write(d, md)
    assert "| 5 | +0.100 [-0.100, +0.300] | +0.100 [-0.100, +0.300] | 1 of 2 |" in new, new
    assert (d / "vs_trl_boundary.png").stat().st_size > 0 and vr.BEGIN in md.read_text()
