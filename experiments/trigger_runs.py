"""Noise-aware reset triggers on real runs (issue 21 section 1): false fires and detection delay.

Three kinds of run of the ``reset_timing`` setting (the plan's BASE + ``reset_plateau``'s setting),
seeds 0 1 2, with the statistical triggers of today's defaults live (``reset.auto=true``;
significance test on validation, robust z on KL, plus the entropy-collapse rule):

* **healthy**: ``STEPS["healthy"]`` (300) steps, nothing broken on purpose: every reset fired is a
  false fire;
* **forced**: the healthy run of the same seed branched at step ``BRANCH`` (its checkpoint; the
  steps before are the same run), then a stage with the learning rate raised ``LR_FACTOR`` x for
  steps ``BRANCH+1 .. BRANCH+DEGRADE_STEPS``: detection delay = first automatic reset whose data
  include a degraded update, minus the degradation start (see ``analyse``);
* **forced_off**: the same forced run with no automatic resets, whose curves both rule sets are
  replayed on (the old rules' delay on a forced run would be read off curves the new rules reset).

Each run's recorded curves (validation per level with its sample counts, KL and entropy per step)
are then **replayed** through the old fixed-threshold rules (the reset_timing AUTO arm: a 0.05
validation margin for 2 validations, KL > 5x its 10-step median, cooldown 20): a replay, not a
live run, so after a real reset the curves are those of the reset run (the replay restarts its
histories there, as the trainer would). The same curves are also replayed through the new triggers
with ``reset.val_noise=sampling`` (the significance test against the samples' noise alone, the
default before the measured noise).

    python experiments/trigger_runs.py --out runs/trigger_runs [--quick] [--report]
    python experiments/trigger_runs.py --out runs/trigger_runs --report  # as run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (REPO, HERE / "plan"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from common import BASE, QUICK, branch_from, run_queue, summarise_run  # noqa: E402
from reset_plateau import SETTING  # noqa: E402

from prorl.algo.reset_policy import decide_reset  # noqa: E402
from prorl.config import ResetConfig  # noqa: E402

RESULTS_DIR = HERE / "trigger_results"
STEPS = {"healthy": 300, "forced": 90, "forced_off": 90}  # the forced runs cut from 200 to fit the 2 shared cores
BRANCH, DEGRADE_STEPS, LR_FACTOR, LR = 60, 5, 20, 2.0e-4
QUICK_STEPS, QUICK_BRANCH = {"healthy": 6, "forced": 8, "forced_off": 8}, 2
KINDS = ("healthy", "forced", "forced_off")
# the live (new) triggers: the statistical defaults, with the reset_timing AUTO arm's settings that
# still apply (KL window and history, cooldown); val_plateau left out (a plateau is not a fault, it
# is what that trigger is for), entropy_collapse added (the noise-aware entropy trigger)
NEW = ["reset.auto=true", "reset.triggers=[kl_spike, val_degradation, entropy_collapse]",
       "reset.min_steps_between_resets=20", "reset.kl_window=10", "reset.kl_min_history=10"]
# today's old rules, as the reset_timing AUTO arm ran them (plateau left out as above)
OLD = ResetConfig(auto=True, triggers=["kl_spike", "val_degradation"], val_test="margin", kl_test="factor",
                  val_margin=0.05, val_patience=2, kl_factor=5.0, kl_window=10, kl_min_history=10,
                  min_steps_between_resets=20)


def degrade_stage(branch: int) -> str:
    """The stages override: normal to ``branch``, lr x LR_FACTOR for DEGRADE_STEPS steps, then normal."""
    return (f"stages=[{{name: normal, until_step: {branch}}}, "
            f"{{name: degrade, until_step: {branch + DEGRADE_STEPS}, overrides: {{actor.lr: {LR * LR_FACTOR:g}}}}}, "
            "{name: recover}]")


def overrides(kind: str, seed: int, out: Path, quick: bool, steps: int) -> list[str]:
    extra = [degrade_stage(QUICK_BRANCH if quick else BRANCH)] if kind != "healthy" else []
    live = ["reset.auto=false"] if kind == "forced_off" else NEW
    return [*BASE, *SETTING, *(QUICK if quick else []), *live, *extra, f"trainer.seed={seed}",
            f"trainer.total_steps={steps}", f"trainer.run_dir={out / kind / f'seed{seed}' / 'run'}"]


def branch_early(src: Path, dst: Path, step: int) -> None:
    """``common.branch_from`` for a source run still training: copy its logs and only the checkpoints
    up to ``step`` (resume truncates the logs after it)."""
    if dst.exists():
        shutil.rmtree(dst)
    (dst / "checkpoints").mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file():
            shutil.copy2(f, dst / f.name)
    for cp in (src / "checkpoints").iterdir():
        if cp.name.startswith("step_") and cp.name[5:].isdigit() and int(cp.name[5:]) <= step \
                and (cp / "COMPLETE").exists():
            shutil.copytree(cp, dst / "checkpoints" / cp.name)
    branch_from(dst, dst.with_name(dst.name + ".tmp"), step)  # trims events after ``step``
    shutil.rmtree(dst)
    dst.with_name(dst.name + ".tmp").rename(dst)


def read_events(rd: Path) -> list[dict]:
    path = rd / "events.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


def summarise(rd: Path, kind: str, seed: int, quick: bool) -> dict:
    """The run's curves (common.summarise_run), its reset events with their statistics, and the
    scored samples behind each level's validations."""
    from prorl.trainer.metrics import read_metrics

    s = summarise_run(rd)
    n_val = {}
    for m in read_metrics(rd):
        for k, v in m.items():
            if k.startswith("val-core/builtin/") and "/acc/mean@" in k:
                level = k.split("/")[2]
                prompts = 2 if quick else 16  # data.val_max_prompts (QUICK / BASE)
                samples = int(k.split("@")[1])
                n_val.setdefault(level, {})[str(m["step"])] = \
                    prompts * samples - int(m.get(f"val-aux/builtin/{level}/infra_error", 0))
    s["val_counts"] = n_val
    s["reset_events"] = [{k: e.get(k) for k in ("step", "trigger", "statistic", "threshold", "p_value", "message",
                                                 "cause")} for e in read_events(rd) if e.get("type") == "reset"]
    s |= {"kind": kind, "seed": seed}
    return s


def train_one(kind: str, seed: int, out: Path, quick: bool, steps: int) -> dict:
    """Train (or resume, or skip when finished) one run to ``steps``; a forced run branches from the
    healthy one. A finished run asked for more steps continues from its last checkpoint (the
    learning rate is constant, so that is the longer run)."""
    import torch

    torch.set_num_threads(1)
    from prorl.config import load_config
    from prorl.trainer.checkpoint import latest_checkpoint, list_checkpoints
    from prorl.trainer.controller import train

    base = out / kind / f"seed{seed}"
    before = 0.0
    if (base / "summary.json").exists():
        done_summary = json.loads((base / "summary.json").read_text())
        if done_summary["steps"] >= steps or kind != "healthy":
            return done_summary
        before = done_summary["minutes"]
    rd, t0 = base / "run", time.time()
    if kind != "healthy":
        src, at = out / "healthy" / f"seed{seed}", QUICK_BRANCH if quick else BRANCH
        done = list_checkpoints(rd)
        if not done or done[-1][0] < at:
            while at not in [s for s, _ in list_checkpoints(src / "run")]:  # complete (COMPLETE marker)
                time.sleep(5)
            branch_early(src / "run", rd, at)
    cfg = load_config(None, overrides(kind, seed, out, quick, steps))
    resume = latest_checkpoint(rd) is not None
    train(cfg, resume=resume, overwrite=not resume, log=lambda *a: None)
    summary = summarise(rd, kind, seed, quick) | {"minutes": before + (time.time() - t0) / 60}
    if kind != "healthy":
        summary["branched_at"] = QUICK_BRANCH if quick else BRANCH
        summary["degrade_steps"] = [summary["branched_at"] + 1, summary["branched_at"] + DEGRADE_STEPS]
    (base / "summary.json").write_text(json.dumps(summary))
    print(f"{kind} seed {seed}: {summary['steps']} steps, {len(summary['reset_events'])} resets, "
          f"{summary['minutes']:.1f} min", flush=True)
    return summary


def _job(kind: str, seed: int, out: Path, quick: bool, steps: int) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return train_one(kind, seed, out, quick, steps)


# ---------------------------------------------------------------- replay and gather


def _curve(run: dict, key: str) -> list[tuple[int, float]]:
    return sorted((int(k), float(v)) for k, v in run["curves"].get(key, {}).items())


def replay(run: dict, policy: ResetConfig, free: Callable[[int, str], bool] | None = None) -> list[dict]:
    """The automatic resets ``policy`` would have made on ``run``'s recorded curves: at each step the
    decision the trainer makes before training it (KL and entropy of the earlier steps, validations
    taken after earlier steps), with cooldown and history restart after each of its own fires and
    after each real reset of the run (the curves after a real reset are those of the reset run). Its
    own fires for which ``free(step, trigger)`` holds are recorded but start no cooldown or restart."""
    kl, ent = _curve(run, "actor/kl_loss"), _curve(run, "actor/entropy")
    levels = sorted(k[4:] for k in run["curves"] if k.startswith("val/"))
    vals = {lv: _curve(run, "val/" + lv) for lv in levels}
    counts = {lv: {int(k): c for k, c in run.get("val_counts", {}).get(lv, {}).items()} for lv in levels}
    real = sorted(int(e["step"]) for e in run.get("reset_events", []))
    fires: list[dict] = []
    last: int | None = None
    for step in range(1, int(run["steps"]) + 1):
        last = max([x for x in [last, *(r for r in real if r < step)] if x is not None], default=None)
        val_h = {f"builtin/{lv}": [v for s, v in vals[lv] if s < step] for lv in levels}
        cnt_h = {f"builtin/{lv}": [counts[lv].get(s) for s, _ in vals[lv] if s < step] for lv in levels}
        n_evals = None if last is None else sum(1 for s, _ in vals[levels[0]] if last <= s < step) if levels else 0
        d = decide_reset(policy, step=step, kl_history=[v for s, v in kl if s < step],
                         val_histories=val_h, val_counts=cnt_h, entropy_history=[v for s, v in ent if s < step],
                         steps_since_last_reset=None if last is None else step - last, evals_since_last_reset=n_evals)
        if d.fired:
            fires.append({"step": step, "trigger": d.trigger, "cause": d.cause, "statistic": d.statistic,
                          "threshold": d.threshold})
            last = last if free is not None and free(step, d.trigger) else step
    return fires


def new_policy() -> ResetConfig:
    """The live triggers' ``reset`` section, as the runs' config has it."""
    from prorl.config import load_config

    return load_config(None, [*BASE, *SETTING, *NEW]).reset


def sampling_policy() -> ResetConfig:
    """The live triggers with the significance test against sampling noise alone."""
    import dataclasses

    return dataclasses.replace(new_policy(), val_noise="sampling")


def analyse(run: dict) -> dict:
    """Live fires (new rules), replayed fires (old rules; and the new ones, as a check of the replay),
    and for a forced run the detection delays."""
    live = [{"step": int(e["step"]), "trigger": e.get("trigger"), "cause": e.get("message") or e.get("cause"),
             "statistic": e.get("statistic"), "threshold": e.get("threshold"), "p_value": e.get("p_value")}
            for e in run.get("reset_events", []) if e.get("trigger") not in ("stage", "scheduled", "manual")]
    old, new_replayed, sampling = replay(run, OLD), replay(run, new_policy()), replay(run, sampling_policy())
    out = {"live_new": live, "replay_old": old, "replay_sampling": sampling,
           "replay_new_steps": [f["step"] for f in new_replayed],
           "replay_matches_live": [f["step"] for f in new_replayed] == [f["step"] for f in live]}
    if run["kind"] in ("forced", "forced_off"):
        # the decision at step s sees the KL / entropy of the steps before s and the validations taken
        # after them: a fire is a detection only when its data include a degraded update (KL, entropy:
        # s > start; validation: a validation at a step in [start, s)); otherwise it is a false fire.
        # delay = s - start = the degraded updates trained before the reset
        start = run["degrade_steps"][0]
        val_steps = sorted(int(k) for k in run["curves"].get("val", {}))

        def blind(step: int, trigger: str) -> bool:
            if trigger == "val_degradation" or trigger == "val_plateau":
                return not any(start <= v < step for v in val_steps)
            return step <= start

        free = {"replay_new_free": replay(run, new_policy(), free=blind), "replay_old_free": replay(run, OLD, free=blind)}
        out |= free | {"degrade_start": start}
        for name, fs in (("live_new", live), ("replay_old", old), ("replay_new", new_replayed),
                         ("replay_sampling", sampling), *free.items()):
            first = next((f for f in fs if not blind(f["step"], f["trigger"])), None)
            out[f"first_{name}"] = first
            out[f"delay_{name}"] = None if first is None else first["step"] - start
            out[f"false_before_{name}"] = sum(blind(f["step"], f["trigger"]) and f["step"] <= (first or {"step": 10**9})["step"]
                                              for f in fs)
    return out


def replay_check(path: Path = HERE / "plan" / "results" / "reset_timing" / "results.json") -> dict:
    """Replay the stored ``reset_timing`` automatic arm (run live with the old rules and the plateau
    trigger) through those rules: the replay should fire exactly where the live runs reset."""
    import dataclasses

    if not path.exists():
        return {"runs": 0, "matches": 0}
    policy = dataclasses.replace(OLD, triggers=["kl_spike", "val_degradation", "val_plateau"],
                                 plateau_patience=3, plateau_min_delta=0.02)
    runs = json.loads(path.read_text())["arms"]["automatic triggers"]
    same = [[f["step"] for f in replay(r | {"reset_events": []}, policy)] == [int(x["step"]) for x in r["resets"]]
            for r in runs]
    return {"runs": len(runs), "matches": sum(same)}


def gather(out: Path, quick: bool, partial: bool = False) -> dict:
    """Every finished run's summary (curves, events) and its analysis: ``OUT/results.json``; with
    ``partial``, also the runs stopped before their last step (marked ``unfinished``)."""
    res: dict = {"quick": quick, "branch": QUICK_BRANCH if quick else BRANCH,
                 "degrade_steps": DEGRADE_STEPS, "lr_factor": LR_FACTOR, "setting": [*BASE, *SETTING],
                 "new": NEW, "old": {k: getattr(OLD, k) for k in ("triggers", "val_test", "val_margin", "val_patience",
                                                                  "kl_test", "kl_factor", "kl_window", "kl_min_history",
                                                                  "min_steps_between_resets")},
                 "replay_check": replay_check(), "runs": {k: [] for k in KINDS}}
    for kind in KINDS:
        for d in sorted((out / kind).glob("seed*")):
            if (d / "summary.json").exists():
                run = json.loads((d / "summary.json").read_text())
            elif partial and (d / "run" / "metrics.jsonl").exists():
                run = summarise(d / "run", kind, int(d.name[4:]), quick) | {"unfinished": True, "minutes": None}
                if kind != "healthy":
                    at = QUICK_BRANCH if quick else BRANCH
                    run |= {"branched_at": at, "degrade_steps": [at + 1, at + DEGRADE_STEPS]}
            else:
                continue
            res["runs"][kind].append(run | {"analysis": analyse(run)})
    res["steps"] = {k: max((r["steps"] for r in runs), default=0) for k, runs in res["runs"].items()}
    (out / "results.json").write_text(json.dumps(res, indent=1))
    return res


# ---------------------------------------------------------------- report

RESULTS_MD = HERE / "RESULTS.md"
BEGIN = "<!-- BEGIN trigger runs: generated by experiments/trigger_runs.py --report -->"
END = "<!-- END trigger runs -->"
AFTER = "<!-- END experiment plan -->"  # where the section goes the first time


def _fires(fs: list[dict]) -> str:
    return ", ".join(f"{f['step']} ({f['trigger']})" for f in fs) or "none"


def _mean(xs: list[float | None]) -> str:
    xs = [x for x in xs if x is not None]
    return f"{statistics.mean(xs):.2f}" if xs else "n/a"


def _minutes(r: dict) -> str:
    if r.get("unfinished"):
        return f"stopped at step {r['steps']}"
    return f"{r['minutes']:.0f}"


def _first(f: dict | None, start: int) -> str:
    if f is None:
        return "not detected"
    stat = f" ({f['statistic']:.3g} > {f['threshold']:.3g})" if f.get("statistic") is not None \
        and f.get("threshold") is not None else ""
    return f"step {f['step']}, {f['trigger']}{stat}: **{f['step'] - start}**"


def section(res: dict, reading: str = "") -> str:
    """The RESULTS.md section: both tables from ``res`` (``OUT/results.json``), then the reading."""
    h, fo = res["runs"]["healthy"], res["runs"]["forced"]
    old = res["old"]
    steps, b = res["steps"], res["branch"]
    md = [BEGIN, "", "## Noise-aware reset triggers on real runs (issue 21 section 1)", "",
          f"Generated by `python experiments/trigger_runs.py --out runs/trigger_runs --healthy-steps "
          f"{res['steps']['healthy']} --report` from the runs' JSON "
          "(copy: `experiments/trigger_results/results.json`)" + (" — **QUICK MODE, not a measurement**" if res["quick"]
                                                                  else "") + ". "
          f"Setting: the plan's `reset_timing` setting (chain warm start on chain4-8, 40-token responses, KL 0.01, "
          f"16 prompts x 8 samples, validation every 10 steps on 5 levels x 16 problems x 4 samples), one thread per "
          f"run, two or three runs at a time on the 2 shared cores. **New triggers, live**: `{' '.join(res['new'])}` "
          f"(the statistical defaults: significance test at `reset.false_alarm_rate` 0.01 per validation against "
          f"each level's measured look-to-look noise (`reset.val_noise=measured`), KL robust z > 6, entropy collapse; `val_plateau` left out since a plateau is what it is meant to fire on). "
          f"**Old rules, replayed** on the same recorded curves (`reset_timing`'s AUTO arm without the plateau "
          f"trigger: validation margin {old['val_margin']} for {old['val_patience']} validations, KL > "
          f"{old['kl_factor']:g}x its {old['kl_window']}-step median, cooldown {old['min_steps_between_resets']} "
          "steps): a replay, not a live run; after a real reset the curves are those of the reset run, and the "
          "replay restarts its histories there. Check of the replay: given the rules it ran with, it fires exactly "
          f"where the stored `reset_timing` automatic arm reset in {res['replay_check']['matches']} of its "
          f"{res['replay_check']['runs']} runs; and each run's replay of the new rules is compared with its live "
          "fires (column *replay = live*). *Sampling noise, replay*: the new triggers with `reset.val_noise=sampling` "
          "(the significance test against the samples' Bernoulli noise alone) replayed on the same curves.", "",
          f"### Healthy runs ({steps['healthy']} steps, nothing broken on purpose: every fire is a false fire)", "",
          "| seed | new, live: resets (step, trigger) | sampling noise, replay: fires | old, replay: fires (step, trigger) "
          "| replay = live | minutes |", "|---|---|---|---|---|---|"]
    for r in h:
        a = r["analysis"]
        smp = a.get("replay_sampling", [])
        md.append(f"| {r['seed']} | {len(a['live_new'])}: {_fires(a['live_new'])} | {len(smp)}: {_fires(smp)} | "
                  f"{len(a['replay_old'])}: {_fires(a['replay_old'])} | {'yes' if a['replay_matches_live'] else 'NO'} | "
                  f"{_minutes(r)} |")
    md.append(f"| **mean** | **{_mean([len(r['analysis']['live_new']) for r in h])}** | "
              f"**{_mean([len(r['analysis'].get('replay_sampling', [])) for r in h])}** | "
              f"**{_mean([len(r['analysis']['replay_old']) for r in h])}** | | |")
    off = {r["seed"]: r for r in res["runs"].get("forced_off", [])}
    md += ["", f"### Forced degradation (learning rate x{res['lr_factor']} for steps {b + 1}-{b + res['degrade_steps']})",
           "", f"Each forced run is the healthy run of its seed continued from its step-{b} checkpoint (the steps "
           f"before are that run's) with the raised-lr stage, {steps['forced']} steps in all: once with the new "
           "triggers live (*forced*), once with no automatic resets (*untriggered*), whose curves both rule sets are "
           "replayed on (on the forced run the old rules could only be replayed on curves the new rules had already "
           f"reset). A decision at step s sees the KL and entropy of the steps before s and the validations taken "
           f"after them: a fire whose data include a degraded update (KL or entropy: s > {b + 1}; validation: a "
           f"validation taken at or after step {b + 1}) is a detection, with delay s - {b + 1} (the degraded updates "
           "trained before the reset); a fire on earlier data is a false fire (column *false fires*: those up to the "
           "detection). *Free*: the delay had the rule's own false fires not started its cooldown and restarted its "
           "history (which, for the margin rule, also resets its best).", "",
           "| seed | new, live: first reset, delay | untriggered, new replayed | untriggered, sampling noise replayed "
           "| untriggered, old replayed | old, free | false fires (new live / old replayed) | replay = live | minutes "
           "(forced / untriggered) |", "|---|---|---|---|---|---|---|---|---|"]

    def cell(r: dict | None, name: str) -> str:
        return "n/a" if r is None else _first(r["analysis"][f"first_{name}"], r["analysis"]["degrade_start"])

    def delays(rs: list[dict | None], name: str) -> str:
        ds = [r["analysis"][f"delay_{name}"] for r in rs if r is not None]
        return f"**{_mean(ds)}** (detected {sum(d is not None for d in ds)}/{len(ds)})"

    for r in fo:
        a, u = r["analysis"], off.get(r["seed"])
        fb = "n/a" if u is None else u["analysis"]["false_before_replay_old"]
        md.append(f"| {r['seed']} | {cell(r, 'live_new')} | {cell(u, 'replay_new')} | {cell(u, 'replay_sampling')} | "
                  f"{cell(u, 'replay_old')} | "
                  f"{cell(u, 'replay_old_free')} | {a['false_before_live_new']} / {fb} | "
                  f"{'yes' if a['replay_matches_live'] else 'NO'} | {_minutes(r)} / "
                  f"{'n/a' if u is None else _minutes(u)} |")
    us = [off.get(r["seed"]) for r in fo]
    md.append(f"| **mean delay** | {delays(fo, 'live_new')} | {delays(us, 'replay_new')} | "
              f"{delays(us, 'replay_sampling')} | {delays(us, 'replay_old')} | {delays(us, 'replay_old_free')} | | | |")
    md += ["", "Every automatic reset the new triggers made live, as logged in `events.jsonl` (and drawn, with "
           "its statistic and threshold, by `prorl plot RUN_DIR`):", ""]
    for kind in ("healthy", "forced"):
        for r in res["runs"][kind]:
            for f in r["analysis"]["live_new"]:
                md.append(f"- {kind} seed {r['seed']}, step {f['step']}: `{f['cause']}`")
    if reading:
        md += ["", reading.strip()]
    md += ["", END]
    return "\n".join(md)


def write_report(res: dict, results_md: Path = RESULTS_MD, store: Path = RESULTS_DIR) -> str:
    """``store/results.json`` (every run's summary and analysis) and the section in ``results_md``."""
    reading_path = store / "reading.md"
    reading = reading_path.read_text() if reading_path.exists() and not res["quick"] else ""
    new = section(res, reading)
    if store == RESULTS_DIR and res["quick"]:
        raise SystemExit("--quick --report would overwrite the stored results; not written")
    store.mkdir(parents=True, exist_ok=True)
    keep = ("val", "actor/kl_loss", "actor/entropy", "critic/score/mean", "response_length/mean")
    small = res | {"runs": {k: [r | {"curves": {c: v for c, v in r["curves"].items() if c.startswith(keep)}}
                                for r in runs] for k, runs in res["runs"].items()}}
    (store / "results.json").write_text(json.dumps(small, separators=(",", ":")))  # the curves the rules read
    text = results_md.read_text() if results_md.exists() else ""
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + new + text[text.index(END) + len(END):]
    elif AFTER in text:
        i = text.index(AFTER) + len(AFTER)
        text = text[:i] + "\n\n" + new + text[i:]
    else:
        text = text.rstrip() + "\n\n" + new + "\n"
    results_md.write_text(text)
    return new


def run_all(out: Path, seeds: list[int], quick: bool, jobs: int, steps: dict[str, int],
            kinds: tuple[str, ...] = KINDS) -> None:
    """The healthy runs, then the forced ones (each waits for its healthy run's branch checkpoint)."""
    queue = [(kind, s, out, quick, steps[kind]) for kind in kinds for s in seeds]
    run_queue(_job if jobs > 1 else train_one, queue, jobs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/trigger_runs"))
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 (quick: 0)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="smoke run: a few steps, tiny batches")
    ap.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    ap.add_argument("--healthy-steps", type=int, help=f"default {STEPS['healthy']} (more: finished runs continue)")
    ap.add_argument("--no-train", action="store_true", help="only gather / report what is there")
    ap.add_argument("--partial", action="store_true", help="also gather runs stopped before their last step")
    ap.add_argument("--report", action="store_true", help="write the section of experiments/RESULTS.md")
    args = ap.parse_args(argv)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    if not args.no_train:
        steps = dict(QUICK_STEPS if args.quick else STEPS)
        steps["healthy"] = args.healthy_steps or steps["healthy"]
        run_all(args.out, seeds, args.quick, args.jobs, steps, tuple(args.kinds))
    res = gather(args.out, args.quick, args.partial)
    for kind, runs in res["runs"].items():
        for r in runs:
            a = r["analysis"]
            print(kind, r["seed"], "live new:", [f["step"] for f in a["live_new"]], "replay old:",
                  [f["step"] for f in a["replay_old"]], "replay new:", a["replay_new_steps"],
                  "delays (live new, replay new, replay old):", a.get("delay_live_new"), a.get("delay_replay_new"),
                  a.get("delay_replay_old"), "replay matches live:", a["replay_matches_live"])
    if args.report:
        write_report(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
