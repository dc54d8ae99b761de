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
    runs = re.match(r"(\d+) runs", out)
    assert runs and int(runs.group(1)) >= 57 and "samples per level-validation: [64]" in out, out[:200]
    resets = {name: float(per_run) for name, per_run in
              re.findall(r"^  ((?:margin|significance)[^\n]*?)\s+\d+\s+\d+\s+[\d.]+\s+\d+\s+([\d.]+)$", out, re.M)}
    assert len(resets) == 4, out  # two margin rules, the significance test against sampling and measured noise
    sampling = next(v for k, v in resets.items() if k.startswith("significance") and "sampling" in k)
    measured = next(v for k, v in resets.items() if k.startswith("significance") and "measured" in k)
    assert all(sampling < v / 2 for k, v in resets.items() if k.startswith("margin")), resets
    # the default judges a drop against each level's own look-to-look noise: it fires on none of these
    # healthy-or-plateaued runs (57 when written, 60 with the statistical-triggers arm), fewer than the sampling-noise test
    assert measured == 0.0 < sampling, resets
    assert "kl_spike robust z" in out and "entropy_collapse" in out
