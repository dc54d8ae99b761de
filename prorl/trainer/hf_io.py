"""Reading and writing Hugging Face models for the Actor's weights: build a module from a directory
(dtype, attention kernel, device), compile and shard it, read a directory's safetensors, write a
module (or a given state dict) as an HF model. Shared by full fine-tuning
(:mod:`prorl.trainer.weights`) and LoRA (:mod:`prorl.trainer.lora`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from prorl.config import Config
from prorl.models.policy import compile_decoder_layers, load_policy
from prorl.trainer import distributed as D
from prorl.trainer.precision import fsdp_computes_bf16


def load_module(cfg: Config, world: D.World, path: str | Path) -> tuple[torch.nn.Module, Any]:
    """An HF causal LM with ``model.dtype`` / ``model.attn_implementation`` on this rank's device."""
    attn = None if cfg.model.attn_implementation == "auto" else cfg.model.attn_implementation
    return load_policy(str(path), dtype=cfg.model.dtype, device=world.device, attn_implementation=attn)


def wrap_module(cfg: Config, world: D.World, model: torch.nn.Module) -> torch.nn.Module:
    """``actor.compile`` then FSDP2 under torchrun (identity otherwise)."""
    if cfg.actor.compile:
        compile_decoder_layers(model)
    return D.fsdp_wrap(model, world, mixed_precision=fsdp_computes_bf16(cfg.model, world.device, world.distributed))


def read_hf_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors files of an HF model directory (or a hub name, from the cache)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists() and not path.is_absolute() and str(path).count("/") == 1:  # "org/name" on the hub
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(str(path), allow_patterns=["*.safetensors", "*.json"]))
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {path}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def save_hf(model: torch.nn.Module, directory: Path, world: D.World, *, tokenizer: Any = None,
            state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """``model`` as an HF model (``state_dict`` instead of its own when given); rank 0 writes, every
    rank calls (under FSDP2 gathering the full state is a collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if state_dict is None and world.distributed:
        state_dict = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if world.is_main:
        model.save_pretrained(directory, state_dict=state_dict, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)
