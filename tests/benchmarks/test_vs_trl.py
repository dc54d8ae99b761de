"""benchmarks/vs_trl.py without TRL: the shared setting, prorl's config builder and one prorl step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

@pytest.fixture(scope="module")
def vs_trl(load_script):
    return load_script("benchmarks/vs_trl.py", "vs_trl")


@pytest.fixture(scope="module")
def quick_assets(vs_trl, tmp_path_factory):
    return vs_trl.build_assets(vs_trl.Setting.quick(), cache=tmp_path_factory.mktemp("vs_trl_cache"))


def test_default_setting_is_the_issues(vs_trl):
    s = vs_trl.Setting()
    assert (s.hidden, s.intermediate, s.layers, s.heads, s.kv_heads, s.vocab) == (256, 688, 4, 4, 4, 512)
    assert (s.prompts_per_step, s.n, s.max_new_tokens, s.temperature) == (8, 16, 128, 1.2)
    assert (s.beta, s.eps_low, s.eps_high, s.threads) == (1e-4, 0.2, 0.4, 2)


def test_assets_load_and_are_cached(vs_trl, quick_assets, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, data = quick_assets
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    s = vs_trl.Setting.quick()
    assert len(tok) == s.vocab == model.config.vocab_size
    assert model.config.hidden_size == s.hidden and model.config.num_key_value_heads == s.kv_heads
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    assert len(rows) == s.num_prompts and rows[0]["data_source"] == "builtin/add"
    ids = tok.apply_chat_template(rows[0]["prompt"], tokenize=True, add_generation_prompt=True)
    ids = ids if isinstance(ids, list) else ids["input_ids"]
    assert ids[-1] != tok.eos_token_id and tok.decode(ids).endswith("assistant\n")
    before = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert vs_trl.build_assets(s, cache=model_dir.parents[1]) == quick_assets
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == before


def test_prorl_config_matches_the_setting(vs_trl, quick_assets, tmp_path):
    from prorl.config import validate

    s = vs_trl.Setting()
    cfg = vs_trl.prorl_config(s, model_dir=quick_assets[0], data=quick_assets[1], run_dir=tmp_path, steps=5)
    validate(cfg)
    assert (cfg.rollout.n, cfg.rollout.max_response_length, cfg.rollout.temperature) == (16, 128, 1.2)
    assert (cfg.actor.train_batch_size, cfg.actor.ppo_mini_batch_size, cfg.actor.ppo_epochs) == (8, 8, 1)
    assert (cfg.algo.kl_coef, cfg.algo.eps_low, cfg.algo.eps_high) == (1e-4, 0.2, 0.4)
    assert not cfg.algo.dynamic_sampling and cfg.algo.loss_agg_mode == "token-mean"
    assert cfg.validation.every == 0 and cfg.trainer.threads == 2 and cfg.trainer.total_steps == 5


def test_precision_and_speed_settings_reach_prorls_config(vs_trl, quick_assets, tmp_path):
    """--precision bf16 is mixed precision (fp32 weights, bf16 math and rollouts); the fast settings
    change only how prorl computes; --prorl-plain leaves prorl's defaults; --prorl-set wins last."""
    s, (model_dir, data) = vs_trl.Setting(), quick_assets
    kw = dict(model_dir=model_dir, data=data, run_dir=tmp_path, steps=5)
    plain = vs_trl.prorl_config(s, engine="vllm", **kw)
    assert (plain.model.autocast, plain.rollout.dtype, plain.actor.compile, plain.rollout.enforce_eager) == \
        ("none", "float32", False, True)
    default = vs_trl.prorl_config(s, engine="vllm", precision="default", **kw)  # prorl's own default: auto
    assert (default.model.autocast, default.rollout.dtype) == ("auto", "auto") and vs_trl.TRL_BF16["default"]
    fast = vs_trl.prorl_config(s, engine="vllm", precision="bf16", fast=True, extra=["actor.compile=false"], **kw)
    assert (fast.model.dtype, fast.model.autocast, fast.rollout.dtype) == ("float32", "bfloat16", "bfloat16")
    assert fast.model.attn_implementation == "eager" and fast.actor.max_tokens_per_micro_batch > 0
    assert not fast.rollout.enforce_eager and not fast.actor.compile  # the extra override came last
    hf = vs_trl.prorl_config(s, engine="hf", fast=True, **kw)
    assert hf.actor.compile and hf.rollout.enforce_eager  # enforce_eager is vLLM's; the hf arm keeps the default
    for cfg in (plain, fast, hf):  # the setting itself is untouched
        assert (cfg.rollout.n, cfg.rollout.max_response_length, cfg.algo.kl_coef) == (16, 128, 1e-4)


def test_prorl_arm_one_step(vs_trl, quick_assets, tmp_path):
    model_dir, data = quick_assets
    s = vs_trl.Setting.quick()
    res = vs_trl.prorl_worker({"setting": vs_trl.dataclasses.asdict(s), "model_dir": str(model_dir),
                               "data": str(data), "steps": 1, "engine": "hf", "run_dir": str(tmp_path / "run")})
    assert len(res["step_s"]) == 1 and res["step_s"][0] > 0
    assert 0 < res["gen_tokens"][0] <= s.prompts_per_step * s.n * s.max_new_tokens
    assert set(res["phases"]) == set(vs_trl.PRORL_PHASES) and res["phases"]["gen"][0] > 0


def test_summary_skips_the_first_step(vs_trl):
    run = {"step_s": [10.0, 2.0, 4.0], "gen_tokens": [100.0, 100.0, 100.0], "gen_s": [5.0, 1.0, 1.0],
           "phases": {"gen": [5.0, 1.0, 1.0]}}
    out = vs_trl.summarise([run, run])
    assert out["s_per_step"] == 3.0 and out["step_s_all"] == [2.0, 4.0, 2.0, 4.0]
    assert out["tokens_per_step"] == 100.0 and out["phases"]["gen"] == 1.0
    assert out["phases"]["other"] == 2.0  # median of (2 - 1, 4 - 1) per step
