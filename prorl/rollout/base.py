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

    def sleep(self) -> None:
        """Release generation memory (KV cache) while the trainer updates; no-op where none is held."""
        ...

    def wake_up(self) -> None:
        """Undo :meth:`sleep` before the next generation."""
        ...
