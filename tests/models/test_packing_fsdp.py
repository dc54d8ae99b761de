"""The packed log-prob path under FSDP2 (2 processes, gloo, CPU): each layer and the root wrapped
with ``fully_shard``, the chunked LM head reading the (root-group, tied) head weight after the
forward; the summed gradients equal one process's on both ranks' sequences."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

TINY = Path(__file__).resolve().parents[2] / "prorl" / "assets" / "tiny-warmstart"
WORLD = 2


def _rank_batch(rank: int):
    from prorl.models.packing import pack_sequences

    g = torch.Generator().manual_seed(100 + rank)
    prompts = [torch.randint(3, 300, (n,), generator=g).tolist() for n in (5, 12, 3)]
    responses = [torch.randint(3, 300, (n,), generator=g).tolist() for n in (40, 1, 30 + 7 * rank)]
    return pack_sequences(prompts, responses, max_tokens_per_row=64)


def _loss(model, packed):
    from prorl.models.packing import packed_response_logprobs

    lp, ent = packed_response_logprobs(model, packed, with_entropy=True, chunk_tokens=8, temperature=0.9)
    return lp.sum() + 0.1 * ent.sum()


def _worker(rank: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        from torch.distributed.fsdp import fully_shard

        from prorl.models.policy import load_policy

        model, _ = load_policy(TINY)
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        _loss(model, _rank_batch(rank)).backward()  # FSDP averages gradients over ranks
        grads = {n: p.grad.full_tensor() for n, p in model.named_parameters()}
        if rank == 0:
            torch.save(grads, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_packed_logprob_gradients_under_fsdp2_equal_single_process(tmp_path):
    from prorl.models.policy import load_policy

    out = tmp_path / "grads.pt"
    mp.start_processes(_worker, args=(str(tmp_path / "store"), str(out)), nprocs=WORLD, start_method="spawn")
    got = torch.load(out)
    model, _ = load_policy(TINY)
    for rank in range(WORLD):
        (_loss(model, _rank_batch(rank)) / WORLD).backward()
    assert got.keys() == dict(model.named_parameters()).keys()
    for name, p in model.named_parameters():
        scale = p.grad.abs().max().item()
        assert scale > 0, name
        torch.testing.assert_close(got[name], p.grad, atol=1e-5 * scale, rtol=1e-4, msg=name)
