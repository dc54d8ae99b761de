"""``experiments/breadth.py`` (issue 21 section 2): the continuations are the plateaued run's config with only
``rollout.n`` and the run plumbing changed; ``--quick`` trains two breadths through the real controller, saves
a policy at every generated-token mark and at the CPU-time mark, scores them and writes the table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import breadth  # noqa: E402


def test_a_continuation_changes_only_n_seed_and_the_run_plumbing(tmp_path):
    from prorl.config import load_config

    recipe = EXPERIMENTS / "boundary" / "recipe.yaml"
    base = load_config(str(recipe), [])
    cfg = load_config(str(recipe), breadth.overrides(tmp_path / "start", 256, 2, tmp_path / "run"))
    assert cfg.rollout.n == 256 and cfg.trainer.seed == 2 and cfg.model.path == str(tmp_path / "start")
    assert cfg.stages == [] and cfg.validation.every == 0 and not cfg.reset.auto and cfg.trainer.max_minutes == 0
    # what the comparison holds fixed: prompts a step, updates a step, the objective, sampling, the response limit
    for section, key in [("actor", "train_batch_size"), ("actor", "ppo_mini_batch_size"), ("actor", "lr"),
                         ("algo", "kl_coef"), ("algo", "dynamic_sampling"), ("algo", "max_gen_rounds"),
                         ("rollout", "temperature"), ("rollout", "max_response_length")]:
        assert getattr(getattr(cfg, section), key) == getattr(getattr(base, section), key), key


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_run_saves_every_mark_and_scores_it(tmp_path):
    out = tmp_path / "out"
    res = breadth.main(["--quick", "--out", str(out), "--jobs", "2"])
    assert res["ns"] == [4, 16]
    for n in (4, 16):
        marks = json.loads((out / f"n{n}" / "seed0" / "done.json").read_text())["marks"]
        kinds = sorted((m["kind"], m["mark"]) for m in marks)
        assert kinds == [("cpu_s", 3.0), ("tokens", 2000), ("tokens", 4000)], kinds
        for m in marks:
            assert (Path(m["path"]) / "model.safetensors").exists()
            if m["kind"] == "tokens":
                assert m["tokens"] >= m["mark"]
            assert m["samples"] % n == 0 and m["step"] >= 1
    rows = res["rows"]
    assert rows[0]["kind"] == "start" and len(rows) == 1 + 2 * 3
    assert all(0.0 <= r["chain9 pass@4"] <= 1.0 and r["chain9 pass@1"] <= r["chain9 pass@4"] for r in rows)
    assert (out / "table.md").read_text().startswith("| compared at | n |")
    assert (out / "breadth.png").stat().st_size > 0
