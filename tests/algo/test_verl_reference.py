"""prorl against verl's own outputs: ``fixtures/verl_reference.json`` holds fixed inputs and what
verl's functions returned on them at the commit it names (written once, by hand, by
``scripts/make_verl_fixtures.py``; no verl code is in this repository). Each test recomputes the
numbers with prorl's functions: GRPO advantages, the clip policy loss with the dual clip in the
three aggregation modes (loss, pg_clipfrac, ppo_kl, pg_clipfrac_lower), Clip-Cov and KL-Cov (the
random draw of Clip-Cov matched through the seed of torch's generator), loss aggregation, the KL
estimators and the entropy / log-probs of logits. A change that drifts from verl fails here."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from prorl.algo.advantages import compute_advantages
from prorl.algo.core import kl_penalty
from prorl.algo.losses import aggregate_loss, make_policy_loss
from prorl.algo.losses_cov import clip_cov_policy_loss, kl_cov_policy_loss, token_covariance
from prorl.config import AlgoConfig
from prorl.models.chunked_head import chunked_logprobs
from prorl.models.policy import entropy_from_logits

REF = json.loads((Path(__file__).parent / "fixtures" / "verl_reference.json").read_text())
TOL = {"rtol": 1e-6, "atol": 1e-6}  # verl adds 1e-8 to its token counts; GRPO runs in float32


def f64(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def close(got: float, want: float) -> bool:
    return math.isclose(got, want, rel_tol=TOL["rtol"], abs_tol=TOL["atol"])


def test_the_fixture_names_the_verl_commit_that_produced_it():
    assert re.fullmatch(r"[0-9a-f]{40}", REF["verl"]["commit"]) and REF["verl"]["version"]
    assert REF["verl"]["repository"] == "https://github.com/volcengine/verl"


# --------------------------------------------------------------------------- policy loss

def _policy_inputs():
    i = REF["policy_loss"]["inputs"]
    return (f64(i["log_prob"]), f64(i["old_log_prob"]), f64(i["advantages"]), f64(i["response_mask"]),
            f64(i["rollout_is_weights"]))


def test_the_inputs_reach_every_branch_of_the_loss():
    """Otherwise agreement would prove little: counted tokens above 1 + eps_high with A > 0, below
    1 - eps_low with A < 0, dual-clipped at c = 3 only and at c = 10 too, log-ratios past the +-20
    clamp, a row with A = 0 and a row with no counted token."""
    logp, old, adv, mask, _ = _policy_inputs()
    lr, a, m = logp - old, adv[:, None].expand_as(logp), mask.bool()
    lo, hi = 1 - REF["policy_loss"]["eps_low"], 1 + REF["policy_loss"]["eps_high"]
    for hit in ((a > 0) & (lr.exp() > hi), (a < 0) & (lr.exp() < lo), (a < 0) & (lr > math.log(3)) & (lr < math.log(10)),
                (a < 0) & (lr > math.log(10)), lr > 20, lr < -20, a == 0):
        assert (hit & m).any()
    assert (mask.sum(-1) == 0).any()


@pytest.mark.parametrize("case", REF["policy_loss"]["cases"],
                         ids=lambda c: f"{c['loss_agg_mode']}-c{c['clip_ratio_c']}-w{int(c['rollout_is_weights'])}")
@pytest.mark.parametrize("per_token_adv", [False, True])
def test_clip_policy_loss_matches_verl_vanilla(case, per_token_adv):
    logp, old, adv, mask, w = _policy_inputs()
    if per_token_adv:  # verl's form: [B, T], zero on padding
        adv = adv[:, None] * mask
    algo = AlgoConfig(eps_low=REF["policy_loss"]["eps_low"], eps_high=REF["policy_loss"]["eps_high"],
                      clip_ratio_c=case["clip_ratio_c"], loss_agg_mode=case["loss_agg_mode"])
    out = make_policy_loss(algo)(logp, old, adv, mask, rollout_is_weights=w if case["rollout_is_weights"] else None)
    got = {"pg_loss": out.loss.item(), "pg_clipfrac": out.clipfrac.item(), "ppo_kl": out.approx_kl.item(),
           "pg_clipfrac_lower": out.clipfrac_lower.item()}
    want = {k: case[k] for k in got}
    assert all(close(got[k], want[k]) for k in got), (got, want)


# --------------------------------------------------------------------------- clip_cov, kl_cov

COV = REF["cov_losses"]


def _cov_inputs():
    i = COV["inputs"]
    return (f64(i["log_prob"]), f64(i["old_log_prob"]), f64(i["advantages"]), f64(i["response_mask"]),
            f64(i["rollout_is_weights"]))


def test_the_cov_inputs_make_the_draw_and_the_exclusion_matter():
    """In window (1, 5): 5 counted tokens, one of them PPO-clipped (so not a candidate), 4 candidates
    for a budget of int(0.1 * 31) = 3: the random draw decides; window (0.3, 2): 7 for 3. No log-ratio
    reaches prorl's +-20 clamp (KL-Cov has no clip: a clamped ratio would change the loss)."""
    logp, old, adv, mask, _ = _cov_inputs()
    m, a, r = mask > 0, adv[:, None].expand_as(logp), (logp - old).exp()
    cov = token_covariance(logp, a, m)
    clipped = (-a * r.clamp(1 - COV["eps_low"], 1 + COV["eps_high"]) > -a * r) & m
    window = (cov > 1.0) & (cov < 5.0) & m
    assert int(m.sum()) == 31 and int(window.sum()) == 5 and int((window & clipped).sum()) == 1
    assert int(((cov > 0.3) & (cov < 2.0) & m & ~clipped).sum()) == 7
    assert (logp - old).abs().max() < 20 and (mask.sum(-1) == 0).any() and (adv == 0).any()


@pytest.mark.parametrize("case", COV["clip_cov"], ids=lambda c: f"{c['loss_agg_mode']}-w{int(c['rollout_is_weights'])}-"
                         f"r{c['clip_cov_ratio']}-[{c['clip_cov_lb']},{c['clip_cov_ub']}]-s{c['seed']}")
def test_clip_cov_matches_verl(case):
    logp, old, adv, mask, w = _cov_inputs()
    algo = AlgoConfig(policy_loss="clip_cov", eps_low=COV["eps_low"], eps_high=COV["eps_high"],
                      loss_agg_mode=case["loss_agg_mode"], clip_cov_ratio=case["clip_cov_ratio"],
                      clip_cov_lb=case["clip_cov_lb"], clip_cov_ub=case["clip_cov_ub"])
    out = make_policy_loss(algo)(logp, old, adv[:, None] * mask, mask, generator=torch.Generator().manual_seed(case["seed"]),
                                 rollout_is_weights=w if case["rollout_is_weights"] else None)
    got = {"pg_loss": out.loss.item(), "pg_clipfrac": out.extra["pg_clipfrac_cov"].item(), "ppo_kl": out.approx_kl.item()}
    assert all(close(got[k], case[k]) for k in got), (got, case)


def test_clip_cov_draws_differ_by_seed_as_in_verl():
    same = [c for c in COV["clip_cov"] if c["clip_cov_ratio"] == 0.1 and c["clip_cov_ub"] == 5.0]
    assert len({round(c["pg_loss"], 9) for c in same if c["loss_agg_mode"] == "token-mean"
                and not c["rollout_is_weights"]}) == 2  # seeds 1 and 2 cut different tokens
    logp, old, adv, mask, _ = _cov_inputs()
    losses = {clip_cov_policy_loss(logp, old, adv, mask, eps_low=COV["eps_low"], eps_high=COV["eps_high"],
                                   clip_cov_ratio=0.1, generator=torch.Generator().manual_seed(s)).loss.item()
              for s in range(40)}
    assert len(losses) == 4  # 3 of 4 candidates: 4 possible sets, all drawn


@pytest.mark.parametrize("case", COV["kl_cov"], ids=lambda c: f"{c['loss_agg_mode']}-w{int(c['rollout_is_weights'])}-"
                         f"r{c['kl_cov_ratio']}-c{c['ppo_kl_coef']}")
def test_kl_cov_matches_verl(case):
    logp, old, adv, mask, w = _cov_inputs()
    algo = AlgoConfig(policy_loss="kl_cov", loss_agg_mode=case["loss_agg_mode"], kl_cov_ratio=case["kl_cov_ratio"],
                      ppo_kl_coef=case["ppo_kl_coef"])
    out = make_policy_loss(algo)(logp, old, adv[:, None] * mask, mask,
                                 rollout_is_weights=w if case["rollout_is_weights"] else None)
    got = {"pg_loss": out.loss.item(), "ppo_kl": out.extra["ppo_kl_abs"].item()}  # verl's ppo_kl here is mean |log r|
    assert all(close(got[k], case[k]) for k in got), (got, case)
    assert kl_cov_policy_loss is make_policy_loss(algo).func


# --------------------------------------------------------------------------- advantages, aggregation, KL, entropy

@pytest.mark.parametrize("case", REF["grpo"]["cases"], ids=lambda c: f"norm{int(c['norm_adv_by_std'])}")
def test_grpo_advantages_match_verl(case):
    g = REF["grpo"]
    got = compute_advantages("grpo", torch.tensor(g["inputs"]["scores"]), torch.tensor(g["inputs"]["index"]),
                             norm_adv_by_std=case["norm_adv_by_std"], eps=g["epsilon"])
    torch.testing.assert_close(got, torch.tensor(case["advantages"]), **TOL)


def test_grpo_singleton_group_is_a_known_divergence():
    # verl gives a group of one mean 0 and std 1, so A = score / (1 + eps); prorl gives it 0 (a
    # response alone has nothing to be compared with). Groups of two or more agree.
    s = REF["grpo"]["singleton_group"]
    got = compute_advantages("grpo", torch.tensor(s["scores"]), torch.tensor(s["index"]), eps=REF["grpo"]["epsilon"])
    torch.testing.assert_close(got[:2], torch.tensor(s["advantages"][:2]), **TOL)
    assert s["advantages"][2] == pytest.approx(s["scores"][2] / (1 + 1e-6), rel=1e-6) and got[2].item() == 0.0


@pytest.mark.parametrize("case", REF["agg_loss"]["cases"], ids=lambda c: c["loss_agg_mode"])
def test_aggregate_loss_matches_verl_agg_loss(case):
    i = REF["agg_loss"]["inputs"]
    assert close(aggregate_loss(f64(i["loss_mat"]), f64(i["loss_mask"]), case["loss_agg_mode"]).item(), case["loss"])


@pytest.mark.parametrize("case", REF["kl_penalty"]["cases"], ids=lambda c: f"{c['prorl_estimator']}={c['verl_kl_penalty']}")
def test_kl_estimators_match_verl_kl_penalty(case):
    i = REF["kl_penalty"]["inputs"]
    got = kl_penalty(f64(i["logprob"]), f64(i["ref_logprob"]), case["prorl_estimator"])
    torch.testing.assert_close(got, f64(case["kl"]), **TOL)


def test_entropy_and_logprobs_match_verl():
    e = REF["entropy"]
    logits, labels, mask = f64(e["inputs"]["logits"]), torch.tensor(e["inputs"]["labels"]), f64(e["inputs"]["response_mask"])
    ent = entropy_from_logits(logits)  # [B, T]
    torch.testing.assert_close(ent, f64(e["entropy"]), **TOL)
    assert close(aggregate_loss(ent, mask, "token-mean").item(), e["entropy_loss_token_mean"])
    # the actor's path: the chunked LM head (identity weight, so its logits are these), 5 tokens a chunk
    V = logits.shape[-1]
    logp, ent_c = chunked_logprobs(logits.reshape(-1, V), torch.eye(V, dtype=torch.float64), labels.reshape(-1),
                                   chunk_tokens=5, with_entropy=True)
    torch.testing.assert_close(logp.reshape(labels.shape), f64(e["logprobs"]), **TOL)
    torch.testing.assert_close(ent_c.reshape(labels.shape), f64(e["entropy"]), **TOL)
