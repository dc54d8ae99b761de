"""verl's dual clip in the ``clip`` loss (``algo.clip_ratio_c``): hand-computed single tokens, its
order with the rollout importance weights, its statistics, and the config key (default, ``none``,
rejected values, documentation)."""

from __future__ import annotations

import math

import pytest
import torch

from prorl.algo.losses import clip_policy_loss, make_policy_loss
from prorl.config import AlgoConfig, ConfigError, apply_overrides, describe_fields, load_config

E5 = math.exp(5.0)  # 148.4131591...


def _token(log_ratio: float, adv: float, c: float | None, w: float | None = None):
    """One token with old_logp = -1 and logp = -1 + log_ratio; eps 0.2 / 0.4. Returns (out, d loss / d logp)."""
    logp = torch.tensor([[-1.0 + log_ratio]], dtype=torch.float64, requires_grad=True)  # [1, 1]
    weights = None if w is None else torch.tensor([[w]], dtype=torch.float64)
    out = clip_policy_loss(logp, torch.tensor([[-1.0]], dtype=torch.float64), torch.tensor([adv], dtype=torch.float64),
                           torch.ones(1, 1), eps_low=0.2, eps_high=0.4, clip_ratio_c=c, rollout_is_weights=weights)
    out.loss.backward()
    return out, float(logp.grad)


def test_ratio_e5_negative_advantage_is_capped_at_c():
    # r = e^5, A = -1: the PPO clip keeps max(-A r, -A 1.4) = e^5 = 148.41; the dual clip caps it at -A c = 3
    out, grad = _token(5.0, -1.0, 3.0)
    assert out.loss.item() == pytest.approx(3.0, abs=1e-12)
    assert grad == 0.0  # the cap is a constant
    assert float(out.clipfrac_lower) == 1.0  # verl's pg_clipfrac_lower: the dual clip is active
    assert float(out.clipfrac) == 0.0  # verl's pg_clipfrac does not count the dual clip
    assert float(out.clipfrac_high) == float(out.clipfrac_below_low_bound) == 0.0


def test_ratio_e5_without_dual_clip_is_unbounded():
    out, grad = _token(5.0, -1.0, None)
    assert out.loss.item() == pytest.approx(148.4131591, abs=1e-6)
    assert out.loss.item() == pytest.approx(E5, rel=1e-12)
    assert grad == pytest.approx(E5, rel=1e-12)  # d(-A r)/dlogp = -A r = e^5
    assert float(out.clipfrac_lower) == 0.0


@pytest.mark.parametrize(
    "log_ratio, adv, c, loss, capped",
    [
        (math.log(3.01), -2.0, 3.0, 6.0, True),  # just above the cap: -A c = 6
        (math.log(2.99), -2.0, 3.0, 5.98, False),  # just below: -A r
        (5.0, -0.5, 10.0, 5.0, True),  # verl's DAPO recipes use c = 10: -A c = 5
        (2.0, -0.5, 10.0, 0.5 * math.exp(2.0), False),  # r = 7.39 < 10
        (5.0, 1.0, 3.0, -1.4, False),  # A > 0: the upper clip 1 + eps_high applies, the dual clip never
        (math.log(0.5), -1.0, 3.0, 0.8, False),  # A < 0, r < 1 - eps_low: the lower clip, not the dual one
        (5.0, 0.0, 3.0, 0.0, False),  # A = 0: nothing
    ],
)
def test_dual_clip_hand_computed(log_ratio, adv, c, loss, capped):
    out, grad = _token(log_ratio, adv, c)
    assert out.loss.item() == pytest.approx(loss, abs=1e-9)
    assert float(out.clipfrac_lower) == float(capped)
    if capped:
        assert grad == 0.0


def test_rollout_weights_multiply_the_capped_loss():
    # verl caps the ratio's loss first, then multiplies by rollout_is_weights: 0.5 * min(e^5, 3) = 1.5
    # (weighting first, min(0.5 e^5, 3) = 3, would be another loss)
    out, grad = _token(5.0, -1.0, 3.0, w=0.5)
    assert out.loss.item() == pytest.approx(1.5, abs=1e-12)
    assert grad == 0.0
    out, grad = _token(5.0, -1.0, None, w=0.5)
    assert out.loss.item() == pytest.approx(0.5 * E5, rel=1e-12) and grad == pytest.approx(0.5 * E5, rel=1e-12)


def test_dual_clip_statistics_over_a_batch():
    # 4 counted tokens of A = -1 with ratios e^5, 4, 2, 0.5 and one padded token (e^5): capped above 3
    # are e^5 and 4 -> lower 2/4; below 1 - eps_low: 0.5 -> 1/4; the PPO clip active: only 0.5 -> 1/4
    logp = torch.log(torch.tensor([[E5, 4.0, 2.0, 0.5, E5]], dtype=torch.float64))  # old_logp = 0
    mask = torch.tensor([[1.0, 1, 1, 1, 0]])
    out = clip_policy_loss(logp, torch.zeros_like(logp), torch.tensor([-1.0], dtype=torch.float64), mask)
    assert (float(out.clipfrac_lower), float(out.clipfrac_below_low_bound), float(out.clipfrac)) == (0.5, 0.25, 0.25)
    assert out.loss.item() == pytest.approx((3 + 3 + 2 + 0.8) / 4, abs=1e-12)


@pytest.mark.parametrize("c", [1.0, 0.5, 0.0, -3.0, float("nan")])
def test_the_loss_rejects_c_not_above_one(c):
    with pytest.raises(ValueError, match="clip_ratio_c must be > 1"):
        _token(5.0, -1.0, c)


# --------------------------------------------------------------------------- config

def test_config_default_is_verls_and_binds_to_the_loss():
    assert AlgoConfig().clip_ratio_c == 3.0 and load_config(None).algo.clip_ratio_c == 3.0
    logp = torch.tensor([[5.0]])
    assert make_policy_loss(AlgoConfig())(logp, torch.zeros(1, 1), torch.tensor([-1.0]), torch.ones(1, 1)).loss.item() \
        == pytest.approx(3.0)
    off = make_policy_loss(AlgoConfig(clip_ratio_c=None))(logp, torch.zeros(1, 1), torch.tensor([-1.0]), torch.ones(1, 1))
    assert off.loss.item() == pytest.approx(E5, rel=1e-6)


@pytest.mark.parametrize("text", ["none", "None", "NONE", "null", "~", "'none'"])
def test_none_on_the_command_line_turns_it_off(text):
    assert load_config(None, [f"algo.clip_ratio_c={text}"]).algo.clip_ratio_c is None


def test_yaml_null_turns_it_off_and_survives_a_round_trip(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("algo:\n  clip_ratio_c: null\n")
    cfg = load_config(p)
    assert cfg.algo.clip_ratio_c is None
    assert apply_overrides(cfg, {}).algo.clip_ratio_c is None  # to_dict -> from_dict (stages, checkpoints)
    assert apply_overrides(cfg, {"algo.clip_ratio_c": 10}).algo.clip_ratio_c == 10.0


@pytest.mark.parametrize("value", ["0.5", "1", "1.0", "0", "-2", "nan"])
def test_values_not_above_one_are_rejected_with_a_clear_message(value):
    with pytest.raises(ConfigError, match=r"algo.clip_ratio_c must be > 1 .*verl requires > 1.*none to turn it off"):
        load_config(None, [f"algo.clip_ratio_c={value}"])


@pytest.mark.parametrize("value", ["true", "off", "[3]"])
def test_values_of_the_wrong_type_are_rejected(value):
    with pytest.raises(ConfigError, match="algo.clip_ratio_c"):
        load_config(None, [f"algo.clip_ratio_c={value}"])


def test_a_stage_may_turn_it_off_or_change_it():
    cfg = load_config(None, ["stages=[{name: a, until_step: 5}, {name: b, overrides: {algo.clip_ratio_c: none}}]"])
    assert apply_overrides(cfg, cfg.stages[1].overrides).algo.clip_ratio_c is None
    with pytest.raises(ConfigError, match=r"stages\[1\].*clip_ratio_c must be > 1"):
        load_config(None, ["stages=[{name: a, until_step: 5}, {name: b, overrides: {algo.clip_ratio_c: 0.5}}]"])


def test_documented_for_help_config():
    rows = {k: (d, doc) for k, d, doc in describe_fields()}
    default, doc = rows["algo.clip_ratio_c"]
    assert default == "3.0" and "dual clip" in doc and "none" in doc and "> 1" in doc
