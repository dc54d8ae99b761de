"""The issue-9 algorithm options in the config: defaults, documentation, registry names, and the
impossible settings rejected before anything loads."""

from __future__ import annotations

import pytest

from prorl.algo.advantages import ADV_ESTIMATORS
from prorl.algo.losses import POLICY_LOSSES
from prorl.config import Config, ConfigError, describe_fields, load_config, validate

NEW_KEYS = ["algo.adv_estimator", "algo.policy_loss", "algo.cispo_eps_max", "reward.length_penalty_max",
            "reward.length_penalty_min", "reward.length_penalty_period", "reward.length_penalty_on_steps",
            "reward.length_penalty_correct_only", "data.retire_pass_rate", "data.retire_min_samples"]


def test_defaults_keep_todays_behaviour():
    c = Config()
    assert (c.algo.adv_estimator, c.algo.policy_loss) == ("grpo", "clip")
    assert c.reward.length_penalty_max == 0.0 and c.data.retire_pass_rate == 0.0  # both off
    validate(c)


def test_new_keys_are_documented_for_help_config():
    docs = {k: d for k, _, d in describe_fields()}
    for key in NEW_KEYS:
        assert docs.get(key, "").strip(), key
    for name in ADV_ESTIMATORS:
        assert name in docs["algo.adv_estimator"]
    for name in POLICY_LOSSES:
        assert name in docs["algo.policy_loss"]


@pytest.mark.parametrize("name", sorted(ADV_ESTIMATORS))
def test_every_registered_estimator_is_accepted(name):
    assert load_config(None, [f"algo.adv_estimator={name}"]).algo.adv_estimator == name


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_every_registered_loss_is_accepted(name):
    assert load_config(None, [f"algo.policy_loss={name}"]).algo.policy_loss == name


@pytest.mark.parametrize(
    "override, match",
    [
        ("algo.adv_estimator=grpoo", "algo.adv_estimator: unknown 'grpoo'; did you mean 'grpo'"),
        ("algo.adv_estimator=gae", "available: grpo, passk, reinforce_pp_baseline, w_reinforce"),
        ("algo.policy_loss=cispoo", "algo.policy_loss: unknown 'cispoo'; did you mean 'cispo'"),
    ],
)
def test_unknown_names_rejected_with_a_suggestion(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["algo.cispo_eps_max=0"], "cispo_eps_max"),
        (["algo.cispo_eps_max=-1"], "cispo_eps_max"),
        (["reward.length_penalty_max=-0.1"], "length_penalty_min / length_penalty_max"),
        (["reward.length_penalty_min=0.5", "reward.length_penalty_max=0.2"], "0 <= min <= max"),
        (["reward.length_penalty_max=0.2", "reward.length_penalty_period=-1"], "length_penalty_period"),
        (["reward.length_penalty_max=0.2", "reward.length_penalty_period=10"], "length_penalty_on_steps"),
        (["reward.length_penalty_max=0.2", "reward.length_penalty_period=10", "reward.length_penalty_on_steps=11"],
         "length_penalty_on_steps"),
        (["data.retire_pass_rate=1.5"], "retire_pass_rate"),
        (["data.retire_pass_rate=-0.1"], "retire_pass_rate"),
        (["data.retire_min_samples=0"], "retire_min_samples"),
        (["rollout.max_batch_size=0"], "max_batch_size"),
    ],
)
def test_impossible_settings_rejected(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)


@pytest.mark.parametrize(
    "overrides",
    [
        ["algo.adv_estimator=reinforce_pp_baseline", "algo.policy_loss=cispo", "algo.cispo_eps_max=0.28"],
        ["reward.length_penalty_max=0.5", "reward.length_penalty_min=0.5"],
        ["reward.length_penalty_max=0.3", "reward.length_penalty_period=10", "reward.length_penalty_on_steps=10"],
        ["reward.length_penalty_max=0.3", "reward.length_penalty_period=10", "reward.length_penalty_on_steps=1"],
        ["data.retire_pass_rate=1.0", "data.retire_min_samples=1"],
        ["rollout.n=256", "rollout.max_batch_size=64"],  # large groups: generated in chunks
    ],
)
def test_boundary_settings_accepted(overrides):
    load_config(None, overrides)


def test_a_stage_may_switch_the_options():
    cfg = load_config(None, ["stages=[{name: a, until_step: 5}, {name: b, overrides: {algo.policy_loss: cispo, "
                             "data.retire_pass_rate: 0.9, reward.length_penalty_max: 0.2}}]"])
    assert cfg.stages[1].overrides["algo.policy_loss"] == "cispo"
    with pytest.raises(ConfigError, match="stages\\[1\\].*algo.policy_loss"):
        load_config(None, ["stages=[{name: a, until_step: 5}, {name: b, overrides: {algo.policy_loss: ppo}}]"])
