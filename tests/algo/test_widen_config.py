"""Issue 22's options in the config: documented for --help-config, off or at the papers' / verl's
defaults, impossible values rejected, and a loss's or estimator's own key rejected when no loss or
estimator of the run reads it (a forgotten algo.policy_loss / adv_estimator)."""

from __future__ import annotations

import pytest

from prorl.config import Config, ConfigError, describe_fields, load_config, validate

KEYS = ["algo.positive_weight", "algo.passk_k", "algo.clip_cov_ratio", "algo.clip_cov_lb", "algo.clip_cov_ub",
        "algo.kl_cov_ratio", "algo.ppo_kl_coef", "algo.entropy_top_fraction", "algo.entropy_mask_scope"]


def test_keys_are_documented_and_default_to_the_references():
    docs = {k: (default, d) for k, default, d in describe_fields()}
    for key in KEYS:
        assert docs[key][1].strip(), key
    a = Config().algo
    assert (a.positive_weight, a.clip_cov_ratio, a.clip_cov_lb, a.clip_cov_ub, a.kl_cov_ratio, a.ppo_kl_coef) == \
        (0.1, 2e-4, 1.0, 5.0, 2e-4, 0.1)  # W-REINFORCE's lambda; verl's PolicyLossConfig defaults
    assert a.entropy_top_fraction == 0.0 and a.entropy_mask_scope == "mini_batch"  # off
    for paper in ("2506.01347", "2508.10751"):
        assert paper in docs["algo.adv_estimator"][1]
    assert "2505.22617" in docs["algo.policy_loss"][1] and "2506.01939" in docs["algo.entropy_top_fraction"][1]
    validate(Config())


@pytest.mark.parametrize(
    "overrides",
    [
        ["algo.adv_estimator=w_reinforce", "algo.positive_weight=0", "algo.dynamic_sampling=false"],
        ["algo.adv_estimator=passk", "algo.passk_k=7"],  # the preset's rollout.n is 8
        ["algo.adv_estimator=passk", "algo.passk_k=1"],
        ["algo.policy_loss=clip_cov", "algo.clip_cov_ratio=1", "algo.clip_cov_lb=-1", "algo.clip_cov_ub=0"],
        ["algo.policy_loss=kl_cov", "algo.kl_cov_ratio=0.002", "algo.ppo_kl_coef=1"],
        ["algo.entropy_top_fraction=0.2", "algo.entropy_mask_scope=micro_batch", "algo.policy_loss=cispo"],
        ["algo.entropy_top_fraction=1"],
        ["algo.adv_estimator=passk", "algo.policy_loss=kl_cov", "algo.entropy_top_fraction=0.2"],  # they compose
    ],
)
def test_valid_settings_accepted(overrides):
    load_config(None, overrides)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["algo.adv_estimator=w_reinforce", "algo.positive_weight=-0.1"], "positive_weight"),
        (["algo.adv_estimator=passk", "algo.passk_k=0"], "passk_k"),
        (["algo.adv_estimator=passk", "algo.passk_k=8"], r"passk_k \(8\) must be < rollout.n \(8\)"),
        (["algo.adv_estimator=passk", "algo.passk_k=4", "rollout.n=4"], "passk_k"),
        (["algo.policy_loss=clip_cov", "algo.clip_cov_ratio=0"], "clip_cov_ratio"),
        (["algo.policy_loss=clip_cov", "algo.clip_cov_ratio=1.5"], "clip_cov_ratio"),
        (["algo.policy_loss=clip_cov", "algo.clip_cov_lb=5"], "clip_cov_lb must be < algo.clip_cov_ub"),
        (["algo.policy_loss=kl_cov", "algo.kl_cov_ratio=0"], "kl_cov_ratio"),
        (["algo.policy_loss=kl_cov", "algo.ppo_kl_coef=-1"], "ppo_kl_coef"),
        (["algo.entropy_top_fraction=-0.1"], "entropy_top_fraction"),
        (["algo.entropy_top_fraction=1.2"], "entropy_top_fraction"),
        (["algo.entropy_mask_scope=batch"], "entropy_mask_scope"),
        # a key no loss / estimator of this run reads
        (["algo.kl_cov_ratio=0.002"], r"algo.kl_cov_ratio applies to algo.policy_loss=kl_cov only, but this run uses clip"),
        (["algo.policy_loss=kl_cov", "algo.clip_cov_lb=0.5"], "algo.clip_cov_lb applies to algo.policy_loss=clip_cov"),
        (["algo.ppo_kl_coef=1"], "ppo_kl_coef applies"),
        (["algo.policy_loss=clip", "algo.cispo_eps_max=1"], "cispo_eps_max applies to algo.policy_loss=cispo"),
        (["algo.positive_weight=0.5"], r"positive_weight applies to algo.adv_estimator=w_reinforce only"),
        (["algo.adv_estimator=w_reinforce", "algo.passk_k=2"], "passk_k applies to algo.adv_estimator=passk"),
    ],
)
def test_impossible_or_unused_settings_rejected(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)


def test_the_default_losss_keys_stay_free_and_stages_count():
    load_config(None, ["algo.policy_loss=cispo", "algo.eps_high=0.28", "algo.clip_ratio_c=10"])  # clip's keys: exempt
    # a key that a later stage's loss reads may be set for the whole run
    cfg = load_config(None, ["algo.kl_cov_ratio=0.002", "stages=[{name: a, until_step: 5}, "
                             "{name: b, overrides: {algo.policy_loss: kl_cov}}]"])
    assert cfg.algo.kl_cov_ratio == 0.002
    load_config(None, ["stages=[{name: a, until_step: 5}, {name: b, overrides: {algo.adv_estimator: passk, "
                       "algo.passk_k: 2, algo.policy_loss: clip_cov, algo.clip_cov_ratio: 0.01}}]"])
    with pytest.raises(ConfigError, match=r"stages\[1\].*passk_k"):  # the stage's own values are checked
        load_config(None, ["stages=[{name: a, until_step: 5}, {name: b, overrides: {algo.adv_estimator: passk, "
                           "algo.passk_k: 9}}]"])


def test_a_loss_registered_then_removed_no_longer_claims_its_keys():
    from prorl.algo.losses import POLICY_LOSSES, register_policy_loss

    @register_policy_loss("_tmp_loss", hyper={"scale": "entropy_coef"})
    def tmp(logp, old_logp, advantages, mask, *, agg_mode="token-mean", rollout_is_weights=None, scale=1.0):
        raise AssertionError

    with pytest.raises(ConfigError, match="entropy_coef applies to algo.policy_loss=_tmp_loss"):
        load_config(None, ["algo.entropy_coef=0.01"])
    del POLICY_LOSSES["_tmp_loss"]
    assert load_config(None, ["algo.entropy_coef=0.01"]).algo.entropy_coef == 0.01
