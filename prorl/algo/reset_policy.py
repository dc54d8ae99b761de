"""When to hard-reset the reference policy (and the optimizer) during prolonged RL.

ProRL resets the reference policy when the KL to it spikes or validation degrades. These
functions make that decision automatically from metric histories. They are *pure*: plain
sequences of floats (and, for :func:`decide_reset`, the ``reset`` config section) in, a
:class:`TriggerResult` (``fired`` plus a human-readable ``cause``) out; no models, no I/O, so the
trainer can call them between steps and the decisions are testable and reproducible from logged
metrics.

NaN handling: non-finite values (NaN, +/-inf) in any history are *ignored*, i.e. dropped
before the rule is applied, as if that step/evaluation had not been logged. They neither
count towards ``min_history``/``patience`` nor break a run of consecutive evaluations.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:
    from prorl.config import ResetConfig

TRIGGERS: tuple[str, ...] = ("scheduled", "kl_spike", "val_degradation", "val_plateau")
"""All trigger names, in the default priority order used by :func:`decide_reset`."""


@dataclass(frozen=True)
class TriggerResult:
    """A reset decision: ``fired`` and a human-readable ``cause`` (why it fired, or why not).

    ``trigger`` names the rule that produced the result (e.g. ``"kl_spike"``); empty when
    the result summarises several rules that did not fire.
    """

    fired: bool
    cause: str
    trigger: str = ""


def _finite(values: Sequence[float]) -> list[float]:
    """The finite values of ``values`` as floats (NaN/inf and ``None`` dropped)."""
    out: list[float] = []
    for v in values:
        if v is None:
            continue
        f = float(v)
        if math.isfinite(f):
            out.append(f)
    return out


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def kl_spike(
    kl_history: Sequence[float],
    *,
    window: int = 20,
    factor: float = 5.0,
    min_history: int = 10,
    abs_floor: float = 1e-3,
) -> TriggerResult:
    """Fire when the latest KL is far above its recent median.

    Fires iff ``latest > factor * median(previous window values)`` *and* ``latest > abs_floor``
    (so that tiny KLs, e.g. right after a reset, never trigger). The median is clamped at 0
    (k1 KL estimates can be negative). Needs at least ``min_history`` finite values before
    the latest one; fewer never fires. Right after a reset the KL is near zero and its
    relative noise is large, so set ``abs_floor`` above the early-step noise level.
    """
    if window < 1 or min_history < 1:
        raise ValueError("window and min_history must be >= 1")
    vals = _finite(kl_history)
    if len(vals) < 2 or len(vals) - 1 < min_history:
        return TriggerResult(
            False, f"kl_spike: history too short ({max(len(vals) - 1, 0)} < {min_history})", "kl_spike"
        )
    latest = vals[-1]
    previous = vals[-1 - window : -1]
    med = statistics.median(previous)
    threshold = factor * max(med, 0.0)
    if latest > threshold and latest > abs_floor:
        return TriggerResult(
            True,
            f"kl_spike: kl={_fmt(latest)} > {factor} x median {_fmt(med)} (window {len(previous)})",
            "kl_spike",
        )
    why = f"<= {factor} x median {_fmt(med)}" if latest <= threshold else f"<= floor {abs_floor:g}"
    return TriggerResult(False, f"kl_spike: kl={_fmt(latest)} {why} (window {len(previous)})", "kl_spike")


def val_degradation(
    val_history: Sequence[float], *, margin: float = 0.05, patience: int = 3
) -> TriggerResult:
    """Fire when the last ``patience`` evaluations all lie more than ``margin`` below the best.

    ``margin`` is absolute (scores are in [0, 1]); the best is taken over the whole history
    given. Choose ``margin`` well above the evaluation noise (3-4 standard errors of the
    validation mean), otherwise a noisy flat curve will eventually trigger.
    """
    if patience < 1:
        raise ValueError("patience must be >= 1")
    vals = _finite(val_history)
    if len(vals) < patience + 1:
        return TriggerResult(
            False, f"val_degradation: history too short ({len(vals)} < {patience + 1})", "val_degradation"
        )
    best = max(vals)
    recent = vals[-patience:]
    if all(v < best - margin for v in recent):
        shown = ", ".join(_fmt(v) for v in recent)
        return TriggerResult(
            True,
            f"val_degradation: last {patience} evals ({shown}) > {margin} below best {_fmt(best)}",
            "val_degradation",
        )
    return TriggerResult(
        False,
        f"val_degradation: latest {_fmt(vals[-1])} vs best {_fmt(best)} (margin {margin}, patience {patience})",
        "val_degradation",
    )


def val_plateau(
    val_history: Sequence[float], *, patience: int = 5, min_delta: float = 0.01
) -> TriggerResult:
    """Fire when none of the last ``patience`` evaluations beat the earlier best by ``min_delta``.

    Early-stopping semantics: ``best_before = max(history[:-patience])``; fires iff
    ``max(history[-patience:]) < best_before + min_delta``. Needs ``patience + 1`` values.
    A slow rise (gain per ``patience`` evaluations not clearly above ``min_delta`` plus
    the evaluation noise) is indistinguishable from a plateau and may fire.
    """
    if patience < 1:
        raise ValueError("patience must be >= 1")
    vals = _finite(val_history)
    if len(vals) < patience + 1:
        return TriggerResult(
            False, f"val_plateau: history too short ({len(vals)} < {patience + 1})", "val_plateau"
        )
    best_before = max(vals[:-patience])
    best_recent = max(vals[-patience:])
    if best_recent < best_before + min_delta:
        return TriggerResult(
            True,
            f"val_plateau: best of last {patience} evals {_fmt(best_recent)} < "
            f"earlier best {_fmt(best_before)} + {min_delta}",
            "val_plateau",
        )
    return TriggerResult(
        False,
        f"val_plateau: improved to {_fmt(best_recent)} from {_fmt(best_before)} (min_delta {min_delta})",
        "val_plateau",
    )


def scheduled(step: int, reset_steps: Sequence[int]) -> TriggerResult:
    """Fire when ``step`` is one of the user's explicit ``reset_steps``."""
    if int(step) in {int(s) for s in reset_steps}:
        return TriggerResult(True, f"scheduled: step {int(step)} is in reset_steps", "scheduled")
    return TriggerResult(False, f"scheduled: step {int(step)} not in reset_steps", "scheduled")


def decide_reset(
    policy: ResetConfig,
    *,
    step: int,
    kl_history: Sequence[float] = (),
    val_histories: Mapping[str, Sequence[float]] | None = None,
    blended_val_history: Sequence[float] = (),
    steps_since_last_reset: int | None = None,
    evals_since_last_reset: int | None = None,
) -> TriggerResult:
    """Combine the triggers ``policy`` (the ``reset`` config section) asks for: return the first
    one that fires. ``scheduled`` (``policy.steps``) comes first; with ``policy.auto`` the triggers in
    ``policy.triggers`` follow, in that order, each with its thresholds from ``policy``.

    - ``kl_history``: one KL value per training step (e.g. ``actor/kl_loss``). When
      ``steps_since_last_reset`` is given only the last that many values are used, since
      the KL to a fresh reference restarts from zero and older values are not comparable.
    - ``val_histories``: per-domain validation scores (one per evaluation), checked by
      :func:`val_degradation` in mapping order; ``blended_val_history`` is checked by
      :func:`val_plateau`. When ``evals_since_last_reset`` is given only the last that many
      evaluations are used (so "best" means best since the last reset, and a reset is not
      re-fired just because recovery takes longer than the cooldown).
    - Cooldown: while ``steps_since_last_reset < policy.min_steps_between_resets`` only the
      ``scheduled`` trigger can fire (explicit user schedules always win).
      ``steps_since_last_reset=None`` means no reset has happened yet: no cooldown, no slicing.
    - Trigger names are those in :data:`TRIGGERS`; an unknown one is a ``ValueError``.
    """
    p = policy
    triggers = ("scheduled", *p.triggers) if p.auto else ("scheduled",)
    unknown = [t for t in triggers if t not in TRIGGERS]
    if unknown:
        raise ValueError(f"unknown reset trigger(s) {unknown}; known: {list(TRIGGERS)}")
    val_histories = val_histories or {}

    in_cooldown = steps_since_last_reset is not None and steps_since_last_reset < p.min_steps_between_resets
    if steps_since_last_reset is not None:
        kl_history = list(kl_history)[-steps_since_last_reset:] if steps_since_last_reset > 0 else []
    if evals_since_last_reset is not None:
        n = max(int(evals_since_last_reset), 0)
        val_histories = {d: (list(h)[-n:] if n else []) for d, h in val_histories.items()}
        blended_val_history = list(blended_val_history)[-n:] if n else []

    notes: list[str] = []
    for name in triggers:
        if name != "scheduled" and in_cooldown:
            continue
        if name == "scheduled":
            results = [scheduled(step, p.steps)] if p.steps else []
        elif name == "kl_spike":
            results = [
                kl_spike(
                    kl_history,
                    window=p.kl_window,
                    factor=p.kl_factor,
                    min_history=p.kl_min_history,
                    abs_floor=p.kl_abs_floor,
                )
            ] if len(kl_history) else []
        elif name == "val_degradation":
            results = []
            for domain, hist in val_histories.items():
                r = val_degradation(hist, margin=p.val_margin, patience=p.val_patience)
                cause = r.cause.replace("val_degradation:", f"val_degradation[{domain}]:", 1)
                results.append(TriggerResult(r.fired, cause, r.trigger))
        else:  # val_plateau
            results = [
                val_plateau(blended_val_history, patience=p.plateau_patience, min_delta=p.plateau_min_delta)
            ] if len(blended_val_history) else []
        for r in results:
            if r.fired:
                return r
            notes.append(r.cause)
    if in_cooldown:
        notes.insert(
            0, f"cooldown: {steps_since_last_reset} steps since last reset < {p.min_steps_between_resets}"
        )
    return TriggerResult(False, "no reset: " + ("; ".join(notes) if notes else "no trigger has data"))
