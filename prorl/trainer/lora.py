"""LoRA through PEFT (``actor.lora_rank > 0``): the policy is a frozen base plus trainable rank-r
adapters, and the reference is the same base with the adapters disabled (no second copy of the
model, as TRL does).

Life cycle (:class:`LoraWeights`, the Actor's :class:`~prorl.trainer.weights.PolicyWeights` for LoRA):

* **hard reset of the reference**: the current policy must become the reference, so the adapter is
  merged into the base (``W += (alpha / r) B A``) and a fresh one starts (A drawn as PEFT does, B = 0:
  the policy is unchanged and its KL to the reference is exactly 0). AdamW restarts with it, whatever
  ``reset.reset_optimizer`` says: its moments belong to the adapter that was merged away. A reset of
  the optimizer alone keeps the adapter and restarts AdamW, as under full fine-tuning.
* **weight sync**: :meth:`LoraWeights.named_weights` yields the merged weights under the base
  model's plain HF names, what the hf and vllm engines' ``load_weights`` take.
* **checkpoint**: ``ckpt/`` holds the merged policy (``AutoModelForCausalLM.from_pretrained(ckpt)``),
  ``ckpt/adapter/`` the PEFT adapter, and ``ckpt/reference/`` the base it sits on once a reset has
  merged into it (before that the base is the initial model); resume restores base, adapter and
  AdamW exactly.
* **rollback** (:meth:`LoraWeights.load_policy_weights`): base and adapter of the checkpoint, so the
  policy is exactly the checkpoint's; the reference is the checkpoint's base (the current one when
  no reset happened in between).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import torch

from prorl.config import ActorConfig, Config, ConfigError
from prorl.models.policy import compile_decoder_layers, load_tokenizer
from prorl.trainer import distributed as D
from prorl.trainer.hf_io import load_module, read_hf_weights, save_hf

ADAPTER = "default"  # PEFT's name of the one adapter


def lora_config(actor: ActorConfig) -> Any:
    """The PEFT ``LoraConfig`` of ``actor.lora_*`` (no dropout: the update's forward must be the policy's)."""
    peft = import_peft()
    targets = actor.lora_target_modules
    return peft.LoraConfig(r=actor.lora_rank, lora_alpha=actor.lora_alpha, lora_dropout=0.0, bias="none",
                           target_modules="all-linear" if list(targets) == ["all-linear"] else list(targets),
                           task_type="CAUSAL_LM")


def import_peft() -> Any:
    try:
        import peft
    except ImportError:
        raise ConfigError("actor.lora_rank > 0 needs PEFT: pip install 'prorl[lora]' (peft>=0.17)") from None
    return peft


def attach_lora(model: torch.nn.Module, actor: ActorConfig) -> torch.nn.Module:
    """``model`` wrapped by PEFT with a fresh adapter; only the adapter's parameters require grad."""
    peft = import_peft()
    try:
        return peft.get_peft_model(model, lora_config(actor))
    except ValueError as e:  # e.g. "Target modules {...} not found in the base model"
        raise ConfigError(f"actor.lora_target_modules={actor.lora_target_modules}: {e}") from None


def lora_layers(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module]]:
    """(HF module name, PEFT layer) of every module that carries the adapter."""
    from peft.tuners.lora import LoraLayer

    for name, module in model.get_base_model().named_modules():
        if isinstance(module, LoraLayer) and ADAPTER in module.lora_A:
            yield name, module


def base_named_parameters(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Parameter]]:
    """(plain HF name, parameter) of the base model (``...q_proj.base_layer.weight`` -> ``...q_proj.weight``),
    adapters left out; a tied LM head appears once, as the embedding."""
    for name, p in model.get_base_model().named_parameters():
        if ".lora_" not in name:
            yield name.replace(".base_layer.", "."), p


def merged_named_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(plain HF name, tensor) of base + adapter as one HF model: ``W + (alpha / r) B A`` for the adapted
    weights (new tensors, the base untouched), the base parameters themselves elsewhere."""
    layers = dict(lora_layers(model))
    with torch.no_grad():
        for name, p in base_named_parameters(model):
            module, _, leaf = name.rpartition(".")
            if leaf == "weight" and module in layers:
                yield name, p.detach() + layers[module].get_delta_weight(ADAPTER).to(p.dtype)
            else:
                yield name, p.detach()


@torch.no_grad()
def merge_and_restart(model: torch.nn.Module) -> int:
    """Merge the adapter into the base weights (as PEFT's ``merge`` does) and give every layer a fresh
    adapter (A as PEFT initialises it, B = 0), so the policy is unchanged and equals the base.
    Returns the number of layers merged."""
    count = 0
    for _, layer in lora_layers(model):
        base = layer.get_base_layer()
        base.weight.add_(layer.get_delta_weight(ADAPTER).to(base.weight.dtype))
        layer.reset_lora_parameters(ADAPTER, True)
        count += 1
    return count


def load_adapter(model: torch.nn.Module, directory: Path) -> None:
    """Load the adapter PEFT saved in ``directory`` into ``model`` (every adapter tensor, same shapes)."""
    peft = import_peft()
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    state = peft.utils.load_peft_weights(str(directory), device="cpu")
    expected = {k: v.shape for k, v in get_peft_model_state_dict(model).items()}
    if {k: v.shape for k, v in state.items()} != expected:
        odd = sorted(k for k in expected.keys() | state.keys() if k not in state or expected.get(k) != state[k].shape)
        raise ConfigError(f"{directory}: the adapter does not fit actor.lora_rank / lora_target_modules (e.g. "
                          f"{odd[0]}: {tuple(state[odd[0]].shape) if odd[0] in state else 'missing'} in the "
                          f"checkpoint, {tuple(expected[odd[0]]) if odd[0] in expected else 'none'} expected)")
    set_peft_model_state_dict(model, state)


@torch.no_grad()
def load_base(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy a plain HF state dict into the base weights (every one of them must be there)."""
    params = dict(base_named_parameters(model))
    missing = sorted(set(params) - set(state))
    if missing:
        raise KeyError(f"base weights missing from the checkpoint: {missing[:3]}")
    for name, p in params.items():
        p.copy_(state[name])


class LoraWeights:
    """The LoRA policy, its reference (the base, adapters disabled) and their life cycle (module docstring)."""

    def __init__(self, cfg: Config, world: D.World, *, model_path: str, needs_reference: bool,
                 checkpoint: Path | None = None):
        if world.distributed:
            raise ConfigError("actor.lora_rank > 0 runs in one process: LoRA under torchrun + FSDP2 is not supported "
                              "(train with one process, or with actor.lora_rank=0)")
        self.world, self.model_path, self.has_reference = world, model_path, needs_reference
        base_dir = checkpoint / "reference" if checkpoint is not None and (checkpoint / "reference").exists() else None
        self.base_is_initial = base_dir is None  # else a reset merged an adapter into it: checkpoints save it
        model, _ = load_module(cfg, world, base_dir or model_path)
        self.tokenizer = load_tokenizer(checkpoint or model_path)
        self.policy = attach_lora(model, cfg.actor)
        if checkpoint is not None:
            load_adapter(self.policy, checkpoint / "adapter")
        if cfg.actor.compile:
            compile_decoder_layers(self.policy.get_base_model())

    @property
    def reference_module(self) -> torch.nn.Module | None:
        return None  # the reference is the policy's own base, see reference()

    @contextlib.contextmanager
    def reference(self) -> Iterator[torch.nn.Module]:
        if not self.has_reference:
            raise RuntimeError("no reference: no stage uses a KL penalty")
        with self.policy.disable_adapter():
            yield self.policy

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.policy.parameters() if p.requires_grad]

    def reset_reference(self) -> bool:
        if not self.has_reference:  # as under full fine-tuning: no reference, nothing to reset
            return False
        merge_and_restart(self.policy)
        self.base_is_initial = False
        return True

    def load_policy_weights(self, path: Path) -> None:
        path = Path(path)
        base_dir = path / "reference" if (path / "reference").exists() else None
        if base_dir is not None or not self.base_is_initial:  # else the base is already the checkpoint's
            load_base(self.policy, read_hf_weights(base_dir or self.model_path))
        self.base_is_initial = base_dir is None
        load_adapter(self.policy, path / "adapter")

    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        return merged_named_weights(self.policy)

    def save(self, directory: Path, *, with_reference: bool) -> None:
        """Merged policy, ``adapter/`` and, once it moved, the base as ``reference/`` (whatever
        ``with_reference`` says: the base is part of the policy)."""
        self.save_model(directory)
        if self.world.is_main:
            self.policy.save_pretrained(str(directory / "adapter"))
            if not self.base_is_initial:
                save_hf(self.policy.get_base_model(), directory / "reference", self.world,
                        state_dict={k: v.detach() for k, v in base_named_parameters(self.policy)})

    def save_model(self, directory: Path) -> None:
        save_hf(self.policy.get_base_model(), directory, self.world, tokenizer=self.tokenizer,
                state_dict=dict(merged_named_weights(self.policy)))
