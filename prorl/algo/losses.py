"""Loss aggregation and the policy losses, chosen by name from a registry (``algo.policy_loss``).

Every registered loss has the same signature::

    fn(logp [B, T], old_logp [B, T], advantages [B] | [B, T], mask [B, T], *,
       agg_mode: str, rollout_is_weights: [B, T] | None, **hyper) -> PolicyLossOutput

``hyper`` are the loss's own keyword hyper-parameters; the registration names the ``AlgoConfig``
field each one is read from, so the actor needs one line for any loss::

    loss_fn = make_policy_loss(cfg.algo)                      # once
    out = loss_fn(logp, old_logp, adv, mask, rollout_is_weights=w)   # per micro-batch

``rollout_is_weights`` are detached per-token weights correcting the rollout/training mismatch
(computed elsewhere); they multiply the per-token loss before aggregation, as in verl.
A new loss is one function under ``@register_policy_loss("name", hyper={"kwarg": "algo_field"})``.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # [B, T], [B, T] -> []
    """Mean of ``x`` over the tokens ``mask`` counts (0 when it counts none)."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1.0)


def aggregate_loss(
    loss_mat: torch.Tensor,  # [B, T] per-token loss
    mask: torch.Tensor,  # [B, T] 1 on tokens that count
    mode: str = "token-mean",
) -> torch.Tensor:  # []
    """Reduce per-token losses to a scalar.

    token-mean: sum over all tokens / number of tokens (DAPO: long responses weigh more);
    seq-mean-token-mean: mean over tokens within each sequence, then over sequences (GRPO);
    seq-mean-token-sum: sum over tokens within each sequence, then mean over sequences (Dr. GRPO style).
    Sequences without any counted token are ignored in the seq-mean modes.
    """
    mask = mask.to(loss_mat.dtype)
    if mode == "token-mean":
        return (loss_mat * mask).sum() / mask.sum().clamp(min=1.0)
    per_seq_tokens = mask.sum(-1)  # [B]
    seq_sum = (loss_mat * mask).sum(-1)  # [B]
    present = (per_seq_tokens > 0).to(loss_mat.dtype)  # [B]
    if mode == "seq-mean-token-mean":
        per_seq = seq_sum / per_seq_tokens.clamp(min=1.0)
    elif mode == "seq-mean-token-sum":
        per_seq = seq_sum
    else:
        raise ValueError(f"unknown loss_agg_mode {mode!r}; expected one of {LOSS_AGG_MODES}")
    return (per_seq * present).sum() / present.sum().clamp(min=1.0)


@dataclass
class PolicyLossOutput:
    """The aggregated loss and its statistics, each a fraction of the counted tokens (verl's names
    in brackets; the actor logs them as ``actor/<name>``)."""

    loss: torch.Tensor  # [] aggregated loss (differentiable)
    clipfrac: torch.Tensor  # [] the PPO clip / truncation is the active term (pg_clipfrac; not the dual clip)
    clipfrac_high: torch.Tensor  # [] ... on the upper side: ratio above 1 + eps_high, A > 0 (pg_clipfrac_higher)
    clipfrac_lower: torch.Tensor  # [] the dual clip caps the loss at -A * clip_ratio_c, A < 0 (pg_clipfrac_lower)
    clipfrac_below_low_bound: torch.Tensor  # [] ratio below 1 - eps_low, A < 0 (pg_clipfrac_below_low_bound)
    approx_kl: torch.Tensor  # [] mean(old_logp - logp) over counted tokens (ppo_kl)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [] a loss's own statistics (actor/<name>)


PolicyLossFn = Callable[..., PolicyLossOutput]
POLICY_LOSSES: dict[str, PolicyLossFn] = {}
_HYPER_FIELDS: dict[str, dict[str, str]] = {}  # loss name -> {keyword: AlgoConfig field}


def register_policy_loss(name: str, *, hyper: Mapping[str, str] | None = None) -> Callable[[PolicyLossFn], PolicyLossFn]:
    """Decorator: make ``fn`` available as ``algo.policy_loss=name``; ``hyper`` maps each of its
    keyword hyper-parameters to the ``AlgoConfig`` field it is read from (a loss's own fields: the
    config rejects one set while no loss that reads it is chosen, unless the clip loss reads it)."""
    hyper = dict(hyper or {})

    def deco(fn: PolicyLossFn) -> PolicyLossFn:
        params = inspect.signature(fn).parameters
        missing = [p for p in ("agg_mode", "rollout_is_weights", *hyper) if params.get(p) is None
                   or params[p].kind is not inspect.Parameter.KEYWORD_ONLY]
        if missing:
            raise TypeError(f"policy loss {name!r} must take keyword-only {missing}")
        if name in POLICY_LOSSES and POLICY_LOSSES[name] is not fn:
            raise ValueError(f"policy loss {name!r} is already registered")
        POLICY_LOSSES[name], _HYPER_FIELDS[name] = fn, hyper
        return fn

    return deco


def get_policy_loss(name: str) -> PolicyLossFn:
    try:
        return POLICY_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown policy loss {name!r}; registered: {', '.join(sorted(POLICY_LOSSES))}") from None


def policy_loss_hyper(algo: Any) -> dict[str, Any]:
    """The keyword hyper-parameters of ``algo.policy_loss``, read from ``algo`` (an ``AlgoConfig``)."""
    get_policy_loss(algo.policy_loss)
    return {kw: getattr(algo, field) for kw, field in _HYPER_FIELDS[algo.policy_loss].items()}


def policy_loss_fields() -> dict[str, set[str]]:
    """``AlgoConfig`` field -> the policy losses that read it (for the config's validation)."""
    out: dict[str, set[str]] = {}
    for name, fields in _HYPER_FIELDS.items():
        if name not in POLICY_LOSSES:  # registered, then removed (tests do)
            continue
        for fld in fields.values():
            out.setdefault(fld, set()).add(name)
    return out


def make_policy_loss(algo: Any) -> Callable[..., PolicyLossOutput]:
    """``algo.policy_loss`` with ``agg_mode`` and its hyper-parameters bound from ``algo``:
    call it as ``fn(logp, old_logp, advantages, mask, rollout_is_weights=None)``."""
    return functools.partial(get_policy_loss(algo.policy_loss), agg_mode=algo.loss_agg_mode, **policy_loss_hyper(algo))


def _prepare(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token advantages [B, T], clamped log-ratio [B, T] and ratio [B, T]."""
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1).expand_as(logp)  # [B, T]
    log_ratio = (logp - old_logp).clamp(-20.0, 20.0)  # [B, T]
    return advantages, log_ratio, log_ratio.exp()


def _finish(
    loss_mat: torch.Tensor,  # [B, T] per-token loss
    mask: torch.Tensor,  # [B, T]
    agg_mode: str,
    rollout_is_weights: torch.Tensor | None,  # [B, T]
    log_ratio: torch.Tensor,  # [B, T]
    clipped: torch.Tensor,  # [B, T] bool indicators, in PolicyLossOutput's order ...
    high: torch.Tensor,
    dual: torch.Tensor,
    below_low: torch.Tensor,  # ... averaged over counted tokens
) -> PolicyLossOutput:
    """Weight by the mismatch correction, aggregate, and average the clip indicators over tokens.
    The weights multiply the already clipped per-token loss (verl's order)."""
    if rollout_is_weights is not None:
        loss_mat = loss_mat * rollout_is_weights.detach().to(loss_mat.dtype)
    with torch.no_grad():
        m = mask.to(log_ratio.dtype)
        n_tok = m.sum().clamp(min=1.0)
        stats = [(x.to(m.dtype) * m).sum() / n_tok for x in (clipped, high, dual, below_low)]
        stats.append((-log_ratio * m).sum() / n_tok)
    return PolicyLossOutput(aggregate_loss(loss_mat, mask, agg_mode), *stats)


@register_policy_loss("clip", hyper={"eps_low": "eps_low", "eps_high": "eps_high", "clip_ratio_c": "clip_ratio_c"})
def clip_policy_loss(
    logp: torch.Tensor,  # [B, T] current policy log-probs of the sampled tokens
    old_logp: torch.Tensor,  # [B, T] log-probs under the policy that sampled them
    advantages: torch.Tensor,  # [B] or [B, T]
    mask: torch.Tensor,  # [B, T]
    *,
    agg_mode: str = "token-mean",
    rollout_is_weights: torch.Tensor | None = None,  # [B, T] detached
    eps_low: float = 0.2,
    eps_high: float = 0.4,
    clip_ratio_c: float | None = 3.0,
) -> PolicyLossOutput:
    """PPO clipped surrogate with decoupled bounds (DAPO clip-higher) and verl's dual clip
    (Ye et al. 2019, arXiv:1912.09729), per token, then weighted and aggregated::

        l = max(-r A, -clip(r, 1 - eps_low, 1 + eps_high) A)
        l = min(l, -A c)  where A < 0           (c = clip_ratio_c; None: no dual clip)

    For A < 0 the plain clip leaves -r A unbounded as r grows; the dual clip caps it at -A c (its
    gradient is then 0), as verl's ``compute_policy_loss_vanilla``. The cap acts on the loss of the
    ratio before any ``rollout_is_weights``. clipfrac: the PPO clip is active (verl's pg_clipfrac,
    the dual clip not included); high: r > 1 + eps_high with A > 0; lower: the dual clip is active
    (verl's pg_clipfrac_lower); below_low_bound: r < 1 - eps_low with A < 0.
    """
    if clip_ratio_c is not None and not clip_ratio_c > 1.0:
        raise ValueError(f"clip_ratio_c must be > 1 (the dual clip's cap on the ratio) or None, got {clip_ratio_c}")
    adv, log_ratio, ratio = _prepare(logp, old_logp, advantages)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    loss_mat = torch.maximum(unclipped, clipped)  # [B, T]
    negative = adv < 0
    if clip_ratio_c is None:
        dual = torch.zeros_like(negative)
    else:
        cap = -adv * clip_ratio_c  # [B, T]
        dual = (loss_mat > cap) & negative  # computed before the cap, as verl
        loss_mat = torch.where(negative, torch.minimum(loss_mat, cap), loss_mat)
    with torch.no_grad():
        is_clipped = clipped > unclipped
        high = (ratio > 1.0 + eps_high) & (adv > 0)
        below_low = (ratio < 1.0 - eps_low) & negative
    return _finish(loss_mat, mask, agg_mode, rollout_is_weights, log_ratio, is_clipped, high, dual, below_low)


@register_policy_loss("cispo", hyper={"eps_max": "cispo_eps_max"})
def cispo_policy_loss(
    logp: torch.Tensor,  # [B, T]
    old_logp: torch.Tensor,  # [B, T]
    advantages: torch.Tensor,  # [B] or [B, T]
    mask: torch.Tensor,  # [B, T]
    *,
    agg_mode: str = "token-mean",
    rollout_is_weights: torch.Tensor | None = None,  # [B, T] detached
    eps_max: float = 4.0,
) -> PolicyLossOutput:
    """CISPO (MiniMax-M1, arXiv:2506.13585, eq. 4-5 with no lower bound, as they ran it; ScaleRL's
    loss, arXiv:2510.13786): ``-sg(min(r, 1 + eps_max)) * A * logp`` per token, then aggregated.

    The importance weight is a constant, so every token keeps a gradient: ``d/dlogp = -w A``
    (PPO's clip instead zeroes the gradient of clipped tokens). ``eps_max = 4`` caps the weight
    at 5, TRL's ScaleRL setting (``loss_type="cispo", epsilon_high=5.0``, which caps at epsilon_high).
    clipfrac = clipfrac_high: tokens with r > 1 + eps_max and A != 0 (their weight was truncated);
    clipfrac_lower (no dual clip; verl's cispo also logs 0) and clipfrac_below_low_bound (no lower
    bound) are 0.
    """
    adv, log_ratio, ratio = _prepare(logp, old_logp, advantages)
    weight = ratio.detach().clamp(max=1.0 + eps_max)  # [B, T] sg(min(r, 1 + eps_max))
    loss_mat = -weight * adv * logp
    with torch.no_grad():
        truncated = (ratio > 1.0 + eps_max) & (adv != 0)
    none = torch.zeros_like(truncated)
    return _finish(loss_mat, mask, agg_mode, rollout_is_weights, log_ratio, truncated, truncated, none, none)

