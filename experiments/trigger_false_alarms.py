"""Replay the stored runs of the experiment plan through the old and the new reset triggers.

``python experiments/trigger_false_alarms.py [RESULTS_JSON ...]`` (default: every
``experiments/plan/results/*/results.json``). Each run's curves hold one validation per level every
``validation.every`` steps (``val/chainK``, at ``data.val_max_prompts`` problems x ``validation.n``
samples, read from the experiment's setting) and one KL and entropy value per step. None of these
runs was broken on purpose, and no reset (except the automatic arm's own) was triggered by a
degradation: every fire counted here is a reset a trigger *would* have made on a run that did not
need one, so the counts measure false alarms on real training curves, cheaply (no training).

Validation: every look of every level is judged on the history before it, as ``decide_reset`` does
(one decision per validation, over all levels: Bonferroni over the levels for the significance
test). ``fires`` counts the looks at which the rule fires; ``resets`` replays a watcher that
restarts its history after each fire (as the trainer does after a reset; rollback not simulated).
Looks shared by several runs (branch arms copy their parent's history up to the branch point;
arms marked ``same_as`` reuse another experiment's runs) are counted once.

Step metrics: KL (``actor/kl_loss``) judged at every step on the history since the run's last real
reset, by the fixed factor (5x median) and the robust z (> 6); entropy by ``entropy_collapse``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from prorl.algo.reset_policy import (  # noqa: E402
    TriggerResult,
    entropy_collapse,
    kl_spike,
    kl_spike_robust,
    val_degradation,
    val_degradation_test,
)
from prorl.config import ResetConfig  # noqa: E402

DEFAULT = ResetConfig()


def setting_value(overrides: list[str], key: str, default: int) -> int:
    """The last ``key=value`` among ``overrides`` as an int."""
    value = default
    for o in overrides:
        if o.startswith(key + "="):
            value = int(o.split("=", 1)[1])
    return value


def level_curves(run: dict) -> dict[str, list[float]]:
    """Per level, validation scores in step order."""
    return {k[4:]: [v for _, v in sorted((int(s), v) for s, v in c.items())]
            for k, c in run["curves"].items() if k.startswith("val/")}


def step_curve(run: dict, key: str) -> list[tuple[int, float]]:
    return sorted((int(s), float(v)) for s, v in run["curves"].get(key, {}).items())


RULES = {
    "margin 0.05, patience 3 (old default)": lambda h, n, d: val_degradation(h, margin=0.05, patience=3),
    "margin 0.05, patience 2 (reset_timing)": lambda h, n, d: val_degradation(h, margin=0.05, patience=2),
    f"significance alpha {DEFAULT.false_alarm_rate:g}, window {DEFAULT.val_window}, sampling noise":
        lambda h, n, d: val_degradation_test(h, n, false_alarm_rate=DEFAULT.false_alarm_rate,
                                             window=DEFAULT.val_window, sources=d, noise="sampling"),
    # each level's own measured noise (decide_reset also pools it over the levels: more df, never a smaller phi)
    f"significance alpha {DEFAULT.false_alarm_rate:g}, window {DEFAULT.val_window}, measured noise (default)":
        lambda h, n, d: val_degradation_test(h, n, false_alarm_rate=DEFAULT.false_alarm_rate,
                                             window=DEFAULT.val_window, sources=d, noise="measured"),
}


@dataclass
class Tally:
    looks: int = 0
    fires: int = 0
    resets: int = 0
    examples: list[str] = field(default_factory=list)


def any_fires(rule, curves: dict[str, list[float]], counts: int, start: int, end: int) -> TriggerResult | None:
    """The first level on which ``rule`` fires when judging validations ``start..end-1``."""
    for level, h in curves.items():
        r = rule(h[start:end], [counts] * (end - start), len(curves))
        if r.fired:
            return TriggerResult(True, f"{level}: {r.cause}", r.trigger, r.statistic, r.threshold, r.p_value)
    return None


def replay_validation(runs: list[tuple[str, dict, int]]) -> dict[str, Tally]:
    """Fires and restart-after-fire resets of each validation rule over the runs' level curves."""
    tallies = {name: Tally() for name in RULES}
    seen: set[tuple] = set()
    for label, run, counts in runs:
        curves = level_curves(run)
        looks = min(map(len, curves.values()))
        for name, rule in RULES.items():
            t, restart = tallies[name], 0
            for end in range(2, looks + 1):
                key = (name, tuple(tuple(h[:end]) for h in curves.values()))
                fresh = key not in seen
                seen.add(key)
                if fresh:
                    t.looks += 1
                    if any_fires(rule, curves, counts, 0, end):
                        t.fires += 1
                if end - restart >= 2 and (r := any_fires(rule, curves, counts, restart, end)):
                    t.resets += 1
                    restart = end  # a reset: the history starts again after this look
                    if len(t.examples) < 4:
                        t.examples.append(f"{label}, validation {end}: {r.cause}")
    return tallies


def replay_steps(runs: list[tuple[str, dict, int]]) -> dict[str, tuple[int, int]]:
    """(fires, steps judged) of the KL and entropy rules on each run's per-step curves."""
    out = {"kl_spike factor 5 (old default)": [0, 0], f"kl_spike robust z > {DEFAULT.kl_z:g} (new default)": [0, 0],
           "entropy_collapse (opt-in)": [0, 0]}
    seen: set[tuple] = set()
    for _, run, _ in runs:
        cuts = sorted({0, *(int(r["step"]) for r in run.get("resets", []))})
        kl, ent = step_curve(run, "actor/kl_loss"), step_curve(run, "actor/entropy")
        for i, (step, _) in enumerate(kl):
            key = tuple(v for _, v in kl[:i + 1])
            if key in seen:
                continue
            seen.add(key)
            since = max(c for c in cuts if c <= step)
            hist = [v for s, v in kl[:i + 1] if s >= since]
            for name, fn in (("kl_spike factor 5 (old default)", lambda h: kl_spike(h)),
                             (f"kl_spike robust z > {DEFAULT.kl_z:g} (new default)",
                              lambda h: kl_spike_robust(h, noise_window=DEFAULT.kl_noise_window))):
                out[name][1] += 1
                out[name][0] += fn(hist[-(DEFAULT.kl_window + DEFAULT.kl_noise_window + 1):]).fired \
                    if len(hist) > DEFAULT.kl_min_history else 0
            ehist = [v for s, v in ent[:i + 1] if s >= since]
            out["entropy_collapse (opt-in)"][1] += 1
            out["entropy_collapse (opt-in)"][0] += entropy_collapse(ehist[-25:]).fired
    return {k: (v[0], v[1]) for k, v in out.items()}


def load_runs(paths: list[Path]) -> list[tuple[str, dict, int]]:
    """(label, run, scored samples per level-validation) of every stored run, ``same_as`` copies left out."""
    runs = []
    for path in paths:
        res = json.loads(path.read_text())
        for arm, arm_runs in res["arms"].items():
            overrides = [*res["setting"], *res.get("arm_overrides", {}).get(arm, [])]
            prompts = min(setting_value(overrides, "data.val_max_prompts", 0) or 10**9,
                          setting_value(overrides, "data.builtin_val_size", 64))
            counts = prompts * setting_value(overrides, "validation.n", 4)
            for run in arm_runs:
                if run.get("same_as"):
                    continue
                runs.append((f"{res['name']}/{arm}/seed{run['seed']}", run, counts))
    return runs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="*", type=Path,
                    default=sorted((REPO / "experiments" / "plan" / "results").glob("*/results.json")))
    args = ap.parse_args(argv)
    runs = load_runs(args.results)
    levels = sum(len(level_curves(r)) for _, r, _ in runs)
    print(f"{len(runs)} runs ({levels} level curves) from {len(args.results)} experiments; "
          f"samples per level-validation: {sorted({c for _, _, c in runs})}")
    print("\nvalidation degradation (one decision per validation over all levels):")
    print(f"  {'rule':58s} {'looks':>6s} {'fires':>6s} {'rate':>7s} {'resets':>7s} {'per run':>8s}")
    for name, t in replay_validation(runs).items():
        print(f"  {name:58s} {t.looks:6d} {t.fires:6d} {t.fires / max(1, t.looks):7.3f} {t.resets:7d} "
              f"{t.resets / max(1, len(runs)):8.2f}")
        for ex in t.examples:
            print(f"      e.g. {ex}")
    print("\nstep triggers (every step judged on the history since the run's last real reset):")
    for name, (fires, steps) in replay_steps(runs).items():
        print(f"  {name:58s} {steps:6d} steps {fires:5d} fires ({fires / max(1, steps):.4f}/step)")


if __name__ == "__main__":
    main()
