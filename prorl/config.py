"""One typed config: dataclasses loaded from YAML plus dotted command-line overrides.

``load_config("my.yaml", ["algo.eps_high=0.28", "rollout.n=16"])``. Field defaults are the
ProRL paper's values (DeepSeek-R1-Distill-Qwen-1.5B); the built-in CPU preset
(``prorl/configs/tiny.yaml``) overrides what a tiny model needs. Unknown keys and wrong types are
rejected before anything loads, naming the key and the nearest valid one. Every field carries
its documentation in ``metadata["doc"]`` (``prorl train --help-config`` prints them).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prorl.config_tree import ConfigError, from_tree, merge_trees, parse_override, read_yaml, set_dotted

__all__ = ["Config", "ConfigError", "apply_overrides", "describe_fields", "load_config", "to_dict", "validate"]


def f(default: Any, doc: str, **kw: Any) -> Any:
    """A dataclass field with a documentation string (mutable defaults copied)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"doc": doc, **kw})
    return field(default=default, metadata={"doc": doc, **kw})


@dataclass
class ModelConfig:
    path: str = f("builtin:tiny", "HF hub name or local directory of the policy; 'builtin:tiny' is the shipped tiny warm start")
    dtype: str = f("float32", "parameter dtype: float32 | bfloat16 | float16", choices=("float32", "bfloat16", "float16"))
    gradient_checkpointing: bool = f(False, "recompute activations in the backward pass to save memory")
    fsdp_mixed_precision: bool = f(True, "under torchrun on GPUs: FSDP2 computes in bf16 and reduces gradients in fp32 (CPU: fp32)")
    attn_implementation: str = f("auto", "transformers attention kernel of the actor's policy and reference: auto "
                                         "(transformers' default, sdpa) | sdpa | eager | flash_attention_2 | flex_attention. "
                                         "With actor.compile on CPU, eager lets inductor fuse the attention (a 1.35x faster "
                                         "forward + backward measured on a small model); the rollout engines keep their own")
    autocast: str = f("auto", "mixed precision by torch.autocast: the actor's forward passes (policy and reference log-probs, "
                              "the update) compute in this dtype while weights, gradients and AdamW stay in model.dtype "
                              "(float32). auto = bfloat16 where bf16 is native (GPUs; CPUs with AMX or AVX512-BF16), as "
                              "verl's and TRL's defaults, none elsewhere and under torchrun on GPUs (FSDP2 mixed precision "
                              "computes in bf16 there); none = model.dtype throughout",
                      choices=("auto", "none", "bfloat16"))


@dataclass
class DataConfig:
    train_files: list[str] = f([], "verl-schema parquet/JSONL training files; empty = built-in tasks")
    val_files: list[str] = f([], "verl-schema validation files; empty = built-in tasks' held-out split")
    builtin_tasks: list[str] = f(["add", "sort"], "built-in tasks used when no files are given")
    builtin_train_size: int = f(4000, "training problems per built-in task (small chain levels: at most 80% of their train split)")
    builtin_val_size: int = f(64, "held-out validation problems per built-in task")
    max_prompt_length: int = f(1024, "prompts longer than this (tokens) are dropped at load time (the count is printed)")
    val_max_prompts: int = f(0, "cap on validation prompts per data_source (0 = all)")
    domain_weights: dict[str, float] = f({}, "sampling weight per data_source for the training mix (empty = natural mix)")
    shuffle: bool = f(True, "shuffle training prompts each epoch")
    retire_pass_rate: float = f(0.0, "ScaleRL no-positive-resampling: a prompt whose running pass rate (share of its scored "
                                     "responses with score 1) reaches this leaves the sampler for good (0 = off; e.g. 0.9)")
    retire_min_samples: int = f(16, "responses a prompt must have had scored before it can retire")


@dataclass
class RolloutConfig:
    engine: str = f("hf", "rollout engine: hf (transformers generate, no extra install) | vllm (colocated vLLM in the "
                    "trainer's process; needs `bash scripts/install.sh --vllm`)", choices=("hf", "vllm"))
    n: int = f(16, "responses sampled per prompt (GRPO group size)")
    temperature: float = f(1.2, "sampling temperature for training rollouts")
    top_p: float = f(1.0, "nucleus sampling for training rollouts")
    max_response_length: int = f(8192, "max new tokens per response; longer ones are truncated")
    max_batch_size: int = f(256, "sequences per generate call (hf engine)")
    dtype: str = f("auto", "the rollout engine's weight dtype: auto (bfloat16 when the actor computes in bf16, see "
                           "model.autocast, else model.dtype) | float32 | bfloat16 | float16. bf16 rollouts from an fp32 "
                           "trainer are the usual GPU setup (and use AMX on recent Xeon CPUs); the trainer/engine "
                           "mismatch this brings is measured (rollout_corr/) and corrected by algo.rollout_correction",
                  choices=("auto", "float32", "bfloat16", "float16"))
    hf_cache: str = f("dynamic", "hf engine KV cache: dynamic (grows per token) | static (preallocated to the length limit; faster per token on CPU)", choices=("dynamic", "static"))
    gpu_memory_utilization: float = f(0.5, "vllm on GPU: fraction of GPU memory vLLM may take (weights + KV cache); the "
                                      "rest stays for training, which runs in the same process")
    tensor_parallel_size: int = f(1, "vllm: GPUs one engine shards the model over (1 on CPU; > 1 is untested: vLLM then "
                                  "runs its workers in other processes)")
    cpu_kv_cache_gib: float = f(1.0, "vllm on CPU: GiB of memory for the KV cache (VLLM_CPU_KVCACHE_SPACE, whole GiB, overrides it when set)")
    max_model_len: int = f(0, "vllm: longest prompt + response it can hold (0 = vLLM's default, the model's context length)")
    enforce_eager: bool = f(True, "vllm: no CUDA graphs / torch.compile (fast start-up; set false for long GPU runs)")
    sleep_level: int = f(1, "vllm sleep between generations: 1 frees the KV cache and offloads weights, 2 also drops "
                         "the weights (they are reloaded by the weight sync anyway)", choices=(1, 2))
    mode: str = f("sync", "sync: generate, score, update, sync weights, in turn (the colocated engine) | async: rollout "
                          "worker processes generate and score continuously while the trainer updates; bounded "
                          "staleness, weights streamed over a process group, partial rollouts (README: Asynchronous training)",
                  choices=("sync", "async"))
    max_staleness: int = f(1, "async: K, the most policy versions a trained sample may lag the weights it is trained "
                              "at (0 = on-policy); an older one is dropped and its prompt redrawn, and no prompt is "
                              "dispatched that would exceed K")
    async_workers: int = f(1, "async: rollout worker processes started on this machine (each with its own engine and "
                              "reward scorer)")
    async_remote_workers: int = f(0, "async: workers started elsewhere with `prorl rollout-worker --connect HOST:PORT` "
                                     "(the run waits for them; needs PRORL_ROLLOUT_AUTHKEY set on both sides)")
    async_listen: str = f("127.0.0.1:0", "async: HOST:PORT the trainer listens on for workers (port 0 = any free port; "
                                         "remote workers need a reachable host and a fixed port)")
    async_segment_tokens: int = f(256, "async: tokens a worker generates per sequence between weight checks: new weights "
                                       "are applied between segments and unfinished responses continue under them "
                                       "(partial rollouts); 0 = whole responses, one policy version each")
    async_worker_threads: int = f(0, "async: torch threads per local worker (0 = the machine's cores shared evenly by "
                                     "the trainer and the local workers)")
    async_timeout_s: float = f(300.0, "async: seconds to wait for workers to connect, for a weight broadcast, and for "
                                      "a validation before the run stops with an error")


@dataclass
class AlgoConfig:
    eps_low: float = f(0.2, "lower clip range: ratio clipped at 1 - eps_low (clip, clip_cov)")
    eps_high: float = f(0.4, "upper clip range (DAPO clip-higher): ratio clipped at 1 + eps_high (clip, clip_cov)")
    clip_ratio_c: float | None = f(3.0, "clip: verl's dual clip (arXiv:1912.09729; verl's default 3): for A < 0 the per-token "
                                        "loss is capped at -A * clip_ratio_c, bounding the push-down of tokens whose ratio "
                                        "grew large (gradient 0 there); must be > 1; none/null = no dual clip. "
                                        "clip only: clip_cov and kl_cov have no dual clip, as verl's")
    loss_agg_mode: str = f("token-mean", "loss aggregation", choices=("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"))
    adv_estimator: str = f("grpo", "advantage estimator: grpo (reward minus group mean, over group std) | "
                                   "reinforce_pp_baseline (ProRL v2: reward minus group mean, over the std of the whole batch) | "
                                   "w_reinforce (arXiv:2506.01347: REINFORCE with +-1 rewards, correct ones weighted by "
                                   "positive_weight; no baseline, norm_adv_by_std unused) | passk (arXiv:2508.10751: the "
                                   "analytical pass@k advantage of each response over all size-passk_k subsets of its group); "
                                   "w_reinforce / passk count a reward > 0.5 as correct")
    norm_adv_by_std: bool = f(True, "divide group-centred rewards by the std (grpo: the group's; reinforce_pp_baseline: the batch's)")
    policy_loss: str = f("clip", "policy loss: clip (PPO clip with decoupled eps_low / eps_high, dual clip clip_ratio_c) | cispo (ScaleRL / MiniMax-M1: "
                                 "-sg(min(ratio, 1 + cispo_eps_max)) * A * logp, every token keeps its gradient) | "
                                 "clip_cov (arXiv:2505.22617 / verl: the clip loss with eps_low / eps_high, no dual clip, "
                                 "plus the gradient of a few high-covariance tokens cut; clip_cov_*) | kl_cov (the same "
                                 "paper: unclipped -ratio * A plus ppo_kl_coef * |log ratio| on the kl_cov_ratio tokens "
                                 "of largest covariance)")
    cispo_eps_max: float = f(4.0, "cispo: the importance weight is truncated at 1 + cispo_eps_max (4 = TRL's ScaleRL cap of 5)")
    positive_weight: float = f(0.1, "w_reinforce: lambda, the weight of correct responses (+lambda; wrong ones -1); the "
                                    "paper's best 0.1, 0 = negative samples only (NSR), 1 = plain REINFORCE. On-policy the "
                                    "clip loss's gradient is REINFORCE's (ratio 1). The paper trains on all-wrong groups "
                                    "too: set dynamic_sampling=false to keep them")
    passk_k: int = f(4, "passk: k of the pass@k objective, 1 <= k < rollout.n (k = 1 is GRPO with the population std; "
                        "k = rollout.n leaves no signal)")
    clip_cov_ratio: float = f(2e-4, "clip_cov: fraction r of the micro-batch's tokens whose gradient is cut (at least 1 "
                                    "token), drawn at random among those with cov(A, logp) in (clip_cov_lb, clip_cov_ub) "
                                    "not already PPO-clipped (verl / arXiv:2505.22617 default 2e-4; the draw uses torch's "
                                    "generator, seeded by trainer.seed and checkpointed); in (0, 1]")
    clip_cov_lb: float = f(1.0, "clip_cov: lower bound of the covariance window (verl / paper: 1)")
    clip_cov_ub: float = f(5.0, "clip_cov: upper bound of the covariance window (verl / paper: 5)")
    kl_cov_ratio: float = f(2e-4, "kl_cov: fraction k of the micro-batch's tokens with the largest cov(A, logp) (at least "
                                  "1) that get the penalty ppo_kl_coef * |log ratio| (verl's default 2e-4; the paper's "
                                  "recipes 2e-3 for 7B, 2e-4 for 32B); in (0, 1]")
    ppo_kl_coef: float = f(0.1, "kl_cov: coefficient of |logp - old_logp| on the selected tokens (a KL to the old policy, "
                                "not the reference's kl_coef); verl's config default 0.1, the paper's recipes 1")
    entropy_top_fraction: float = f(0.0, "arXiv:2506.01939 (80/20): the policy gradient flows only through this top "
                                         "fraction of the counted tokens by entropy (paper: 0.2), any policy loss; the "
                                         "KL and entropy terms keep every token, the loss keeps its denominator; 0 or 1 "
                                         "= off. Logged as actor/entropy_mask_fraction")
    entropy_mask_scope: str = f("mini_batch", "entropy_top_fraction's threshold: mini_batch (the paper's batch-wide "
                                "threshold over every micro-batch and process; costs one no-grad forward per "
                                "mini-batch when it spans several micro-batches) | micro_batch (each micro-batch's "
                                "own top fraction, as the paper's released code; free)",
                                choices=("mini_batch", "micro_batch"))
    kl_coef: float = f(1e-4, "beta of the KL penalty to the reference policy; 0 skips the reference model")
    kl_estimator: str = f("k3", "KL estimator", choices=("k1", "k2", "k3"))
    entropy_coef: float = f(0.0, "entropy bonus coefficient (0 = off, as in ProRL)")
    dynamic_sampling: bool = f(True, "DAPO: drop groups whose rewards are all equal and refill the batch")
    max_gen_rounds: int = f(8, "dynamic sampling: max generation rounds per step before training on what there is")
    rollout_correction: str = f("none", "rollout/training mismatch correction from the engine's sampling log-probs: none | "
                                "tis (token weight min(ratio, rollout_corr_tis_cap)) | mis_token (ICE-POP: drop tokens whose "
                                "ratio leaves [rollout_corr_low, rollout_corr_high]) | mis_seq (drop whole sequences by "
                                "their ratio product) | geo_seq (drop sequences by their geometric-mean ratio; use tight "
                                "bounds such as [0.99, 1.01]); ratio = pi_train / pi_rollout (both engines report pi_rollout)",
                                choices=("none", "tis", "mis_token", "mis_seq", "geo_seq"))
    rollout_corr_tis_cap: float = f(2.0, "tis: the cap C of the token importance weight")
    rollout_corr_low: float = f(0.5, "mis_token / mis_seq / geo_seq: lowest kept ratio (ICE-POP: 0.5)")
    rollout_corr_high: float = f(5.0, "mis_token / mis_seq / geo_seq: highest kept ratio (ICE-POP: 5)")
    use_rollout_logprobs_as_old: bool | None = f(None, "the old log-probs of the PPO ratio (what the clip is relative to) are "
                                                 "the engine's sampling log-probs, not the trainer's recompute (also skips "
                                                 "the old-log-prob pass); null (auto): true in rollout.mode=async with "
                                                 "rollout.max_staleness >= 1 and algo.rollout_correction=none (standard "
                                                 "PPO on the behaviour policy: on the preset +25 points held-out add against +19 with the recompute, "
                                                 "experiments/async_preset.py), false otherwise")


@dataclass
class ActorConfig:
    lr: float = f(2e-6, "AdamW learning rate (constant after warm-up)")
    lr_warmup_steps: int = f(0, "linear warm-up steps")
    weight_decay: float = f(0.01, "AdamW weight decay")
    betas: list[float] = f([0.9, 0.999], "AdamW betas")
    grad_clip: float = f(1.0, "max global grad norm")
    train_batch_size: int = f(256, "prompts per training step (after dynamic-sampling filtering)")
    ppo_mini_batch_size: int = f(64, "prompts per optimizer update; train_batch_size / this = updates per step")
    ppo_epochs: int = f(1, "passes over each step's batch")
    micro_batch_size: int = f(64, "sequences per forward/backward (gradient accumulation) of the padded update "
                                 "(actor.max_tokens_per_micro_batch=0)")
    max_tokens_per_micro_batch: int = f(16384, "padding-free update: micro-batches hold at most this many tokens (prompt + "
                                        "response, packed without padding; a longer sequence runs alone), as verl's "
                                        "ppo_max_token_len_per_gpu; 0 = micro_batch_size sequences, padded")
    max_tokens_per_row: int = f(0, "padding-free update: tokens per packed row (0 = auto: one row per micro-batch with "
                                "flash-attention varlen, the micro-batch's longest sequence with sdpa/eager, whose attention "
                                "cost grows with the square of the row)")
    logprob_chunk_tokens: int = f(2048, "padding-free update (max_tokens_per_micro_batch > 0): tokens per LM-head chunk when "
                                  "computing log-probs/entropy: at most this many rows of [tokens, vocab] fp32 logits exist "
                                  "at a time, forward and backward (0 = one chunk); the padded layout keeps only the "
                                  "response positions' logits")
    fp32_lm_head: bool = f(False, "padding-free update: run the LM head (log-probs/entropy) in fp32 even when the model is "
                                  "bf16/fp16")
    compile: bool = f(False, "torch.compile each decoder layer of the policy and the reference (inductor; on CPU it needs "
                             "a C++ compiler): fused element-wise work, 1.5-1.8x faster forward/backward for a small "
                             "model on CPU after a one-off compile of ~40 s per process (cached on disk)")
    lora_rank: int = f(0, "LoRA rank (PEFT, `pip install prorl[lora]`): 0 = full fine-tuning; r > 0 trains rank-r adapters on "
                          "actor.lora_target_modules over a frozen base, and the reference is the base with its adapters "
                          "disabled (no second copy of the model); a hard reset of the reference merges the adapter into "
                          "the base, starts a fresh adapter and restarts AdamW (README: LoRA). One process only (no "
                          "torchrun + FSDP2)")
    lora_alpha: float = f(32.0, "LoRA scaling: each adapter adds (lora_alpha / lora_rank) * B A to its layer's weight")
    lora_target_modules: list[str] = f(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                                       "module names that get adapters (PEFT matches name suffixes): by default every "
                                       "linear projection of a Qwen2 / Llama-style decoder layer; [all-linear] = every "
                                       "linear layer but the LM head")


@dataclass
class RewardConfig:
    server_url: list[str] | str = f([], "URLs of `prorl serve-rewards` replicas (a list, or one string; commas "
                                        "separate several); batches are spread over them and a failed batch is "
                                        "retried on another; empty = score in-process with worker processes")
    server_token_file: str = f("", "file holding the reward service's bearer token (empty: the file named by "
                                   "$PRORL_REWARD_TOKEN_FILE, else no token)")
    num_workers: int = f(2, "verifier worker processes")
    timeout_s: float = f(10.0, "hard wall-clock limit per verification")
    worker_memory_mb: int = f(2048, "address-space cap per in-process verifier worker, MB (0 = none); the verdict "
                                    "says when an item hit it")
    strip_think: bool = f(True, "score only the text after </think> when present")
    overlong_buffer_len: int = f(0, "DAPO overlong penalty: length of the buffer before the limit (0 = off)")
    overlong_penalty_factor: float = f(1.0, "DAPO overlong penalty at the limit")
    truncation_penalty: float = f(0.0, "subtracted from the reward of responses that never stop (no EOS)")
    length_penalty_max: float = f(0.0, "ProRL v2 scheduled cosine length penalty: penalty at max_response_length tokens "
                                       "(0 = off); -(min + (max - min)(1 - cos(pi L / max_len)) / 2)")
    length_penalty_min: float = f(0.0, "cosine length penalty at length 0 (<= length_penalty_max)")
    length_penalty_period: int = f(0, "cosine length penalty: cycle length in steps (0 = on at every step)")
    length_penalty_on_steps: int = f(0, "cosine length penalty: on for the first N steps of each cycle (1..period)")
    length_penalty_correct_only: bool = f(True, "cosine length penalty only on correct responses (score 1); false = on all")
    mask_truncated: bool = f(False, "exclude truncated responses from the policy loss")
    sandbox_allow_unsafe: bool = f(False, "run model-written code WITHOUT isolation when bubblewrap is unavailable (never do this with untrusted models)")

    def __post_init__(self) -> None:  # one URL (or "a,b") is accepted for a list of replicas
        if isinstance(self.server_url, str):
            self.server_url = [u.strip() for u in self.server_url.split(",") if u.strip()]


@dataclass
class ValidationConfig:
    every: int = f(10, "validate every N steps (0 = never)")
    at_start: bool = f(True, "validate before the first step")
    n: int = f(4, "samples per validation prompt (pass@1 is their mean)")
    temperature: float = f(0.6, "validation sampling temperature (paper: 0.6)")
    top_p: float = f(0.95, "validation nucleus sampling (paper: 0.95)")
    max_response_length: int = f(0, "validation max new tokens (0 = rollout.max_response_length)")
    save_best: bool = f(False, "checkpoint whenever a validation is the best so far, so that the best checkpoint "
                               "(the rollback target; RUN_DIR/best_checkpoint.json at the end) is the best validated "
                               "policy, not the best one that fell on a trainer.save_every step")
    min_scored_fraction: float = f(0.9, "a validation in which a data_source has fewer of its samples scored (the rest "
                                        "infra_error: reward outage) is logged but ignored by the best checkpoint, "
                                        "resets and rollback")


@dataclass
class ResetConfig:
    steps: list[int] = f([], "hard-reset the reference at these steps")
    reset_reference: bool = f(True, "a reset copies the policy into the reference")
    reset_optimizer: bool = f(True, "a reset reinitialises the optimizer state")
    auto: bool = f(False, "automatic resets from the trigger policies below")
    triggers: list[str] = f(["kl_spike", "val_degradation", "val_plateau"], "automatic triggers in priority order "
                            "(also available: entropy_collapse)")
    false_alarm_rate: float = f(0.01, "val_degradation (val_test=significance): probability that a validation of a "
                                      "policy that has not got worse fires, per validation and over all data_sources")
    val_test: str = f("significance", "val_degradation: significance (a one-sided two-proportion z-test of the pooled "
                                      "recent validations against the best earlier block, at reset.false_alarm_rate, "
                                      "Bonferroni over baselines and data_sources) | margin (val_margin for val_patience "
                                      "evaluations)", choices=("significance", "margin"))
    val_window: int = f(4, "val_degradation (significance): validations pooled in the recent window and in each "
                           "baseline block")
    val_noise: str = f("measured", "val_degradation (significance): the noise a drop is judged against: measured (each "
                                   "data_source's own look-to-look dispersion over its sampling noise, a Student-t "
                                   "threshold; a healthy policy moves between validations) | sampling (the samples' "
                                   "Bernoulli noise alone)", choices=("measured", "sampling"))
    kl_test: str = f("robust_z", "kl_spike: robust_z (KL more than kl_z robust sd (median/MAD of the window) above its "
                                 "median, on an asinh scale) | factor (KL > kl_factor x median)",
                     choices=("robust_z", "factor"))
    kl_window: int = f(20, "kl_spike: steps in the median window")
    kl_z: float = f(6.0, "kl_spike (robust_z): robust z above which the latest KL is a spike")
    kl_noise_window: int = f(50, "kl_spike (robust_z): steps whose surprises (KL less the median of its own previous "
                                 "kl_window steps) measure the noise (0 = the window's own MAD)")
    kl_factor: float = f(5.0, "kl_spike (factor): fire when KL > factor x recent median")
    kl_min_history: int = f(10, "kl_spike: steps needed before it can fire")
    kl_abs_floor: float = f(1e-3, "kl_spike: KL below this never fires")
    val_margin: float = f(0.05, "val_degradation (margin): drop below the best that counts; also the recovery "
                                "margin after a rollback")
    val_patience: int = f(3, "val_degradation (margin): consecutive evaluations below best - margin")
    entropy_window: int = f(20, "entropy_collapse: steps of the earlier window (level and noise)")
    entropy_recent: int = f(5, "entropy_collapse: steps of the recent window")
    entropy_drop: float = f(0.5, "entropy_collapse: fire only when the recent median is below (1 - drop) x the "
                                 "earlier one")
    entropy_z: float = f(5.0, "entropy_collapse: ... and the fall exceeds this many standard errors of the noise")
    plateau_patience: int = f(5, "val_plateau: evaluations without improvement")
    plateau_min_delta: float = f(0.01, "val_plateau: improvement that counts")
    min_steps_between_resets: int = f(50, "cooldown between automatic resets")
    rollback_to_best: bool = f(False, "on reset, reload the best checkpoint (by validation) instead of the current policy")
    max_failed_recoveries: int = f(3, "stop the run after this many rollbacks in a row after which validation never got back within val_margin of the restored checkpoint (0 = never stop)")


@dataclass
class TrainerConfig:
    total_steps: int = f(1000, "training steps (one rollout + update each)")
    max_minutes: float = f(0.0, "stop (after checkpointing) once this wall-clock budget is spent (0 = no limit)")
    run_dir: str = f("runs/prorl", "where metrics, TensorBoard logs and checkpoints go")
    save_every: int = f(50, "checkpoint every N steps (0 = only at the end)")
    keep_checkpoints: int = f(2, "keep the newest N checkpoints (plus the best)")
    seed: int = f(0, "global seed")
    threads: int = f(0, "torch CPU threads (0 = torch default)")
    tensorboard: bool = f(True, "write TensorBoard event files to RUN_DIR/tensorboard")
    wandb: bool = f(False, "also log to Weights & Biases (needs `pip install wandb`)")
    wandb_project: str = f("prorl", "W&B project")
    progress_bar: bool = f(True, "show a progress bar")
    device: str = f("auto", "cpu | cuda | auto")


@dataclass
class StageConfig:
    name: str = f("", "stage name (e.g. run1)")
    until_step: int = f(0, "the stage ends after this global step (0 = last stage, runs to the end)")
    until_trigger: bool = f(False, "also end the stage when an automatic reset trigger fires")
    reset_on_enter: bool = f(False, "hard reset (reference + optimizer) when this stage starts")
    overrides: dict[str, Any] = f({}, "dotted config keys this stage changes, e.g. {rollout.max_response_length: 16384}")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    reset: ResetConfig = field(default_factory=ResetConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    stages: list[StageConfig] = field(default_factory=list, metadata={"doc": "chained runs, each overriding settings (ProRL runs 1-8)"})


BUILTIN_PRESET = Path(__file__).parent / "configs" / "tiny.yaml"


def old_logprobs_from_rollout(cfg: Config) -> bool:
    """``algo.use_rollout_logprobs_as_old`` with its automatic default resolved for ``cfg`` (a stage's
    config may change ``rollout.max_staleness``): stale samples (async, K >= 1) take their PPO clip
    relative to the policy that sampled them, everything else relative to the trainer's recompute;
    so does a run with a rollout correction (its weights pi_prox / pi_behaviour need the recompute as
    the proximal policy: AReaL's decoupled objective)."""
    chosen = cfg.algo.use_rollout_logprobs_as_old
    if chosen is not None:
        return chosen
    stale = cfg.rollout.mode == "async" and cfg.rollout.max_staleness >= 1
    return stale and cfg.algo.rollout_correction == "none"


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


# --------------------------------------------------------------------------- loading

def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """A copy of ``cfg`` with dotted ``overrides`` applied and re-validated (used by stages)."""
    tree = to_dict(cfg)
    for key, value in overrides.items():
        set_dotted(tree, key.split("."), value)
    return from_dict(tree)


def from_dict(tree: dict) -> Config:
    cfg = from_tree(Config, tree)
    validate(cfg)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] = (), *, preset: bool | None = None) -> Config:
    """Load YAML (or the built-in tiny preset when ``path`` is None) and apply dotted overrides."""
    tree: dict = {}
    if path is None and preset is not False:
        tree = yaml.safe_load(BUILTIN_PRESET.read_text()) or {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        loaded = read_yaml(p) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping")
        tree = merge_trees(tree, loaded)
    for text in overrides:
        keys, value = parse_override(text)
        set_dotted(tree, keys, value)
    return from_dict(tree)


def validate(cfg: Config, *, whole_run: bool = True) -> None:
    """Reject impossible settings before anything loads (``whole_run=False``: one stage's settings
    alone, without the checks that look at every stage)."""
    a, r, t, rw = cfg.actor, cfg.rollout, cfg.algo, cfg.reward
    checks = [
        (r.n >= 1, "rollout.n must be >= 1"),
        (not (t.dynamic_sampling and r.n < 2), "algo.dynamic_sampling needs rollout.n >= 2 (a group of one always has equal rewards)"),
        (r.temperature >= 0, "rollout.temperature must be >= 0"),
        (0 < r.top_p <= 1, "rollout.top_p must be in (0, 1]"),
        (r.max_response_length >= 1, "rollout.max_response_length must be >= 1"),
        (t.eps_low >= 0 and t.eps_high >= 0, "algo.eps_low / eps_high must be >= 0"),
        (t.eps_low < 1, "algo.eps_low must be < 1 (the ratio is clipped at 1 - eps_low)"),
        (t.clip_ratio_c is None or t.clip_ratio_c > 1, f"algo.clip_ratio_c must be > 1 (the dual clip caps the loss of "
         f"A < 0 tokens at -A * clip_ratio_c; verl requires > 1), or none to turn it off; got {t.clip_ratio_c}"),
        (t.kl_coef >= 0, "algo.kl_coef must be >= 0"),
        (t.max_gen_rounds >= 1, "algo.max_gen_rounds must be >= 1"),
        (r.max_staleness >= 0, "rollout.max_staleness must be >= 0 (0 = on-policy)"),
        (r.async_workers >= 0 and r.async_remote_workers >= 0
         and (r.mode == "sync" or r.async_workers + r.async_remote_workers >= 1),
         "rollout.mode=async needs at least one worker: rollout.async_workers + rollout.async_remote_workers >= 1"),
        (r.async_segment_tokens >= 0, "rollout.async_segment_tokens must be >= 0 (0 = whole responses)"),
        (r.async_worker_threads >= 0, "rollout.async_worker_threads must be >= 0 (0 = automatic)"),
        (r.async_timeout_s > 0, "rollout.async_timeout_s must be > 0"),
        (r.mode == "sync" or ":" in r.async_listen, f"rollout.async_listen must be HOST:PORT, got {r.async_listen!r}"),
        (t.rollout_corr_tis_cap > 0, "algo.rollout_corr_tis_cap must be > 0"),
        (0 <= t.rollout_corr_low < t.rollout_corr_high, "algo.rollout_corr_low must be >= 0 and < algo.rollout_corr_high"),
        (0 < r.gpu_memory_utilization <= 1, "rollout.gpu_memory_utilization must be in (0, 1]"),
        (r.tensor_parallel_size >= 1, "rollout.tensor_parallel_size must be >= 1"),
        (r.cpu_kv_cache_gib > 0, "rollout.cpu_kv_cache_gib must be > 0"),
        (r.max_model_len >= 0, "rollout.max_model_len must be >= 0"),
        (t.cispo_eps_max > 0, "algo.cispo_eps_max must be > 0 (the importance weight is capped at 1 + cispo_eps_max)"),
        (t.positive_weight >= 0, "algo.positive_weight (w_reinforce) must be >= 0 (0 = negative samples only)"),
        (t.passk_k >= 1, "algo.passk_k (passk) must be >= 1"),
        (t.adv_estimator != "passk" or t.passk_k < r.n,
         f"algo.passk_k ({t.passk_k}) must be < rollout.n ({r.n}): pass@k over subsets of a group of rollout.n "
         f"responses; with k = n the only subset is the group and every advantage is 0"),
        (0 < t.clip_cov_ratio <= 1 and 0 < t.kl_cov_ratio <= 1,
         "algo.clip_cov_ratio (clip_cov) and algo.kl_cov_ratio (kl_cov) must be in (0, 1]"),
        (t.clip_cov_lb < t.clip_cov_ub, "algo.clip_cov_lb must be < algo.clip_cov_ub (clip_cov's covariance window)"),
        (t.ppo_kl_coef >= 0, "algo.ppo_kl_coef (kl_cov) must be >= 0"),
        (0 <= t.entropy_top_fraction <= 1, "algo.entropy_top_fraction must be in [0, 1] (0 or 1 = every token)"),
        (r.max_batch_size >= 1, "rollout.max_batch_size must be >= 1"),
        (cfg.model.autocast in ("none", "auto") or cfg.model.dtype == "float32",
         f"model.autocast={cfg.model.autocast} keeps float32 weights and computes in {cfg.model.autocast}; with "
         f"model.dtype={cfg.model.dtype} the weights are already low precision: set model.dtype=float32 or model.autocast=none"),
        (a.lr > 0, "actor.lr must be > 0"),
        (len(a.betas) == 2 and all(0 <= b < 1 for b in a.betas), "actor.betas must be two numbers in [0, 1)"),
        (a.train_batch_size >= 1 and a.ppo_mini_batch_size >= 1 and a.micro_batch_size >= 1, "batch sizes must be >= 1"),
        (a.ppo_mini_batch_size >= 1 and a.train_batch_size % a.ppo_mini_batch_size == 0,
         f"actor.train_batch_size ({a.train_batch_size}) must be a multiple of actor.ppo_mini_batch_size ({a.ppo_mini_batch_size})"),
        (a.ppo_epochs >= 1, "actor.ppo_epochs must be >= 1"),
        (a.lora_rank >= 0, "actor.lora_rank must be >= 0 (0 = full fine-tuning)"),
        (a.lora_alpha > 0, "actor.lora_alpha must be > 0"),
        (a.lora_rank == 0 or len(a.lora_target_modules) > 0, "actor.lora_target_modules is empty: nothing to put adapters on"),
        (a.max_tokens_per_micro_batch >= 0 and a.max_tokens_per_row >= 0 and a.logprob_chunk_tokens >= 0,
         "actor.max_tokens_per_micro_batch, max_tokens_per_row and logprob_chunk_tokens must be >= 0"),
        (cfg.trainer.total_steps >= 0, "trainer.total_steps must be >= 0"),
        (cfg.validation.n >= 1, "validation.n must be >= 1"),
        (0 <= cfg.validation.min_scored_fraction <= 1, "validation.min_scored_fraction must be in [0, 1]"),
        (cfg.reward.num_workers >= 1, "reward.num_workers must be >= 1"),
        (cfg.reward.timeout_s > 0, "reward.timeout_s must be > 0"),
        (cfg.reward.worker_memory_mb >= 0, "reward.worker_memory_mb must be >= 0 (0 = no cap)"),
        (all(str(u).startswith(("http://", "https://")) for u in cfg.reward.server_url),
         f"reward.server_url: every URL must start with http:// or https:// (got {cfg.reward.server_url})"),
        (cfg.reward.overlong_buffer_len < r.max_response_length,
         "reward.overlong_buffer_len must be smaller than rollout.max_response_length"),
        (0 <= rw.length_penalty_min <= rw.length_penalty_max,
         "reward.length_penalty_min / length_penalty_max must satisfy 0 <= min <= max"),
        (rw.length_penalty_period >= 0, "reward.length_penalty_period must be >= 0"),
        (rw.length_penalty_period == 0 or 1 <= rw.length_penalty_on_steps <= rw.length_penalty_period,
         "reward.length_penalty_on_steps must be in [1, length_penalty_period] when the period is set"),
        (0 <= cfg.data.retire_pass_rate <= 1, "data.retire_pass_rate must be in [0, 1] (0 = off)"),
        (cfg.data.retire_min_samples >= 1, "data.retire_min_samples must be >= 1"),
        (cfg.reset.max_failed_recoveries >= 0, "reset.max_failed_recoveries must be >= 0 (0 = never stop)"),
        (0 < cfg.reset.false_alarm_rate < 1, "reset.false_alarm_rate must be in (0, 1)"),
        (cfg.reset.val_window >= 1 and cfg.reset.val_patience >= 1, "reset.val_window and val_patience must be >= 1"),
        (cfg.reset.kl_z > 0 and cfg.reset.entropy_z >= 0, "reset.kl_z must be > 0 and reset.entropy_z >= 0"),
        (cfg.reset.kl_noise_window >= 0, "reset.kl_noise_window must be >= 0"),
        (cfg.reset.entropy_window >= 1 and cfg.reset.entropy_recent >= 1,
         "reset.entropy_window and entropy_recent must be >= 1"),
        (0 <= cfg.reset.entropy_drop < 1, "reset.entropy_drop must be in [0, 1)"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)
    from prorl.algo.advantages import ADV_ESTIMATORS
    from prorl.algo.losses import POLICY_LOSSES

    for key, value, registry in (("algo.adv_estimator", t.adv_estimator, ADV_ESTIMATORS),
                                 ("algo.policy_loss", t.policy_loss, POLICY_LOSSES)):
        if value not in registry:
            near = difflib.get_close_matches(value, list(registry), n=1)
            raise ConfigError(f"{key}: unknown {value!r}" + (f"; did you mean {near[0]!r}?" if near else "")
                              + f" (available: {', '.join(sorted(registry))})")
    if whole_run:
        _check_option_keys(cfg)
    if not cfg.data.train_files:
        from prorl.data.builtin_tasks import TASKS

        for t in cfg.data.builtin_tasks:
            if t not in TASKS:
                near = difflib.get_close_matches(t, list(TASKS), n=1)
                raise ConfigError(f"data.builtin_tasks: unknown task {t!r}" + (f"; did you mean {near[0]!r}?" if near else "")
                                  + f" (available: {', '.join(sorted(TASKS))})")
        if not cfg.data.builtin_tasks:
            raise ConfigError("data.builtin_tasks is empty and no data.train_files are given: nothing to train on")
    prev = 0
    for i, st in enumerate(cfg.stages):
        last = i == len(cfg.stages) - 1
        if not last and st.until_step <= prev and not st.until_trigger:
            raise ConfigError(f"stages[{i}] ({st.name or i}): until_step must increase (> {prev}) or until_trigger be set")
        prev = max(prev, st.until_step)
        try:
            probe = to_dict(cfg)
            probe["stages"] = []
            for key, value in st.overrides.items():
                if key.split(".")[0] == "stages":
                    raise ConfigError("a stage cannot override stages")
                set_dotted(probe, key.split("."), value)
            validate(from_tree(Config, probe), whole_run=False)
        except ConfigError as e:
            raise ConfigError(f"stages[{i}] ({st.name or i}) overrides: {e}") from None


def _check_option_keys(cfg: Config) -> None:
    """A key that only some policy losses / estimators read (their registrations name it), set away
    from its default while neither the run nor any stage picks one of them: a forgotten
    ``algo.policy_loss`` / ``algo.adv_estimator``. The default clip loss's keys are exempt."""
    from prorl.algo.advantages import adv_estimator_fields
    from prorl.algo.losses import policy_loss_fields

    t, defaults = cfg.algo, AlgoConfig()
    for kind, readers_of in (("policy_loss", policy_loss_fields()), ("adv_estimator", adv_estimator_fields())):
        used = {getattr(t, kind)} | {st.overrides[f"algo.{kind}"] for st in cfg.stages if f"algo.{kind}" in st.overrides}
        for name, readers in sorted(readers_of.items()):
            if "clip" not in readers and getattr(t, name) != getattr(defaults, name) and not readers & used:
                raise ConfigError(f"algo.{name} applies to algo.{kind}={' / '.join(sorted(readers))} only, but this run "
                                  f"uses {', '.join(sorted(used))}: set algo.{kind} too, or leave algo.{name} out")


def describe_fields(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, doc) for every field, for ``--help-config`` and the README."""
    rows = []
    for fl in dataclasses.fields(cls):
        key = f"{prefix}{fl.name}"
        tp = typing.get_type_hints(cls)[fl.name]
        if dataclasses.is_dataclass(tp):
            rows += describe_fields(tp, key + ".")
            continue
        default = fl.default if fl.default is not dataclasses.MISSING else fl.default_factory()  # type: ignore[misc]
        rows.append((key, repr(default), fl.metadata.get("doc", "")))
    return rows
