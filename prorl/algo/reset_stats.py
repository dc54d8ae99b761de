"""The statistics behind the reset triggers: a degradation test on validation pass rates with a
known false-alarm rate, and robust z-scores for step metrics (KL, entropy).

Pure numerics (numpy arrays in, numbers out); :mod:`prorl.algo.reset_policy` turns them into
:class:`~prorl.algo.reset_policy.TriggerResult` decisions. The degradation test is vectorised over
leading axes, so the false-alarm rate can be measured on thousands of simulated runs at once with
the same code the trainer calls.

Validation degradation: why this test
-------------------------------------
A validation of one data_source is ``N`` scored samples (prompts x samples per prompt) with mean
score ``p``. The margin rule (drop > ``val_margin`` below the best for ``val_patience`` looks)
ignores ``N`` and compares against the *maximum* of noisy values, so a flat curve eventually fires.
Here a degradation is declared only when a one-sided test says so at a per-look false-alarm rate
``alpha`` (``reset.false_alarm_rate``):

* **Pooling.** Two recent windows of the ``T`` validations so far: the latest validation alone (a
  collapse is seen at once) and the last ``window`` pooled (a moderate drop: 4 looks of 64 samples
  have half the standard error of one); each is compared with every earlier block of up to
  ``window`` consecutive validations that ends before it ("the best" is whichever block scores
  highest). Pooling only the recent window would hide an early collapse in a short history,
  pooling every length from 1 to ``window`` costs more in multiplicity than it gains.
* **Test.** A one-sided two-proportion z-test (pooled variance, continuity-corrected) of "the
  baseline block's mean exceeds the recent window's". The z-test rather than Fisher's exact test
  because scores may be fractional and the counts are large (64+ samples per look); the continuity
  correction keeps it conservative at the small tail probabilities Bonferroni asks for.
* **Correlated samples.** The samples of one prompt are correlated, but the trainer validates the
  *same* prompts at every look, so prompt difficulty is a fixed effect that cancels in the
  difference between two looks. What is left is each prompt's own sampling noise, of variance
  ``mean_i p_i (1 - p_i) / n`` per look, which by the law of total variance is at most the
  Bernoulli variance ``p (1 - p) / n`` used here (and a score in [0, 1] has at most the variance of
  a Bernoulli with its mean). So no design effect is needed: heterogeneous difficulty makes the test
  more conservative, never less. (A validation set redrawn at every look would need the design
  effect ``1 + (n - 1) rho``; the trainer never does that.)
* **Multiple testing.** At one look ``M = (T - 1) + (T - window)`` comparisons (fewer while
  ``T <= window``) are made for each of ``D`` data_sources; Bonferroni over the ``M * D``
  comparisons (threshold ``z_{alpha / (M D)}``) bounds the probability that *any* of them fires at
  that look by ``alpha`` whatever their correlation (it is the max over baselines that inflated
  the margin rule). The penalty grows only like
  ``sqrt(2 ln M)``. The reported p-value is the Bonferroni-adjusted one (fire iff ``p <= alpha``).
* **Repeated looks.** ``alpha`` is per look: under any non-decreasing true pass rate each look fires
  with probability at most ``alpha``, so a run of ``L`` looks expects at most ``L * alpha`` false
  alarms (an average run length to a false alarm of at least ``1 / alpha`` looks, the usual ARL0 of
  sequential change detection). A per-*run* guarantee would need ``alpha / L`` and lose power for
  no benefit in a run that continues after a reset anyway.
* **Why not CUSUM or an SPRT.** Both need the pre-change level (and the size of the shift) to be
  known; here it is estimated from the same noisy history and rises during healthy training, and
  CUSUM's false-alarm rate is then only approximate. An SPRT restarted after every decision *is* a
  CUSUM. The block scan needs neither and its bound holds for any non-decreasing trajectory.
* **Limits.** The test tells a drop from *validation sampling noise*; a real but transient dip of
  the policy (common in RL, where training on one level disturbs another) is a real drop and may
  fire. After a rollback the restored checkpoint's score, itself the best of several, is the first
  baseline, which favours firing a little. With infra errors the prompts have unequal scored
  counts and ``num_scored`` slightly overstates the effective sample size (at most 10% are
  missing, ``validation.min_scored_fraction``). Keeping each prompt's scores would allow the
  paired within-prompt variance, a smaller one when difficulty varies (more power).

Robust z-scores (KL spike, entropy collapse)
--------------------------------------------
A step metric is judged against its own step-to-step noise: the median of a trailing window and
``1.4826 * MAD`` (the normal-consistent median absolute deviation), both insensitive to the very
outliers they are meant to flag. Both metrics are transformed first so that their noise is about
the same at every level: KL noise is multiplicative and KL grows from zero after a reset, so KL is
taken as ``asinh(kl / floor)`` (linear near zero, logarithmic above); entropy as its log. The scale
has a floor of 0.05 (a 5% step) so that a window of near-identical values does not turn a tiny
move into an enormous z. These z-scores are not calibrated to a probability (step metrics are
autocorrelated and heavy-tailed); their measured false-alarm rates on noise are in the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence

import numpy as np

MAD_TO_SIGMA = 1.4826
"""``sigma = 1.4826 * MAD`` for normal data."""
SCALE_FLOOR = 0.05
"""Floor of a robust scale on a log-like scale (a 5% step): a window of near-identical values
does not turn a tiny move into an enormous z."""


def normal_sf(z: float | np.ndarray) -> float | np.ndarray:
    """``P(Z > z)`` for a standard normal, accurate far in the tail (elementwise on arrays)."""
    if isinstance(z, np.ndarray):
        return _erfc_half(z / math.sqrt(2.0))
    return 0.5 * math.erfc(float(z) / math.sqrt(2.0))


_erfc_half = np.vectorize(lambda x: 0.5 * math.erfc(x), otypes=[float])


def normal_isf(p: float) -> float:
    """The ``z`` with ``P(Z > z) = p`` (``0 < p < 1``)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a tail probability must lie in (0, 1), got {p}")
    return -NormalDist().inv_cdf(p)


@dataclass(frozen=True)
class DropScan:
    """The block scan at the last look of each history (arrays shaped like the leading axes).

    ``z``: the largest z over the ``tests`` comparisons; ``base_*``/``recent_*``: pooled mean and
    sample count of that comparison's baseline block and recent window; ``base_first``/``base_last``:
    the block's looks (0-based, inclusive); ``recent``: looks pooled in the recent window.
    """

    z: np.ndarray
    tests: int
    recent: np.ndarray
    base_rate: np.ndarray
    base_n: np.ndarray
    recent_rate: np.ndarray
    recent_n: np.ndarray
    base_first: np.ndarray
    base_last: np.ndarray


def drop_scan(successes: np.ndarray, trials: np.ndarray, window: int,
              recents: Sequence[int] | None = None) -> DropScan:
    """Scan every earlier block of up to ``window`` looks against the pooled last ``r`` looks, for
    each ``r`` in ``recents`` (default: 1 and ``window``) with ``r <= T - 1``.

    ``successes`` (sum of scores) and ``trials`` (scored samples) are ``[..., T]`` with ``T >= 2``
    looks and positive trials. Each comparison is a one-sided, continuity-corrected two-proportion
    z of "block mean > recent mean" with the pooled-variance standard error; a comparison with zero
    variance (both all-correct or all-wrong) has z = 0. ``tests`` counts the comparisons.
    """
    if window < 1:
        raise ValueError("window must be >= 1")
    s = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    T = s.shape[-1]
    if T < 2 or s.shape != n.shape:
        raise ValueError(f"need matching [..., T >= 2] arrays, got {s.shape} and {n.shape}")
    rs = sorted({min(r, T - 1) for r in (recents or (1, window)) if r >= 1})
    zero = np.zeros(s.shape[:-1] + (1,))
    cs, cn = np.concatenate([zero, np.cumsum(s, -1)], -1), np.concatenate([zero, np.cumsum(n, -1)], -1)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("z", "p_b", "n_b", "p_r", "n_r", "first", "last", "r")}
    for r in rs:
        s_r, n_r = cs[..., T:] - cs[..., T - r:T - r + 1], cn[..., T:] - cn[..., T - r:T - r + 1]
        ends = np.arange(1, T - r + 1)  # a block covers looks [max(0, end - window), end)
        starts = np.maximum(ends - window, 0)
        s_b, n_b = cs[..., ends] - cs[..., starts], cn[..., ends] - cn[..., starts]
        p_b, p_r = s_b / n_b, s_r / n_r
        pooled = (s_b + s_r) / (n_b + n_r)
        inv = 1.0 / n_b + 1.0 / n_r
        var = pooled * (1.0 - pooled) * inv
        diff = p_b - p_r - 0.5 * inv  # continuity correction
        cols["z"].append(np.where(var > 0, diff / np.sqrt(np.where(var > 0, var, 1.0)), 0.0))
        shape = p_b.shape
        for k, v in (("p_b", p_b), ("n_b", n_b), ("p_r", p_r), ("n_r", n_r), ("first", starts), ("last", ends - 1),
                     ("r", np.full(len(ends), r))):
            cols[k].append(np.broadcast_to(v, shape))
    allc = {k: np.concatenate(v, -1) for k, v in cols.items()}
    best = np.argmax(allc["z"], axis=-1)[..., None]
    take = {k: np.take_along_axis(v, best, -1)[..., 0] for k, v in allc.items()}
    return DropScan(z=take["z"], tests=allc["z"].shape[-1], recent=take["r"], base_rate=take["p_b"],
                    base_n=take["n_b"], recent_rate=take["p_r"], recent_n=take["n_r"], base_first=take["first"],
                    base_last=take["last"])


@dataclass(frozen=True)
class DropTest:
    """:func:`drop_test`'s decision: ``fired`` where ``z > threshold`` (i.e. ``p_value <= alpha``)."""

    fired: np.ndarray
    threshold: float
    p_value: np.ndarray
    scan: DropScan


def drop_test(successes: np.ndarray, trials: np.ndarray, *, window: int, alpha: float, sources: int = 1,
              recents: Sequence[int] | None = None) -> DropTest:
    """:func:`drop_scan` with Bonferroni over its comparisons and ``sources`` data_sources: the
    threshold is ``z_{alpha / (tests * sources)}``, the p-value the adjusted one."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"false-alarm rate must lie in (0, 1), got {alpha}")
    scan = drop_scan(successes, trials, window, recents)
    m = scan.tests * max(1, int(sources))
    threshold = normal_isf(alpha / m)
    p = np.minimum(1.0, m * np.asarray(normal_sf(np.asarray(scan.z, dtype=float))))
    return DropTest(fired=scan.z > threshold, threshold=threshold, p_value=p, scan=scan)


def robust_location_scale(values: Sequence[float] | np.ndarray, floor: float = SCALE_FLOOR) -> tuple[float, float]:
    """Median and ``1.4826 * MAD`` of ``values``, the scale floored at ``floor``."""
    a = np.asarray(values, dtype=float)
    med = float(np.median(a))
    mad = float(np.median(np.abs(a - med)))
    return med, max(MAD_TO_SIGMA * mad, floor)
