"""The rollout-engine seam: HF ``generate`` on CPU, vLLM on GPU, same interface."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence

import torch


@dataclass
class Completion:
    """One sampled response: its token ids (EOS included when it stopped) and whether it was cut
    off by the length limit (``truncated``: no EOS within ``max_new_tokens``)."""

    token_ids: list[int]
    truncated: bool
    logprobs: list[float] | None = None  # the sampler's log-prob of each token (engines that report them)


@dataclass(frozen=True)
class SamplingParams:
    """How a set of rollouts is drawn; it travels with them, so the update computes log-probs of the
    same tempered distribution the engine sampled from."""

    n: int  # responses per prompt
    temperature: float
    top_p: float
    max_new_tokens: int

    @classmethod
    def for_training(cls, rollout) -> "SamplingParams":
        """Training rollouts as the ``rollout`` config section describes them."""
        return cls(rollout.n, rollout.temperature, rollout.top_p, rollout.max_response_length)

    @property
    def logprob_temperature(self) -> float:
        """The temperature the trainer divides logits by (greedy sampling, 0, scores at 1)."""
        return self.temperature if self.temperature > 0 else 1.0

    def as_kwargs(self) -> dict:
        """The keyword arguments of :meth:`RolloutEngine.generate`."""
        return {"n": self.n, "temperature": self.temperature, "top_p": self.top_p, "max_new_tokens": self.max_new_tokens}


class RolloutEngine(Protocol):
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        n: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
    ) -> list[list[Completion]]:
        """``n`` completions for each prompt (token ids), grouped by prompt."""
        ...

    def load_weights(self, named_weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Make the engine sample from these weights: (HF parameter name, full tensor) pairs,
        streamed one at a time (under FSDP2 each is gathered in turn)."""
        ...

    def configure(self, rollout) -> None:
        """Take a new stage's ``rollout`` config section (the keys not fixed for the run)."""
        ...

    def sleep(self) -> None:
        """Release generation memory (KV cache) while the trainer updates; no-op where none is held."""
        ...

    def wake_up(self) -> None:
        """Undo :meth:`sleep` before the next generation."""
        ...


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
