"""The training loop: rollout, verify, filter, advantages, update, sync, validate, maybe reset,
checkpoint. One function, top to bottom; the pieces live in small modules beside it."""

from __future__ import annotations

import copy
import json
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from prorl.algo.core import grpo_advantages
from prorl.algo.reset_policy import decide_reset
from prorl.config import Config, ConfigError, apply_overrides, to_dict
from prorl.data.dataset import PromptSampler, build_examples, load_rows
from prorl.models.policy import load_policy
from prorl.rollout.base import pack
from prorl.trainer import checkpoint as ckpt
from prorl.trainer.actor import batch_logprobs, update_actor
from prorl.trainer.evaluate import evaluate, validation_metrics
from prorl.trainer.metrics import MetricsLogger
from prorl.trainer.rollout_step import collect

BUILTIN_TINY = Path(__file__).resolve().parents[1] / "assets" / "tiny-warmstart"
RESET_REQUEST = "RESET_REQUEST"


def resolve_model_path(path: str) -> str:
    return str(BUILTIN_TINY) if path == "builtin:tiny" else path


def load_dataset_rows(cfg: Config) -> tuple[list[dict], list[dict]]:
    """Validated (train rows, val rows) from files or the built-in tasks. Runs before any model is
    loaded, so a malformed row stops the run at once, naming its file and row."""
    from prorl.data.builtin_tasks import generate_rows

    if cfg.data.train_files:
        train_rows = load_rows(cfg.data.train_files)
    else:
        train_rows = [r for t in cfg.data.builtin_tasks
                      for r in generate_rows(t, cfg.data.builtin_train_size, cfg.trainer.seed, "train")]
    if cfg.data.val_files:
        val_rows = load_rows(cfg.data.val_files)
    elif not cfg.data.train_files:
        val_rows = [r for t in cfg.data.builtin_tasks for r in generate_rows(t, cfg.data.builtin_val_size, 1234, "val")]
    else:
        val_rows = []
    if cfg.data.val_max_prompts:
        seen: dict[str, int] = {}
        capped = []
        for r in val_rows:
            seen[r["data_source"]] = seen.get(r["data_source"], 0) + 1
            if seen[r["data_source"]] <= cfg.data.val_max_prompts:
                capped.append(r)
        val_rows = capped
    return train_rows, val_rows


def make_optimizer(model, cfg: Config) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=cfg.actor.lr, betas=tuple(cfg.actor.betas),
                             weight_decay=cfg.actor.weight_decay)


def stage_index(cfg: Config, step: int, state: dict) -> int:
    """Which stage ``step`` belongs to: the first whose ``until_step`` is not yet passed."""
    idx = state.get("stage", 0)
    while idx < len(cfg.stages) - 1 and cfg.stages[idx].until_step and step > cfg.stages[idx].until_step:
        idx += 1
    return idx


def train(base_cfg: Config, *, resume: bool = False, overwrite: bool = False, log=print) -> dict:
    """Run (or resume) training; returns the final validation results."""
    run_dir = Path(base_cfg.trainer.run_dir)
    latest = ckpt.latest_checkpoint(run_dir) if resume else None
    if not resume and not overwrite and (run_dir / "metrics.jsonl").exists():
        raise ConfigError(f"{run_dir} already holds a run: pass --resume to continue it or --overwrite to start over")
    if overwrite and not resume and run_dir.exists():
        for name in ("metrics.jsonl", "events.jsonl"):
            (run_dir / name).unlink(missing_ok=True)
        import shutil

        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(base_cfg), sort_keys=False))

    state: dict = {"stage": 0, "resets": [], "kl_history": [], "val_history": {}, "blended_val_history": [],
                   "last_reset_step": None, "evals_at_last_reset": 0, "best_val": None, "best_step": None}
    if latest is not None:
        state.update(ckpt.load_trainer_state(latest))
    start_step = int(state.get("step", 0))
    cfg = apply_overrides(base_cfg, base_cfg.stages[state["stage"]].overrides) if base_cfg.stages else base_cfg

    seed = base_cfg.trainer.seed
    random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
    if base_cfg.trainer.threads:
        torch.set_num_threads(base_cfg.trainer.threads)
    device = base_cfg.trainer.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"

    train_rows, val_rows = load_dataset_rows(cfg)
    model_path = resolve_model_path(base_cfg.model.path)
    model, tokenizer = load_policy(str(latest) if latest else model_path, dtype=base_cfg.model.dtype, device=device)
    if base_cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    reference = None
    if cfg.algo.kl_coef > 0 or any(s.overrides.get("algo.kl_coef", 0) for s in base_cfg.stages):
        has_saved_ref = latest is not None and (latest / "reference").exists()
        reference, _ = load_policy(str(latest / "reference") if has_saved_ref else model_path,
                                   dtype=base_cfg.model.dtype, device=device)
        reference.requires_grad_(False).eval()
    optimizer = make_optimizer(model, cfg)
    if latest is not None:
        optimizer.load_state_dict(torch.load(latest / "optimizer.pt", weights_only=False))
        ckpt.set_rng_state(torch.load(latest / "rng.pt", weights_only=False))

    from prorl.rewards.scorer import RewardScorer
    from prorl.rollout.hf import HFRolloutEngine

    if cfg.reward.sandbox_allow_unsafe:  # explicit opt-in; worker processes inherit the variable
        import os

        os.environ["PRORL_SANDBOX_ALLOW_UNSAFE"] = "1"

    train_ex, d1 = build_examples(train_rows, tokenizer, cfg.data.max_prompt_length)
    val_ex, d2 = build_examples(val_rows, tokenizer, cfg.data.max_prompt_length)
    dropped = d1 + d2
    sampler = PromptSampler(train_ex, seed=seed, shuffle=cfg.data.shuffle, weights=cfg.data.domain_weights)
    if "sampler" in state:
        sampler.load_state_dict(state["sampler"])
    engine = HFRolloutEngine(model, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                             max_batch_size=cfg.rollout.max_batch_size)
    scorer = RewardScorer(num_workers=cfg.reward.num_workers, timeout_s=cfg.reward.timeout_s,
                          server_url=cfg.reward.server_url or None, strip_think=cfg.reward.strip_think,
                          server_token_file=cfg.reward.server_token_file or None,
                          max_memory_mb=cfg.reward.worker_memory_mb or None)
    logger = MetricsLogger(run_dir, tensorboard=base_cfg.trainer.tensorboard, wandb=base_cfg.trainer.wandb,
                           wandb_project=base_cfg.trainer.wandb_project, config=to_dict(base_cfg), resume_step=start_step)
    log(f"run dir: {run_dir.resolve()}  (metrics.jsonl, events.jsonl, checkpoints/)")
    log(f"tensorboard: tensorboard --logdir {(run_dir / 'tensorboard').resolve()}")
    log(f"train prompts: {len(train_ex)}, val prompts: {len(val_ex)}, dropped over-long: {dropped}"
        + (f", resuming from {latest.name}" if latest else ""))

    reset_flag = {"requested": False}

    def _on_signal(signum, frame):  # SIGUSR1: reset the reference between steps
        reset_flag["requested"] = True

    if hasattr(signal, "SIGUSR1"):
        try:
            signal.signal(signal.SIGUSR1, _on_signal)
        except ValueError:  # not in the main thread
            pass

    def validate(step: int) -> dict:
        vcfg = cfg.validation
        t0 = time.perf_counter()
        results = evaluate(engine, tokenizer, scorer, val_ex, n=vcfg.n, temperature=vcfg.temperature, top_p=vcfg.top_p,
                           max_new_tokens=vcfg.max_response_length or cfg.rollout.max_response_length)
        metrics = validation_metrics(results, vcfg.n)
        metrics["timing_s/validate"] = time.perf_counter() - t0
        logger.log(step, metrics)
        per_source = {ds: r["mean_score"] for ds, r in results.items() if ds != "all"}
        for ds, v in per_source.items():
            state["val_history"].setdefault(ds, []).append(v)
        blended = sum(per_source.values()) / max(1, len(per_source))
        state["blended_val_history"].append(blended)
        if state["best_val"] is None or blended > state["best_val"]:
            state["best_val"], state["best_step"] = blended, step
        log(f"step {step} validation: " + ", ".join(f"{ds} {v:.3f}" for ds, v in per_source.items()))
        return results

    def do_reset(step: int, cause: str) -> None:
        nonlocal optimizer
        if cfg.reset.rollback_to_best and state.get("best_ckpt") and Path(state["best_ckpt"]).exists():
            ckpt.load_weights_into(model, Path(state["best_ckpt"]))
            cause += f" (rolled back to best checkpoint, step {state['best_ckpt_step']})"
        if cfg.reset.reset_reference and reference is not None:
            reference.load_state_dict(model.state_dict())
            state["reference_reset"] = True
        if cfg.reset.reset_optimizer:
            optimizer = make_optimizer(model, cfg)
        state["resets"].append({"step": step, "cause": cause})
        state["last_reset_step"], state["evals_at_last_reset"] = step, len(state["blended_val_history"])
        logger.event(step, "reset", cause, reference=cfg.reset.reset_reference, optimizer=cfg.reset.reset_optimizer)
        log(f"step {step}: RESET ({cause})")

    def save(step: int, *, keep: int) -> Path:
        """Checkpoint the policy, optimizer, data position and trainer state; the best one is kept."""
        state["sampler"] = sampler.state_dict()
        return ckpt.save_checkpoint(run_dir, step, model=model, tokenizer=tokenizer, optimizer=optimizer,
                                    trainer_state={k: v for k, v in state.items() if k != "step"},
                                    reference=reference if state.get("reference_reset") else None, keep=keep,
                                    protect=(state["best_ckpt_step"],) if state.get("best_ckpt") else ())

    results: dict = {}
    if start_step == 0 and cfg.validation.at_start and cfg.validation.every and val_ex:
        results = validate(0)
        if cfg.reset.rollback_to_best:  # the initial policy may turn out to be the best one
            state["best_ckpt"], state["best_ckpt_step"] = str(save(0, keep=cfg.trainer.keep_checkpoints + 1)), 0
    from tqdm import tqdm

    t_start = time.perf_counter()
    bar = tqdm(range(start_step + 1, base_cfg.trainer.total_steps + 1), desc="train", initial=start_step,
               total=base_cfg.trainer.total_steps, disable=not base_cfg.trainer.progress_bar)
    step = start_step
    for step in bar:
        # ---- stage: a later stage may change length, n, data mix, shaping, lr
        new_stage = stage_index(base_cfg, step, state)
        if base_cfg.stages and new_stage != state["stage"]:
            state["stage"] = new_stage
            cfg = _enter_stage(base_cfg, new_stage, sampler, logger, step, log)
            if base_cfg.stages[new_stage].reset_on_enter:
                do_reset(step, f"stage {base_cfg.stages[new_stage].name or new_stage} starts")
        # ---- resets: on demand (file or SIGUSR1), scheduled, automatic
        req = run_dir / RESET_REQUEST
        if req.exists() or reset_flag["requested"]:
            cause = req.read_text().strip() if req.exists() else "SIGUSR1"
            req.unlink(missing_ok=True)
            reset_flag["requested"] = False
            do_reset(step, f"manual: {cause or 'reset requested'}")
        else:
            since = None if state["last_reset_step"] is None else step - state["last_reset_step"]
            decision = decide_reset(
                step=step, kl_history=state["kl_history"], val_histories=state["val_history"],
                blended_val_history=state["blended_val_history"], steps_since_last_reset=since,
                evals_since_last_reset=None if since is None else len(state["blended_val_history"]) - state["evals_at_last_reset"],
                min_steps_between_resets=cfg.reset.min_steps_between_resets, reset_steps=cfg.reset.steps,
                triggers=("scheduled", *cfg.reset.triggers) if cfg.reset.auto else ("scheduled",),
                kl_window=cfg.reset.kl_window, kl_factor=cfg.reset.kl_factor, kl_min_history=cfg.reset.kl_min_history,
                kl_abs_floor=cfg.reset.kl_abs_floor, val_margin=cfg.reset.val_margin, val_patience=cfg.reset.val_patience,
                plateau_patience=cfg.reset.plateau_patience, plateau_min_delta=cfg.reset.plateau_min_delta)
            if decision.fired:
                st = base_cfg.stages[state["stage"]] if base_cfg.stages else None
                if st is not None and st.until_trigger and state["stage"] < len(base_cfg.stages) - 1:
                    state["stage"] += 1
                    cfg = _enter_stage(base_cfg, state["stage"], sampler, logger, step, log)
                do_reset(step, decision.cause)

        # ---- rollout + verify + dynamic-sampling filter
        _set_lr(optimizer, cfg, step)
        t_step = time.perf_counter()
        exp = collect(engine, tokenizer, scorer, sampler, num_prompts=cfg.actor.train_batch_size, n=cfg.rollout.n,
                      temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                      max_new_tokens=cfg.rollout.max_response_length, dynamic_sampling=cfg.algo.dynamic_sampling,
                      max_rounds=cfg.algo.max_gen_rounds,
                      shaping=dict(overlong_buffer_len=cfg.reward.overlong_buffer_len,
                                   overlong_penalty_factor=cfg.reward.overlong_penalty_factor,
                                   truncation_penalty=cfg.reward.truncation_penalty))
        metrics = dict(exp.metrics)
        if exp.groups:
            # ---- advantages + actor update
            t0 = time.perf_counter()
            n = cfg.rollout.n
            prompts = [g.example.prompt_ids for g in exp.groups for _ in range(n)]
            responses = [c.token_ids for g in exp.groups for c in g.completions]
            batch = pack(prompts, responses, tokenizer.pad_token_id).to(device)
            rewards = torch.tensor([r for g in exp.groups for r in g.rewards])  # [B]
            group_ids = torch.arange(len(exp.groups)).repeat_interleave(n)  # [B]
            adv = grpo_advantages(rewards, group_ids, norm_by_std=cfg.algo.norm_adv_by_std).to(device)
            loss_mask = batch.response_mask.clone()
            if cfg.reward.mask_truncated:
                trunc = torch.tensor([c.truncated for g in exp.groups for c in g.completions], device=device)
                loss_mask[trunc] = 0.0
            temp = cfg.rollout.temperature if cfg.rollout.temperature > 0 else 1.0
            old_logp = batch_logprobs(model, batch, cfg.actor.micro_batch_size, temp)
            ref_logp = batch_logprobs(reference, batch, cfg.actor.micro_batch_size, temp) \
                if reference is not None and cfg.algo.kl_coef > 0 else None
            metrics["timing_s/old_log_prob"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            metrics.update(update_actor(
                model, optimizer, batch, old_logp=old_logp, ref_logp=ref_logp, advantages=adv, loss_mask=loss_mask,
                group_size=n, mini_batch_groups=cfg.actor.ppo_mini_batch_size, micro_batch_size=cfg.actor.micro_batch_size,
                epochs=cfg.actor.ppo_epochs, eps_low=cfg.algo.eps_low, eps_high=cfg.algo.eps_high,
                agg_mode=cfg.algo.loss_agg_mode, kl_coef=cfg.algo.kl_coef, kl_estimator=cfg.algo.kl_estimator,
                entropy_coef=cfg.algo.entropy_coef, grad_clip=cfg.actor.grad_clip, temperature=temp, rng=random.Random(f"{seed}:update:{step}")))
            engine.sync_weights(model)
            metrics["timing_s/update_actor"] = time.perf_counter() - t1
            metrics["critic/advantages/mean"] = adv.mean().item()
            metrics["critic/advantages/max"] = adv.max().item()
            metrics["critic/advantages/min"] = adv.min().item()
            metrics["critic/rewards/mean"] = rewards.mean().item()
            metrics["perf/total_num_tokens"] = int(batch.attention_mask.sum())
            if "actor/kl_loss" in metrics:
                state["kl_history"].append(metrics["actor/kl_loss"])
        metrics["actor/lr"] = optimizer.param_groups[0]["lr"]
        metrics["training/stage"] = state["stage"]
        metrics["timing_s/step"] = time.perf_counter() - t_step
        logger.log(step, metrics)
        bar.set_postfix(score=f"{metrics['critic/score/mean']:.3f}", ent=f"{metrics.get('actor/entropy', 0):.3f}")

        # ---- validate, checkpoint
        last = step == base_cfg.trainer.total_steps
        out_of_time = bool(base_cfg.trainer.max_minutes) and (time.perf_counter() - t_start) / 60 >= base_cfg.trainer.max_minutes
        if val_ex and cfg.validation.every and (step % cfg.validation.every == 0 or last or out_of_time):
            results = validate(step)
        if (cfg.trainer.save_every and step % cfg.trainer.save_every == 0) or last or out_of_time:
            path = save(step, keep=cfg.trainer.keep_checkpoints)
            if state["best_step"] == step:
                state["best_ckpt"], state["best_ckpt_step"] = str(path), step
        if out_of_time:
            log(f"trainer.max_minutes={base_cfg.trainer.max_minutes} reached at step {step}; stopping")
            break
    bar.close()
    _print_summary(state, step, time.perf_counter() - t_start, log)
    scorer.close()
    logger.close()
    (run_dir / "final_validation.json").write_text(json.dumps(results, indent=1))
    return results


def _print_summary(state: dict, step: int, seconds: float, log) -> None:
    hist = state["val_history"]
    if hist:
        log(f"finished at step {step} after {seconds / 60:.1f} min; held-out accuracy (first -> last validation):")
        for ds, h in hist.items():
            log(f"  {ds:24s} {h[0]:.3f} -> {h[-1]:.3f} ({100 * (h[-1] - h[0]):+.1f} points)")


def _set_lr(optimizer, cfg: Config, step: int) -> None:
    warm = cfg.actor.lr_warmup_steps
    lr = cfg.actor.lr * (min(1.0, step / warm) if warm else 1.0)
    for g in optimizer.param_groups:
        g["lr"] = lr


def _enter_stage(base_cfg: Config, idx: int, sampler, logger, step: int, log) -> Config:
    stage = base_cfg.stages[idx]
    cfg = apply_overrides(base_cfg, stage.overrides)
    sampler.set_weights(cfg.data.domain_weights)
    logger.event(step, "stage", f"enter stage {stage.name or idx}", stage=idx, overrides=stage.overrides)
    log(f"step {step}: entering stage {stage.name or idx} {stage.overrides}")
    return cfg
