"""Padding-free update: sequences packed end to end into rows, log-probs scattered back to ``[B, R]``.

The algorithm core works on the padded layout of :class:`prorl.models.layout.PaddedBatch`
(``[B, R]`` right-padded responses). For the model's forward pass this module instead lays each
sequence (prompt + response, no padding) end to end in rows of at most ``max_tokens_per_row``
tokens, with position ids restarting at 0 for every sequence; only the end of a row is padded.

How attention stays within a sequence (transformers 5):

- sdpa / eager / flex (CPU and GPU): with ``attention_mask=None``, no cache and 2D ``position_ids``,
  ``masking_utils.find_packed_sequence_indices`` starts a new segment wherever the position does not
  grow by exactly 1, and ``create_causal_mask`` ANDs a block-diagonal mask onto the causal one.
- flash-attention (``attn_implementation`` containing ``flash``): we pass ``cu_seq_lens_q/k`` and
  ``max_length_q/k`` (``FlashAttentionKwargs``), so every layer calls ``flash_attn_varlen_func``
  on the flattened ``[N * L]`` tokens with no per-layer device sync; padding tails are segments of
  their own. (Without these kwargs transformers infers them from ``position_ids`` only when
  ``N == 1``.)

Only the model's own ``forward`` is called (``output_hidden_states=True, logits_to_keep=1``); the
LM head is then applied in token chunks to the response positions only
(:func:`prorl.models.chunked_head.chunked_logprobs`). Under FSDP2 this reads
``model.get_output_embeddings().weight`` after the forward: keep the LM head (and, tied, the
embedding) in the root ``fully_shard`` group, whose parameters stay unsharded from the forward to
the backward, so its gradient is reduce-scattered with the root's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import torch

from prorl.models.chunked_head import chunked_logprobs
from prorl.models.layout import PaddedBatch


@dataclass
class PackedRows:
    """Sequences laid end to end in ``N`` rows of ``L`` tokens (padding only at row ends).

    ``logit_index`` / ``target_ids`` / ``out_index`` list the ``T`` response tokens: the flat
    ``[N * L]`` position whose output predicts the token, the token, and its flat ``[B, R]`` slot.
    """

    input_ids: torch.Tensor  # [N, L] long
    position_ids: torch.Tensor  # [N, L] long, 0.. per sequence (a padding tail counts 0.. as its own segment)
    cu_seqlens: torch.Tensor  # [S + 1] int32: segment boundaries (sequences and padding tails) in the flat [N * L]
    max_seqlen: int  # longest segment
    logit_index: torch.Tensor  # [T] long into [N * L]
    target_ids: torch.Tensor  # [T] long
    out_index: torch.Tensor  # [T] long into [B * R]
    num_sequences: int  # B
    response_len: int  # R
    seq_row: list[int] = field(default_factory=list)  # [B] row of each sequence (-1: not packed, empty response)
    seq_start: list[int] = field(default_factory=list)  # [B] first column of each sequence in its row
    num_padding: int = 0  # padding tokens at row ends

    @property
    def num_tokens(self) -> int:
        """Real (non-padding) tokens in the rows."""
        return self.input_ids.numel() - self.num_padding

    def to(self, device) -> "PackedRows":
        return replace(self, input_ids=self.input_ids.to(device), position_ids=self.position_ids.to(device),
                       cu_seqlens=self.cu_seqlens.to(device), logit_index=self.logit_index.to(device),
                       target_ids=self.target_ids.to(device), out_index=self.out_index.to(device))

    def scatter(self, values: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """Per-response-token values back to the padded layout (differentiable). # [T] -> [B, R]"""
        out = values.new_full((self.num_sequences * self.response_len,), fill)
        return out.index_put((self.out_index,), values).view(self.num_sequences, self.response_len)


def _first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Bins of indices whose lengths sum to at most ``capacity`` (an item longer than it gets a bin
    of its own); longest first, ties by index, each into the first bin it fits: deterministic."""
    bins: list[list[int]] = []
    loads: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for b, load in enumerate(loads):
            if load + lengths[i] <= capacity:
                bins[b].append(i)
                loads[b] += lengths[i]
                break
        else:
            bins.append([i])
            loads.append(lengths[i])
    return bins


def pack_sequences(
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    *,
    max_tokens_per_row: int = 0,
    pad_id: int = 0,
    response_len: int | None = None,
) -> PackedRows:
    """Pack ``B`` (prompt, response) token-id pairs into rows of at most ``max_tokens_per_row``
    tokens (0 = everything in one row, right for flash-attention varlen; a sequence longer than the
    limit gets a row of its own). Sequences with an empty response are left out (they have no
    token to score; their ``[B, R]`` slots stay at the fill value). ``response_len`` is ``R`` of
    the ``[B, R]`` output layout (default: the longest response, at least 1)."""
    if len(prompts) != len(responses):
        raise ValueError("prompts and responses must have the same length")
    B = len(prompts)
    R = response_len if response_len is not None else max([1] + [len(r) for r in responses])
    if any(len(r) > R for r in responses):
        raise ValueError(f"a response is longer than response_len={R}")
    if any(len(p) == 0 for p, r in zip(prompts, responses) if len(r)):
        raise ValueError("every scored sequence needs at least one prompt token")
    used = [i for i in range(B) if len(responses[i])]
    lengths = [len(prompts[i]) + len(responses[i]) for i in used]
    capacity = max_tokens_per_row if max_tokens_per_row > 0 else max(1, sum(lengths))
    rows = [[used[j] for j in b] for b in _first_fit_decreasing(lengths, capacity)] or [[]]
    for r in rows:
        r.sort()  # sequences in batch order within a row
    L = max(1, max(sum(len(prompts[i]) + len(responses[i]) for i in r) for r in rows))

    ids, pos, seglens, logit_idx, targets, out_idx = [], [], [], [], [], []
    seq_row, seq_start = [-1] * B, [0] * B
    padding = 0
    for n, row in enumerate(rows):
        col = 0
        for i in row:
            p, r = list(prompts[i]), list(responses[i])
            seq = p + r
            ids += seq
            pos += range(len(seq))
            seglens.append(len(seq))
            seq_row[i], seq_start[i] = n, col
            base = n * L + col + len(p) - 1  # the output at prompt end predicts response token 0
            logit_idx += range(base, base + len(r))
            targets += r
            out_idx += range(i * R, i * R + len(r))
            col += len(seq)
        if col < L:
            ids += [pad_id] * (L - col)
            pos += range(L - col)
            seglens.append(L - col)
            padding += L - col
    cu = torch.tensor([0] + seglens, dtype=torch.int32).cumsum(0, dtype=torch.int32)
    return PackedRows(
        input_ids=torch.tensor(ids, dtype=torch.long).view(len(rows), L),
        position_ids=torch.tensor(pos, dtype=torch.long).view(len(rows), L),
        cu_seqlens=cu, max_seqlen=max(seglens), logit_index=torch.tensor(logit_idx, dtype=torch.long),
        target_ids=torch.tensor(targets, dtype=torch.long), out_index=torch.tensor(out_idx, dtype=torch.long),
        num_sequences=B, response_len=R, seq_row=seq_row, seq_start=seq_start, num_padding=padding)


def unpad(batch: PaddedBatch, idx: Sequence[int] | torch.Tensor | None = None) -> tuple[list[list[int]], list[list[int]]]:
    """Prompt and response token ids of rows ``idx`` of a :class:`PaddedBatch` (all rows when
    None), padding removed."""
    R = batch.response_len
    P = batch.input_ids.shape[1] - R
    rows = range(batch.input_ids.shape[0]) if idx is None else [int(i) for i in idx]
    ids, attn = batch.input_ids.cpu(), batch.attention_mask.cpu().bool()
    prompts = [ids[i, :P][attn[i, :P]].tolist() for i in rows]
    responses = [ids[i, P:][attn[i, P:]].tolist() for i in rows]
    return prompts, responses


def pack_padded(batch: PaddedBatch, idx: Sequence[int] | torch.Tensor | None = None, *, max_tokens_per_row: int = 0,
                pad_id: int = 0) -> PackedRows:
    """Pack rows ``idx`` of a ``PaddedBatch`` (``[B, P + R]``) for the update; the result scatters
    back to ``[len(idx), R]`` (the batch's ``R``) and lives on the batch's device."""
    prompts, responses = unpad(batch, idx)
    packed = pack_sequences(prompts, responses, max_tokens_per_row=max_tokens_per_row, pad_id=pad_id,
                            response_len=batch.response_len)
    return packed.to(batch.input_ids.device)


def uses_flash_attention(model) -> bool:
    """Whether the model's attention is a flash-attention (varlen-capable) implementation."""
    return "flash" in str(getattr(model.config, "_attn_implementation", "") or "")


def default_row_tokens(model, lengths: Sequence[int], max_tokens_per_row: int = 0) -> int:
    """Row width for :func:`pack_sequences`: ``max_tokens_per_row`` when set; otherwise one row for
    flash-attention (varlen: cost is linear in the row) and the longest sequence for sdpa/eager,
    whose dense ``[L, L]`` mask makes attention cost grow with the square of the row."""
    if max_tokens_per_row > 0:
        return max_tokens_per_row
    return 0 if uses_flash_attention(model) else max([1] + list(lengths))


def packed_response_logprobs(
    model,
    packed: PackedRows,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_tokens: int = 2048,
    fp32_lm_head: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of each response token (and optionally the entropy there) from one forward over the
    packed rows, scattered to ``([B, R], [B, R] | None)`` (0 on padding); differentiable.

    The LM head runs in ``chunk_tokens`` chunks over the response positions only, so no ``[*, V]``
    logits beyond one chunk exist (forward and backward); ``fp32_lm_head`` runs it in fp32."""
    if getattr(model.config, "final_logit_softcapping", None):
        raise NotImplementedError("logit soft-capping is not supported by the chunked LM head")
    kwargs = {}
    if uses_flash_attention(model):
        kwargs = dict(cu_seq_lens_q=packed.cu_seqlens, cu_seq_lens_k=packed.cu_seqlens,
                      max_length_q=packed.max_seqlen, max_length_k=packed.max_seqlen)
    out = model(input_ids=packed.input_ids, position_ids=packed.position_ids, attention_mask=None,
                use_cache=False, output_hidden_states=True, logits_to_keep=1, **kwargs)
    hidden = out.hidden_states[-1]  # [N, L, H], after the final norm
    del out  # drop the other layers' hidden states (bf16 models save fp32 copies, not these)
    h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, packed.logit_index)  # [T, H]
    head = model.get_output_embeddings()
    logp, ent = chunked_logprobs(h, head.weight, packed.target_ids, bias=getattr(head, "bias", None),
                                 temperature=temperature, chunk_tokens=chunk_tokens, fp32=fp32_lm_head,
                                 with_entropy=with_entropy)
    return packed.scatter(logp), (packed.scatter(ent) if ent is not None else None)


# --------------------------------------------------------------------------- micro-batches

def token_budget_micro_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Split sequences (``lengths[i]`` tokens each, prompt + response) into micro-batches of at
    most ``max_tokens`` tokens: first-fit decreasing (deterministic), so few micro-batches; a
    sequence longer than the budget is a micro-batch of its own. Returns the indices into
    ``lengths`` of each micro-batch, ascending, ordered by first index. (Under FSDP the Actor
    pads the list with dummy passes so every rank runs as many.)"""
    if max_tokens <= 0:
        raise ValueError("max_tokens must be > 0")
    out = [sorted(b) for b in _first_fit_decreasing(list(lengths), max_tokens)]
    out.sort(key=lambda b: b[0])
    return out
