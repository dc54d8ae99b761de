"""The replay of the plan's stored runs through the old and new reset triggers runs and shows the
new validation test firing less often than the margin rules it replaces."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))

import trigger_false_alarms  # noqa: E402


def test_replay_of_the_stored_runs(capsys):
    trigger_false_alarms.main([])
    out = capsys.readouterr().out
    assert out.startswith("57 runs") and "samples per level-validation: [64]" in out
    resets = {name: float(per_run) for name, per_run in
              re.findall(r"^  ((?:margin|significance)[^\n]*?)\s+\d+\s+\d+\s+[\d.]+\s+\d+\s+([\d.]+)$", out, re.M)}
    assert len(resets) == 3, out
    new = next(v for k, v in resets.items() if k.startswith("significance"))
    assert all(new < v / 2 for k, v in resets.items() if k.startswith("margin")), resets
    assert "kl_spike robust z" in out and "entropy_collapse" in out
