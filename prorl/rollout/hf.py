"""Rollouts with Hugging Face ``generate`` (the CPU / small-scale engine)."""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

from transformers import LogitsProcessor, LogitsProcessorList

from prorl.rollout.base import Completion


class HFRolloutEngine:
    """Samples with ``model.generate`` from its own copy of the policy (an unsharded module, so
    ranks can stop at different lengths), refreshed by :meth:`load_weights` after each update."""

    def __init__(self, model, *, eos_token_id: int | Sequence[int], pad_token_id: int, max_batch_size: int = 256,
                 cache_implementation: str | None = None, report_logprobs: bool = False):
        """``cache_implementation``: passed to ``generate`` (None = transformers' dynamic KV cache; "static"
        pre-allocates it, which skips the per-token ``torch.cat`` of every layer's K/V: faster on CPU, at the
        price of holding the full-length cache from the first token; on CUDA transformers may compile it).
        ``report_logprobs``: fill ``Completion.logprobs`` with the sampler's log-prob of each token (the
        tempered, nucleus-renormalised distribution, as the vllm engine reports); off, generation is
        exactly transformers' own sampling."""
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.model = model
        self.report_logprobs = report_logprobs
        self.cache_implementation = cache_implementation
        self.eos_ids = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id)
        self.pad_token_id = pad_token_id
        self.max_batch_size = max_batch_size

    @torch.no_grad()
    def load_weights(self, named_weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy (HF name, full tensor) pairs into this engine's own module, in place (a tied
        ``lm_head.weight`` lands in the shared embedding). Unknown names are an error."""
        params = dict(self.model.named_parameters(remove_duplicate=False))
        for name, tensor in named_weights:
            if name not in params:
                raise KeyError(f"load_weights: the rollout model has no parameter {name!r}")
            params[name].copy_(tensor.detach())

    def configure(self, rollout) -> None:
        """A new stage's ``rollout`` section: its ``max_batch_size``."""
        if rollout.max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.max_batch_size = rollout.max_batch_size

    def sleep(self) -> None:
        """Nothing to release: the HF engine holds no KV cache between calls."""

    def wake_up(self) -> None:
        """See :meth:`sleep`."""

    @torch.no_grad()
    def generate(self, prompts, *, n: int, temperature: float, top_p: float, max_new_tokens: int,
                 ) -> list[list[Completion]]:
        was_training = self.model.training
        self.model.eval()
        out: list[list[Completion]] = []
        per_call = self.max_batch_size // max(n, 1)  # whole prompts (n sequences each) per generate call
        try:
            if per_call >= 1:
                for start in range(0, len(prompts), per_call):
                    out.extend(self._generate_chunk(prompts[start:start + per_call], n, temperature, top_p, max_new_tokens))
            else:  # large groups (BroRL, n > max_batch_size): a prompt's n samples over several calls
                for p in prompts:
                    group: list[Completion] = []
                    for start in range(0, n, self.max_batch_size):
                        k = min(self.max_batch_size, n - start)
                        group.extend(self._generate_chunk([p], k, temperature, top_p, max_new_tokens)[0])
                    out.append(group)
        finally:
            self.model.train(was_training)
        return out

    def _generate_chunk(self, prompts, n, temperature, top_p, max_new_tokens) -> list[list[Completion]]:
        P = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), P), self.pad_token_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, P - len(p):] = torch.tensor(list(p))
            attn[i, P - len(p):] = 1
        greedy = temperature <= 0
        device = next(self.model.parameters()).device
        recorder = _LogprobRecorder(1.0 if greedy else temperature, 1.0 if greedy else top_p) \
            if self.report_logprobs else None
        warp = recorder is None and not greedy  # without the recorder transformers tempers and truncates itself
        seqs = self.model.generate(
            input_ids=ids.to(device),
            attention_mask=attn.to(device),
            do_sample=not greedy,
            temperature=temperature if warp else None,
            top_p=top_p if warp else None,
            top_k=None,
            **({"logits_processor": LogitsProcessorList([recorder])} if recorder else {}),
            num_return_sequences=1 if greedy else n,  # HF rejects greedy with several sequences
            max_new_tokens=max_new_tokens,
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=self.pad_token_id,
            **({"cache_implementation": self.cache_implementation} if self.cache_implementation else {}),
        )[:, P:]  # [len(prompts) * n, <= max_new_tokens], grouped by prompt (greedy: [len(prompts), ...])
        groups: list[list[Completion]] = []
        rows = seqs.tolist()
        logps = recorder.finish(seqs).tolist() if recorder else [None] * len(rows)
        if greedy:  # the n greedy samples of a prompt are identical
            rows = [row for row in rows for _ in range(n)]
            logps = [lp for lp in logps for _ in range(n)]
        for g in range(len(prompts)):
            group = []
            for row, lp in zip(rows[g * n:(g + 1) * n], logps[g * n:(g + 1) * n]):
                cut = next((j for j, t in enumerate(row) if t in self.eos_ids), None)
                keep = max_new_tokens if cut is None else cut + 1
                group.append(Completion(row[:keep], truncated=cut is None, logprobs=lp[:keep] if lp else None))
            groups.append(group)
        return groups


class _LogprobRecorder(LogitsProcessor):
    """Tempers and nucleus-truncates the logits itself (as transformers' warpers do, same arithmetic)
    and keeps the log-softmax of what it returns, the distribution ``generate`` samples from; at the
    next call the sampled token (the last input id) is looked up in it. Transformers applies custom
    processors *before* its own warpers, so ``generate`` is called without temperature / top_p."""

    def __init__(self, temperature: float, top_p: float):
        self.temperature, self.top_p = temperature, top_p
        self._prev: torch.Tensor | None = None  # [B, V] log-probs of the last step's distribution
        self._picked: list[torch.Tensor] = []  # [B] per generated token

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._prev is not None:
            self._picked.append(self._prev.gather(1, input_ids[:, -1:]).squeeze(1))
        scores = scores / self.temperature if self.temperature != 1.0 else scores
        if self.top_p < 1.0:  # transformers' TopPLogitsWarper (min_tokens_to_keep=1)
            sorted_logits, sorted_idx = torch.sort(scores, descending=False)
            cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            remove = cum <= (1 - self.top_p)
            remove[..., -1:] = 0
            scores = scores.masked_fill(remove.scatter(1, sorted_idx, remove), -float("inf"))
        self._prev = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, new_tokens: torch.Tensor) -> torch.Tensor:
        """[B, T] log-probs of ``new_tokens`` (the generated part); positions after EOS are junk."""
        if self._prev is not None and len(self._picked) < new_tokens.shape[1]:
            self._picked.append(self._prev.gather(1, new_tokens[:, len(self._picked):len(self._picked) + 1]).squeeze(1))
        out = torch.stack(self._picked, dim=1) if self._picked else torch.zeros(new_tokens.shape[0], 0)
        return out[:, :new_tokens.shape[1]].cpu()
