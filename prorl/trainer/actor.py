"""The Actor: the only code that touches the policy, the reference and the optimizer.

It computes log-probs, runs the PPO-style update (decoupled clip, KL penalty to the reference,
optional entropy bonus), resets the reference and/or optimizer, rolls back to a checkpoint,
streams its weights to a rollout engine and saves / loads itself. Under torchrun the policy and
the reference are FSDP2-sharded; every loss is divided by *global* counts, so N processes compute
the same update as one process on the same global batch. What the policy and the reference are
(full fine-tuning, or LoRA with ``actor.lora_rank > 0``) is :mod:`prorl.trainer.weights`' business.
"""

from __future__ import annotations

import contextlib
import random
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from prorl.algo.core import aggregate_loss, kl_penalty, make_policy_loss, masked_mean
from prorl.algo.entropy_mask import entropy_top_mask, entropy_top_threshold
from prorl.algo.rollout_correction import rollout_correction
from prorl.config import ActorConfig, AlgoConfig, Config, old_logprobs_from_rollout
from prorl.models.layout import PaddedBatch
from prorl.models.packing import (default_row_tokens, pack_padded, pack_sequences, packed_response_logprobs,
                                  token_budget_micro_batches)
from prorl.models.policy import response_logprobs
from prorl.trainer import distributed as D
from prorl.trainer.precision import autocast_dtype
from prorl.trainer.weights import build_weights


@dataclass
class TrainBatch:
    """One step's training data on this rank: ``B = groups x group_size`` sequences."""

    seqs: PaddedBatch  # input ids / masks [B, P + R]
    advantages: torch.Tensor  # [B]
    loss_mask: torch.Tensor  # [B, R] response tokens that count in the loss
    group_size: int
    temperature: float  # the rollout temperature: log-probs are of the tempered distribution
    rollout_logp: torch.Tensor | None = None  # [B, R] the engine's sampling log-probs (vLLM), for mismatch correction

    @property
    def num_groups(self) -> int:
        return self.seqs.input_ids.shape[0] // self.group_size


def agg_count(mask: torch.Tensor, agg_mode: str) -> torch.Tensor:
    """What the aggregation divides by: counted tokens (token-mean) or sequences with any token."""
    return mask.sum() if agg_mode == "token-mean" else (mask.sum(-1) > 0).sum().float()


def make_optimizer(params: list[torch.nn.Parameter], actor: ActorConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (all of them, or LoRA's adapters)."""
    return torch.optim.AdamW(params, lr=actor.lr, betas=tuple(actor.betas), weight_decay=actor.weight_decay)


class Actor:
    """Policy + reference + optimizer of one rank. ``checkpoint``: resume from this directory.

    It reads its settings from the config it was last given (the constructor's, then each stage's
    through :meth:`configure`), except ``FIXED_KEYS``, which shape the modules it builds."""

    FIXED_KEYS = ("model.dtype", "model.attn_implementation", "model.fsdp_mixed_precision", "actor.compile",
                  "actor.lora_rank", "actor.lora_alpha", "actor.lora_target_modules")

    def __init__(self, cfg: Config, world: D.World, *, model_path: str, needs_reference: bool,
                 checkpoint: Path | None = None):
        self.world = world
        self.cfg = cfg
        # full fine-tuning or LoRA (prorl.trainer.lora): the policy, its reference and their life cycle
        self.weights = build_weights(cfg, world, model_path=model_path, needs_reference=needs_reference,
                                     checkpoint=checkpoint)
        self.model, self.tokenizer = self.weights.policy, self.weights.tokenizer
        self.optimizer = make_optimizer(self.weights.trainable_parameters(), cfg.actor)
        if checkpoint is not None and (checkpoint / "optimizer").exists():
            self._load_optimizer(checkpoint / "optimizer")
        self.configure(cfg)

    @property
    def reference(self) -> torch.nn.Module | None:
        """The separate reference module (full fine-tuning), None under LoRA (see :attr:`has_reference`)."""
        return self.weights.reference_module

    @property
    def has_reference(self) -> bool:
        """Whether a reference policy is kept (some stage uses a KL penalty)."""
        return self.weights.has_reference

    def configure(self, cfg: Config) -> None:
        """Take a new stage's config: micro-batching, packing, chunking, autocast, gradient
        checkpointing and the loss settings are read from it from now on; AdamW's weight decay and
        betas change in place (the learning rate is set every step by :meth:`set_lr`)."""
        self.cfg = cfg
        model = self.model
        if cfg.model.gradient_checkpointing != _checkpointing_on(model):
            # transformers 5 names it activation checkpointing (the gradient_* names are deprecated)
            prefix = "activation" if hasattr(model, "activation_checkpointing_enable") else "gradient"
            getattr(model, f"{prefix}_checkpointing_{'enable' if cfg.model.gradient_checkpointing else 'disable'}")()
        for group in self.optimizer.param_groups:
            group["weight_decay"], group["betas"] = cfg.actor.weight_decay, tuple(cfg.actor.betas)

    # ------------------------------------------------------------------ log-probs
    @torch.no_grad()
    def logprobs(self, seqs: PaddedBatch, *, temperature: float, reference: bool = False) -> torch.Tensor:
        """Log-prob of every response token under the policy (or the reference), no grad. # -> [B, R]"""
        out = torch.zeros(seqs.input_ids.shape[0], seqs.response_len, device=seqs.input_ids.device)
        all_rows = torch.arange(seqs.input_ids.shape[0], device=seqs.input_ids.device)
        with self.weights.reference() if reference else contextlib.nullcontext(self.model) as model:
            was_training = model.training
            model.eval()
            for idx in self._micro_batches(seqs, all_rows):
                lp, _ = self._forward(model, seqs, idx, temperature=temperature, with_entropy=False)
                if idx is not None:
                    out[idx] = lp
            model.train(was_training)
        return out

    def _micro_batches(self, seqs: PaddedBatch, idx: torch.Tensor) -> list[torch.Tensor | None]:
        """Rows ``idx`` in micro-batches: by token budget (``actor.max_tokens_per_micro_batch``) or
        ``actor.micro_batch_size`` sequences; ``None``-padded to the same count on every rank."""
        a = self.cfg.actor
        if a.max_tokens_per_micro_batch > 0:
            lengths = seqs.attention_mask[idx].sum(-1).tolist()
            chunks = [idx[torch.tensor(mb, device=idx.device)] for mb in
                      token_budget_micro_batches(lengths, a.max_tokens_per_micro_batch)] if len(idx) else []
        else:
            chunks = [idx[s:s + a.micro_batch_size] for s in range(0, len(idx), a.micro_batch_size)]
        return self._pad_to_global_count(chunks)

    def _forward(self, model: torch.nn.Module, seqs: PaddedBatch, idx: torch.Tensor | None, *, temperature: float,
                 with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Response log-probs (and entropy) of rows ``idx``: packed without padding when
        ``actor.max_tokens_per_micro_batch`` is set, else the padded layout. ``idx=None``: a dummy
        pass that keeps FSDP collectives in step. # -> ([n, R], [n, R] | None)"""
        with self._autocast():
            return self._forward_inner(model, seqs, idx, temperature=temperature, with_entropy=with_entropy)

    def _autocast(self) -> contextlib.AbstractContextManager:
        """``model.autocast`` (``auto`` resolved by :func:`autocast_dtype`): the forward in bf16 over
        fp32 weights (the backward follows its dtypes)."""
        dtype = autocast_dtype(self.cfg.model, self.world.device, self.world.distributed)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(self.world.device).type, dtype=dtype)

    def _forward_inner(self, model: torch.nn.Module, seqs: PaddedBatch, idx: torch.Tensor | None, *,
                       temperature: float, with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, pad = self.cfg.actor, self.tokenizer.pad_token_id
        if a.max_tokens_per_micro_batch > 0:
            if idx is None:
                packed = pack_sequences([], [], pad_id=pad).to(self.world.device)
            else:
                lengths = seqs.attention_mask[idx].sum(-1).tolist()
                packed = pack_padded(seqs, idx, pad_id=pad,
                                     max_tokens_per_row=default_row_tokens(model, lengths, a.max_tokens_per_row))
            return packed_response_logprobs(model, packed, temperature=temperature, with_entropy=with_entropy,
                                            chunk_tokens=a.logprob_chunk_tokens, fp32_lm_head=a.fp32_lm_head)
        sub = seqs.select(idx) if idx is not None else self._dummy()
        return response_logprobs(model, sub.input_ids, sub.attention_mask, sub.response_len, temperature=temperature,
                                 with_entropy=with_entropy)

    # ------------------------------------------------------------------ update
    def update(self, batch: TrainBatch, *, rng: random.Random) -> dict[str, float]:
        """``actor.ppo_epochs`` passes of mini-batch updates; returns verl-named metrics (averaged over ranks).

        Mini-batches hold ``actor.ppo_mini_batch_size`` prompt groups globally; micro-batch losses
        are weighted by their share of the mini-batch's *global* count (tokens for token-mean,
        sequences otherwise), so micro-batching and world size do not change the update. When the
        update is on-policy (one mini-batch, one epoch) the old log-probs are the detached current
        ones and their forward pass is skipped.
        """
        algo, actor = self.cfg.algo, self.cfg.actor
        timing: dict[str, float] = {}
        t0 = time.perf_counter()
        global_groups = int(D.all_reduce(self.world, batch.num_groups))
        num_mini = max(1, -(-global_groups // actor.ppo_mini_batch_size))
        on_policy = num_mini == 1 and actor.ppo_epochs == 1
        from_rollout = old_logprobs_from_rollout(self.cfg)
        if from_rollout and batch.rollout_logp is not None:
            old_logp = batch.rollout_logp  # the engine's log-probs: no old-policy forward at all
        else:
            old_logp = None if on_policy else self.logprobs(batch.seqs, temperature=batch.temperature)
        ref_logp = self.logprobs(batch.seqs, temperature=batch.temperature, reference=True) \
            if self.has_reference and algo.kl_coef > 0 else None
        timing["timing_s/old_log_prob"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        self.model.train()
        stats: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])  # name -> [weighted sum, weight]
        gs = batch.group_size
        per_mini = -(-batch.num_groups // num_mini)
        for _ in range(actor.ppo_epochs):
            order = list(range(batch.num_groups))
            rng.shuffle(order)
            for m in range(num_mini):
                groups = order[m * per_mini:(m + 1) * per_mini]
                idx = torch.tensor([g * gs + j for g in groups for j in range(gs)], dtype=torch.long,
                                   device=batch.loss_mask.device)
                self._mini_batch_step(batch, idx, old_logp, ref_logp, algo, actor, stats)
        timing["timing_s/update_actor"] = time.perf_counter() - t1
        return {**self._mean_over_ranks(stats), **timing}

    def _mini_batch_step(self, batch: TrainBatch, idx: torch.Tensor, old_logp, ref_logp, algo: AlgoConfig,
                         actor: ActorConfig, stats: dict[str, list[float]]) -> None:
        """One optimizer step. Metrics are weighted by each micro-batch's share of the global count,
        so they are the mini-batch's aggregate whatever the micro-batching or world size."""
        local = float(agg_count(batch.loss_mask[idx], algo.loss_agg_mode)) if len(idx) else 0.0
        total = max(1.0, D.all_reduce(self.world, local))
        self.optimizer.zero_grad(set_to_none=True)
        loss_fn = make_policy_loss(algo)  # the registered loss algo.policy_loss names
        subs = self._micro_batches(batch.seqs, idx)
        top = algo.entropy_top_fraction if 0 < algo.entropy_top_fraction < 1 else 0.0  # 80/20: high-entropy tokens
        ent_thr = self._entropy_threshold(batch, subs, top) if top and algo.entropy_mask_scope == "mini_batch" else None
        for sub in subs:
            weight = 0.0 if sub is None else \
                float(agg_count(batch.loss_mask[sub], algo.loss_agg_mode)) / total * self.world.world_size
            if weight == 0.0 and not self.world.distributed:
                continue
            if weight == 0.0:  # nothing counted here (or no micro-batch left on this rank): a zero-weight
                logp, _ = self._forward(self.model, batch.seqs, None, temperature=1.0, with_entropy=False)
                (logp.sum() * 0.0).backward()  # pass keeps every rank's FSDP collectives in step
                continue
            mask = batch.loss_mask[sub]
            logp, ent = self._forward(self.model, batch.seqs, sub, temperature=batch.temperature, with_entropy=True)
            old = logp.detach() if old_logp is None else old_logp[sub]
            is_weights = None
            if batch.rollout_logp is not None:  # the trainer's old policy vs the engine that sampled
                train_old = logp.detach() if old_logp is None or old_logp is batch.rollout_logp else old
                corr_w, corr_mask, corr = rollout_correction(
                    train_old, batch.rollout_logp[sub], mask, mode=algo.rollout_correction,
                    tis_cap=algo.rollout_corr_tis_cap, low=algo.rollout_corr_low, high=algo.rollout_corr_high)
                for k, v in corr.items():
                    _add(stats, k, v, weight)
                if algo.rollout_correction != "none":
                    is_weights, mask = corr_w, corr_mask
            if top:  # the policy gradient of the top-entropy tokens only: a 0/1 weight, the denominators stay
                keep = entropy_top_mask(ent, batch.loss_mask[sub], top, threshold=ent_thr)
                is_weights = keep if is_weights is None else is_weights * keep
                _add(stats, "actor/entropy_mask_fraction", masked_mean(keep, batch.loss_mask[sub]).item(), weight)
            pl = loss_fn(logp, old, batch.advantages[sub], mask, rollout_is_weights=is_weights)
            loss = pl.loss
            if ref_logp is not None:
                kl = aggregate_loss(kl_penalty(logp, ref_logp[sub], algo.kl_estimator), mask, algo.loss_agg_mode)
                loss = loss + algo.kl_coef * kl
                _add(stats, "actor/kl_loss", kl.item(), weight)
            ent_mean = aggregate_loss(ent, mask, algo.loss_agg_mode)
            if algo.entropy_coef:
                loss = loss - algo.entropy_coef * ent_mean
            (loss * weight).backward()  # FSDP averages gradients over ranks; `weight` undoes that
            _add(stats, "actor/pg_loss", pl.loss.item(), weight)
            _add(stats, "actor/pg_clipfrac", pl.clipfrac.item(), weight)
            _add(stats, "actor/pg_clipfrac_higher", pl.clipfrac_high.item(), weight)
            _add(stats, "actor/pg_clipfrac_lower", pl.clipfrac_lower.item(), weight)  # verl's: the dual clip is active
            _add(stats, "actor/pg_clipfrac_below_low_bound", pl.clipfrac_below_low_bound.item(), weight)
            _add(stats, "actor/ppo_kl", pl.approx_kl.item(), weight)
            _add(stats, "actor/entropy", masked_mean(ent.detach(), mask).item(), weight)
            for name, value in pl.extra.items():  # a loss's own statistics (e.g. clip_cov's pg_clipfrac_cov)
                _add(stats, f"actor/{name}", float(value), weight)
        grad_norm = self._clip_grad_norm(actor.grad_clip)
        if torch.isfinite(grad_norm):
            self.optimizer.step()
        else:
            _add(stats, "actor/nonfinite_grad_skips", 1.0, 1.0 / self.world.world_size)
        _add(stats, "actor/grad_norm", float(grad_norm), 1.0 / self.world.world_size)  # global: same on every rank

    @torch.no_grad()
    def _entropy_threshold(self, batch: TrainBatch, subs: list, fraction: float) -> torch.Tensor | None:
        """The top-``fraction`` entropy threshold over the whole mini-batch, every micro-batch on every
        rank (arXiv:2506.01939's batch-wide threshold), from a no-grad forward pass. None when one
        micro-batch on one process holds the mini-batch: its own threshold is the same, for free."""
        if len(subs) == 1 and not self.world.distributed:
            return None
        local = []
        for sub in subs:
            if sub is None:  # keeps every rank's FSDP collectives in step
                self._forward(self.model, batch.seqs, None, temperature=1.0, with_entropy=False)
            elif self.world.distributed or bool(batch.loss_mask[sub].any()):
                _, ent = self._forward(self.model, batch.seqs, sub, temperature=batch.temperature, with_entropy=True)
                local.append(ent[batch.loss_mask[sub] > 0].float().cpu())
        values = torch.cat([v for part in D.all_gather(self.world, local) for v in part] or [torch.zeros(0)])
        return entropy_top_threshold(values, fraction).to(batch.loss_mask.device)

    def _clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        params = [p for p in self.model.parameters() if p.grad is not None]
        if not params:
            return torch.tensor(0.0)
        norm = D.full_tensor(torch.nn.utils.get_total_norm([p.grad for p in params]))
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        return norm

    def _pad_to_global_count(self, chunks: list) -> list:
        """Under FSDP every rank must run the same number of forward passes: pad with ``None``."""
        n = int(D.all_reduce(self.world, len(chunks), op="max"))
        return list(chunks) + [None] * (n - len(chunks))

    def _dummy(self) -> PaddedBatch:
        pad = self.tokenizer.pad_token_id
        dev = self.world.device
        return PaddedBatch(torch.full((1, 2), pad, device=dev), torch.ones(1, 2, dtype=torch.long, device=dev),
                           torch.zeros(1, 1, device=dev), 1)

    def _mean_over_ranks(self, stats: dict[str, list[float]]) -> dict[str, float]:
        """Weighted means over micro-batches, ranks and mini-batches (extremes stay extremes)."""
        merged: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for part in D.all_gather(self.world, dict(stats)):
            for k, (s, w) in part.items():
                if k.endswith(("_max", "_min")):
                    _add(merged, k, s, w)
                else:
                    merged[k][0] += s
                    merged[k][1] += w
        return {k: (s if k.endswith(("_max", "_min")) else s / w) for k, (s, w) in merged.items() if w}

    # ------------------------------------------------------------------ control
    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def set_lr(self, lr: float) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def reset(self, *, reference: bool, optimizer: bool) -> bool:
        """ProRL's hard reset: the reference becomes the current policy; AdamW starts afresh (with
        the current config's settings). Returns whether AdamW restarted: under LoRA a reference
        reset merges the adapter into the base and starts a fresh one, so it always restarts."""
        stale = reference and self.weights.reset_reference()  # True: AdamW's state is of a discarded adapter
        restart = optimizer or stale
        if restart:
            lr = self.lr
            self.optimizer = make_optimizer(self.weights.trainable_parameters(), self.cfg.actor)
            self.set_lr(lr)
        return restart

    def load_policy_weights(self, path: Path) -> None:
        """Roll the policy back to the weights of a checkpoint directory written by :meth:`save`."""
        self.weights.load_policy_weights(path)

    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(HF name, full tensor) of the policy as a plain HF model (LoRA: merged), gathered one at a
        time under FSDP2: what a rollout engine's ``load_weights`` takes."""
        return self.weights.named_weights()

    # ------------------------------------------------------------------ save / load
    def save(self, directory: Path, *, with_reference: bool) -> None:
        """Write the HF model (+ tokenizer, + reference) on rank 0 and the sharded optimizer (all ranks)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        self.weights.save(directory, with_reference=with_reference)
        with _quiet_single_process_dcp():
            dcp.save({"optim": get_optimizer_state_dict(self.model, self.optimizer)},
                     checkpoint_id=str(directory / "optimizer"), no_dist=not self.world.distributed)

    def save_model(self, directory: Path) -> None:
        """The current policy as a Hugging Face model + tokenizer (rank 0 writes; every rank calls)."""
        self.weights.save_model(directory)

    def _load_optimizer(self, directory: Path) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

        state = {"optim": get_optimizer_state_dict(self.model, self.optimizer)}
        with _quiet_single_process_dcp():
            dcp.load(state, checkpoint_id=str(directory), no_dist=not self.world.distributed)
        set_optimizer_state_dict(self.model, self.optimizer, state["optim"])


def _checkpointing_on(model: torch.nn.Module) -> bool:
    """Whether activation (gradient) checkpointing is on, without touching a deprecated property."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), name):
            return bool(getattr(model, name))
    return False


def _add(stats: dict[str, list[float]], name: str, value: float, weight: float) -> None:
    """Accumulate a weighted mean; names ending in ``_max`` / ``_min`` keep the extreme instead."""
    if name.endswith(("_max", "_min")):
        pick = max if name.endswith("_max") else min
        stats[name][0] = value if stats[name][1] == 0 else pick(stats[name][0], value)
        stats[name][1] = 1.0
        return
    stats[name][0] += value * weight
    stats[name][1] += weight


@contextlib.contextmanager
def _quiet_single_process_dcp():
    """DCP warns that it 'assumes a single process' when there is no process group: that is the point."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
        yield
