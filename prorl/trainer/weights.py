"""What the Actor trains and measures KL against, and how a hard reset, a rollback, the weight
sync and a checkpoint treat it: the seam between the Actor and the way it fine-tunes.

:class:`FullWeights` is full fine-tuning: every parameter trains and the reference is a second,
frozen copy of the model. :class:`prorl.trainer.lora.LoraWeights` is LoRA (``actor.lora_rank > 0``):
only adapters train and the reference is the base model with its adapters disabled.
:func:`build_weights` picks one from the config.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Protocol

import torch

from prorl.config import Config, ConfigError
from prorl.trainer.lora import LoraWeights
from prorl.trainer import distributed as D
from prorl.trainer.hf_io import load_module, read_hf_weights, save_hf, wrap_module


class PolicyWeights(Protocol):
    """The policy the Actor trains, its reference, and their life cycle (see the module docstring)."""

    policy: torch.nn.Module  # the module whose forward is the policy and whose trainable parameters AdamW updates
    tokenizer: Any
    has_reference: bool  # a reference is kept (some stage uses a KL penalty)

    @property
    def reference_module(self) -> torch.nn.Module | None:
        """A separate reference module (full fine-tuning), else None."""

    def reference(self) -> contextlib.AbstractContextManager[torch.nn.Module]:
        """A context in which the yielded module's forward is the reference policy."""

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """What the optimizer updates."""

    def reset_reference(self) -> bool:
        """Make the current policy the reference; True when the optimizer's state no longer
        belongs to the trained parameters (the caller then restarts it)."""

    def load_policy_weights(self, path: Path) -> None:
        """Roll the policy back to a checkpoint directory written by :meth:`save`."""

    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(HF name, full tensor) of the policy as a plain HF model: what rollout engines load."""

    def save(self, directory: Path, *, with_reference: bool) -> None:
        """The checkpoint's model part (the optimizer is the Actor's)."""

    def save_model(self, directory: Path) -> None:
        """The policy as a plain HF model + tokenizer (``from_pretrained``-loadable)."""


def build_weights(cfg: Config, world: D.World, *, model_path: str, needs_reference: bool,
                  checkpoint: Path | None = None) -> PolicyWeights:
    """LoRA when ``actor.lora_rank > 0``, else full fine-tuning; ``checkpoint``: resume from it."""
    lora_ckpt = checkpoint is not None and (checkpoint / "adapter").exists()
    if checkpoint is not None and lora_ckpt != (cfg.actor.lora_rank > 0):
        kind = "a LoRA run (it has adapter/)" if lora_ckpt else "a full fine-tuning run (no adapter/)"
        raise ConfigError(f"checkpoint {checkpoint} was written by {kind}; resume it with the same actor.lora_rank "
                          f"(now {cfg.actor.lora_rank})")
    if cfg.actor.lora_rank > 0:
        return LoraWeights(cfg, world, model_path=model_path, needs_reference=needs_reference, checkpoint=checkpoint)
    return FullWeights(cfg, world, model_path=model_path, needs_reference=needs_reference, checkpoint=checkpoint)


class FullWeights:
    """Full fine-tuning: the policy trains every parameter; the reference is a frozen copy that a
    reset overwrites with the policy's values (the optimizer's state stays valid)."""

    def __init__(self, cfg: Config, world: D.World, *, model_path: str, needs_reference: bool,
                 checkpoint: Path | None = None):
        self.world = world
        model, self.tokenizer = load_module(cfg, world, checkpoint or model_path)
        self.policy = wrap_module(cfg, world, model)
        self.has_reference = needs_reference
        self._reference: torch.nn.Module | None = None
        if needs_reference:
            ref_dir = checkpoint / "reference" if checkpoint is not None and (checkpoint / "reference").exists() else None
            ref, _ = load_module(cfg, world, ref_dir or model_path)
            ref.requires_grad_(False).eval()
            self._reference = wrap_module(cfg, world, ref)

    @property
    def reference_module(self) -> torch.nn.Module | None:
        return self._reference

    @contextlib.contextmanager
    def reference(self) -> Iterator[torch.nn.Module]:
        if self._reference is None:
            raise RuntimeError("no reference model: no stage uses a KL penalty")
        try:
            yield self._reference
        finally:
            # FSDP2 leaves the root's parameters (the embedding / LM head) gathered after a forward,
            # for the backward it expects; the reference never runs one, so shard them again
            reshard = getattr(self._reference, "reshard", None)
            if reshard is not None:
                reshard()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.policy.parameters())

    def reset_reference(self) -> bool:
        if self._reference is not None:
            with torch.no_grad():  # same sharding on both models: copy local shards, no communication
                for p_ref, p in zip(self._reference.parameters(), self.policy.parameters()):
                    p_ref.copy_(p)
        return False

    def load_policy_weights(self, path: Path) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        state = read_hf_weights(path)
        if getattr(self.policy.config, "tie_word_embeddings", False):
            state["lm_head.weight"] = state["model.embed_tokens.weight"]
        set_model_state_dict(self.policy, state, options=StateDictOptions(full_state_dict=True, strict=True))

    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name, p in self.policy.named_parameters():  # gathered one at a time under FSDP2
            yield name, D.full_tensor(p.detach())

    def save(self, directory: Path, *, with_reference: bool) -> None:
        self.save_model(directory)
        if with_reference and self._reference is not None:
            save_hf(self._reference, directory / "reference", self.world)

    def save_model(self, directory: Path) -> None:
        save_hf(self.policy, directory, self.world, tokenizer=self.tokenizer)
