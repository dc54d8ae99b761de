"""When to hard-reset the reference policy (and the optimizer) during prolonged RL.

ProRL resets the reference policy when the KL to it spikes or validation degrades. These
functions make that decision automatically from metric histories. They are *pure*: plain
sequences of floats (and, for :func:`decide_reset`, the ``reset`` config section) in, a
:class:`TriggerResult` (``fired``, a human-readable ``cause``, and the ``statistic`` compared with
its ``threshold``) out; no models, no I/O, so the trainer can call them between steps and the
decisions are testable and reproducible from logged metrics.

Two families of rules: the statistical ones judge a change against its own measured noise at a
known false-alarm rate (:func:`val_degradation_test`, :func:`kl_spike_robust`,
:func:`entropy_collapse`; the statistics and why they were chosen are in
:mod:`prorl.algo.reset_stats`), and the fixed-threshold ones kept selectable
(:func:`val_degradation` with a margin, :func:`kl_spike` with a factor, :func:`val_plateau`).

NaN handling: non-finite values (NaN, +/-inf) in any history are *ignored*, i.e. dropped
before the rule is applied, as if that step/evaluation had not been logged. They neither
count towards ``min_history``/``patience`` nor break a run of consecutive evaluations.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from prorl.algo import reset_stats

if TYPE_CHECKING:
    from prorl.config import ResetConfig

TRIGGERS: tuple[str, ...] = ("scheduled", "kl_spike", "val_degradation", "val_plateau", "entropy_collapse")
"""All trigger names, in the default priority order used by :func:`decide_reset`."""


@dataclass(frozen=True)
class TriggerResult:
    """A reset decision: ``fired`` and a human-readable ``cause`` (why it fired, or why not).

    ``trigger`` names the rule that produced the result (e.g. ``"kl_spike"``); empty when
    the result summarises several rules that did not fire. ``statistic`` is what the rule compared
    with ``threshold`` (its meaning is in the rule's docstring and the cause), ``p_value`` the
    false-alarm probability of the observed statistic where the rule is a test (else ``None``).
    ``drop_evals``: for a validation test, the latest validations it judged (those after its
    baseline block); when it fires they are the drop, left out of later noise measurements.
    """

    fired: bool
    cause: str
    trigger: str = ""
    statistic: float | None = None
    threshold: float | None = None
    p_value: float | None = None
    drop_evals: int = 0

    def event_fields(self) -> dict[str, Any]:
        """The fields a ``reset`` event records (``trigger``, ``statistic``, ``threshold``, ``p_value``)."""
        return {"trigger": self.trigger, "statistic": _json_num(self.statistic),
                "threshold": _json_num(self.threshold), "p_value": _json_num(self.p_value)}


def _json_num(x: float | None) -> float | None:
    """A finite float for JSON, or ``None`` (JSON has no inf/NaN)."""
    return float(x) if x is not None and math.isfinite(float(x)) else None


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
    """The fixed-factor rule (``reset.kl_test=factor``): fire when the latest KL is far above its
    recent median. ``statistic`` is the latest KL, ``threshold`` ``max(factor * median, abs_floor)``.

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
    stat = dict(statistic=latest, threshold=max(threshold, abs_floor))  # fires iff latest > both
    if latest > threshold and latest > abs_floor:
        return TriggerResult(
            True,
            f"kl_spike: kl={_fmt(latest)} > {factor} x median {_fmt(med)} (window {len(previous)})",
            "kl_spike", **stat,
        )
    why = f"<= {factor} x median {_fmt(med)}" if latest <= threshold else f"<= floor {abs_floor:g}"
    return TriggerResult(False, f"kl_spike: kl={_fmt(latest)} {why} (window {len(previous)})", "kl_spike", **stat)


def val_degradation(
    val_history: Sequence[float], *, margin: float = 0.05, patience: int = 3
) -> TriggerResult:
    """The margin rule (``reset.val_test=margin``): fire when the last ``patience`` evaluations all
    lie more than ``margin`` below the best.

    ``margin`` is absolute (scores are in [0, 1]); the best is taken over the whole history
    given. Choose ``margin`` well above the evaluation noise (3-4 standard errors of the
    validation mean), otherwise a noisy flat curve will eventually trigger: the best is the
    maximum of noisy values, so a flat curve sits below it by about a standard error
    (:func:`val_degradation_test` accounts for that). ``statistic`` is the smallest drop among the
    last ``patience`` evaluations (``best - max(recent)``), ``threshold`` the margin.
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
    stat = dict(statistic=best - max(recent), threshold=margin)
    if all(v < best - margin for v in recent):
        shown = ", ".join(_fmt(v) for v in recent)
        return TriggerResult(
            True,
            f"val_degradation: last {patience} evals ({shown}) > {margin} below best {_fmt(best)}",
            "val_degradation", **stat,
        )
    return TriggerResult(
        False,
        f"val_degradation: latest {_fmt(vals[-1])} vs best {_fmt(best)} (margin {margin}, patience {patience})",
        "val_degradation", **stat,
    )


def val_plateau(
    val_history: Sequence[float], *, patience: int = 5, min_delta: float = 0.01
) -> TriggerResult:
    """Fire when none of the last ``patience`` evaluations beat the earlier best by ``min_delta``.

    Early-stopping semantics: ``best_before = max(history[:-patience])``; fires iff
    ``max(history[-patience:]) < best_before + min_delta``. Needs ``patience + 1`` values.
    A slow rise (gain per ``patience`` evaluations not clearly above ``min_delta`` plus
    the evaluation noise) is indistinguishable from a plateau and may fire. ``statistic`` is the
    gain ``best_recent - best_before`` (fires when it is below ``threshold = min_delta``).
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
    stat = dict(statistic=best_recent - best_before, threshold=min_delta)  # fires when the gain is below
    if best_recent < best_before + min_delta:
        return TriggerResult(
            True,
            f"val_plateau: best of last {patience} evals {_fmt(best_recent)} < "
            f"earlier best {_fmt(best_before)} + {min_delta}",
            "val_plateau", **stat,
        )
    return TriggerResult(
        False,
        f"val_plateau: improved to {_fmt(best_recent)} from {_fmt(best_before)} (min_delta {min_delta})",
        "val_plateau", **stat,
    )


def val_degradation_test(
    val_history: Sequence[float],
    counts: Sequence[float | None],
    *,
    false_alarm_rate: float = 0.01,
    window: int = 4,
    sources: int = 1,
    noise: str = "measured",
    dispersion: tuple[float, int | None] | None = None,
) -> TriggerResult:
    """The significance rule (``reset.val_test=significance``): fire when the latest validation, or
    the last ``window`` pooled, score significantly below the best earlier block of up to ``window``
    validations, at a per-look false-alarm rate ``false_alarm_rate`` shared by ``sources``
    data_sources (Bonferroni; the test and why: :mod:`prorl.algo.reset_stats`).

    ``noise`` (``reset.val_noise``): ``measured`` judges the drop against a look-to-look dispersion
    with a Student-t threshold: ``dispersion`` = ``(phi, df)`` when given (the trainer's: measured on
    each source's history across resets up to the baseline block and pooled over the sources,
    :func:`source_dispersions`), else this history's own up to its baseline block; ``sampling``
    against the samples' Bernoulli noise alone.

    ``counts[i]`` is the number of scored samples behind ``val_history[i]`` (prompts x samples per
    prompt, less infra errors). A validation whose score is not finite or whose count is unknown
    (``None``, e.g. logged by a checkpoint from before counts were kept) or not positive is left
    out. ``statistic`` is the largest z, ``threshold`` ``z_{alpha / (comparisons * sources)}``,
    ``p_value`` the Bonferroni-adjusted p-value (fires iff it is at most ``false_alarm_rate``).
    """
    if len(counts) != len(val_history):
        raise ValueError(f"{len(val_history)} validation scores but {len(counts)} sample counts")
    pairs, where = _valid_pairs(val_history, counts), _valid_index(val_history, counts)
    if len(pairs) < 2:
        return TriggerResult(False, f"val_degradation: history too short ({len(pairs)} < 2 validations with sample "
                                    "counts)", "val_degradation")
    scores, n = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    t = reset_stats.drop_test(scores * n, n, window=window, alpha=false_alarm_rate, sources=sources, noise=noise,
                              dispersion=dispersion)
    sc = t.scan
    z, p = float(t.z), float(t.p_value)
    first, last = int(sc.base_first) + 1, int(sc.base_last) + 1
    block = f"eval {first}" if first == last else f"evals {first}-{last}"
    recent, fired = int(sc.recent), bool(t.fired)
    what = "last eval" if recent == 1 else f"last {recent} evals pooled"
    plural = "s" if sources != 1 else ""
    text = (f"{what} ({len(pairs)} in all) {_fmt(float(sc.recent_rate))} (n={int(round(float(sc.recent_n)))}) "
            f"vs {block} {_fmt(float(sc.base_rate))} (n={int(round(float(sc.base_n)))}): "
            f"z={z:.3g} {'>' if fired else '<='} {t.threshold:.3g}, p={p:.2g} (alpha {false_alarm_rate:g}, "
            f"Bonferroni over {sc.tests} comparisons x {sources} source{plural}{_noise_note(t, noise)})")
    return TriggerResult(fired, f"val_degradation: {text}", "val_degradation", statistic=z,
                         threshold=float(t.threshold), p_value=p, drop_evals=len(val_history) - 1 - where[last - 1])


def _valid_index(scores: Sequence[float], counts: Sequence[float | None]) -> list[int]:
    """Positions of the validations with a finite score and a positive known count."""
    if len(counts) != len(scores):
        raise ValueError(f"{len(scores)} validation scores but {len(counts)} sample counts")
    return [i for i, (v, c) in enumerate(zip(scores, counts))
            if v is not None and c is not None and math.isfinite(float(v)) and math.isfinite(float(c)) and c > 0]


def _valid_pairs(scores: Sequence[float], counts: Sequence[float | None]) -> list[tuple[float, float]]:
    """(score, count) of the validations with a finite score and a positive known count."""
    return [(float(scores[i]), float(counts[i])) for i in _valid_index(scores, counts)]  # type: ignore[arg-type]


def _noise_note(t: reset_stats.DropTest, noise: str) -> str:
    if noise != "measured":
        return "; sampling noise only"
    if t.df is None:
        return f"; noise not measured yet: fewer than {reset_stats.MIN_CHANGES} changes"
    return f"; noise x{float(t.dispersion):.2g} sampling (measured), t with {t.df} df"


def source_dispersions(noise: Mapping[str, tuple[Sequence[float], Sequence[float | None]]],
                       judged: Mapping[str, tuple[Sequence[float], Sequence[float | None]]],
                       window: int) -> dict[str, tuple[float, int | None]]:
    """Each data_source's ``(phi, df)`` for the measured-noise test, pooled over the sources
    (:func:`prorl.algo.reset_stats.pool_dispersions`).

    ``noise``: each source's (scores, counts) whose look-to-look changes measure its noise (the whole
    history across resets, less what a rollback discarded or a fired drop covered); ``judged``: the
    (scores, counts) the test compares (since the last reset), whose latest validations are also
    ``noise``'s latest. The test's comparison (:func:`prorl.algo.reset_stats.drop_scan`, the same
    ``window``) is found first, and only the changes up to its baseline block and inside its recent
    window measure the noise (:func:`prorl.algo.reset_stats.noise_changes`): those between carry the
    drop, which must not widen its own yardstick."""
    names, phis, ks = list(noise), [], []
    for d in names:
        pairs = _valid_pairs(*noise[d])
        now = _valid_pairs(*judged[d]) if d in judged else []
        use = np.ones(max(len(pairs) - 1, 0), bool)
        if len(now) >= 2:  # the changes between the baseline block and the recent window carry the drop
            scan = reset_stats.drop_scan(np.array([v * c for v, c in now]), np.array([c for _, c in now]), window)
            after, recent = len(now) - 1 - int(scan.base_last), int(scan.recent)
            use = reset_stats.noise_changes(len(pairs), len(pairs) - 1 - after, recent) if len(pairs) > after \
                else np.zeros(max(len(pairs) - 1, 0), bool)
        if len(pairs) < 2:
            phis.append(1.0)
            ks.append(max(len(pairs) - 1, 0))
            continue
        phi, k = reset_stats.look_dispersion(np.array([v * c for v, c in pairs]), np.array([c for _, c in pairs]),
                                             use=use)
        phis.append(float(phi))
        ks.append(int(k))
    if not names:
        return {}
    used, df = reset_stats.pool_dispersions(np.array(phis), ks)
    return {d: (float(used[i]), df) for i, d in enumerate(names)}


def kl_spike_robust(
    kl_history: Sequence[float],
    *,
    window: int = 20,
    z: float = 6.0,
    min_history: int = 10,
    abs_floor: float = 1e-3,
    noise_window: int = 50,
) -> TriggerResult:
    """The robust rule (``reset.kl_test=robust_z``): fire when the latest KL lies more than ``z``
    robust standard deviations above the median of the previous ``window`` steps, and above
    ``abs_floor``.

    KL noise is multiplicative (its spread grows with its level, and a fresh reference makes it
    grow from zero), so the z is computed on ``asinh(kl / abs_floor)``: linear below the floor
    (where k1 estimates can be negative), logarithmic above it. The median of the window is the
    level. The step-to-step noise is ``1.4826 * MAD`` (floored at 0.05, a 5% step) of the *surprises*
    of the ``noise_window`` steps before the latest: each step's value less the median of its own
    previous ``window`` steps, the statistic the latest step is judged by, whose median (a steady
    trend's typical surprise) is added to the level; so a rising KL's trend is not a spike and a few
    calm steps do not make the yardstick narrow (the MAD of 10 values alone fired on a healthy run's
    ordinary step, z 7 at 1.46x its median). ``noise_window=0``: the
    window's own MAD. Robust to earlier spikes either way. Needs ``min_history`` finite values
    before the latest one. ``statistic`` is the robust z, ``threshold`` ``z``.
    """
    if window < 1 or min_history < 1 or noise_window < 0:
        raise ValueError("window and min_history must be >= 1, noise_window >= 0")
    vals = _finite(kl_history)
    if len(vals) < 2 or len(vals) - 1 < min_history:
        return TriggerResult(
            False, f"kl_spike: history too short ({max(len(vals) - 1, 0)} < {min_history})", "kl_spike"
        )
    unit = abs_floor if abs_floor > 0 else 1e-6
    a = np.arcsinh(np.asarray(vals) / unit)
    latest, previous = vals[-1], vals[-1 - window : -1]
    med, scale = reset_stats.robust_location_scale(a[-1 - window : -1])
    # each earlier step judged against at least 3 steps before it (fewer make a median too noisy)
    surprises = [a[t] - np.median(a[max(0, t - window) : t])
                 for t in range(max(3, len(a) - 1 - noise_window), len(a) - 1)] if noise_window else []
    measured = len(surprises) >= 2
    if measured:  # judged against the typical surprise: a steady trend's is not zero
        typical, scale = reset_stats.robust_location_scale(surprises)
        med += typical
    zval = (float(a[-1]) - med) / scale
    fired = zval > z and latest > abs_floor
    why = f"> {z:g}" if fired else (f"<= {z:g}" if zval <= z else f"but kl <= floor {abs_floor:g}")
    noise = f", noise of {len(surprises)} steps" if measured else ""
    cause = (f"kl_spike: kl={_fmt(latest)} at robust z={zval:.3g} {why} "
             f"(median {_fmt(statistics.median(previous))}, window {len(previous)}{noise})")
    return TriggerResult(fired, cause, "kl_spike", statistic=zval, threshold=z)


def entropy_collapse(
    entropy_history: Sequence[float],
    *,
    window: int = 20,
    recent: int = 5,
    z: float = 5.0,
    drop: float = 0.5,
) -> TriggerResult:
    """Fire when the policy's entropy has collapsed *abruptly*: the median of the last ``recent``
    steps lies below ``(1 - drop)`` times the median of the ``window`` steps before them, and that
    fall is more than ``z`` standard errors of the noise measured in the earlier window.

    Entropy falls slowly in every healthy RL run, so a significance test alone would fire on
    that; the relative ``drop`` within ``window + recent`` steps is what makes it a collapse, and
    the test keeps a noisy entropy from firing on sampling noise. On log entropy: the level is the
    median, the step noise ``1.4826 * MAD`` of the earlier window (floored at 0.05), and the
    standard error of a difference of medians ``sqrt(pi/2) * sd * sqrt(1/window + 1/recent)``.
    ``statistic`` is that z, ``threshold`` ``z``.
    """
    if window < 1 or recent < 1:
        raise ValueError("window and recent must be >= 1")
    vals = _finite(entropy_history)
    if len(vals) < window + recent:
        return TriggerResult(False, f"entropy_collapse: history too short ({len(vals)} < {window + recent})",
                             "entropy_collapse")
    logs = np.log(np.maximum(np.asarray(vals[-(window + recent):]), 1e-8))
    med_b, scale = reset_stats.robust_location_scale(logs[:window])
    med_r = float(np.median(logs[window:]))
    zval = (med_b - med_r) / (scale * math.sqrt(math.pi / 2 * (1 / window + 1 / recent)))
    ratio = math.exp(med_r - med_b)
    fired = zval > z and ratio < 1 - drop
    cause = (f"entropy_collapse: median of last {recent} steps {_fmt(math.exp(med_r))} = {ratio:.2f} x the "
             f"{window} before ({_fmt(math.exp(med_b))}; collapse below {1 - drop:.2g}), robust z={zval:.3g} "
             f"{'>' if zval > z else '<='} {z:g}")
    return TriggerResult(fired, cause, "entropy_collapse", statistic=zval, threshold=z)


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
    val_counts: Mapping[str, Sequence[float | None]] | None = None,
    entropy_history: Sequence[float] = (),
    val_noise_histories: Mapping[str, tuple[Sequence[float], Sequence[float | None]]] | None = None,
) -> TriggerResult:
    """Combine the triggers ``policy`` (the ``reset`` config section) asks for: return the first
    one that fires. ``scheduled`` (``policy.steps``) comes first; with ``policy.auto`` the triggers in
    ``policy.triggers`` follow, in that order, each with its thresholds from ``policy``.

    - ``kl_history`` / ``entropy_history``: one value per training step (``actor/kl_loss``,
      ``actor/entropy``), judged by :func:`kl_spike_robust` (``policy.kl_test=robust_z``) or
      :func:`kl_spike` (``factor``), and :func:`entropy_collapse`. When ``steps_since_last_reset``
      is given only the last that many values are used, since the KL to a fresh reference
      restarts from zero and older values are not comparable.
    - ``val_histories``: per-domain validation scores (one per evaluation), checked in mapping
      order by :func:`val_degradation_test` (``policy.val_test=significance``, with ``val_counts``:
      the scored samples behind each score, aligned with ``val_histories``; Bonferroni over the
      domains) or :func:`val_degradation` (``margin``); ``blended_val_history`` is checked by
      :func:`val_plateau`. When ``evals_since_last_reset`` is given only the last that many
      evaluations are used (so "best" means best since the last reset, and a reset is not
      re-fired just because recovery takes longer than the cooldown).
    - ``val_noise_histories``: per domain (scores, counts) whose look-to-look changes measure the
      noise of ``reset.val_noise=measured`` (:func:`source_dispersions`; the trainer's leave out what a
      rollback discarded and the drops that fired: ``RunState.noise_histories``); default: the
      ``val_histories`` as given, before the cut at the last reset.
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
    val_counts = {d: list((val_counts or {}).get(d) or [None] * len(h)) for d, h in val_histories.items()}

    in_cooldown = steps_since_last_reset is not None and steps_since_last_reset < p.min_steps_between_resets
    if steps_since_last_reset is not None:
        k = max(int(steps_since_last_reset), 0)
        kl_history = list(kl_history)[-k:] if k else []
        entropy_history = list(entropy_history)[-k:] if k else []
    whole = dict(val_noise_histories) if val_noise_histories is not None else \
        {d: (list(h), list(val_counts[d])) for d, h in val_histories.items()}  # the noise, across resets
    if evals_since_last_reset is not None:
        n = max(int(evals_since_last_reset), 0)
        val_histories = {d: (list(h)[-n:] if n else []) for d, h in val_histories.items()}
        val_counts = {d: (c[-n:] if n else []) for d, c in val_counts.items()}
        blended_val_history = list(blended_val_history)[-n:] if n else []

    notes: list[str] = []
    for name in triggers:
        if name != "scheduled" and in_cooldown:
            continue
        results = _run_trigger(name, p, step=step, kl_history=kl_history, val_histories=val_histories,
                               val_counts=val_counts, blended_val_history=blended_val_history,
                               entropy_history=entropy_history, whole_val=whole)
        for r in results:
            if r.fired:
                return r
            notes.append(r.cause)
    if in_cooldown:
        notes.insert(
            0, f"cooldown: {steps_since_last_reset} steps since last reset < {p.min_steps_between_resets}"
        )
    return TriggerResult(False, "no reset: " + ("; ".join(notes) if notes else "no trigger has data"))


def _run_trigger(name: str, p: ResetConfig, *, step: int, kl_history: Sequence[float],
                 val_histories: Mapping[str, Sequence[float]], val_counts: Mapping[str, Sequence[float | None]],
                 blended_val_history: Sequence[float], entropy_history: Sequence[float],
                 whole_val: Mapping[str, tuple[list, list]] | None = None) -> list[TriggerResult]:
    """The results of one trigger ``name`` under policy ``p`` (empty when it has no data)."""
    if name == "scheduled":
        return [scheduled(step, p.steps)] if p.steps else []
    if name == "kl_spike":
        if not len(kl_history) or not _finite(kl_history[-1:]):  # no update this step: nothing new to judge
            return []
        if p.kl_test == "factor":
            return [kl_spike(kl_history, window=p.kl_window, factor=p.kl_factor, min_history=p.kl_min_history,
                             abs_floor=p.kl_abs_floor)]
        return [kl_spike_robust(kl_history, window=p.kl_window, z=p.kl_z, min_history=p.kl_min_history,
                                abs_floor=p.kl_abs_floor, noise_window=p.kl_noise_window)]
    if name == "val_degradation":
        results = []
        judged = {d: (h, val_counts[d]) for d, h in val_histories.items()}
        pooled = source_dispersions(judged if whole_val is None else whole_val, judged, p.val_window) \
            if p.val_test != "margin" and p.val_noise == "measured" else {}
        for domain, hist in val_histories.items():
            if p.val_test == "margin":
                r = val_degradation(hist, margin=p.val_margin, patience=p.val_patience)
            else:
                r = val_degradation_test(hist, val_counts[domain], false_alarm_rate=p.false_alarm_rate,
                                         window=p.val_window, sources=len(val_histories), noise=p.val_noise,
                                         dispersion=pooled.get(domain))
            cause = r.cause.replace("val_degradation:", f"val_degradation[{domain}]:", 1)
            results.append(TriggerResult(r.fired, cause, r.trigger, r.statistic, r.threshold, r.p_value, r.drop_evals))
        return results
    if name == "entropy_collapse":
        return [entropy_collapse(entropy_history, window=p.entropy_window, recent=p.entropy_recent, z=p.entropy_z,
                                 drop=p.entropy_drop)] if _finite(entropy_history[-1:]) else []
    return [val_plateau(blended_val_history, patience=p.plateau_patience, min_delta=p.plateau_min_delta)] \
        if len(blended_val_history) else []
