"""Outcome-reward advantage estimators, chosen by name from a small registry (``algo.adv_estimator``).

Every estimator has the same signature::

    fn(rewards [B], group_ids [B], *, norm_by_std: bool, valid: [B] bool | None, eps: float, **hyper) -> [B]

``rewards`` holds one scalar per response, ``group_ids`` the integer id of each response's prompt
group (any values, any order). ``valid`` marks the responses that count: the others (e.g. an
infrastructure failure of the verifier, not a verdict on the response) get advantage 0 and do not
enter any statistic. ``hyper`` are the estimator's own keyword hyper-parameters; the registration
names the ``AlgoConfig`` field each one is read from (as for the policy losses). A new estimator is
one function under ``@register_adv_estimator("name", hyper={"kwarg": "algo_field"})``.

Binary-outcome estimators (``w_reinforce``, ``passk``) read prorl's reward convention: 1 for a
correct response, 0 for a wrong one, plus any shaping; a reward above 1/2 counts as correct.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, NamedTuple

import torch

AdvantageFn = Callable[..., torch.Tensor]
ADV_ESTIMATORS: dict[str, AdvantageFn] = {}
_HYPER_FIELDS: dict[str, dict[str, str]] = {}  # estimator name -> {keyword: AlgoConfig field}
PASS_THRESHOLD = 0.5  # a reward above this counts as a pass (prorl's scores are 1 / 0, shaping aside)


def register_adv_estimator(name: str, *, hyper: Mapping[str, str] | None = None
                           ) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator: make ``fn`` available as ``algo.adv_estimator=name``; ``hyper`` maps each of its
    keyword hyper-parameters to the ``AlgoConfig`` field it is read from."""
    hyper = dict(hyper or {})

    def deco(fn: AdvantageFn) -> AdvantageFn:
        params = inspect.signature(fn).parameters
        missing = [p for p in hyper if params.get(p) is None or params[p].kind is not inspect.Parameter.KEYWORD_ONLY]
        if missing:
            raise TypeError(f"advantage estimator {name!r} must take keyword-only {missing}")
        if name in ADV_ESTIMATORS and ADV_ESTIMATORS[name] is not fn:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        ADV_ESTIMATORS[name], _HYPER_FIELDS[name] = fn, hyper
        return fn

    return deco


def get_adv_estimator(name: str) -> AdvantageFn:
    try:
        return ADV_ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown advantage estimator {name!r}; registered: {', '.join(sorted(ADV_ESTIMATORS))}") from None


def adv_estimator_hyper(algo: Any) -> dict[str, Any]:
    """The keyword hyper-parameters of ``algo.adv_estimator``, read from ``algo`` (an ``AlgoConfig``)."""
    get_adv_estimator(algo.adv_estimator)
    return {kw: getattr(algo, field) for kw, field in _HYPER_FIELDS.get(algo.adv_estimator, {}).items()}


def adv_estimator_fields() -> dict[str, set[str]]:
    """``AlgoConfig`` field -> the estimators that read it (for the config's validation)."""
    out: dict[str, set[str]] = {}
    for name, fields in _HYPER_FIELDS.items():
        if name not in ADV_ESTIMATORS:  # registered, then removed (tests do)
            continue
        for fld in fields.values():
            out.setdefault(fld, set()).add(name)
    return out


def compute_advantages(
    name: str,
    rewards: torch.Tensor,  # [B]
    group_ids: torch.Tensor,  # [B]
    *,
    norm_adv_by_std: bool = True,
    valid: torch.Tensor | None = None,  # [B] bool
    eps: float = 1e-6,
    **hyper: Any,
) -> torch.Tensor:  # [B] float32
    """The one entry point: ``compute_advantages(cfg.algo.adv_estimator, rewards, group_ids,
    norm_adv_by_std=cfg.algo.norm_adv_by_std, valid=valid, **adv_estimator_hyper(cfg.algo))``."""
    return get_adv_estimator(name)(rewards, group_ids, norm_by_std=norm_adv_by_std, valid=valid, eps=eps, **hyper)


class _Centred(NamedTuple):
    centred: torch.Tensor  # [B] reward minus its group's mean over valid members; 0 where invalid
    inverse: torch.Tensor  # [B] group index 0..G-1 of each response
    counts: torch.Tensor  # [G] valid members per group
    valid: torch.Tensor  # [B] float 1/0


def _checked(rewards: torch.Tensor, group_ids: torch.Tensor, valid: torch.Tensor | None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 rewards [B] and the valid mask as float 1/0 [B], after checking the shapes."""
    scores = rewards.float()
    v = torch.ones_like(scores) if valid is None else valid.to(device=scores.device, dtype=torch.bool).float()  # [B]
    if v.shape != scores.shape or group_ids.shape != scores.shape:
        raise ValueError(f"rewards {tuple(scores.shape)}, group_ids {tuple(group_ids.shape)} and valid "
                         f"{tuple(v.shape)} must all be [B]")
    return scores, v


def _group_centre(rewards: torch.Tensor, group_ids: torch.Tensor, valid: torch.Tensor | None) -> _Centred:
    """Subtract each group's mean, computed over its valid members only."""
    scores, v = _checked(rewards, group_ids, valid)
    _, inverse = torch.unique(group_ids, return_inverse=True)
    num_groups = int(inverse.max().item()) + 1 if inverse.numel() else 0
    zeros = torch.zeros(num_groups, dtype=scores.dtype, device=scores.device)
    counts = zeros.index_add(0, inverse, v)  # [G]
    kept = torch.where(v > 0, scores, torch.zeros_like(scores))  # [B] an invalid one's reward (even NaN) is ignored
    sums = zeros.index_add(0, inverse, kept)  # [G]
    means = sums / counts.clamp(min=1.0)  # [G]
    centred = torch.where(v > 0, scores - means[inverse], torch.zeros_like(scores))  # [B]; invalid -> 0
    return _Centred(centred, inverse, counts, v)


@register_adv_estimator("grpo")
def grpo_advantages(
    scores: torch.Tensor,  # [B] one scalar reward per response
    group_ids: torch.Tensor,  # [B] integer id of each response's prompt group
    *,
    norm_by_std: bool = True,
    valid: torch.Tensor | None = None,  # [B] bool, responses that count
    eps: float = 1e-6,
) -> torch.Tensor:  # [B]
    """GRPO: a response's reward minus its group's mean, divided by the group's std (unbiased,
    as verl) when ``norm_by_std``. Groups of one (valid member) and all-equal groups get 0."""
    c = _group_centre(scores, group_ids, valid)
    if not norm_by_std:
        return c.centred
    sq = torch.zeros_like(c.counts).index_add(0, c.inverse, c.centred**2)  # [G]
    std = torch.where(c.counts > 1, (sq / (c.counts - 1).clamp(min=1)).sqrt(), torch.zeros_like(sq))  # [G]
    return c.centred / (std[c.inverse] + eps)


@register_adv_estimator("reinforce_pp_baseline")
def reinforce_pp_baseline_advantages(
    scores: torch.Tensor,  # [B]
    group_ids: torch.Tensor,  # [B]
    *,
    norm_by_std: bool = True,
    valid: torch.Tensor | None = None,  # [B] bool
    eps: float = 1e-6,
) -> torch.Tensor:  # [B]
    """REINFORCE++-baseline (ProRL v2): subtract the group mean (the local baseline), then divide
    by the standard deviation of those centred values over the whole batch (global normalisation):

        c_i = r_i - mean_{j in group(i)} r_j ;   A_i = (c_i - mean_batch c) / (std_batch c + eps)

    Statistics are over valid responses, std unbiased (N - 1) like verl's ``masked_whiten``. Every
    group's centred values sum to 0, so ``mean_batch c`` is exactly 0 at the response level and is
    not subtracted (all-equal groups keep advantage exactly 0). verl whitens over tokens instead
    (a length-weighted mean and std); here, as everywhere in prorl, a response counts once.
    ``norm_by_std=False`` returns the centred values (the same as GRPO without std).
    """
    c = _group_centre(scores, group_ids, valid)
    if not norm_by_std:
        return c.centred
    n = c.valid.sum()
    var = (c.centred**2).sum() / (n - 1).clamp(min=1.0)  # batch mean of c is 0
    std = var.sqrt() if n > 1 else torch.zeros_like(var)
    return c.centred / (std + eps)


@register_adv_estimator("w_reinforce", hyper={"positive_weight": "positive_weight"})
def w_reinforce_advantages(
    scores: torch.Tensor,  # [B]
    group_ids: torch.Tensor,  # [B] (unused: no baseline)
    *,
    norm_by_std: bool = True,  # unused: REINFORCE with +-1 rewards has nothing to normalise
    valid: torch.Tensor | None = None,  # [B] bool
    eps: float = 1e-6,
    positive_weight: float = 0.1,
) -> torch.Tensor:  # [B]
    """W-REINFORCE (Zhu et al., "The Surprising Effectiveness of Negative Reinforcement in LLM
    Reasoning", arXiv:2506.01347, Sec. 5): the RLVR objective split into positive and negative
    sample reinforcement, ``L = lambda * L_PSR + L_NSR``, with rewards +1 / -1 and no baseline.
    Its REINFORCE gradient weights a correct response by +lambda and a wrong one by -1 (their code:
    ``adv[correct] *= lambda; adv[incorrect] -= 1`` on 0/1 rewards); lambda = 0.1 is the paper's
    best, 0 is NSR alone (only push down failures: keeps pass@k at large k), 1 plain REINFORCE.

    prorl's reward r (1 correct / 0 wrong, plus shaping) is mapped onto the paper's +-1 scale,
    ``r' = 2 r - 1``, so that shaping keeps its sign and size::

        A = positive_weight * r'  if r' > 0  else  r'            (0 where not ``valid``)

    No group statistics: ``group_ids`` and ``norm_by_std`` do not apply, and every group counts,
    also all-wrong ones (the NSR signal): set ``algo.dynamic_sampling=false`` to keep them, as the
    paper does. With ``policy_loss=clip`` on-policy (one mini-batch, one epoch: ratio 1) the clipped
    surrogate's gradient, ``-A r grad log p`` with r = 1, is exactly REINFORCE's; the paper's own
    runs (verl, PPO clip 0.2, token-mean, 4 mini-batches a step) clip the later mini-batches the same way.
    """
    if positive_weight < 0:
        raise ValueError(f"positive_weight must be >= 0, got {positive_weight}")
    s, v = _checked(scores, group_ids, valid)
    signed = 2.0 * s - 1.0  # [B] the paper's reward scale
    adv = torch.where(signed > 0, positive_weight * signed, signed)
    return torch.where(v > 0, adv, torch.zeros_like(adv))


def _comb_ratio(a: torch.Tensor, b: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """``C(a, j) / C(b, j)`` elementwise for integer-valued a <= b and j >= 0, as the product
    ``prod_{i<j} (a - i) / (b - i)`` (no large binomials; 0 when a < j, 1 when j = 0). # [G]"""
    out = torch.ones_like(b)
    for i in range(int(j.max().item()) if j.numel() else 0):
        term = (a - i).clamp(min=0.0) / (b - i).clamp(min=1.0)
        out = torch.where(j > i, out * term, out)
    return out


@register_adv_estimator("passk", hyper={"k": "passk_k"})
def passk_advantages(
    scores: torch.Tensor,  # [B]
    group_ids: torch.Tensor,  # [B]
    *,
    norm_by_std: bool = True,
    valid: torch.Tensor | None = None,  # [B] bool
    eps: float = 1e-6,
    k: int = 4,
) -> torch.Tensor:  # [B]
    """Pass@k training with the analytical advantage (Chen et al., "Pass@k Training for Adaptively
    Balancing Exploration and Exploitation of Large Reasoning Models", arXiv:2508.10751, Sec. 3.3).

    Score every size-k subset of a group of N responses by its pass@k (1 if it holds a pass) and
    give each response the mean GRPO advantage of the subsets that contain it. With N_neg failures::

        R = 1 - C(N_neg, k) / C(N, k)          mean subset reward (the unbiased pass@k estimate)
        s = sqrt(R (1 - R))                    std of the subset rewards
        A_pos = (1 - R) / s                    every subset holding a pass scores 1
        A_neg = (1 - R - C(N_neg - 1, k - 1) / C(N - 1, k - 1)) / s

    (the last fraction: the chance that the other k - 1 members of a subset holding this failure
    all fail too). ``norm_by_std=False`` drops the division by s + eps. The advantages of a group
    sum to 0 (N_neg C(N_neg-1, k-1) / C(N-1, k-1) = N C(N_neg, k) / C(N, k)); k = 1 is GRPO with
    the population std; a group with fewer than k failures, all passes or no pass gets 0 (s = 0).

    Why this form: it is the exact limit of the paper's bootstrap sampling (no sampling noise),
    gives every response a signal for any k <= N, and pushes failures down less the larger k is
    (exploration). verl's ``grpo_passk`` (after arXiv:2503.19595) instead gives only the group's
    best response ``r_max - r_second_max`` (pass@N with a leave-one-out baseline): with 0/1
    rewards a group learns only when exactly one response passes, and failures never get pushed.
    A reward above 1/2 is a pass; invalid responses get 0 and are not counted (a group of at most
    k valid responses gets 0, like k = N: no subsets to compare).
    """
    if int(k) != k or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k}")
    s, v = _checked(scores, group_ids, valid)
    _, inverse = torch.unique(group_ids, return_inverse=True)
    num_groups = int(inverse.max().item()) + 1 if inverse.numel() else 0
    passed = (s > PASS_THRESHOLD) & (v > 0)  # [B] (a NaN reward is no pass)
    zeros = torch.zeros(num_groups, dtype=torch.float64, device=s.device)
    n = zeros.index_add(0, inverse, v.double())  # [G] valid responses
    n_neg = zeros.index_add(0, inverse, v.double() * (~passed).double())  # [G] valid failures
    kk = torch.full_like(n, float(k))  # [G] (k > N: both ratios are 0, R = 1, s = 0: A = 0)
    mean = 1.0 - _comb_ratio(n_neg, n, kk)  # [G]
    a_pos = 1.0 - mean  # [G]
    a_neg = a_pos - _comb_ratio(n_neg - 1.0, n - 1.0, kk - 1.0)  # [G]
    adv = torch.where(passed, a_pos[inverse], a_neg[inverse])  # [B]
    if norm_by_std:
        std = (mean * (1.0 - mean)).clamp(min=0.0).sqrt()  # [G]
        adv = adv / (std[inverse] + eps)
    return torch.where(v > 0, adv, torch.zeros_like(adv)).float()
