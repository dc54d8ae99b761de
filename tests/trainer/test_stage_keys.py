"""Every config key, walked: a stage override of it is either refused before anything loads, or read
from the current stage's config by the code that uses it once the stage has begun (never from an
earlier stage's config). Reads are recorded by config sections that log each field access."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from prorl.config import Config, ConfigError, describe_fields, load_config
from prorl.trainer import controller
from prorl.trainer.controller import check_stage_overrides, fixed_keys, train
from prorl.trainer.state import StageSchedule

BASE = [
    "data.builtin_tasks=[sort]", "data.builtin_val_size=4", "validation.n=2", "validation.every=1",
    "actor.train_batch_size=4", "actor.ppo_mini_batch_size=2", "rollout.n=4", "trainer.tensorboard=false",
    "trainer.progress_bar=false", "trainer.threads=1", "trainer.max_minutes=30", "algo.kl_coef=0.1",
    "actor.lr=1e-3", "trainer.keep_checkpoints=10", "trainer.save_every=1", "trainer.total_steps=4",
    "reset.auto=true", "reset.min_steps_between_resets=0", "reset.steps=[3]", "reset.rollback_to_best=true",
    "algo.dynamic_sampling=false", "rollout.max_response_length=8",
    # stage b begins at step 2 and changes a setting every component reads
    "stages=[{name: a, until_step: 1}, {name: b, overrides: {rollout.max_response_length: 6, actor.lr: 2.0e-3}}]",
]
# keys read only under a setting the first run does not use, and the run that uses it
CONDITIONAL = {
    "algo.cispo_eps_max": "padded",  # read by the cispo loss only
    "actor.micro_batch_size": "padded",  # the padded update only (the default packs)
    # the fixed-threshold reset rules and the opt-in entropy trigger (the padded run selects them)
    "reset.kl_factor": "padded", "reset.val_patience": "padded", "reset.entropy_window": "padded",
    "reset.entropy_recent": "padded", "reset.entropy_drop": "padded", "reset.entropy_z": "padded",
    # read by their loss / estimator only, the scope only with the entropy mask on
    **dict.fromkeys(["algo.passk_k", "algo.clip_cov_ratio", "algo.clip_cov_lb", "algo.clip_cov_ub",
                     "algo.entropy_mask_scope"], "passk_clip_cov"),
    **dict.fromkeys(["algo.positive_weight", "algo.kl_cov_ratio", "algo.ppo_kl_coef"], "w_reinforce_kl_cov"),
    # asynchronous rollouts only (the segment length reaches the workers with each stage's config)
    **dict.fromkeys(["rollout.max_staleness", "rollout.async_segment_tokens"], "async"),
}
PADDED = ["algo.policy_loss=cispo", "actor.max_tokens_per_micro_batch=0", "reset.kl_test=factor",
          "reset.val_test=margin", "reset.triggers=[kl_spike, val_degradation, val_plateau, entropy_collapse]"]
RUNS = {"padded": PADDED,
        "passk_clip_cov": ["algo.adv_estimator=passk", "algo.passk_k=2", "algo.policy_loss=clip_cov",
                           "algo.entropy_top_fraction=0.2"],
        "w_reinforce_kl_cov": ["algo.adv_estimator=w_reinforce", "algo.policy_loss=kl_cov"],
        "async": ["rollout.mode=async", "rollout.max_staleness=1", "rollout.async_segment_tokens=4"]}
# read with the engine's sampling log-probs (both engines report them); also checked with vLLM (-m vllm)
CORRECTION_KEYS = {"algo.rollout_correction", "algo.rollout_corr_tis_cap", "algo.rollout_corr_low", "algo.rollout_corr_high"}


def _leaf_keys() -> list[str]:
    return [key for key, _, _ in describe_fields() if not key.startswith("stages")]


def _recording(cfg: Config, tag: int, reads: list[tuple[int, str]]) -> Config:
    """A copy of ``cfg`` whose sections append ``(tag, "section.field")`` to ``reads`` on every access."""
    out = Config.__new__(Config)
    for fl in dataclasses.fields(Config):
        section = getattr(cfg, fl.name)
        if dataclasses.is_dataclass(section):
            names = {f.name for f in dataclasses.fields(section)}
            prefix = fl.name

            class Recording(type(section)):  # type: ignore[misc, valid-type]
                def __getattribute__(self, attr, _names=names, _prefix=prefix):
                    if attr in _names:
                        reads.append((tag, f"{_prefix}.{attr}"))
                    return object.__getattribute__(self, attr)

            rec = object.__new__(Recording)
            rec.__dict__.update(section.__dict__)
            section = rec
        object.__setattr__(out, fl.name, section)
    return out


def _record_run(tmp_path: Path, monkeypatch, *extra: str) -> list[tuple[int, str]]:
    """Train 4 steps (stage b from step 2, a reset at step 3) with every stage config recording its reads."""
    reads: list[tuple[int, str]] = []
    real = StageSchedule.config

    def config(self, idx):
        cache = self.__dict__.setdefault("_recorded", {})
        if idx not in cache:
            cache[idx] = _recording(real(self, idx), idx, reads)
        return cache[idx]

    monkeypatch.setattr(StageSchedule, "config", config)
    train(load_config(None, BASE + [f"trainer.run_dir={tmp_path}", *extra]), log=lambda *a: None)
    return reads


def _after_stage_b(reads: list[tuple[int, str]]) -> tuple[set[str], set[str]]:
    """(keys read from stage b's config, non-fixed keys read from stage a's config after b began)."""
    first = next(i for i, (tag, _) in enumerate(reads) if tag == 1)
    fixed = fixed_keys()
    current = {key for tag, key in reads[first:] if tag == 1}
    stale = {key for tag, key in reads[first:] if tag == 0 and key not in fixed}
    return current, stale


def test_every_key_is_refused_by_a_stage_or_read_from_the_stage_config(tmp_path, monkeypatch):
    current, stale = _after_stage_b(_record_run(tmp_path / "plain", monkeypatch))
    assert not stale, f"read from an earlier stage's config after stage b began: {sorted(stale)}"
    read_in = {}
    for name, extra in RUNS.items():
        read_in[name], stale = _after_stage_b(_record_run(tmp_path / name, monkeypatch, *extra))
        assert not stale, f"{name}: read from an earlier stage's config after stage b began: {sorted(stale)}"
    fixed = fixed_keys()
    unread = [k for k in _leaf_keys() if k not in fixed and k not in current
              and not (k in CONDITIONAL and k in read_in[CONDITIONAL[k]])]
    assert not unread, f"a stage may override these, but nothing reads them once it has begun: {unread}"


@pytest.mark.parametrize("key", sorted(fixed_keys()))
def test_a_stage_overriding_a_fixed_key_is_refused_before_anything_loads(key, tmp_path):
    default = next(d for k, d, _ in describe_fields() if k == key)  # even the same value is refused
    cfg = load_config(None, [f"trainer.run_dir={tmp_path}",
                             f"stages=[{{name: a, until_step: 2}}, {{name: b, overrides: {{{key}: {default}}}}}]"])
    with pytest.raises(ConfigError, match=f"{key} is fixed for the whole run"):
        check_stage_overrides(cfg)
    with pytest.raises(ConfigError, match=f"{key} is fixed for the whole run"):
        train(cfg, log=lambda *a: None)
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "checkpoints").exists()


def test_every_other_key_is_accepted_in_a_stage():
    fixed = fixed_keys()
    for key, default, _ in describe_fields():
        if key.startswith("stages") or key in fixed:
            continue
        cfg = load_config(None, ["stages=[{name: a, until_step: 2}, {name: b, overrides: {%s: %s}}]" % (key, default)],
                          preset=False)
        check_stage_overrides(cfg)


def test_unknown_stage_key_names_the_nearest():
    with pytest.raises(ConfigError, match="did you mean 'actor.max_tokens_per_micro_batch'"):
        load_config(None, ["stages=[{name: a, until_step: 2}, {name: b, overrides: {actor.max_tokens_per_micro_bach: 8}}]"])


def test_fixed_keys_are_declared_by_their_readers():
    """The union is exactly what the components declare (none listed twice, none unknown)."""
    from prorl.asyncrl.pool import AsyncRollouts
    from prorl.rollout import ENGINE_FIXED_KEYS
    from prorl.trainer.actor import Actor
    from prorl.trainer.metrics import MetricsLogger

    parts = [controller.Trainer.FIXED_KEYS, Actor.FIXED_KEYS, ENGINE_FIXED_KEYS, MetricsLogger.FIXED_KEYS,
             AsyncRollouts.FIXED_KEYS]
    flat = [k for p in parts for k in p]
    assert len(flat) == len(set(flat)) and set(flat) == fixed_keys()
    assert set(flat) <= set(_leaf_keys())


@pytest.mark.vllm
def test_mismatch_correction_keys_are_read_from_the_stage_config(tmp_path, monkeypatch):
    """The keys the engine's sampling log-probs feed, with the real vLLM engine."""
    pytest.importorskip("vllm")
    current, stale = _after_stage_b(_record_run(tmp_path, monkeypatch, "rollout.engine=vllm", "rollout.cpu_kv_cache_gib=0.25",
                                                "algo.rollout_correction=tis"))
    assert not stale, f"read from an earlier stage's config after stage b began: {sorted(stale)}"
    assert CORRECTION_KEYS <= current, sorted(CORRECTION_KEYS - current)
