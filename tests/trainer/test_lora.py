"""LoRA (``actor.lora_rank > 0``, PEFT): only the adapters train; the reference is the base with the
adapters disabled; a hard reset merges the adapter into the base and starts a fresh one (AdamW
with it); rollout engines and checkpoints get the merged model under plain HF names; rollback and
resume restore base, adapter and optimizer exactly; a short run learns."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft", reason="LoRA needs PEFT: pip install -e '.[lora]' (scripts/install.sh installs it)")

from prorl.config import ConfigError, load_config  # noqa: E402
from prorl.trainer.lora import base_named_parameters  # noqa: E402
from prorl.models.policy import response_logprobs  # noqa: E402
from prorl.trainer.actor import Actor  # noqa: E402
from prorl.trainer.controller import train  # noqa: E402
from prorl.trainer.distributed import World  # noqa: E402
from prorl.trainer.metrics import read_metrics  # noqa: E402
from prorl.trainer.setup import BUILTIN_TINY  # noqa: E402
from prorl.trainer.weights import build_weights, read_hf_weights  # noqa: E402
from tests.trainer.test_actor import _kl_to_reference, make_actor, random_batch  # noqa: E402

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_actor(*overrides: str, rank: int = 8, reference: bool = True) -> Actor:
    return make_actor(f"actor.lora_rank={rank}", "algo.kl_coef=0.1", "actor.lr=1e-2", "actor.ppo_mini_batch_size=2",
                      *overrides, reference=reference)


def adapter(actor: Actor) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in actor.model.named_parameters() if ".lora_" in k}


def base(actor: Actor) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in base_named_parameters(actor.model)}


def merged(actor: Actor) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in actor.named_weights()}


def plain_model():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(BUILTIN_TINY)).eval()


def plain_logprobs(model, batch) -> torch.Tensor:
    with torch.no_grad():
        lp, _ = response_logprobs(model, batch.seqs.input_ids, batch.seqs.attention_mask, batch.seqs.response_len)
    return lp * batch.loss_mask


def trained(actor: Actor, steps: int = 2):
    batch = random_batch(len(actor.tokenizer), actor.tokenizer.pad_token_id)
    for _ in range(steps):
        actor.update(batch, rng=random.Random(0))
    return batch


# ---------------------------------------------------------------------------------------------- the actor

def test_only_the_adapters_train():
    """rank x (in + out) per adapted projection; AdamW holds exactly those; the base does not move."""
    actor = lora_actor()
    plain = plain_model()
    expected = sum(8 * (m.in_features + m.out_features) for name, m in plain.named_modules()
                   if name.rsplit(".", 1)[-1] in TARGETS)
    assert expected == 77_824  # 4 layers x 8 x (256 + 192 + 192 + 256 + 512 + 512 + 512)
    from prorl.trainer.lora import lora_layers

    layers = dict(lora_layers(actor.model))
    assert len(layers) == 4 * len(TARGETS) and {m.scaling["default"] for m in layers.values()} == {32.0 / 8}  # alpha / r
    trainable = [p for p in actor.model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == expected
    assert {id(p) for g in actor.optimizer.param_groups for p in g["params"]} == {id(p) for p in trainable}
    before_base, before_adapter = base(actor), adapter(actor)
    trained(actor)
    after_base, after_adapter = base(actor), adapter(actor)
    assert all(torch.equal(after_base[k], v) for k, v in before_base.items()), "the frozen base moved"
    assert any(not torch.equal(after_adapter[k], v) for k, v in before_adapter.items()), "the adapter did not train"
    assert set(after_base) == {k for k, _ in plain.named_parameters()}


def test_reference_is_the_base_with_adapters_disabled():
    actor = lora_actor()
    batch = random_batch(len(actor.tokenizer), actor.tokenizer.pad_token_id)
    assert _kl_to_reference(actor, batch) == 0.0  # B = 0: the fresh adapter changes nothing
    trained(actor)
    assert _kl_to_reference(actor, batch) > 1e-3
    ref = actor.logprobs(batch.seqs, temperature=1.0, reference=True) * batch.loss_mask
    torch.testing.assert_close(ref, plain_logprobs(plain_model(), batch), rtol=0, atol=1e-6)
    assert actor.reference is None and actor.has_reference, "no second copy of the model"


def test_engines_get_the_merged_model_under_hf_names():
    """named_weights() is what a plain HF model's load_weights takes, and it samples the LoRA policy."""
    from prorl.rollout.hf import HFRolloutEngine

    actor = lora_actor()
    batch = trained(actor)
    engine = HFRolloutEngine(plain_model(), eos_token_id=actor.tokenizer.eos_token_id,
                             pad_token_id=actor.tokenizer.pad_token_id)
    names = [n for n, _ in actor.named_weights()]
    assert names == [n for n, _ in engine.model.named_parameters()]
    before = plain_logprobs(engine.model, batch)
    engine.load_weights(actor.named_weights())
    policy = actor.logprobs(batch.seqs, temperature=1.0) * batch.loss_mask
    assert (before - policy).abs().max() > 1e-2, "the adapter must matter for this check to mean anything"
    torch.testing.assert_close(plain_logprobs(engine.model, batch), policy, rtol=1e-5, atol=1e-5)


def test_reference_reset_merges_the_adapter_and_restarts_adam():
    actor = lora_actor()
    batch = trained(actor)
    policy = actor.logprobs(batch.seqs, temperature=1.0)
    old_base, old_adapter, old_merged = base(actor), adapter(actor), merged(actor)
    assert actor.optimizer.state and _kl_to_reference(actor, batch) > 1e-3
    assert actor.reset(reference=True, optimizer=False), "a reference reset under LoRA restarts AdamW"
    assert _kl_to_reference(actor, batch) == 0.0, "right after a reset the policy is the reference"
    assert not actor.optimizer.state
    torch.testing.assert_close(actor.logprobs(batch.seqs, temperature=1.0), policy, rtol=1e-5, atol=1e-5)
    new_base, new_adapter = base(actor), adapter(actor)
    for k, v in new_base.items():  # the base is the merged policy
        torch.testing.assert_close(v, old_merged[k], rtol=0, atol=1e-6)
    assert any(not torch.equal(new_base[k], old_base[k]) for k in old_base), "the base did not change"
    lora_b = [k for k in new_adapter if "lora_B" in k]
    assert lora_b and all(not new_adapter[k].any() for k in lora_b), "a fresh adapter starts with B = 0"
    assert all(not torch.equal(new_adapter[k], old_adapter[k]) for k in new_adapter if "lora_A" in k)
    assert sorted(actor.optimizer.param_groups[0]["params"], key=id) == \
        sorted((p for p in actor.model.parameters() if p.requires_grad), key=id)
    trained(actor, 1)
    assert _kl_to_reference(actor, batch) > 0.0


def test_optimizer_only_reset_keeps_the_adapter_and_no_reference_no_merge():
    actor = lora_actor()
    trained(actor)
    old_base, old_adapter = base(actor), adapter(actor)
    assert actor.reset(reference=False, optimizer=True) and not actor.optimizer.state
    assert all(torch.equal(adapter(actor)[k], v) for k, v in old_adapter.items())
    assert all(torch.equal(base(actor)[k], v) for k, v in old_base.items())
    actor = lora_actor("algo.kl_coef=0", reference=False)
    trained(actor)
    old_adapter = adapter(actor)
    assert not actor.reset(reference=True, optimizer=False), "no reference kept: nothing to merge"
    assert all(torch.equal(adapter(actor)[k], v) for k, v in old_adapter.items()) and actor.optimizer.state


def test_padding_free_update_and_gradient_checkpointing_see_the_adapters():
    """The packed layout and activation checkpointing compute the same LoRA log-probs and update."""
    results = []
    for extra in ([], ["actor.max_tokens_per_micro_batch=64"], ["model.gradient_checkpointing=true"]):
        torch.manual_seed(0)
        actor = lora_actor("actor.lr=1e-3", *extra)
        batch = trained(actor, 1)
        results.append((actor.logprobs(batch.seqs, temperature=1.0) * batch.loss_mask, adapter(actor)))
    (lp0, a0), *others = results
    for lp, a in others:
        torch.testing.assert_close(lp, lp0, rtol=1e-5, atol=1e-5)
        for k in a0:  # as in test_compiled_lora_matches_eager: a tenth of AdamW's first step
            torch.testing.assert_close(a[k], a0[k], rtol=1e-4, atol=1e-4)
    assert any("lora_B" in k and a0[k].abs().max() > 5e-4 for k in a0), "the adapters must have moved"


def test_checkpoint_is_a_merged_hf_model_with_the_adapter_beside_it(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    actor = lora_actor()
    batch = trained(actor)
    policy = actor.logprobs(batch.seqs, temperature=1.0) * batch.loss_mask
    actor.save(tmp_path / "a", with_reference=True)
    assert not (tmp_path / "a" / "reference").exists(), "the base is still the initial model"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "a").eval()
    torch.testing.assert_close(plain_logprobs(loaded, batch), policy, rtol=1e-5, atol=1e-5)
    peft_model = PeftModel.from_pretrained(plain_model(), str(tmp_path / "a" / "adapter")).eval()
    torch.testing.assert_close(plain_logprobs(peft_model, batch), policy, rtol=0, atol=1e-6)
    # after a reset the base moved: reference/ holds it, and base + adapter is the policy
    actor.reset(reference=True, optimizer=True)
    trained(actor, 1)
    policy = actor.logprobs(batch.seqs, temperature=1.0) * batch.loss_mask
    actor.save(tmp_path / "b", with_reference=False)
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "b" / "reference"),
                                           str(tmp_path / "b" / "adapter")).eval()
    torch.testing.assert_close(plain_logprobs(peft_model, batch), policy, rtol=0, atol=1e-6)
    torch.testing.assert_close(plain_logprobs(AutoModelForCausalLM.from_pretrained(tmp_path / "b").eval(), batch),
                               policy, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("moved_since", [False, True])
def test_rollback_restores_the_checkpoint_policy(tmp_path, moved_since):
    """Rollback to a checkpoint written before any reset: the policy is exactly the checkpoint's, also
    when a reset merged into the base in between (then the initial base is read back)."""
    actor = lora_actor()
    batch = trained(actor)
    actor.save(tmp_path, with_reference=True)
    saved_policy = actor.logprobs(batch.seqs, temperature=1.0)
    saved_reference = actor.logprobs(batch.seqs, temperature=1.0, reference=True)
    if moved_since:
        actor.reset(reference=True, optimizer=True)
    trained(actor)
    assert (actor.logprobs(batch.seqs, temperature=1.0) - saved_policy).abs().max() > 1e-3
    actor.load_policy_weights(tmp_path)
    saved = read_hf_weights(tmp_path)
    assert all(torch.equal(t, saved[k]) for k, t in actor.named_weights())
    assert torch.equal(actor.logprobs(batch.seqs, temperature=1.0), saved_policy)
    assert torch.equal(actor.logprobs(batch.seqs, temperature=1.0, reference=True), saved_reference)
    actor.save(tmp_path / "again", with_reference=True)
    assert not (tmp_path / "again" / "reference").exists(), "the base is the initial model again"


def test_lora_is_refused_where_it_cannot_run(tmp_path, monkeypatch):
    cfg = load_config(None, ["trainer.threads=1", "actor.lora_rank=8"])
    with pytest.raises(ConfigError, match="torchrun"):
        build_weights(cfg, World(world_size=2), model_path=str(BUILTIN_TINY), needs_reference=True)
    with pytest.raises(ConfigError, match="lora_target_modules"):
        lora_actor("actor.lora_target_modules=[no_such_proj]")
    with pytest.raises(ConfigError, match="lora_rank must be >= 0"):
        load_config(None, ["actor.lora_rank=-1"])
    lora_actor().save(tmp_path / "lora", with_reference=True)
    make_actor().save(tmp_path / "full", with_reference=True)
    with pytest.raises(ConfigError, match="written by a LoRA run"):
        build_weights(load_config(None, ["trainer.threads=1"]), World(), model_path=str(BUILTIN_TINY),
                      needs_reference=True, checkpoint=tmp_path / "lora")
    with pytest.raises(ConfigError, match="written by a full fine-tuning run"):
        build_weights(cfg, World(), model_path=str(BUILTIN_TINY), needs_reference=True, checkpoint=tmp_path / "full")
    with pytest.raises(ConfigError, match="does not fit actor.lora_rank"):
        build_weights(load_config(None, ["trainer.threads=1", "actor.lora_rank=4"]), World(),
                      model_path=str(BUILTIN_TINY), needs_reference=True, checkpoint=tmp_path / "lora")
    monkeypatch.setitem(__import__("sys").modules, "peft", None)
    with pytest.raises(ConfigError, match="needs PEFT"):
        lora_actor()


# ---------------------------------------------------------------------------------------------- real runs

RUN = [
    "data.builtin_tasks=[sort]", "validation.n=2", "actor.train_batch_size=4", "actor.ppo_mini_batch_size=4",
    "rollout.n=4", "trainer.tensorboard=false", "trainer.progress_bar=false", "trainer.threads=1",
    "trainer.max_minutes=0", "algo.kl_coef=0.1", "trainer.keep_checkpoints=10", "actor.lora_rank=8",
    "actor.lr=2e-3",
]


def _train(run_dir: Path, *extra: str, resume: bool = False) -> dict[int, dict]:
    train(load_config(None, RUN + [f"trainer.run_dir={run_dir}", *extra]), resume=resume, log=lambda *_: None)
    by_step: dict[int, dict] = {}
    for m in read_metrics(run_dir):  # a step's training and validation metrics are separate records
        by_step.setdefault(m["step"], {}).update(m)
    return by_step


def test_resume_after_a_reset_is_exact(tmp_path):
    """Interrupted at step 3 (after the reset at step 2 merged into the base) and resumed: the same
    adapter, the same merged base and the same AdamW state as the uninterrupted run."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    args = ("reset.steps=[2]", "trainer.save_every=1", "validation.every=1", "data.builtin_val_size=4")
    full = _train(tmp_path / "full", *args, "trainer.total_steps=4")
    _train(tmp_path / "part", *args, "trainer.total_steps=3")
    resumed = _train(tmp_path / "part", *args, "trainer.total_steps=4", resume=True)
    assert full[2]["actor/kl_loss"] == 0.0 and full[3]["actor/kl_loss"] > 0
    for key in ("actor/kl_loss", "actor/pg_loss", "actor/grad_norm", "critic/score/mean"):
        assert resumed[4][key] == pytest.approx(full[4][key], rel=1e-5, abs=1e-7), key
    a, b = tmp_path / "full" / "checkpoints" / "step_4", tmp_path / "part" / "checkpoints" / "step_4"
    for f in ("model.safetensors", "adapter/adapter_model.safetensors", "reference/model.safetensors"):
        wa, wb = load_file(a / f), load_file(b / f)
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), (f, k)
    opt = []
    for d in (a, b):
        dcp_to_torch_save(d / "optimizer", d / "optimizer.pt")
        opt.append(torch.load(d / "optimizer.pt", weights_only=False)["optim"]["state"])
    assert opt[0].keys() == opt[1].keys() and all("lora_" in k for k in opt[0])
    for k in opt[0]:
        assert int(opt[0][k]["step"]) == int(opt[1][k]["step"]) == 3  # restarted by the reset before step 2
        assert torch.equal(opt[0][k]["exp_avg"], opt[1][k]["exp_avg"])
        assert torch.equal(opt[0][k]["exp_avg_sq"], opt[1][k]["exp_avg_sq"])
    (event,) = [json.loads(x) for x in (tmp_path / "part" / "events.jsonl").read_text().splitlines()]
    assert event["step"] == 2 and event["optimizer"] is True  # the reset config leaves reset_optimizer default


def test_rollback_to_best_with_lora(tmp_path):
    m = _train(tmp_path, "reset.steps=[3]", "reset.rollback_to_best=true", "validation.every=1", "trainer.save_every=1",
               "trainer.total_steps=3", "data.builtin_val_size=4")
    (event,) = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert "rolled back to best checkpoint" in event["cause"]
    assert m[3]["actor/kl_loss"] == 0.0


def test_lora_run_raises_heldout_accuracy(tmp_path):
    """12 steps on sorting with rank-32 adapters (about 20 s on one thread); the checkpoint is a plain HF model."""
    from transformers import AutoModelForCausalLM

    m = _train(tmp_path, "data.builtin_val_size=32", "validation.every=12", "validation.n=4", "actor.train_batch_size=8",
               "actor.ppo_mini_batch_size=4", "rollout.n=8", "trainer.save_every=0", "trainer.total_steps=12",
               "actor.lora_rank=32", "actor.lr=1e-3", "algo.kl_coef=1e-4")
    key = "val-core/builtin/sort/acc/mean@4"
    assert m[12][key] >= m[0][key] + 0.15, f"held-out accuracy {m[0][key]:.3f} -> {m[12][key]:.3f}: not learning"
    final = tmp_path / "checkpoints" / "step_12"
    assert (final / "adapter" / "adapter_config.json").exists()
    AutoModelForCausalLM.from_pretrained(final)


@pytest.mark.vllm
def test_vllm_engine_gets_the_merged_lora_policy(tmp_path):
    """The engine's sampling log-probs agree with the trainer's LoRA policy to float noise at every
    step, across a reset that merges into the base (engine given only the base: off by far more)."""
    pytest.importorskip("vllm")
    m = _train(tmp_path, "rollout.engine=vllm", "rollout.cpu_kv_cache_gib=0.25", "reset.steps=[2]", "model.autocast=none",
               "trainer.total_steps=3", "validation.every=0", "trainer.save_every=0", "algo.dynamic_sampling=false")
    diffs = [m[s]["rollout_corr/abs_logp_diff_max"] for s in (1, 2, 3)]
    assert max(diffs) < 1e-3, diffs
    assert m[2]["actor/kl_loss"] == 0.0 and m[3]["actor/kl_loss"] > 0


def test_compiled_lora_matches_eager():
    """actor.compile with LoRA: the same policy and reference log-probs and the same update."""
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        actor = lora_actor(f"actor.compile={str(compiled).lower()}", "actor.lr=1e-3")
        layers = actor.model.get_base_model().model.layers
        assert all((getattr(layer, "_compiled_call_impl", None) is not None) == compiled for layer in layers)
        batch = trained(actor, 1)  # one AdamW step: later ones amplify float noise in near-zero gradients
        results.append((actor.logprobs(batch.seqs, temperature=1.0),
                        actor.logprobs(batch.seqs, temperature=1.0, reference=True), adapter(actor)))
    (lp0, ref0, a0), (lp1, ref1, a1) = results
    torch.testing.assert_close(lp1, lp0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ref1, ref0, rtol=1e-4, atol=1e-4)
    assert (lp0 - ref0).abs().max() > 1e-3
    for k in a0:  # AdamW's first step is ~lr x sign(grad): 1e-4 is a tenth of it (a few gradients are ~1e-10, noise)
        torch.testing.assert_close(a1[k], a0[k], rtol=1e-4, atol=1e-4)
