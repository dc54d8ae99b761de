"""Reset triggers on synthetic metric histories: what must fire and what must not."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from prorl.algo import reset_policy
from prorl.algo.reset_policy import (
    TRIGGERS,
    TriggerResult,
    kl_spike,
    scheduled,
    val_degradation,
    val_plateau,
)
from prorl.config import ResetConfig

NAN = float("nan")


def _noisy(trend: np.ndarray, sigma: float, seed: int) -> list[float]:
    return list(trend + np.random.default_rng(seed).normal(0.0, sigma, size=len(trend)))


def _fires_on_any_prefix(fn, hist, start: int = 1, **kw) -> list[int]:
    """Indices i where fn(hist[:i]) fires, as a trainer calling every step would see."""
    return [i for i in range(start, len(hist) + 1) if fn(hist[:i], **kw).fired]


# ---------------------------------------------------------------- kl_spike
def test_kl_spike_fires_on_spike_with_readable_cause():
    hist = [0.03] * 20 + [0.42]
    r = kl_spike(hist)
    assert isinstance(r, TriggerResult) and r.fired and r.trigger == "kl_spike"
    assert r.cause == "kl_spike: kl=0.42 > 5.0 x median 0.03 (window 20)"


def test_kl_spike_threshold_is_factor_times_median_of_previous_window():
    base = [0.01] * 30
    assert not kl_spike(base + [0.0499]).fired
    assert kl_spike(base + [0.0501]).fired
    # only the previous `window` values count: old large values are out of the window
    hist = [1.0] * 30 + [0.01] * 20 + [0.06]
    assert kl_spike(hist, window=20).fired
    assert not kl_spike(hist, window=40).fired  # median over a window reaching into the 1.0s
    # the median (not the mean) is robust to an earlier outlier inside the window
    assert kl_spike([0.01] * 19 + [1.0] + [0.06]).fired


def test_kl_spike_abs_floor_blocks_tiny_kls():
    hist = [1e-6] * 20 + [5e-4]  # 500x the median but still tiny
    assert not kl_spike(hist).fired
    assert "floor" in kl_spike(hist).cause
    assert kl_spike(hist, abs_floor=1e-4).fired


def test_kl_spike_too_short_history_never_fires():
    r = kl_spike([0.01] * 5 + [10.0])
    assert not r.fired and "too short" in r.cause
    assert not kl_spike([]).fired
    assert not kl_spike([10.0]).fired
    assert kl_spike([0.01] * 10 + [10.0]).fired  # exactly min_history previous values


def test_kl_spike_ignores_nan():
    hist = [0.02, NAN] * 10 + [NAN, 0.5, NAN]
    r = kl_spike(hist)
    assert r.fired, r.cause  # latest finite value 0.5 vs median of 10 finite values 0.02
    assert "median 0.02" in r.cause
    # NaNs do not count towards min_history
    assert not kl_spike([NAN] * 30 + [0.02] * 5 + [0.5]).fired
    assert not kl_spike([NAN] * 30).fired


def test_kl_spike_negative_median_is_clamped():
    hist = [-0.001, 0.0005] * 10 + [0.01]
    assert kl_spike(hist).fired


@pytest.mark.parametrize("seed", range(5))
def test_kl_noise_never_triggers(seed):
    steps = np.arange(300)
    flat = np.abs(_noisy(np.full(300, 0.02), 0.004, seed))  # 20% relative noise
    # KL to a fresh reference growing from ~0 with 30% relative (Gaussian) noise
    trend = 2e-4 + 1e-4 * steps
    rising = trend * np.abs(_noisy(np.ones(300), 0.3, seed + 100))
    assert _fires_on_any_prefix(kl_spike, list(flat)) == []
    assert _fires_on_any_prefix(kl_spike, list(rising)) == []
    # ...but a real spike on top of the same noise is caught at its step
    spiky = list(flat)
    spiky[200] = 0.5
    assert _fires_on_any_prefix(kl_spike, spiky) == [201]


# ---------------------------------------------------------------- val_degradation
def test_val_degradation_fires_after_patience_consecutive_evals():
    hist = [0.40, 0.50, 0.60, 0.52]
    assert not val_degradation(hist).fired
    assert not val_degradation(hist + [0.50]).fired
    r = val_degradation(hist + [0.50, 0.54])
    assert r.fired and r.trigger == "val_degradation"
    assert "best 0.6" in r.cause and "last 3 evals" in r.cause
    # a recovery within the window resets the count
    assert not val_degradation(hist + [0.50, 0.58]).fired
    # exactly margin below does not count as "more than margin below"
    assert not val_degradation([0.5, 0.25, 0.25, 0.25], margin=0.25).fired


def test_val_degradation_slow_drift():
    drift = list(np.linspace(0.6, 0.44, 41))  # -0.004 per eval
    fired = _fires_on_any_prefix(val_degradation, drift)
    # values < 0.55 from index 13 on; the last 3 all qualify first in the prefix of length 16
    assert fired and fired[0] == 16
    assert val_degradation(drift, margin=0.25).fired is False


def test_val_degradation_short_history_and_nan():
    assert "too short" in val_degradation([0.9, 0.1, 0.1]).cause
    assert not val_degradation([0.9, 0.1, 0.1]).fired
    # NaN evaluations are skipped, not counted, and don't break the consecutive run
    assert val_degradation([0.9, 0.1, NAN, 0.1, NAN, 0.1]).fired
    assert not val_degradation([0.9, NAN, NAN, 0.1, 0.1]).fired


@pytest.mark.parametrize("seed", range(5))
def test_val_noise_never_triggers_degradation(seed):
    n = 200
    flat = _noisy(np.full(n, 0.5), 0.011, seed)  # ~std error of a 2000-prompt eval
    rising = _noisy(np.linspace(0.3, 0.7, n), 0.011, seed + 50)
    assert _fires_on_any_prefix(val_degradation, flat) == []
    assert _fires_on_any_prefix(val_degradation, rising) == []


# ---------------------------------------------------------------- val_plateau
def test_val_plateau_basic():
    rising = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert not val_plateau(rising).fired
    flat = [0.1, 0.5, 0.5, 0.505, 0.5, 0.509, 0.5]
    r = val_plateau(flat)
    assert r.fired and r.trigger == "val_plateau" and "earlier best 0.5" in r.cause
    assert not val_plateau(flat[:-1] + [0.511]).fired  # improvement by >= min_delta
    assert not val_plateau([0.5] * 5).fired  # needs patience + 1 values
    assert val_plateau([0.5, NAN, 0.5, NAN, 0.5, 0.5, 0.5, 0.5]).fired  # 6 finite values


@pytest.mark.parametrize("seed", range(5))
def test_val_noise_on_rising_trend_does_not_trigger_plateau(seed):
    # +0.01 per eval: over `patience`=5 evals the trend gains 0.05, well above min_delta + noise
    hist = _noisy(np.linspace(0.2, 0.8, 60), 0.005, seed)
    assert _fires_on_any_prefix(val_plateau, hist) == []
    # a noisy flat curve is a plateau and does trigger
    flat = _noisy(np.full(60, 0.5), 0.003, seed)
    assert _fires_on_any_prefix(val_plateau, flat)


# ---------------------------------------------------------------- scheduled
def test_scheduled():
    assert scheduled(500, [100, 500]).fired
    assert "step 500" in scheduled(500, [100, 500]).cause
    assert not scheduled(501, [100, 500]).fired
    assert not scheduled(0, []).fired


# ---------------------------------------------------------------- decide_reset
_POLICY_KEYS = {f.name for f in dataclasses.fields(ResetConfig)} - {"auto", "triggers", "steps"}
CLASSIC_TRIGGERS = ("scheduled", "kl_spike", "val_degradation", "val_plateau")


def decide_reset(*, triggers=CLASSIC_TRIGGERS, reset_steps=(), **kw):
    """The real decide_reset with its policy (a ``reset`` config section) built from loose keywords;
    the fixed-threshold rules (kl_test=factor, val_test=margin) unless the keywords say otherwise."""
    policy = ResetConfig(auto=True, triggers=[t for t in triggers if t != "scheduled"], steps=list(reset_steps),
                         **{"kl_test": "factor", "val_test": "margin",
                            **{k: kw.pop(k) for k in list(kw) if k in _POLICY_KEYS}})
    return reset_policy.decide_reset(policy, **kw)


def test_decide_reset_reads_the_reset_section():
    """Without reset.auto only the schedule fires; the thresholds come from the section."""
    kw = dict(step=300, kl_history=[0.02] * 100 + [0.5])
    assert not reset_policy.decide_reset(ResetConfig(auto=False), **kw).fired
    assert reset_policy.decide_reset(ResetConfig(auto=False, steps=[300]), **kw).trigger == "scheduled"
    r = reset_policy.decide_reset(ResetConfig(auto=True), **kw)
    assert r.trigger == "kl_spike" and "robust z" in r.cause and r.threshold == 6.0  # the default is robust_z
    assert not reset_policy.decide_reset(ResetConfig(auto=True, kl_z=100.0), **kw).fired
    assert reset_policy.decide_reset(ResetConfig(auto=True, kl_z=100.0, kl_test="factor"), **kw).fired
    assert not reset_policy.decide_reset(ResetConfig(auto=True, kl_test="factor", kl_factor=100.0), **kw).fired


def _kw(**over):
    kw = dict(
        step=300,
        kl_history=[0.02] * 100,
        val_histories={"math": [0.5, 0.52, 0.53], "code": [0.3, 0.31, 0.32]},
        blended_val_history=[0.4, 0.42, 0.43],
        steps_since_last_reset=None,
    )
    kw.update(over)
    return kw


def test_decide_reset_nothing_fires_on_healthy_run():
    r = decide_reset(**_kw())
    assert not r.fired
    assert r.cause.startswith("no reset:") and "kl_spike" in r.cause


def test_decide_reset_returns_first_firing_cause_in_order():
    kw = _kw(
        kl_history=[0.02] * 100 + [0.5],
        val_histories={"math": [0.5, 0.6, 0.5, 0.5, 0.5], "code": [0.3, 0.31]},
        blended_val_history=[0.4] * 10,
    )
    assert decide_reset(**kw).cause.startswith("kl_spike:")
    r = decide_reset(**kw, triggers=("val_degradation", "kl_spike"))
    assert r.fired and r.cause.startswith("val_degradation[math]:")
    assert decide_reset(**kw, triggers=("val_plateau",)).cause.startswith("val_plateau:")
    assert decide_reset(**kw, reset_steps=[300]).cause.startswith("scheduled:")
    assert not decide_reset(**kw, triggers=()).fired
    with pytest.raises(ValueError):
        decide_reset(**kw, triggers=("bogus",))
    assert set(TRIGGERS) == {"scheduled", "kl_spike", "val_degradation", "val_plateau", "entropy_collapse"}


def test_decide_reset_cooldown_blocks_repeat_but_not_schedule():
    spike = [0.02] * 100 + [0.5]
    r = decide_reset(**_kw(kl_history=spike, steps_since_last_reset=10), min_steps_between_resets=50)
    assert not r.fired and "cooldown: 10 steps since last reset < 50" in r.cause
    r = decide_reset(**_kw(kl_history=spike, steps_since_last_reset=10, reset_steps=[300]))
    assert r.fired and r.trigger == "scheduled"
    r = decide_reset(**_kw(kl_history=spike, steps_since_last_reset=60), min_steps_between_resets=50)
    assert r.fired and r.trigger == "kl_spike"


def test_decide_reset_simulated_run_resets_once_per_event():
    """A trainer loop: one KL spike event lasting several steps causes exactly one reset."""
    kl = list(np.abs(_noisy(np.full(400, 0.02), 0.003, 7)))
    for s in range(150, 156):
        kl[s] = 0.6  # a spike that persists 6 steps
    resets, last = [], None
    for step in range(1, len(kl) + 1):
        since = None if last is None else step - last
        r = decide_reset(step=step, kl_history=kl[:step], steps_since_last_reset=since,
                         min_steps_between_resets=50)
        if r.fired:
            resets.append(step)
            last = step
    assert resets == [151]


def test_decide_reset_slices_kl_and_val_since_last_reset():
    # pre-reset KL was large; after the reset it restarts near zero, a jump to 0.1 is a spike
    kl = [1.0] * 50 + [0.01] * 30 + [0.1]
    assert decide_reset(step=81, kl_history=kl).fired  # a 20-step window sees only post-reset values
    assert not decide_reset(step=81, kl_history=kl, kl_window=60).fired  # median polluted by 1.0s
    assert decide_reset(step=81, kl_history=kl, kl_window=60, steps_since_last_reset=31,
                        min_steps_between_resets=20).fired
    # too few post-reset steps: min_history applies to the sliced history
    assert not decide_reset(step=55, kl_history=[1.0] * 50 + [0.01] * 4 + [0.5],
                            steps_since_last_reset=5, min_steps_between_resets=0).fired
    # validation "best" is best since the reset when evals_since_last_reset is given
    val = {"math": [0.8, 0.5, 0.5, 0.5, 0.5]}
    assert decide_reset(step=1, val_histories=val).fired
    assert not decide_reset(step=1, val_histories=val, evals_since_last_reset=4).fired
    assert not decide_reset(step=1, val_histories=val, evals_since_last_reset=0).fired


def test_decide_reset_handles_nan_everywhere():
    r = decide_reset(step=5, kl_history=[NAN] * 40, val_histories={"math": [NAN] * 10},
                     blended_val_history=[NAN] * 10)
    assert not r.fired and "too short" in r.cause


def test_steps_without_an_update_keep_the_window_since_a_reset_in_steps():
    """The trainer logs NaN for a step without an update, so the history holds one entry per step and
    the window since the last reset never reaches back before it; a step without a new KL judges nothing."""
    p = dataclasses.replace(ResetConfig(), auto=True, triggers=["kl_spike"], kl_window=5, kl_min_history=3,
                            min_steps_between_resets=0)
    before_reset = [0.01] * 10 + [5.0]  # a spike, judged (and reset on) before the reset
    after = [0.01, 0.011, 0.009, 0.01, float("nan"), float("nan")]  # 6 steps since the reset, 2 without an update
    d = reset_policy.decide_reset(p, step=17, kl_history=before_reset + after, steps_since_last_reset=6)
    assert not d.fired and "kl_spike" not in d.cause, d.cause  # the latest is NaN: nothing new to judge
    d = reset_policy.decide_reset(p, step=18, kl_history=before_reset + after + [0.0105], steps_since_last_reset=7)
    assert not d.fired, d.cause  # the pre-reset spike is outside the window: a calm history, a calm value
    d = reset_policy.decide_reset(p, step=18, kl_history=before_reset + after + [0.5], steps_since_last_reset=7)
    assert d.fired and d.trigger == "kl_spike", d
