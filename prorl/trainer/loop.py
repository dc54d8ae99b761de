"""The controller: stage -> decisions (resets) -> rollouts + rewards -> advantages -> Actor update ->
weight sync -> validate -> checkpoint. It never touches a module: the Actor owns the policy,
reference and optimizer; the engine owns generation. Under torchrun every rank runs this same
function on its share of the prompts; rank 0 decides, logs and writes.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from prorl.algo.reset_policy import decide_reset
from prorl.config import Config, to_dict
from prorl.data.dataset import AllPromptsRetired, PromptSampler, build_examples
from prorl.rollout import make_engine
from prorl.trainer import checkpoint as ckpt
from prorl.trainer import distributed as D
from prorl.trainer import faults
from prorl.trainer.actor import Actor
from prorl.trainer.batch import empty_train_batch, make_train_batch
from prorl.trainer.evaluate import sample_and_score, summarise_records, usable_for_watchdog, validation_metrics
from prorl.trainer.metrics import MetricsLogger, NullLogger, reduce_rank_metrics
from prorl.trainer.rollout_step import collect, shaping_from_config
from prorl.trainer.setup import ManualControls, check_run_dir, load_dataset_rows, prepare_run_dir, resolve_model_path
from prorl.trainer.state import RunState, StageSchedule


def train(base_cfg: Config, *, resume: bool = False, overwrite: bool = False, log=print) -> dict:
    """Run (or resume) training; returns the final validation results."""
    world = D.init_world(base_cfg.trainer.device, base_cfg.trainer.threads)
    log = log if world.is_main else (lambda *a, **k: None)
    run_dir = Path(base_cfg.trainer.run_dir)
    check_run_dir(run_dir, resume=resume, overwrite=overwrite)
    latest = ckpt.latest_checkpoint(run_dir) if resume else None
    if resume and latest is None:
        log(f"--resume: no complete checkpoint in {run_dir / 'checkpoints'}; starting from scratch")
    state = RunState.from_json(ckpt.load_trainer_state(latest)) if latest else RunState()
    schedule = StageSchedule(base_cfg)
    cfg = schedule.config(state.stage)
    seed = base_cfg.trainer.seed
    _seed_everything(seed + world.rank)

    # ---- everything that can fail on bad input loads before the run directory is touched
    train_rows, val_rows = load_dataset_rows(cfg)
    model_path = resolve_model_path(base_cfg.model.path)
    actor = Actor(cfg, world, model_path=model_path, needs_reference=schedule.needs_reference(), checkpoint=latest)
    tok = actor.tokenizer
    if cfg.reward.sandbox_allow_unsafe:  # explicit opt-in; worker processes inherit the variable
        os.environ["PRORL_SANDBOX_ALLOW_UNSAFE"] = "1"
    train_ex, d1 = build_examples(train_rows, tok, cfg.data.max_prompt_length)
    val_ex, d2 = build_examples(val_rows, tok, cfg.data.max_prompt_length)
    sampler = PromptSampler(train_ex, seed=seed, shuffle=cfg.data.shuffle, weights=cfg.data.domain_weights,
                            retire_pass_rate=cfg.data.retire_pass_rate, retire_min_samples=cfg.data.retire_min_samples)
    if state.sampler:
        sampler.load_state_dict(state.sampler)
    engine = make_engine(cfg.rollout, model_path, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         dtype=base_cfg.model.dtype, device=world.device,
                         seed=seed + 1009 * world.rank + 100_003 * state.step)  # a resumed run samples afresh
    engine.load_weights(actor.named_weights())
    from prorl.rewards.scorer import RewardScorer

    scorer = RewardScorer.from_config(cfg.reward)
    if world.is_main:
        prepare_run_dir(run_dir, base_cfg, fresh=latest is None)
    D.barrier(world)
    logger = MetricsLogger(run_dir, tensorboard=base_cfg.trainer.tensorboard, wandb=base_cfg.trainer.wandb,
                           wandb_project=base_cfg.trainer.wandb_project, config=to_dict(base_cfg),
                           resume_step=state.step if latest else -1) if world.is_main else NullLogger()
    controls = ManualControls(run_dir) if world.is_main else None
    log(f"run dir: {run_dir.resolve()}  (metrics.jsonl, events.jsonl, checkpoints/)")
    log(f"tensorboard: tensorboard --logdir {(run_dir / 'tensorboard').resolve()}")
    log(f"train prompts: {len(train_ex)}, val prompts: {len(val_ex)}, dropped over-long: {d1 + d2}, "
        f"processes: {world.world_size}" + (f", resuming from {latest.name}" if latest else ""))

    def validate(step: int) -> dict:
        vcfg, t0 = cfg.validation, time.perf_counter()
        records = sample_and_score(engine, tok, scorer, D.split_for_rank(world, val_ex), n=vcfg.n,
                                   temperature=vcfg.temperature, top_p=vcfg.top_p,
                                   max_new_tokens=vcfg.max_response_length or cfg.rollout.max_response_length)
        faults.point("validation")
        results = summarise_records(D.all_gather(world, records), vcfg.n)
        logger.log(step, {**validation_metrics(results, vcfg.n), "timing_s/validate": time.perf_counter() - t0})
        usable, why = usable_for_watchdog(results, vcfg.min_scored_fraction)
        if not usable:  # a reward outage, not a regression: no best checkpoint, trigger or rollback from it
            logger.event(step, "validation_ignored", why)
            log(f"step {step} validation ignored by the watchdog: {why}")
            return results
        per_source = {ds: r["mean_score"] for ds, r in results.items() if ds != "all"}
        state.record_validation(step, per_source)
        state.check_recovery(per_source, cfg.reset.val_margin)
        log(f"step {step} validation: " + ", ".join(f"{ds} {v:.3f}" for ds, v in per_source.items()))
        return results

    def do_reset(step: int, cause: str) -> None:
        rollback = cfg.reset.rollback_to_best and state.best_ckpt and Path(state.best_ckpt).exists()
        if rollback:
            actor.load_policy_weights(Path(state.best_ckpt))
            engine.load_weights(actor.named_weights())  # the next rollouts come from the restored policy
            cause += f" (rolled back to best checkpoint, step {state.best_ckpt_step})"
        actor.reset(reference=cfg.reset.reset_reference, optimizer=cfg.reset.reset_optimizer, actor=cfg.actor)
        state.reference_reset |= cfg.reset.reset_reference and actor.reference is not None
        state.record_reset(step, cause)
        if rollback:
            state.record_rollback()
        logger.event(step, "reset", cause, reference=cfg.reset.reset_reference, optimizer=cfg.reset.reset_optimizer)
        log(f"step {step}: RESET ({cause})")

    def save(step: int, *, keep: int) -> Path:
        """Checkpoint the actor, data position, RNG and run state; the best one is kept."""
        state.sampler, state.step = sampler.state_dict(), step
        return ckpt.save_checkpoint(run_dir, step, world=world, trainer_state=state.to_json(), keep=keep,
                                    write_actor=lambda d: actor.save(d, with_reference=state.reference_reset),
                                    protect=(state.best_ckpt_step,) if state.best_ckpt else ())

    def enter_stage(step: int, idx: int) -> Config:
        state.stage = idx
        new = schedule.config(idx)
        sampler.set_weights(new.data.domain_weights)
        sampler.set_retirement(new.data.retire_pass_rate, new.data.retire_min_samples)
        overrides = schedule.stages[idx].overrides
        logger.event(step, "stage", f"enter stage {schedule.name(idx)}", stage=idx, overrides=overrides)
        log(f"step {step}: entering stage {schedule.name(idx)} {overrides}")
        return new

    results: dict = {}
    if state.step == 0 and cfg.validation.at_start and cfg.validation.every and val_ex:
        results = validate(0)
        if cfg.reset.rollback_to_best and state.best_step == 0:  # the initial policy may turn out the best
            state.best_ckpt, state.best_ckpt_step = str(save(0, keep=cfg.trainer.keep_checkpoints + 1)), 0
    if latest is not None and not ckpt.load_rng_state(latest, world.rank):  # restored last: setup
        _seed_everything(seed + 1000 * world.rank + state.step)  # draws nothing; fewer ranks saved it
    from tqdm import tqdm

    t_start, total = time.perf_counter(), base_cfg.trainer.total_steps
    bar = tqdm(range(state.step + 1, total + 1), desc="train", initial=state.step, total=total,
               disable=not (base_cfg.trainer.progress_bar and world.is_main))
    step = state.step
    for step in bar:
        faults.set_step(step)
        # ---- stage: a later stage may change length, n, data mix, shaping, lr
        if (idx := schedule.stage_at(step, state.stage)) != state.stage:
            cfg = enter_stage(step, idx)
            if schedule.resets_on_enter(idx):
                do_reset(step, f"stage {schedule.name(idx)} starts")
        # ---- resets: on demand (file or SIGUSR1), scheduled, automatic; rank 0 decides for all
        manual = D.broadcast(world, controls.take_reset_request() if controls else None)
        auto = None if manual else _auto_reset_cause(cfg, state, step)
        if auto and (nxt := schedule.next_on_trigger(state.stage)) is not None:
            cfg = enter_stage(step, nxt)  # a trigger also ends a stage marked until_trigger
        if manual or auto:
            do_reset(step, manual or auto)
            if 0 < cfg.reset.max_failed_recoveries <= state.failed_recoveries:
                msg = (f"{state.failed_recoveries} rollbacks in a row did not bring validation back to the best "
                       f"checkpoint's level (step {state.best_ckpt_step}); stopping rather than training a dead policy "
                       f"(reset.max_failed_recoveries={cfg.reset.max_failed_recoveries})")
                logger.event(step, "stop", msg)
                log(f"step {step}: {msg}")
                step -= 1  # the last checkpoint stays as it is
                break

        # ---- rollout + verify + dynamic-sampling filter on this rank's share of the prompts
        actor.set_lr(_lr_at(cfg, step))
        t_step = time.perf_counter()
        engine.wake_up()
        try:
            exp = collect(engine, tok, scorer, sampler, num_prompts=len(D.split_for_rank(world, range(cfg.actor.train_batch_size))),
                          n=cfg.rollout.n, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                          max_new_tokens=cfg.rollout.max_response_length, dynamic_sampling=cfg.algo.dynamic_sampling,
                          max_rounds=cfg.algo.max_gen_rounds, world=world, shaping=shaping_from_config(cfg.reward, step))
        except AllPromptsRetired as e:  # the same on every rank: the samplers are identical
            log(f"step {step}: {e}; stopping")
            step -= 1
            if step > 0:
                save(step, keep=cfg.trainer.keep_checkpoints)
            break
        engine.sleep()
        metrics = dict(exp.metrics) | sampler.metrics()
        # ---- advantages + actor update (every rank takes part, even with no groups of its own)
        if D.all_reduce(world, len(exp.groups)) > 0:
            batch, batch_metrics = make_train_batch(exp.groups, cfg, pad_token_id=tok.pad_token_id, device=world.device) \
                if exp.groups else (empty_train_batch(cfg, pad_token_id=tok.pad_token_id, device=world.device), {})
            metrics |= batch_metrics
            update_metrics = actor.update(batch, cfg.algo, cfg.actor, rng=random.Random(f"{seed}:update:{step}"))
            faults.point("update")
            t_sync = time.perf_counter()
            engine.load_weights(actor.named_weights())
            metrics |= {"timing_s/weight_sync": time.perf_counter() - t_sync}
        else:
            update_metrics = {}
        metrics = reduce_rank_metrics(D.all_gather(world, metrics)) | update_metrics
        if "actor/kl_loss" in metrics:
            state.kl_history.append(metrics["actor/kl_loss"])
        metrics |= {"actor/lr": actor.lr, "training/stage": state.stage, "timing_s/step": time.perf_counter() - t_step}
        logger.log(step, metrics)
        bar.set_postfix(score=f"{metrics['critic/score/mean']:.3f}", ent=f"{metrics.get('actor/entropy', 0):.3f}")

        # ---- validate, checkpoint, stop on the time budget (rank 0's clock decides)
        last = step == total
        out_of_time = D.broadcast(world, bool(base_cfg.trainer.max_minutes)
                                  and (time.perf_counter() - t_start) / 60 >= base_cfg.trainer.max_minutes)
        if val_ex and cfg.validation.every and (step % cfg.validation.every == 0 or last or out_of_time):
            results = validate(step)
        if (cfg.trainer.save_every and step % cfg.trainer.save_every == 0) or last or out_of_time:
            path = save(step, keep=cfg.trainer.keep_checkpoints)
            if state.best_step == step:
                state.best_ckpt, state.best_ckpt_step = str(path), step
        if out_of_time:
            log(f"trainer.max_minutes={base_cfg.trainer.max_minutes} reached at step {step}; stopping")
            break
    bar.close()
    _print_summary(state, step, time.perf_counter() - t_start, log)
    scorer.close()
    logger.close()
    if world.is_main:
        (run_dir / "final_validation.json").write_text(json.dumps(results, indent=1))
    D.shutdown(world)
    return results


def _auto_reset_cause(cfg: Config, state: RunState, step: int) -> str | None:
    """A scheduled or trigger-policy reset due at ``step`` (same inputs, same answer on every rank)."""
    r = cfg.reset
    val_histories, blended, evals_since = state.trigger_histories()
    decision = decide_reset(
        step=step, kl_history=state.kl_history, val_histories=val_histories,
        blended_val_history=blended, steps_since_last_reset=state.steps_since_reset(step),
        evals_since_last_reset=evals_since, min_steps_between_resets=r.min_steps_between_resets,
        reset_steps=r.steps, triggers=("scheduled", *r.triggers) if r.auto else ("scheduled",),
        kl_window=r.kl_window, kl_factor=r.kl_factor, kl_min_history=r.kl_min_history, kl_abs_floor=r.kl_abs_floor,
        val_margin=r.val_margin, val_patience=r.val_patience, plateau_patience=r.plateau_patience,
        plateau_min_delta=r.plateau_min_delta)
    return decision.cause if decision.fired else None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _lr_at(cfg: Config, step: int) -> float:
    warm = cfg.actor.lr_warmup_steps
    return cfg.actor.lr * (min(1.0, step / warm) if warm else 1.0)


def _print_summary(state: RunState, step: int, seconds: float, log) -> None:
    if state.val_history:
        log(f"finished at step {step} after {seconds / 60:.1f} min; held-out accuracy (first -> last validation):")
        for ds, h in state.val_history.items():
            log(f"  {ds:24s} {h[0]:.3f} -> {h[-1]:.3f} ({100 * (h[-1] - h[0]):+.1f} points)")
