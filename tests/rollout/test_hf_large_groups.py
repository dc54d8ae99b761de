"""Large groups (BroRL, n in the hundreds) through the HF engine: no generate call exceeds
``max_batch_size`` sequences, and every prompt still gets its n completions, grouped."""

from __future__ import annotations

import pytest
import torch

from prorl.rollout.hf import HFRolloutEngine

EOS, PAD = 2, 0


class CountingModel(torch.nn.Module):
    """Stands in for a causal LM: ``generate`` returns prompt + [prompt's last token, k-th sample id,
    EOS] and records how many sequences each call produced."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.calls: list[int] = []

    def generate(self, *, input_ids, num_return_sequences, max_new_tokens, **kw):
        rows = input_ids.repeat_interleave(num_return_sequences, 0)  # [len(prompts) * n, P] grouped by prompt
        k = torch.arange(num_return_sequences).repeat(input_ids.shape[0])[:, None] + 100
        tail = torch.cat([rows[:, -1:], k, torch.full_like(k, EOS)], 1)
        self.calls.append(rows.shape[0])
        return torch.cat([rows, tail], 1)


@pytest.mark.parametrize("n, max_batch, calls", [
    (2, 4, [4, 2]),  # 3 prompts: two whole prompts per call, as before
    (4, 4, [4, 4, 4]),
    (10, 4, [4, 4, 2] * 3),  # n > max_batch_size: each prompt's 10 samples in calls of 4, 4, 2
    (256, 64, [64] * 12),
])
def test_no_call_exceeds_max_batch_size(n, max_batch, calls):
    model = CountingModel()
    engine = HFRolloutEngine(model, eos_token_id=EOS, pad_token_id=PAD, max_batch_size=max_batch)
    prompts = [[5, 6, 7], [8], [9, 10]]
    groups = engine.generate(prompts, n=n, temperature=1.0, top_p=1.0, max_new_tokens=3)
    assert model.calls == calls and max(model.calls) <= max_batch
    assert [len(g) for g in groups] == [n] * 3
    for p, g in zip(prompts, groups):  # each group holds its own prompt's samples
        assert all(c.token_ids[0] == p[-1] and c.token_ids[-1] == EOS and not c.truncated for c in g)


def test_max_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="max_batch_size"):
        HFRolloutEngine(CountingModel(), eos_token_id=EOS, pad_token_id=PAD, max_batch_size=0)
