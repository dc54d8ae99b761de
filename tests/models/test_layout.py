"""Tests of the padded training layout (prorl/models/layout.py): the verl batch built by
``pad_batch`` and the sampler log-probs aligned to it by ``pad_logprobs``."""

from __future__ import annotations

import pytest
import torch

from prorl.models.layout import PaddedBatch, pad_batch, pad_logprobs

PAD = 0


def test_pad_batch_layout_hand_written():
    prompts = [[11, 12, 13], [21]]
    responses = [[14], [22, 23, 24]]
    pb = pad_batch(prompts, responses, PAD)
    # P = 3, R = 3: [prompt left-padded | response right-padded]  # [B, P + R]
    assert pb.response_len == 3
    assert pb.input_ids.tolist() == [[11, 12, 13, 14, 0, 0], [0, 0, 21, 22, 23, 24]]
    assert pb.attention_mask.tolist() == [[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]]
    assert pb.response_mask.tolist() == [[1, 0, 0], [1, 1, 1]]  # [B, R]
    assert pb.input_ids.dtype == torch.long and pb.attention_mask.dtype == torch.long
    assert pb.response_mask.dtype == torch.float32


def test_pad_batch_empty_response_and_all_empty():
    pb = pad_batch([[5, 6], [7]], [[], [8]], PAD)
    assert pb.input_ids.tolist() == [[5, 6, 0], [0, 7, 8]]
    assert pb.response_mask.tolist() == [[0], [1]]
    pb = pad_batch([[5]], [[]], PAD)  # R is at least 1 so shapes stay valid
    assert pb.response_len == 1 and pb.input_ids.tolist() == [[5, 0]] and pb.response_mask.tolist() == [[0]]


@pytest.mark.parametrize("seed", range(5))
def test_pad_batch_random_round_trip(seed):
    g = torch.Generator().manual_seed(seed)
    B = int(torch.randint(1, 9, (1,), generator=g))
    prompts = [torch.randint(1, 50, (int(torch.randint(1, 12, (1,), generator=g)),), generator=g).tolist() for _ in range(B)]
    responses = [torch.randint(1, 50, (int(torch.randint(0, 10, (1,), generator=g)),), generator=g).tolist() for _ in range(B)]
    pb = pad_batch(prompts, responses, PAD)
    P, R = max(map(len, prompts)), max(1, max(map(len, responses)))
    assert pb.input_ids.shape == pb.attention_mask.shape == (B, P + R)
    assert pb.response_mask.shape == (B, R) and pb.response_len == R
    for i, (p, r) in enumerate(zip(prompts, responses)):
        row, att = pb.input_ids[i], pb.attention_mask[i].bool()
        assert row[att].tolist() == p + r  # real tokens, in order
        assert (row[~att] == PAD).all()
        assert row[P - len(p):P].tolist() == p and row[P:P + len(r)].tolist() == r  # response starts at column P
        assert pb.response_mask[i].sum() == len(r)
        assert torch.equal(pb.response_mask[i].bool(), att[P:])  # response mask = attention on the response part


def test_select_and_errors():
    pb = pad_batch([[1, 2], [3], [4, 5, 6]], [[7], [8, 9], []], PAD)
    sub = pb.select(torch.tensor([2, 0]))
    assert isinstance(sub, PaddedBatch) and sub.response_len == pb.response_len
    assert torch.equal(sub.input_ids, pb.input_ids[[2, 0]])
    assert torch.equal(sub.attention_mask, pb.attention_mask[[2, 0]])
    assert torch.equal(sub.response_mask, pb.response_mask[[2, 0]])
    with pytest.raises(ValueError):
        pad_batch([[1]], [[2], [3]], PAD)


def test_pad_logprobs_aligns_with_the_response_layout():
    pb = pad_batch([[1, 2], [3]], [[4, 5, 6], [7]], PAD)
    lp = pad_logprobs([[-0.1, -0.2, -0.3], [-1.5]], pb.response_len)  # [B, R]
    assert torch.allclose(lp, torch.tensor([[-0.1, -0.2, -0.3], [-1.5, 0.0, 0.0]]))
    assert torch.equal(lp != 0, pb.response_mask.bool())
    assert pad_logprobs([[-0.1], None], 3) is None  # the HF engine reports none
    assert pad_logprobs([[], [-1.0]], 1).tolist() == [[0.0], [-1.0]]
    with pytest.raises(ValueError, match="2 log-probs for a response length of 1"):
        pad_logprobs([[-1.0, -2.0]], 1)
