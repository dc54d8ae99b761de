"""``experiments/trigger_runs.py``: the quick mode trains a healthy and a forced run end to end (the
forced one branched from the healthy run's checkpoint, with the raised-lr stage), the JSON has the
fields the report reads, and the report renders; the replay reproduces the stored live resets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))

import trigger_runs  # noqa: E402


def test_the_replay_fires_where_the_stored_live_runs_reset():
    check = trigger_runs.replay_check()
    assert check["runs"] == 3 and check["matches"] == 3


@pytest.mark.slow
def test_quick_mode_runs_and_reports(tmp_path):
    out = tmp_path / "runs"
    assert trigger_runs.main(["--quick", "--out", str(out), "--jobs", "1"]) == 0
    res = json.loads((out / "results.json").read_text())
    healthy, forced, off = res["runs"]["healthy"], res["runs"]["forced"], res["runs"]["forced_off"]
    assert len(healthy) == len(forced) == len(off) == 1
    for run in healthy + forced + off:
        a = run["analysis"]
        assert {"live_new", "replay_old", "replay_new_steps", "replay_matches_live"} <= set(a)
        assert run["val_counts"] and all(c == 8 for lv in run["val_counts"].values() for c in lv.values())
    for f in forced + off:
        assert f["branched_at"] == trigger_runs.QUICK_BRANCH
        assert {"delay_live_new", "delay_replay_new", "delay_replay_old", "delay_replay_old_free",
                "first_replay_old", "false_before_replay_old"} <= set(f["analysis"])
    assert not off[0]["reset_events"]  # no automatic resets in the untriggered run
    events = [json.loads(ln) for ln in (out / "forced" / "seed0" / "run" / "events.jsonl").read_text().splitlines()]
    assert [e["cause"] for e in events if e["type"] == "stage"][0] == "enter stage degrade"
    md = tmp_path / "RESULTS.md"
    md.write_text("# x\n\n<!-- END experiment plan -->\n\n# after\n")
    section = trigger_runs.write_report(res, md, tmp_path / "store")
    text = md.read_text()
    assert section in text and text.index("END experiment plan") < text.index(trigger_runs.BEGIN) < text.index("# after")
    assert "QUICK MODE" in section and "### Healthy runs" in section and "### Forced degradation" in section
    trigger_runs.write_report(res, md, tmp_path / "store")  # replaced, not appended
    assert md.read_text().count(trigger_runs.BEGIN) == 1
