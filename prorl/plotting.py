"""Run dashboards and pass@k figures (matplotlib, Agg, no pyplot global state).

A run directory holds ``metrics.jsonl`` (one JSON object per line with ``step`` and verl
metric names) and ``events.jsonl`` (``{"step", "type": "reset"|"stage", "cause", ...}``; a reset also has ``trigger``,
``statistic``, ``threshold``, ``p_value``, drawn as a label along its line).
Both may still be being written: unreadable lines (e.g. a partial last line) are skipped.
Figures are built with :class:`matplotlib.figure.Figure` directly, so plotting from a
training process never touches a GUI backend or pyplot's global figure registry.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from matplotlib.figure import Figure

# Event styles: type -> (color, linestyle, legend label).
EVENT_STYLES: dict[str, tuple[str, str, str]] = {
    "reset": ("tab:red", "--", "reference reset"),
    "stage": ("tab:purple", ":", "stage change"),
}
_OTHER_EVENT = ("0.4", "-.", "event")

_VAL_ACC = re.compile(r"^val-core/(?P<ds>.+)/acc/mean@(?P<n>\d+)$")


@dataclass
class Panel:
    """One dashboard panel: left-axis series and optional right-axis (twin) series."""

    title: str
    series: list[tuple[str, str]]  # (metric key, label)
    ylabel: str = ""
    twin: list[tuple[str, str]] = field(default_factory=list)
    twin_ylabel: str = ""
    markers: bool = False


TRAIN_PANELS: list[Panel] = [
    Panel("Reward", [("critic/score/mean", "score mean")], "score"),
    Panel("Entropy", [("actor/entropy", "entropy")], "nats/token"),
    Panel(
        "KL", [("actor/ppo_kl", "ppo_kl (old vs new)"), ("actor/kl_loss", "kl_loss (vs reference)")], "KL"
    ),
    Panel(
        "Response length",
        [("response_length/mean", "mean"), ("response_length/max", "max")],
        "tokens",
        twin=[("response_length/clip_ratio", "truncation ratio")],
        twin_ylabel="truncated fraction",
    ),
    Panel(
        "Clip fractions",
        [("actor/pg_clipfrac", "pg_clipfrac (either side)"),
         ("actor/pg_clipfrac_higher", "pg_clipfrac_higher (r > 1+eps_high, A > 0)"),
         ("actor/pg_clipfrac_below_low_bound", "pg_clipfrac_below_low_bound (r < 1-eps_low, A < 0)"),
         ("actor/pg_clipfrac_lower", "pg_clipfrac_lower (dual clip: r > clip_ratio_c, A < 0)")],
        "fraction",
    ),
    Panel("Dynamic sampling", [("dynamic_sampling/kept_groups", "kept groups")], "groups"),
]


LEGACY_CLIPFRAC_LOWER = "pg_clipfrac_lower (old meaning: r < 1-eps_low, A < 0)"


def _train_panels(records: Sequence[dict]) -> list[Panel]:
    """TRAIN_PANELS, except for runs logged before ``actor/pg_clipfrac_below_low_bound`` existed (no
    record has it): their ``actor/pg_clipfrac_lower`` held that meaning, not verl's dual-clip one,
    and is labelled so."""
    if any("actor/pg_clipfrac_below_low_bound" in r for r in records):
        return list(TRAIN_PANELS)
    return [replace(p, series=[(k, LEGACY_CLIPFRAC_LOWER if k == "actor/pg_clipfrac_lower" else label)
                               for k, label in p.series]) for p in TRAIN_PANELS]


def read_jsonl(path: str | Path) -> list[dict]:
    """JSON objects of a JSONL file; blank, partial or malformed lines are skipped."""
    path = Path(path)
    if not path.exists():
        return []
    out: list[dict] = []
    with path.open("r", encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
    return out


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def series(records: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of ``key`` sorted by step; a repeated step keeps its last value (resumed runs)."""
    by_step: dict[float, float] = {}
    for r in records:
        s, v = _num(r.get("step")), _num(r.get(key))
        if s is not None and v is not None:
            by_step[s] = v
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def _smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (same length)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def _val_panel(records: Sequence[dict]) -> Panel | None:
    keys = sorted({k for r in records for k in r if _VAL_ACC.match(k)})
    if not keys:
        return None
    by_ds: dict[str, list[str]] = {}
    for k in keys:
        by_ds.setdefault(_VAL_ACC.match(k).group("ds"), []).append(k)  # type: ignore[union-attr]
    pairs = []
    for ds, ks in by_ds.items():
        for k in ks:
            n = _VAL_ACC.match(k).group("n")  # type: ignore[union-attr]
            pairs.append((k, ds if len(ks) == 1 else f"{ds} mean@{n}"))
    return Panel("Validation accuracy", pairs, "acc", markers=True)


def _plot_series(
    ax, records: Sequence[dict], pairs: list[tuple[str, str]], markers: bool, color_offset: int = 0
) -> int:
    """Plot each key present; returns how many series were drawn."""
    drawn = 0
    for i, (key, label) in enumerate(pairs):
        xs, ys = series(records, key)
        if not xs:
            continue
        color = f"C{(i + color_offset) % 10}"
        if markers:
            ax.plot(xs, ys, marker="o", markersize=3, color=color, label=label)
        elif len(ys) > 50:
            ax.plot(xs, ys, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(xs, _smooth(ys, max(len(ys) // 50, 5)), color=color, label=f"{label} (smoothed)")
        else:
            ax.plot(xs, ys, color=color, label=label)
        drawn += 1
    return drawn


def reset_label(ev: dict) -> str:
    """A short label for a reset event: its trigger and, when logged, ``statistic > threshold``.

    Events written before ``trigger`` was logged take it from the cause (``"kl_spike: ..."`` ->
    ``kl_spike``; ``"val_degradation[math]: ..."`` keeps the data_source)."""
    trigger = ev.get("trigger")
    if not trigger:
        m = re.match(r"^\s*([A-Za-z_]+(?:\[[^\]]*\])?)(?::|\s|$)", str(ev.get("cause", "")))
        trigger = m.group(1) if m else "reset"
    else:
        m = re.match(r"^\s*[A-Za-z_]+(\[[^\]]*\]):", str(ev.get("cause", "")))
        trigger += m.group(1) if m else ""
    stat, thr = _num(ev.get("statistic")), _num(ev.get("threshold"))
    if stat is not None and thr is not None:
        trigger += f" {stat:.3g}{'>' if stat > thr else '<='}{thr:.3g}"
    return str(trigger)


def draw_events(ax, events: Sequence[dict], *, annotate: bool = False) -> int:
    """Mark events as vertical lines (style by type, one legend entry per type); returns count drawn.
    With ``annotate``, each reset line is labelled with :func:`reset_label` along its top."""
    seen: set[str] = set()
    drawn = 0
    for ev in events:
        step = _num(ev.get("step"))
        if step is None:
            continue
        etype = str(ev.get("type", "event"))
        color, ls, label = EVENT_STYLES.get(etype, _OTHER_EVENT)
        line = ax.axvline(
            step, color=color, linestyle=ls, linewidth=1.2, alpha=0.9, label=None if etype in seen else label
        )
        line.set_gid(f"event:{etype}")
        if annotate and etype == "reset":
            text = ax.text(step, 0.98, " " + reset_label(ev), transform=ax.get_xaxis_transform(), rotation=90,
                           ha="right", va="top", fontsize=6, color=color, clip_on=True)
            text.set_gid("event-label:reset")
        seen.add(etype)
        drawn += 1
    return drawn


def build_run_figure(records: Sequence[dict], events: Sequence[dict], title: str = "") -> Figure:
    """The dashboard figure: one panel per metric group with data, events on every panel."""
    panels = _train_panels(records)
    vp = _val_panel(records)
    if vp is not None:
        panels.append(vp)
    present = [p for p in panels if any(series(records, k)[0] for k, _ in p.series + p.twin)]

    ncols = 2 if len(present) > 1 else 1
    nrows = max(1, math.ceil(len(present) / ncols))
    fig = Figure(figsize=(7 * ncols, 3.2 * nrows + 0.8), layout="constrained")
    if title:
        fig.suptitle(title)
    if not present:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no metrics logged yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig

    for idx, p in enumerate(present):
        ax = fig.add_subplot(nrows, ncols, idx + 1)
        ax.set_title(p.title)
        ax.set_xlabel("step")
        ax.set_ylabel(p.ylabel)
        ax.grid(True, alpha=0.3)
        _plot_series(ax, records, p.series, p.markers)
        handles, labels = ax.get_legend_handles_labels()
        if p.twin:
            tax = ax.twinx()
            if _plot_series(tax, records, p.twin, p.markers, color_offset=len(p.series)):
                tax.set_ylabel(p.twin_ylabel)
                h2, l2 = tax.get_legend_handles_labels()
                handles, labels = handles + h2, labels + l2
        draw_events(ax, events, annotate=True)
        h3, l3 = ax.get_legend_handles_labels()
        for h, lab in zip(h3, l3):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
        if handles:
            ax.legend(handles, labels, fontsize=7, loc="best")

    if events:
        lines = [f"step {e.get('step')}: {e.get('type', 'event')} ({e.get('cause', '')})" if e.get("type") != "reset"
                 else f"step {e.get('step')}: reset ({reset_label(e)})" for e in events[-6:]]
        more = f" (+{len(events) - 6} earlier)" if len(events) > 6 else ""
        fig.supxlabel("events" + more + ":  " + "   |   ".join(lines), fontsize=7)
    return fig


def plot_run(run_dir: str | Path, out_png: str | Path | None = None) -> Path:
    """Write the run dashboard PNG (default ``RUN_DIR/dashboard.png``) and return its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    records = read_jsonl(run_dir / "metrics.jsonl")
    events = read_jsonl(run_dir / "events.jsonl")
    out = Path(out_png) if out_png is not None else run_dir / "dashboard.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = build_run_figure(records, events, title=f"run: {run_dir.resolve().name}")
    fig.savefig(out, dpi=100)
    return out


_PASS_KEY = re.compile(r"^pass@(\d+)$")


def passk_curve(result: dict) -> tuple[list[int], list[float]]:
    """(ks, pass@k values) of one data_source's eval result, sorted by k."""
    pts = []
    for key, raw in result.items():
        m, v = _PASS_KEY.match(key), _num(raw)
        if m and v is not None:
            pts.append((int(m.group(1)), v))
    pts.sort()
    return [k for k, _ in pts], [v for _, v in pts]


def build_passk_figure(evals: Sequence[dict], labels: Sequence[str]) -> Figure:
    """One panel per data_source, one pass@k curve per evaluation (x in log2 scale)."""
    sources: list[str] = []
    for ev in evals:
        for ds in (ev.get("results") or {}):
            if ds not in sources:
                sources.append(ds)
    ncols = min(3, max(len(sources), 1))
    nrows = max(1, math.ceil(len(sources) / ncols))
    fig = Figure(figsize=(5 * ncols, 3.8 * nrows), layout="constrained")
    fig.suptitle("pass@k: " + " vs ".join(labels))
    if not sources:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    for idx, ds in enumerate(sources):
        ax = fig.add_subplot(nrows, ncols, idx + 1)
        ax.set_xscale("log", base=2)
        allks: set[int] = set()
        n_prompts = None
        for i, (ev, label) in enumerate(zip(evals, labels)):
            res = (ev.get("results") or {}).get(ds)
            if not res:
                continue
            ks, vs = passk_curve(res)
            if ks:
                ax.plot(ks, vs, marker="o", color=f"C{i % 10}", label=label)
                allks.update(ks)
            n_prompts = n_prompts or res.get("num_prompts")
        if allks:
            ax.set_xticks(sorted(allks), [str(k) for k in sorted(allks)])
            ax.legend(fontsize=8)
        ax.set_title(ds + (f" ({n_prompts} prompts)" if n_prompts else ""), fontsize=10)
        ax.set_xlabel("k")
        ax.set_ylabel("pass@k")
        ax.grid(True, alpha=0.3)
    return fig


def plot_passk(
    eval_jsons: Sequence[str | Path], out_png: str | Path, labels: Sequence[str] | None = None
) -> Path:
    """Write pass@k curves per data_source for several ``prorl eval`` JSON files; return the path."""
    paths = [Path(p) for p in eval_jsons]
    if not paths:
        raise ValueError("plot_passk needs at least one eval JSON")
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"{len(labels)} labels for {len(paths)} eval files")
    evals = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
    if labels is None:
        labels = [str(ev.get("model") or p.stem) for ev, p in zip(evals, paths)]
        if len(set(labels)) < len(labels):  # same model name twice: disambiguate by file
            labels = [f"{lab} ({p.stem})" for lab, p in zip(labels, paths)]
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    build_passk_figure(evals, list(labels)).savefig(out, dpi=100)
    return out
