"""Loading a Hugging Face policy and computing per-token log-probabilities and entropy.

Batches use verl's layout: ``input_ids = [prompt (left-padded) | response (right-padded)]``, so the
response always starts at column ``P`` and only the last ``R + 1`` positions' logits are needed.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import torch


BUILTIN_TINY = Path(__file__).resolve().parents[1] / "assets" / "tiny-warmstart"


def resolve_model_path(path: str | Path) -> str:
    """``builtin:tiny`` is the shipped warm start; anything else is a hub name or a directory."""
    return str(BUILTIN_TINY) if str(path) == "builtin:tiny" else str(path)


@contextlib.contextmanager
def no_transformers_progress_bars() -> Iterator[None]:
    """transformers' own progress bars ("Loading weights", "Writing model shards") off for the block.

    They come with every model load and checkpoint save, carry nothing to act on and break into
    the trainer's progress bar. Log messages (warnings, errors) are untouched, and so are
    huggingface_hub's download bars; nothing changes where bars are already off or the user
    forces them on (``HF_HUB_DISABLE_PROGRESS_BARS=0``)."""
    from huggingface_hub import constants
    from huggingface_hub import utils as hub
    from transformers.utils import logging as tf_logging

    if not tf_logging.is_progress_bar_enabled() or constants.HF_HUB_DISABLE_PROGRESS_BARS is False:
        yield
        return
    hub_on = not hub.are_progress_bars_disabled()
    tf_logging.disable_progress_bar()  # turns the hub's bars off too ...
    if hub_on:
        hub.enable_progress_bars()  # ... but a download still shows its progress
    try:
        yield
    finally:
        tf_logging.enable_progress_bar()
        if not hub_on:
            hub.disable_progress_bars()


def load_policy(name_or_path: str | Path, *, dtype: str = "float32", device: str = "cpu",
                attn_implementation: str | None = None):
    """``(model, tokenizer)`` from a hub name or a local directory (HF format); ``attn_implementation``:
    transformers' attention kernel (None: its default, sdpa)."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(name_or_path)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    with no_transformers_progress_bars():
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=torch_dtype, **kwargs).to(device)
    return model, tokenizer


def load_tokenizer(name_or_path: str | Path):
    """The tokenizer of a hub name or local directory, with a pad token (the EOS when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The decoder blocks of an HF causal LM (``model.model.layers``), or None where it has none there."""
    return getattr(getattr(model, "model", None), "layers", None)


def compile_decoder_layers(model: torch.nn.Module) -> int:
    """``torch.compile`` every decoder layer in place, as torchtitan does per block: FSDP2's hooks sit
    between the blocks, and state-dict names do not change. Inductor fuses the element-wise work
    (norms, rotary, the SiLU gate) that costs as much as the matmuls on a small model on CPU.
    Dynamic shapes: batch and sequence length vary from step to step. Returns how many were compiled."""
    layers = decoder_layers(model)
    if layers is None or len(layers) == 0:
        raise ValueError(f"actor.compile: {type(model).__name__} has no decoder layers at model.layers to compile")
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding. # [B, L] -> [B, L]"""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) along the last dim. # [..., V] -> [...]"""
    logp = logits.log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def response_logprobs(
    model,
    input_ids: torch.Tensor,  # [B, P + R]
    attention_mask: torch.Tensor,  # [B, P + R]
    response_len: int,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of each response token (and optionally the policy entropy at that position).

    Only the last ``R + 1`` hidden states go through the LM head (``logits_to_keep``), so the
    ``[B, L, V]`` logits of the prompt are never materialised. Returns ``([B, R], [B, R] | None)``.
    """
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        logits_to_keep=response_len + 1,
        use_cache=False,
    )
    logits = out.logits[:, :-1, :].float()  # [B, R, V] predicts response tokens
    if temperature != 1.0:
        logits = logits / temperature
    targets = input_ids[:, -response_len:]  # [B, R]
    logp = torch.gather(logits.log_softmax(-1), -1, targets.unsqueeze(-1)).squeeze(-1)  # [B, R]
    ent = entropy_from_logits(logits) if with_entropy else None
    return logp, ent
