"""The controller: a :class:`Trainer` object built once from the config, driven by ``step()``,
``validate()``, ``save()`` and ``reset(cause)`` (``fit()`` is the loop that chains them).

One step reads top to bottom: stage -> resets -> rollouts + rewards -> advantages -> Actor update
-> weight sync -> metrics. The controller never touches a module: the Actor owns the policy,
reference and optimizer; the engine owns generation; the scorer owns verification. When a stage
begins its config is handed to each of them. Under torchrun every rank runs the same controller on
its share of the prompts; rank 0 decides, logs and writes.

Callbacks (any object with some of ``on_step_end(step, metrics)``, ``on_validation(step, results)``,
``should_stop()``) let benchmarks, experiments and tests watch or stop a run without patching it.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from prorl.algo.reset_policy import TriggerResult, decide_reset
from prorl.config import Config, ConfigError, describe_fields, to_dict
from prorl.data.dataset import AllPromptsRetired, PromptSampler, build_examples
from prorl.asyncrl.pool import AsyncRollouts, default_threads
from prorl.rollout import ENGINE_FIXED_KEYS
from prorl.trainer import checkpoint as ckpt
from prorl.trainer import distributed as D
from prorl.trainer import faults
from prorl.trainer.actor import Actor
from prorl.trainer.batch import empty_train_batch, make_train_batch
from prorl.trainer.evaluate import summarise_records, usable_for_watchdog, validation_metrics
from prorl.trainer.metrics import MetricsLogger, NullLogger, reduce_rank_metrics
from prorl.trainer.precision import describe as describe_precision
from prorl.trainer.rollouts import make_rollouts
from prorl.trainer.setup import ManualControls, check_run_dir, load_dataset_rows, prepare_run_dir, resolve_model_path
from prorl.trainer.state import RunState, StageSchedule


class Trainer:
    """One training run. ``Trainer(cfg).fit()`` trains; ``step()`` etc. drive it by hand."""

    # keys read only while the run is built (data, seed, devices, run directory): fixed for the run
    FIXED_KEYS = ("data.train_files", "data.val_files", "data.builtin_tasks", "data.builtin_train_size",
                  "data.builtin_val_size", "data.max_prompt_length", "data.val_max_prompts", "data.shuffle",
                  "model.path", "trainer.run_dir", "trainer.seed", "trainer.device", "trainer.threads",
                  "trainer.progress_bar", "validation.at_start", "reward.sandbox_allow_unsafe")

    def __init__(self, cfg: Config, *, resume: bool = False, overwrite: bool = False,
                 log: Callable[..., None] = print, callbacks: Sequence[Any] = ()):
        check_stage_overrides(cfg)  # before anything loads
        self.base_cfg = cfg
        trainer_threads, worker_threads = (cfg.trainer.threads, 0) if cfg.rollout.mode == "sync" else \
            default_threads(cfg, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        self.world = world = D.init_world(cfg.trainer.device, trainer_threads)
        self.log = log if world.is_main else (lambda *a, **k: None)
        self.callbacks = list(callbacks)
        self.run_dir = run_dir = Path(cfg.trainer.run_dir)
        check_run_dir(run_dir, resume=resume, overwrite=overwrite)
        latest = ckpt.latest_checkpoint(run_dir) if resume else None
        if resume and latest is None:
            self.log(f"--resume: no complete checkpoint in {run_dir / 'checkpoints'}; starting from scratch")
        self.state = RunState.from_json(ckpt.load_trainer_state(latest)) if latest else RunState()
        self.schedule = StageSchedule(cfg)
        self.cfg = self.schedule.config(self.state.stage)
        self.seed = seed = cfg.trainer.seed
        _seed_everything(seed + world.rank)

        # ---- everything that can fail on bad input loads before the run directory is touched
        train_rows, val_rows = load_dataset_rows(self.cfg)
        model_path = resolve_model_path(cfg.model.path)
        self.actor = Actor(self.cfg, world, model_path=model_path, needs_reference=self.schedule.needs_reference(),
                           checkpoint=latest)
        self.tokenizer = tok = self.actor.tokenizer
        if cfg.reward.sandbox_allow_unsafe:  # explicit opt-in; worker processes inherit the variable
            os.environ["PRORL_SANDBOX_ALLOW_UNSAFE"] = "1"
        train_ex, d1 = build_examples(train_rows, tok, cfg.data.max_prompt_length)
        self.val_examples, d2 = build_examples(val_rows, tok, cfg.data.max_prompt_length)
        self.sampler = PromptSampler(train_ex, seed=seed, shuffle=cfg.data.shuffle, weights=self.cfg.data.domain_weights,
                                     retire_pass_rate=self.cfg.data.retire_pass_rate,
                                     retire_min_samples=self.cfg.data.retire_min_samples)
        if self.state.sampler:
            self.sampler.load_state_dict(self.state.sampler)
        self.rollouts = make_rollouts(self.cfg, model_path=model_path, tokenizer=tok, sampler=self.sampler, world=world,
                                      weights=self.actor.named_weights, version=self.state.step,
                                      seed=seed + 1009 * world.rank + 100_003 * self.state.step,  # a resumed run samples afresh
                                      worker_threads=worker_threads, returned=self.state.pending_prompts, log=self.log)
        if world.is_main:
            prepare_run_dir(run_dir, cfg, fresh=latest is None)
        D.barrier(world)
        self.logger = MetricsLogger.from_config(cfg.trainer, config=to_dict(cfg), resume_step=self.state.step if latest else -1) \
            if world.is_main else NullLogger()
        self.controls = ManualControls(run_dir) if world.is_main else None
        self.log(f"run dir: {run_dir.resolve()}  (metrics.jsonl, events.jsonl, checkpoints/)")
        self.log(f"tensorboard: tensorboard --logdir {(run_dir / 'tensorboard').resolve()}")
        self.log(f"train prompts: {len(train_ex)}, val prompts: {len(self.val_examples)}, dropped over-long: {d1 + d2}, "
                 f"processes: {world.world_size}" + (f", resuming from {latest.name}" if latest else ""))
        self.log(describe_precision(cfg, world.device, world.distributed))
        self.results: dict = {}  # the latest validation
        self._stop_reason: str | None = None
        self._t_start = time.perf_counter()
        self._resumed_from = latest
        self._bar = None

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        """Train until ``should_stop()``: validate and checkpoint on schedule; returns the final validation."""
        from tqdm import tqdm

        cfg = self.cfg
        try:
            if self.state.step == 0 and cfg.validation.at_start and cfg.validation.every and self.val_examples:
                self.validate()
                if cfg.reset.rollback_to_best and self.state.best_step == 0:  # the initial policy may be the best
                    self.save(keep=cfg.trainer.keep_checkpoints + 1)
            self._restore_rng()
            self._t_start = time.perf_counter()
            self._bar = tqdm(desc="train", initial=self.state.step, total=self.cfg.trainer.total_steps,
                             disable=not (self.base_cfg.trainer.progress_bar and self.world.is_main))
            while not self.should_stop():
                metrics = self.step()
                if metrics is None:  # stopped inside the step (prompts exhausted, failed recoveries)
                    break
                step, cfg, out_of_time = self.state.step, self.cfg, self._out_of_time()
                last = step >= cfg.trainer.total_steps
                if self.val_examples and cfg.validation.every and (step % cfg.validation.every == 0 or last or out_of_time):
                    self.validate()
                new_best = cfg.validation.save_best and self.state.best_step == step
                if (cfg.trainer.save_every and step % cfg.trainer.save_every == 0) or last or out_of_time or new_best:
                    self.save()
                if out_of_time:
                    self._stop_reason = f"trainer.max_minutes={cfg.trainer.max_minutes} reached at step {step}"
            if self._stop_reason:
                self.log(f"{self._stop_reason}; stopping")
            self._print_summary()
            if self.world.is_main:
                (self.run_dir / "final_validation.json").write_text(json.dumps(self.results, indent=1))
                self._write_best()
        finally:
            self.close()
        return self.results

    def should_stop(self) -> bool:
        """Total steps done, the time budget spent, a stop decided inside a step, or a callback's wish."""
        if self._stop_reason is not None or self.state.step >= self.cfg.trainer.total_steps:
            return True
        wish = any(bool(getattr(cb, "should_stop", lambda: False)()) for cb in self.callbacks)
        if D.broadcast(self.world, wish):  # rank 0's callbacks decide for all ranks
            self._stop_reason = self._stop_reason or "a callback asked to stop"
            return True
        return False

    # ------------------------------------------------------------------ one step
    def step(self) -> dict[str, float] | None:
        """One training step (stage, resets, rollouts, update, weight sync, metrics); returns its
        metrics, or None when the run had to stop before training (the step is then not counted)."""
        step = self.state.step + 1
        faults.set_step(step)
        # ---- stage: a later stage may change length, n, data mix, shaping, lr, micro-batching ...
        if (idx := self.schedule.stage_at(step, self.state.stage)) != self.state.stage:
            self._enter_stage(step, idx)
            if self.schedule.resets_on_enter(idx):
                self.reset(f"stage {self.schedule.name(idx)} starts", step=step, trigger="stage")
        # ---- resets: on demand (file or SIGUSR1), scheduled, automatic; rank 0 decides for all
        manual = D.broadcast(self.world, self.controls.take_reset_request() if self.controls else None)
        auto = None if manual else self._auto_reset_decision(step)
        if auto and (nxt := self.schedule.next_on_trigger(self.state.stage)) is not None:
            self._enter_stage(step, nxt)  # a trigger also ends a stage marked until_trigger
        if manual:
            self.reset(manual, step=step, trigger="manual")
        elif auto:
            self.reset(auto.cause, step=step, decision=auto)
        if manual or auto:
            r = self.cfg.reset
            if 0 < r.max_failed_recoveries <= self.state.failed_recoveries:
                msg = (f"{self.state.failed_recoveries} rollbacks in a row did not bring validation back to the best "
                       f"checkpoint's level (step {self.state.best_ckpt_step}); stopping rather than training a dead "
                       f"policy (reset.max_failed_recoveries={r.max_failed_recoveries})")
                self.logger.event(step, "stop", msg)
                self._stop_reason = f"step {step}: {msg}"
                return None  # the last checkpoint stays as it is

        # ---- rollouts + rewards + dynamic-sampling filter (this rank's share; async: the workers' next batch)
        cfg = self.cfg
        self.actor.set_lr(_lr_at(cfg, step))
        t_step = time.perf_counter()
        try:
            exp = self.rollouts.collect(step=step, cfg=cfg)
        except AllPromptsRetired as e:  # the same on every rank: the samplers are identical
            self._stop_reason = f"step {step}: {e}"
            if self.state.step > 0:
                self.save()
            return None
        metrics = dict(exp.metrics) | self.sampler.metrics()
        # ---- advantages + actor update (every rank takes part, even with no groups of its own)
        update_metrics: dict[str, float] = {}
        if D.all_reduce(self.world, len(exp.groups)) > 0:
            device, pad = self.world.device, self.tokenizer.pad_token_id
            batch, batch_metrics = make_train_batch(exp.groups, cfg, pad_token_id=pad, device=device) if exp.groups \
                else (empty_train_batch(exp.sampling, pad_token_id=pad, device=device), {})
            metrics |= batch_metrics
            update_metrics = self.actor.update(batch, rng=random.Random(f"{self.seed}:update:{step}"))
            faults.point("update")
            metrics |= {"timing_s/weight_sync": self.rollouts.publish(self.actor.named_weights, version=step)}
        metrics = reduce_rank_metrics(D.all_gather(self.world, metrics)) | update_metrics
        # one entry per step (NaN: no update, or no KL term), so that the triggers' window since the
        # last reset, counted in steps, never reaches back before it
        self.state.kl_history.append(metrics.get("actor/kl_loss", math.nan))
        self.state.entropy_history.append(metrics.get("actor/entropy", math.nan))
        metrics |= {"actor/lr": self.actor.lr, "training/stage": self.state.stage,
                    "timing_s/step": time.perf_counter() - t_step}
        self.state.step = step
        self.logger.log_prompts(step, sorted(i for part in D.all_gather(self.world, [self.sampler.index(g.example)
                                                                                      for g in exp.groups]) for i in part))
        self.logger.log(step, metrics)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(score=f"{metrics['critic/score/mean']:.3f}", ent=f"{metrics.get('actor/entropy', 0):.3f}")
        for cb in self.callbacks:
            if hasattr(cb, "on_step_end"):
                cb.on_step_end(step, metrics)
        return metrics

    # ------------------------------------------------------------------ validate, reset, save
    def validate(self) -> dict:
        """Sample the held-out prompts with the current policy, log ``val-core/...`` and feed the
        watchdog (best checkpoint, degradation triggers, recovery after a rollback)."""
        vcfg, step, t0 = self.cfg.validation, self.state.step, time.perf_counter()
        records = self.rollouts.evaluate(self.val_examples, n=vcfg.n,
                                         temperature=vcfg.temperature, top_p=vcfg.top_p,
                                         max_new_tokens=vcfg.max_response_length or self.cfg.rollout.max_response_length)
        faults.point("validation")
        results = summarise_records([r for part in D.all_gather(self.world, records) for r in part], vcfg.n)
        self.logger.log(step, {**validation_metrics(results, vcfg.n), "timing_s/validate": time.perf_counter() - t0})
        self.results = results
        usable, why = usable_for_watchdog(results, vcfg.min_scored_fraction)
        if not usable:  # a reward outage, not a regression: no best checkpoint, trigger or rollback from it
            self.logger.event(step, "validation_ignored", why)
            self.log(f"step {step} validation ignored by the watchdog: {why}")
        else:
            self._watch(step, results)
        for cb in self.callbacks:
            if hasattr(cb, "on_validation"):
                cb.on_validation(step, results)
        return results

    def _watch(self, step: int, results: dict) -> None:
        """Feed a usable validation to the watchdog: history, best score, recovery after a rollback."""
        per_source = {ds: r["mean_score"] for ds, r in results.items() if ds != "all"}
        counts = {ds: {"prompts": r["num_prompts"], "samples": r["samples_per_prompt"], "scored": r["num_scored"]}
                  for ds, r in results.items() if ds != "all"}
        self.state.record_validation(step, per_source, counts)
        self.state.check_recovery(per_source, self.cfg.reset.val_margin)
        self.log(f"step {step} validation: " + ", ".join(f"{ds} {v:.3f}" for ds, v in per_source.items()))

    def reset(self, cause: str, *, step: int | None = None, decision: TriggerResult | None = None,
              trigger: str = "manual") -> None:
        """ProRL's hard reset (what ``reset.reset_reference`` / ``reset_optimizer`` say), after a
        rollback to the best checkpoint when ``reset.rollback_to_best``; logged as a ``reset`` event
        with the ``trigger`` that fired and, for an automatic one (``decision``), its ``statistic``,
        ``threshold`` and ``p_value``."""
        step = self.state.step + 1 if step is None else step
        r, state = self.cfg.reset, self.state
        rollback = r.rollback_to_best and state.best_ckpt and Path(state.best_ckpt).exists()
        if rollback:
            self.actor.load_policy_weights(Path(state.best_ckpt))
            voided = self.rollouts.flush(cause)  # async: samples of the replaced policy are never trained
            self.rollouts.publish(self.actor.named_weights, version=state.step)  # the next rollouts: the restored policy
            cause += f" (rolled back to best checkpoint, step {state.best_ckpt_step}" + \
                (f"; {voided} groups of the replaced policy voided)" if voided else ")")
        restarted = self.actor.reset(reference=r.reset_reference, optimizer=r.reset_optimizer)  # LoRA: with the reference
        state.reference_reset |= r.reset_reference and self.actor.has_reference
        state.record_reset(step, cause)
        if decision is not None and decision.drop_evals:  # the drop that fired is not noise to judge the next by
            n = len(state.blended_val_history)
            state.exclude_from_noise(list(range(n - decision.drop_evals, n)))
        if rollback:
            state.record_rollback()
        why = decision.event_fields() if decision is not None else \
            {"trigger": trigger, "statistic": None, "threshold": None, "p_value": None}
        self.logger.event(step, "reset", cause, reference=r.reset_reference, optimizer=restarted, **why)
        self.log(f"step {step}: RESET ({cause})")

    def save(self, *, keep: int | None = None) -> Path:
        """Checkpoint the actor, data position, RNG and run state at the current step; a checkpoint
        of the best validation so far is kept as the rollback target."""
        state, step = self.state, self.state.step
        state.sampler = self.sampler.state_dict()
        state.pending_prompts = self.rollouts.outstanding_prompts()  # async: drawn, not yet trained: redone on resume
        keep = self.cfg.trainer.keep_checkpoints if keep is None else keep
        path = ckpt.save_checkpoint(self.run_dir, step, world=self.world, trainer_state=state.to_json(), keep=keep,
                                    write_actor=lambda d: self.actor.save(d, with_reference=state.reference_reset),
                                    protect=(state.best_ckpt_step,) if state.best_ckpt else ())
        if state.best_step == step:
            state.best_ckpt, state.best_ckpt_step = str(path), step
        return path

    def _write_best(self) -> None:
        """``RUN_DIR/best_checkpoint.json``: the checkpoint of the best usable validation (blended over
        data_sources) and its scores, for whoever takes the run's result (``prorl eval`` it, export it)."""
        s = self.state
        if s.best_step and s.best_step != s.best_ckpt_step:  # the best validation fell between checkpoints
            self.log(f"best validation {s.best_val:.3f} at step {s.best_step} was not checkpointed "
                     "(validation.save_best=true keeps it)")
        if not s.best_ckpt or not Path(s.best_ckpt).exists():
            return
        # the checkpoint's own validation: a later, higher one may have fallen between checkpoints
        val, scores = s.validation_at(s.best_ckpt_step) or (None, {})
        best = {"step": s.best_ckpt_step, "checkpoint": str(Path(s.best_ckpt).resolve()),
                "validation": val, "scores": scores}
        (self.run_dir / "best_checkpoint.json").write_text(json.dumps(best, indent=1))
        shown = "unknown" if val is None else f"{val:.3f}"  # (a state from before validation steps were kept)
        self.log(f"best checkpoint: step {s.best_ckpt_step}, validation {shown}: {best['checkpoint']}")

    def export_policy(self, directory: str | Path) -> None:
        """Write the current policy as a Hugging Face model (+ tokenizer) that ``from_pretrained`` loads."""
        self.actor.save_model(Path(directory))

    def close(self) -> None:
        """Release the scorer's workers and the logger's files (idempotent)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.rollouts is not None:
            self.rollouts.close()
            self.rollouts = None
        if self.logger is not None:
            self.logger.close()
            self.logger = None

    # ------------------------------------------------------------------ internals
    def _enter_stage(self, step: int, idx: int) -> None:
        """Hand the stage's config to every component that reads config."""
        new = self.schedule.config(idx)
        self.state.stage, self.cfg = idx, new
        self.actor.configure(new)
        self.rollouts.configure(new)
        self.sampler.set_weights(new.data.domain_weights)
        self.sampler.set_retirement(new.data.retire_pass_rate, new.data.retire_min_samples)
        if self._bar is not None:
            self._bar.total = new.trainer.total_steps
        overrides = self.schedule.stages[idx].overrides
        self.logger.event(step, "stage", f"enter stage {self.schedule.name(idx)}", stage=idx, overrides=overrides)
        self.log(f"step {step}: entering stage {self.schedule.name(idx)} {overrides}")

    def _auto_reset_decision(self, step: int) -> TriggerResult | None:
        """A scheduled or trigger-policy reset due at ``step`` (same inputs, same answer on every rank)."""
        val_histories, blended, evals_since = self.state.trigger_histories()
        decision = decide_reset(self.cfg.reset, step=step, kl_history=self.state.kl_history,
                                val_histories=val_histories, blended_val_history=blended,
                                steps_since_last_reset=self.state.steps_since_reset(step),
                                evals_since_last_reset=evals_since, val_counts=self.state.trigger_counts(),
                                entropy_history=self.state.entropy_history,
                                val_noise_histories=self.state.noise_histories())
        return decision if decision.fired else None

    def _out_of_time(self) -> bool:
        budget = self.cfg.trainer.max_minutes
        return D.broadcast(self.world, bool(budget) and (time.perf_counter() - self._t_start) / 60 >= budget)

    def _restore_rng(self) -> None:
        """A resumed run continues its random streams where the checkpoint left them (restored last:
        setup draws from them); a checkpoint from fewer ranks leaves new ranks freshly seeded."""
        latest = self._resumed_from
        if latest is not None and not ckpt.load_rng_state(latest, self.world.rank):
            _seed_everything(self.seed + 1000 * self.world.rank + self.state.step)

    def _print_summary(self) -> None:
        minutes = (time.perf_counter() - self._t_start) / 60
        if self.state.val_history:
            self.log(f"finished at step {self.state.step} after {minutes:.1f} min; held-out accuracy "
                     "(first -> last validation):")
            for ds, h in self.state.val_history.items():
                self.log(f"  {ds:24s} {h[0]:.3f} -> {h[-1]:.3f} ({100 * (h[-1] - h[0]):+.1f} points)")


def train(cfg: Config, *, resume: bool = False, overwrite: bool = False, log: Callable[..., None] = print,
          callbacks: Sequence[Any] = ()) -> dict:
    """Run (or resume) training; returns the final validation results."""
    trainer = Trainer(cfg, resume=resume, overwrite=overwrite, log=log, callbacks=callbacks)
    try:
        return trainer.fit()
    finally:
        D.shutdown(trainer.world)


def _fixed_key_readers() -> tuple[tuple[str, Sequence[str]], ...]:
    """(component, the keys it reads only when built) for every component that declares ``FIXED_KEYS``."""
    return (("trainer (data, seed, devices, run directory)", Trainer.FIXED_KEYS),
            ("actor (policy and reference)", Actor.FIXED_KEYS), ("rollout engine", ENGINE_FIXED_KEYS),
            ("async rollouts", AsyncRollouts.FIXED_KEYS),
            ("metrics logger", MetricsLogger.FIXED_KEYS))


def fixed_keys() -> frozenset[str]:
    """Config keys read only when a component is built, declared by each reader (``FIXED_KEYS``):
    a stage cannot change them. Every other key is read from the current stage's config."""
    return frozenset(k for _, keys in _fixed_key_readers() for k in keys)


def check_stage_overrides(cfg: Config) -> None:
    """Refuse a stage that overrides a key fixed for the run, naming the component that reads it."""
    readers = _fixed_key_readers()
    known = [key for key, _, _ in describe_fields()]
    for i, st in enumerate(cfg.stages):
        for key in st.overrides:
            if key not in known:
                near = difflib.get_close_matches(key, known, n=1)
                raise ConfigError(f"stages[{i}] ({st.name or i}) overrides: unknown key {key!r}"
                                  + (f"; did you mean {near[0]!r}?" if near else ""))
            for reader, keys in readers:
                if key in keys:
                    hint = " (stages change the mix with data.domain_weights)" if key.startswith("data.") else ""
                    raise ConfigError(f"stages[{i}] ({st.name or i}) overrides: {key} is fixed for the whole run: "
                                      f"the {reader} reads it once, when the run is built{hint}")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _lr_at(cfg: Config, step: int) -> float:
    warm = cfg.actor.lr_warmup_steps
    return cfg.actor.lr * (min(1.0, step / warm) if warm else 1.0)
