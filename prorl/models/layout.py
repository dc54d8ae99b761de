"""The padded training layout: a step's (prompt, response) token ids as one ``[B, P + R]`` batch.

Built from the rollout engines' completions (:func:`pad_batch`, with the sampler's log-probs in
the same response layout by :func:`pad_logprobs`); the algorithm core and the padded forward work
on it, and :mod:`prorl.models.packing` repacks it without padding for the update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class PaddedBatch:
    """Prompts left-padded and responses right-padded into one ``[B, P + R]`` tensor (verl layout).

    The padding-free layout for the update is :class:`prorl.models.packing.PackedRows`."""

    input_ids: torch.Tensor  # [B, P + R]
    attention_mask: torch.Tensor  # [B, P + R]
    response_mask: torch.Tensor  # [B, R] 1 on real response tokens (EOS included)
    response_len: int  # R

    def to(self, device) -> "PaddedBatch":
        return PaddedBatch(self.input_ids.to(device), self.attention_mask.to(device), self.response_mask.to(device),
                           self.response_len)

    def select(self, idx: torch.Tensor) -> "PaddedBatch":
        return PaddedBatch(self.input_ids[idx], self.attention_mask[idx], self.response_mask[idx], self.response_len)


def pad_batch(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int) -> PaddedBatch:
    """Pad parallel lists of prompt and response token ids into a :class:`PaddedBatch`."""
    if len(prompts) != len(responses):
        raise ValueError("prompts and responses must have the same length")
    P = max(len(p) for p in prompts)
    R = max(1, max(len(r) for r in responses))
    B = len(prompts)
    ids = torch.full((B, P + R), pad_id, dtype=torch.long)
    attn = torch.zeros((B, P + R), dtype=torch.long)
    rmask = torch.zeros((B, R), dtype=torch.float32)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ids[i, P - len(p):P] = torch.tensor(list(p), dtype=torch.long)
        attn[i, P - len(p):P] = 1
        if len(r):
            ids[i, P:P + len(r)] = torch.tensor(list(r), dtype=torch.long)
            attn[i, P:P + len(r)] = 1
            rmask[i, :len(r)] = 1.0
    return PaddedBatch(ids, attn, rmask, R)


def pad_logprobs(logprobs: Sequence[Sequence[float] | None], response_len: int) -> torch.Tensor | None:
    """The engine's per-token sampling log-probs in :func:`pad_batch`'s response layout, right-padded
    with 0 to ``response_len`` (the padded batch's ``R``); ``None`` when any completion has none
    (an engine that does not report them). # -> [B, R]"""
    if any(lp is None for lp in logprobs):
        return None
    out = torch.zeros((len(logprobs), response_len), dtype=torch.float32)
    for i, lp in enumerate(logprobs):
        if len(lp) > response_len:
            raise ValueError(f"completion {i} has {len(lp)} log-probs for a response length of {response_len}")
        if len(lp):
            out[i, :len(lp)] = torch.tensor(list(lp), dtype=torch.float32)
    return out
