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
    versions: list[int] | None = None  # async rollouts: the policy version that generated each token


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
