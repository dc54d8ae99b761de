"""Run dashboards and pass@k plots from synthetic run directories and eval JSONs."""

from __future__ import annotations

import argparse
import json
import math
import struct
from pathlib import Path

import pytest

from prorl import plotting
from prorl.cli import COMMANDS
from prorl.commands import plot as plot_cmd

PNG_SIG = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIG, "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _write_run(run: Path, steps: int = 120, partial_tail: bool = True, val: bool = True) -> None:
    run.mkdir(parents=True, exist_ok=True)
    with (run / "metrics.jsonl").open("w") as f:
        for s in range(1, steps + 1):
            rec = {
                "step": s,
                "critic/score/mean": 0.2 + 0.5 * s / steps + 0.05 * math.sin(s),
                "actor/entropy": 1.0 - 0.4 * s / steps,
                "actor/ppo_kl": 1e-3 * (1 + math.cos(s)),
                "actor/kl_loss": 0.02 * (s % 60) / 60,
                "actor/pg_clipfrac": 0.01,
                "actor/pg_clipfrac_lower": 0.0005,
                "actor/pg_clipfrac_below_low_bound": 0.002,
                "response_length/mean": 300 + s,
                "response_length/max": 1024,
                "response_length/clip_ratio": 0.05,
                "dynamic_sampling/kept_groups": 30 + s % 3,
            }
            if val and s % 20 == 0:
                rec["val-core/openai/gsm8k/acc/mean@4"] = 0.3 + s / (3 * steps)
                rec["val-core/math500/acc/mean@4"] = 0.2 + s / (4 * steps)
                rec["val-core/math500/pass@4"] = 0.5
            f.write(json.dumps(rec) + "\n")
        if partial_tail:
            f.write('{"step": 121, "critic/score/me')  # a run still being written
    with (run / "events.jsonl").open("w") as f:
        cause = "kl_spike: kl=0.4 > 5.0 x median 0.03"
        f.write(json.dumps({"step": 60, "type": "reset", "cause": cause}) + "\n")
        f.write(json.dumps({"step": 90, "type": "stage", "cause": "stage 2: context 16k"}) + "\n")
        f.write(json.dumps({"step": 100, "type": "reset", "cause": "scheduled"}) + "\n")


def test_read_jsonl_tolerates_partial_and_bad_lines(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"step": 1, "a": 1}\n\nnot json\n[1, 2]\n{"step": 2, "a": NaN}\n{"step": 3, "a"')
    recs = plotting.read_jsonl(p)
    assert [r["step"] for r in recs] == [1, 2]
    assert plotting.read_jsonl(tmp_path / "missing.jsonl") == []
    # NaN values and bools are dropped from series; repeated steps keep the last value
    recs.append({"step": 1, "a": 5})
    assert plotting.series(recs, "a") == ([1.0], [5.0])


def test_plot_run_writes_png_with_events_on_every_panel(tmp_path):
    run = tmp_path / "run"
    _write_run(run)
    out = plotting.plot_run(run)
    assert out == run / "dashboard.png"
    w, h = _png_size(out)
    assert w >= 1000 and h >= 1000
    assert out.stat().st_size > 50_000

    records = plotting.read_jsonl(run / "metrics.jsonl")
    events = plotting.read_jsonl(run / "events.jsonl")
    fig = plotting.build_run_figure(records, events)
    axes = [ax for ax in fig.axes if ax.get_title()]  # twin axes have no title
    titles = [ax.get_title() for ax in axes]
    assert titles == ["Reward", "Entropy", "KL", "Response length", "Clip fractions",
                      "Dynamic sampling", "Validation accuracy"]
    for ax in axes:
        ev_lines = [ln for ln in ax.get_lines() if (ln.get_gid() or "").startswith("event:")]
        assert sorted((ln.get_gid(), ln.get_xdata()[0]) for ln in ev_lines) == [
            ("event:reset", 60), ("event:reset", 100), ("event:stage", 90)]
        styles = {ln.get_gid(): ln.get_linestyle() for ln in ev_lines}
        assert styles["event:reset"] != styles["event:stage"]
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend.count("reference reset") == 1 and legend.count("stage change") == 1
    # validation series: one line per data_source (slashes inside the name are kept)
    val_ax = axes[-1]
    labels = [t.get_text() for t in val_ax.get_legend().get_texts()]
    assert "openai/gsm8k" in labels and "math500" in labels
    gsm = next(ln for ln in val_ax.get_lines() if ln.get_label() == "openai/gsm8k")
    assert list(gsm.get_xdata()) == [20, 40, 60, 80, 100, 120]
    # the truncation ratio is on the response-length panel's twin axis, in the legend
    rl = axes[3]
    assert any(t.get_text().startswith("truncation ratio") for t in rl.get_legend().get_texts())
    # both lower-side clip fractions, each under its own meaning
    clip = [t.get_text() for t in axes[4].get_legend().get_texts()]
    assert any(t.startswith("pg_clipfrac_below_low_bound (r < 1-eps_low, A < 0)") for t in clip)
    assert any(t.startswith("pg_clipfrac_lower (dual clip: r > clip_ratio_c, A < 0)") for t in clip)


def test_resets_are_labelled_with_their_trigger():
    """Every panel labels each reset line with its trigger (and statistic vs threshold when logged);
    events written before ``trigger`` was logged take it from the cause."""
    events = [
        {"step": 10, "type": "reset", "cause": "kl_spike: kl=0.4 > 5.0 x median 0.03"},  # an old event
        {"step": 20, "type": "stage", "cause": "stage 2"},
        {"step": 30, "type": "reset", "cause": "val_degradation[math]: last eval ...", "trigger": "val_degradation",
         "statistic": 4.123, "threshold": 3.21, "p_value": 0.001},
        {"step": 40, "type": "reset", "cause": "scheduled: step 40 is in reset_steps", "trigger": "scheduled",
         "statistic": None, "threshold": None, "p_value": None},
        {"step": 50, "type": "reset", "cause": "reset requested by file", "trigger": "manual"},
    ]
    records = [{"step": s, "actor/entropy": 1.0 / s, "actor/kl_loss": 0.01} for s in range(1, 60)]
    fig = plotting.build_run_figure(records, events)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert len(axes) == 2
    for ax in axes:
        labels = sorted((t.get_position()[0], t.get_text().strip()) for t in ax.texts
                        if t.get_gid() == "event-label:reset")
        assert labels == [(10, "kl_spike"), (30, "val_degradation[math] 4.12>3.21"), (40, "scheduled"),
                          (50, "manual")], labels
    assert plotting.reset_label({"cause": "scheduled"}) == "scheduled"
    assert plotting.reset_label({"cause": ""}) == "reset"


def test_runs_logged_before_the_rename_keep_the_old_meaning_of_clipfrac_lower():
    # before pg_clipfrac_below_low_bound existed, pg_clipfrac_lower held r < 1-eps_low (not the dual clip)
    old = [{"step": s, "actor/pg_clipfrac": 0.01, "actor/pg_clipfrac_lower": 0.004} for s in range(1, 4)]
    ax = next(a for a in plotting.build_run_figure(old, []).axes if a.get_title() == "Clip fractions")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(lab.startswith(plotting.LEGACY_CLIPFRAC_LOWER) for lab in labels)
    assert not any("dual clip" in lab for lab in labels)


def test_plot_run_skips_missing_metrics_and_handles_empty_run(tmp_path):
    run = tmp_path / "sparse"
    run.mkdir()
    lines = [json.dumps({"step": s, "actor/entropy": 1.0 / s}) + "\n" for s in range(1, 6)]
    (run / "metrics.jsonl").write_text("".join(lines))
    fig = plotting.build_run_figure(plotting.read_jsonl(run / "metrics.jsonl"), [])
    assert [ax.get_title() for ax in fig.axes] == ["Entropy"]
    out = plotting.plot_run(run, tmp_path / "sub" / "x.png")
    assert out.read_bytes()[:8] == PNG_SIG

    empty = tmp_path / "empty"
    empty.mkdir()
    out = plotting.plot_run(empty)  # no files at all yet: still a valid PNG
    assert out.read_bytes()[:8] == PNG_SIG
    with pytest.raises(FileNotFoundError):
        plotting.plot_run(tmp_path / "nope")


def _write_eval(path: Path, model: str, scale: float) -> Path:
    results = {}
    for ds, base in (("math500", 0.4), ("humaneval", 0.2)):
        r = {f"pass@{k}": min(1.0, base * scale * (1 + 0.3 * i)) for i, k in enumerate([1, 2, 4, 8, 16])}
        r.update({"maj@16": base, "mean_response_length": 800.0, "truncation_rate": 0.01,
                  "num_prompts": 50, "samples_per_prompt": 16})
        results[ds] = r
    path.write_text(json.dumps({"model": model, "results": results}))
    return path


def test_plot_passk_two_evals(tmp_path):
    a = _write_eval(tmp_path / "base.json", "base-1.5b", 1.0)
    b = _write_eval(tmp_path / "trained.json", "prorl-1.5b", 1.5)
    out = plotting.plot_passk([a, b], tmp_path / "passk.png", labels=["base", "trained"])
    w, h = _png_size(out)
    assert w > 500 and h > 300 and out.stat().st_size > 20_000

    evals = [json.loads(a.read_text()), json.loads(b.read_text())]
    fig = plotting.build_passk_figure(evals, ["base", "trained"])
    assert [ax.get_title() for ax in fig.axes] == ["math500 (50 prompts)", "humaneval (50 prompts)"]
    for ax in fig.axes:
        assert ax.get_xscale() == "log"
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        assert set(lines) == {"base", "trained"}
        assert list(lines["base"].get_xdata()) == [1, 2, 4, 8, 16]
    assert plotting.passk_curve(evals[0]["results"]["math500"])[1][0] == pytest.approx(0.4)
    with pytest.raises(ValueError):
        plotting.plot_passk([a, b], tmp_path / "x.png", labels=["only-one"])


def cli_main(argv: list[str]) -> int:
    """``prorl <argv>`` for the plot subcommand only (independent of other subcommands' modules)."""
    assert ("plot", "prorl.commands.plot") == next(c[:2] for c in COMMANDS if c[0] == "plot")
    parser = argparse.ArgumentParser(prog="prorl plot")
    plot_cmd.add_arguments(parser)
    assert argv[0] == "plot"
    return plot_cmd.run(parser.parse_args(argv[1:]))


def test_cli_plot(tmp_path, capsys):
    run = tmp_path / "run"
    _write_run(run, steps=30, val=False)
    assert cli_main(["plot", str(run), "-o", str(tmp_path / "d.png")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "d.png")
    assert (tmp_path / "d.png").read_bytes()[:8] == PNG_SIG

    a = _write_eval(tmp_path / "a.json", "m", 1.0)
    b = _write_eval(tmp_path / "b.json", "m", 1.2)
    assert cli_main(["plot", "--passk", str(a), str(b), "--labels", "base", "trained",
                     "-o", str(tmp_path / "p.png")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG_SIG
    # default output beside the first JSON; neither/both modes is a usage error
    assert cli_main(["plot", "--passk", str(a), str(b)]) == 0
    assert (tmp_path / "passk.png").exists()
    assert cli_main(["plot"]) == 2
    assert cli_main(["plot", str(run), "--passk", str(a)]) == 2
    assert cli_main(["plot", str(tmp_path / "missing")]) == 2
