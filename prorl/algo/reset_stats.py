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
* **Measured noise (``reset.val_noise=measured``, the default).** Sampling noise is not all a
  healthy run's validation moves by: the policy itself moves between looks (training on one level
  disturbs another). On the ``reset_timing`` runs the look-to-look changes of a level were 1.4 to 8.5
  times the variance of 64 Bernoulli samples (``experiments/RESULTS.md``), and a test against
  sampling noise alone fired on them 1-2 times per 180 steps. So each data_source's *dispersion*
  ``phi`` is measured from its own history (across resets, on the changes up to the end of the
  baseline block the test compares with and those inside the recent window, :func:`noise_changes`:
  the changes between them carry the drop being judged, which must not widen its own yardstick;
  the change out of the first look, the start of learning, is no noise either; the trainer also
  leaves out the looks a rollback discarded and those of a drop that fired):
  the variance of its standardised successive changes ``(p_t - p_{t-1}) / se`` about their mean
  (:func:`look_dispersion`; the mean takes out a learning run's trend), floored at 1. The z is
  divided by ``sqrt(phi)`` (quasi-binomial), and since ``phi`` is estimated from ``k`` changes the
  threshold is Student's t with ``k - 1`` degrees of freedom at the same Bonferroni level (exact
  for integer df, :func:`t_isf`). Several data_sources pool their estimates
  (:func:`pool_dispersions`): each is judged at the larger of its own dispersion and the sources'
  weighted mean, with the pooled degrees of freedom (five levels with 4 changes each: 15 df rather
  than 3). With fewer than ``MIN_CHANGES`` (3) changes there is no noise to judge against and the
  test does not fire (the sampling-noise test there fired on a moving policy's first looks). This
  is the KL robust z's idea (judge a move against the metric's own noise) with a calibrated
  threshold; the false-alarm rate on simulated moving policies is in the tests.
* **Limits.** With ``val_noise=sampling`` the test tells a drop from *validation sampling noise*
  only; a real but transient dip of the policy is a real drop and may fire. With ``measured`` the
  price is power: a drop is judged against the run's own dips, and early in a run (few looks, few
  degrees of freedom) or on a level whose healthy dips are deep, a drop must be deeper to pass the
  threshold (on the forced collapses of ``experiments/RESULTS.md``, every level to about 0, it fires
  at the first look after the collapse; before the first change was left out, the initial learning
  jump widened the yardstick so much that five of six went unseen to the end of their runs). Either noise has the
  remaining limits: after a rollback the restored checkpoint's score, itself the best of several, is the first
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


def t_sf(t: float | np.ndarray, df: int) -> float | np.ndarray:
    """``P(T > t)`` for Student's t with integer ``df >= 1`` (elementwise on arrays): the exact finite
    series in ``theta = atan(t / sqrt(df))`` (Abramowitz & Stegun 26.7.3-4)."""
    if df < 1 or int(df) != df:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df}")
    x = np.asarray(t, dtype=float)
    th = np.arctan(np.abs(x) / math.sqrt(df))
    c2, acc, term = np.cos(th) ** 2, np.ones_like(th), np.ones_like(th)
    if df % 2:  # odd: (2/pi) (theta + sin cos (1 + 2/3 c2 + 2*4/(3*5) c2^2 + ...)), the sum empty for df = 1
        for j in range(1, (df - 3) // 2 + 1):
            term = term * c2 * (2 * j) / (2 * j + 1)
            acc = acc + term
        inside = (2 / math.pi) * (th + (np.sin(th) * np.cos(th) * acc if df > 1 else 0.0))
    else:  # even: sin (1 + 1/2 c2 + 1*3/(2*4) c2^2 + ...)
        for j in range(1, (df - 2) // 2 + 1):
            term = term * c2 * (2 * j - 1) / (2 * j)
            acc = acc + term
        inside = np.sin(th) * acc
    upper = np.maximum(0.0, (1.0 - inside) / 2.0)
    out = np.where(x < 0, 1.0 - upper, upper)
    return float(out) if np.ndim(out) == 0 and not isinstance(t, np.ndarray) else out


def t_isf(p: float, df: int) -> float:
    """The ``t`` with ``P(T > t) = p`` (``0 < p < 0.5``) for Student's t with ``df`` degrees of freedom."""
    if not 0.0 < p < 0.5:
        raise ValueError(f"a tail probability must lie in (0, 0.5), got {p}")
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > p:
        hi *= 2.0
    for _ in range(100):  # bisection to float precision
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_sf(mid, df) > p else (lo, mid)
    return hi


MIN_CHANGES = 3
"""Successive changes a history needs before its dispersion is measured (a t threshold with >= 1 df)."""


def look_dispersion(successes: np.ndarray, trials: np.ndarray,
                    use: np.ndarray | None = None) -> tuple[np.ndarray, int | np.ndarray]:
    """``(phi, k)``: the dispersion of a validation history ``[..., T]`` over its sampling noise,
    measured from ``k`` of its successive changes: the variance (about their mean, which takes out a
    learning run's trend) of ``(p_t - p_{t-1}) / sqrt(pbar (1 - pbar) (1/n_t + 1/n_{t-1}))``, ``pbar``
    the pair's pooled rate, floored at 1 (a change between two all-correct looks counts as 0).
    ``use`` (``[..., T - 1]`` booleans, change ``j`` joining looks ``j`` and ``j + 1``): the changes to
    measure (default all: ``k = T - 1``, an int). ``phi`` is 1 where ``k < 2``. Its degrees of
    freedom: :func:`dispersion_df`."""
    s, n = np.asarray(successes, dtype=float), np.asarray(trials, dtype=float)
    T = s.shape[-1]
    if use is None and T - 1 < 2:
        return np.ones(s.shape[:-1]), max(T - 1, 0)
    p = s / n
    pbar = (s[..., 1:] + s[..., :-1]) / (n[..., 1:] + n[..., :-1])
    var = pbar * (1.0 - pbar) * (1.0 / n[..., 1:] + 1.0 / n[..., :-1])
    u = np.where(var > 0, (p[..., 1:] - p[..., :-1]) / np.sqrt(np.where(var > 0, var, 1.0)), 0.0)
    if use is None:
        return np.maximum(1.0, u.var(axis=-1, ddof=1)), T - 1
    use = np.broadcast_to(np.asarray(use, dtype=bool), u.shape)
    k = use.sum(-1)
    mean = (u * use).sum(-1) / np.maximum(k, 1)
    v = (((u - mean[..., None]) ** 2) * use).sum(-1) / np.maximum(k - 1, 1)
    return np.where(k >= 2, np.maximum(1.0, v), 1.0), k


def noise_changes(looks: int, base_last: np.ndarray | int, recent: np.ndarray | int) -> np.ndarray:
    """``[..., looks - 1]``: the changes that measure the noise when the block ending at look
    ``base_last`` is compared with the last ``recent`` looks: those up to the end of the block and
    those inside the recent window. The changes between them carry the drop being judged (if there
    is one), so they are left out: a drop must not widen its own yardstick. The change out of the
    first look is left out too: it carries the start of learning (from the warm start's validation
    before any update, or the re-learning after a reset), the largest systematic move of a run,
    which is not noise (kept in, it made the yardstick of a whole run so wide that a collapse of
    every level to 0 went unseen for the two looks its 90-step run had left)."""
    j = np.arange(looks - 1)
    b, r = np.asarray(base_last)[..., None], np.asarray(recent)[..., None]
    return ((j < b) | (j >= looks - r)) & (j >= 1)


def dispersion_df(changes: int | np.ndarray) -> int | np.ndarray:
    """Degrees of freedom of :func:`look_dispersion` from ``changes`` changes (one spent on their
    mean; 0, nothing measured, below ``MIN_CHANGES``)."""
    if np.ndim(changes):
        k = np.asarray(changes, dtype=int)
        return np.where(k >= MIN_CHANGES, k - 1, 0)
    return int(changes) - 1 if changes >= MIN_CHANGES else 0


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




def pool_dispersions(phis: np.ndarray, changes: Sequence[int] | np.ndarray
                     ) -> tuple[np.ndarray, int | np.ndarray | None]:
    """``(phi, df)`` for each of ``D`` data_sources (``phis``: ``[..., D]``, each measured from
    ``changes[..., d]`` changes): a source's own dispersion, or the sources' pooled one where that is
    larger, with the pooled degrees of freedom.

    The pooled dispersion is the mean of the measured ones weighted by their degrees of freedom
    ``k_d - 1`` (sources with fewer than ``MIN_CHANGES`` changes take no part and are judged by the
    pooled value alone). Pooling gives the t threshold the sum of their degrees of freedom, so
    five sources with 7 changes each judge with 15 df rather than 3; the max keeps a source that
    moves more than the others at its own, larger, noise. ``df``: an int (None when no source has
    enough changes: nothing is measured) for a plain list of counts; for an array of counts, an
    array shaped like ``phis`` (the same for every source) with 0 where nothing is measured."""
    phis = np.asarray(phis, dtype=float)
    w = np.asarray(dispersion_df(np.asarray(changes, dtype=int)), dtype=float)
    total = w.sum(axis=-1)
    pooled = (np.where(w > 0, phis, 0.0) * w).sum(axis=-1, keepdims=True) / np.maximum(total, 1)[..., None]
    phi = np.where(total[..., None] > 0, np.where(w > 0, np.maximum(phis, pooled), pooled), np.nan)
    if isinstance(changes, np.ndarray):
        return phi, np.broadcast_to(total[..., None], phis.shape).astype(int)
    return phi, (int(total) if total > 0 else None)


@dataclass(frozen=True)
class DropTest:
    """:func:`drop_test`'s decision: ``fired`` where ``z > threshold`` (i.e. ``p_value <= alpha``).

    ``z`` is the scan's z divided by ``sqrt(dispersion)``; ``df`` the t threshold's degrees of
    freedom (None: the normal threshold of the sampling-noise test, or nothing measured; an array,
    0 where nothing is measured, when it varies over the histories, as does ``threshold``)."""

    fired: np.ndarray
    threshold: float | np.ndarray
    p_value: np.ndarray
    scan: DropScan
    z: np.ndarray
    dispersion: np.ndarray
    df: int | None


def drop_test(successes: np.ndarray, trials: np.ndarray, *, window: int, alpha: float, sources: int = 1,
              recents: Sequence[int] | None = None, noise: str = "sampling",
              dispersion: tuple[np.ndarray | float, int | np.ndarray | None] | None = None) -> DropTest:
    """:func:`drop_scan` with Bonferroni over its comparisons and ``sources`` data_sources: the
    threshold is ``z_{alpha / (tests * sources)}``, the p-value the adjusted one.

    ``noise="measured"``: the z is divided by the square root of the dispersion
    (:func:`look_dispersion`) of each history's changes up to the end of its baseline block and inside
    its recent window (:func:`noise_changes`: those between carry the drop), and the threshold is Student's
    t with :func:`dispersion_df` degrees of freedom (nothing fires with fewer than ``MIN_CHANGES``
    changes: ``threshold`` inf, ``df`` 0 or None). ``dispersion``: ``(phi, df)`` measured by the
    caller (:func:`pool_dispersions`) instead; ``df`` may vary over the leading axes."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"false-alarm rate must lie in (0, 1), got {alpha}")
    if noise not in ("sampling", "measured"):
        raise ValueError(f"noise must be 'sampling' or 'measured', got {noise!r}")
    scan = drop_scan(successes, trials, window, recents)
    m = scan.tests * max(1, int(sources))
    shape, zs = np.shape(scan.z), np.asarray(scan.z, dtype=float)
    if noise == "sampling":
        threshold = normal_isf(alpha / m)
        p = np.minimum(1.0, m * np.asarray(normal_sf(zs)))
        return DropTest(fired=zs > threshold, threshold=threshold, p_value=p, scan=scan, z=zs,
                        dispersion=np.ones(shape), df=None)
    if dispersion is None:
        use = noise_changes(np.shape(successes)[-1], scan.base_last, scan.recent)
        phi, k = look_dispersion(successes, trials, use=use)
        dispersion = (phi, dispersion_df(k))
    phi = np.broadcast_to(np.asarray(dispersion[0], dtype=float), shape)
    df = np.broadcast_to(np.asarray(0 if dispersion[1] is None else dispersion[1], dtype=int), shape)
    measured = df > 0  # no noise to judge against yet: nothing fires there (the KL and entropy triggers can)
    z = np.where(measured, zs / np.sqrt(np.where(measured, phi, 1.0)), zs)
    thresholds = {int(d): (t_isf(alpha / m, int(d)) if d > 0 else math.inf) for d in np.unique(df)}
    thr = np.vectorize(thresholds.__getitem__, otypes=[float])(df) if df.size else np.zeros(shape)
    tail = np.ones(shape)
    for d in thresholds:
        if d > 0:
            tail = np.where(df == d, t_sf(np.asarray(z, dtype=float).reshape(shape), d), tail)
    p = np.where(measured, np.minimum(1.0, m * tail), 1.0)
    scalar_df = int(df) if df.ndim == 0 else df
    return DropTest(fired=measured & (z > thr), threshold=float(thr) if thr.ndim == 0 else thr, p_value=p,
                    scan=scan, z=z, dispersion=np.where(measured, phi, np.nan),
                    df=(scalar_df or None) if df.ndim == 0 else scalar_df)


def robust_location_scale(values: Sequence[float] | np.ndarray, floor: float = SCALE_FLOOR) -> tuple[float, float]:
    """Median and ``1.4826 * MAD`` of ``values``, the scale floored at ``floor``."""
    a = np.asarray(values, dtype=float)
    med = float(np.median(a))
    mad = float(np.median(np.abs(a - med)))
    return med, max(MAD_TO_SIGMA * mad, floor)
