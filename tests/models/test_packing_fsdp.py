"""The packed log-prob path under FSDP2 (2 processes, gloo, CPU), as training runs it: an
:class:`prorl.trainer.actor.Actor` built on a 2-process world (``fsdp_wrap``: each decoder layer and
the root ``fully_shard``-ed) computes its packed forward (``pack_padded`` rows, the chunked LM head
reading the root-group, tied head weight after the forward); the summed gradients equal one
process's Actor on both ranks' sequences."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2
OVERRIDES = ["trainer.threads=1", "actor.max_tokens_per_micro_batch=4096", "actor.max_tokens_per_row=64",
             "actor.logprob_chunk_tokens=8", "model.autocast=none"]


def _make_actor(world):
    from prorl.config import load_config
    from prorl.models.policy import BUILTIN_TINY
    from prorl.trainer.actor import Actor

    return Actor(load_config(None, OVERRIDES), world, model_path=str(BUILTIN_TINY), needs_reference=False)


def _rank_batch(rank: int):
    from prorl.models.layout import pad_batch

    g = torch.Generator().manual_seed(100 + rank)
    prompts = [torch.randint(3, 300, (n,), generator=g).tolist() for n in (5, 12, 3)]
    responses = [torch.randint(3, 300, (n,), generator=g).tolist() for n in (40, 1, 30 + 7 * rank)]
    return pad_batch(prompts, responses, pad_id=0)


def _loss(actor, seqs) -> torch.Tensor:
    """The Actor's training forward (packed: ``actor.max_tokens_per_micro_batch`` > 0) on all rows."""
    idx = torch.arange(seqs.input_ids.shape[0])
    lp, ent = actor._forward(actor.model, seqs, idx, temperature=0.9, with_entropy=True)
    return lp.sum() + 0.1 * ent.sum()


def _worker(rank: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        from prorl.trainer.distributed import World

        actor = _make_actor(World(rank=rank, world_size=WORLD))
        assert type(actor.model).__name__.startswith("FSDP")  # sharded by the Actor itself
        _loss(actor, _rank_batch(rank)).backward()  # FSDP averages gradients over ranks
        grads = {n: p.grad.full_tensor() for n, p in actor.model.named_parameters()}
        if rank == 0:
            torch.save(grads, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_packed_logprob_gradients_under_fsdp2_equal_single_process(tmp_path):
    from prorl.trainer.distributed import World

    out = tmp_path / "grads.pt"
    mp.start_processes(_worker, args=(str(tmp_path / "store"), str(out)), nprocs=WORLD, start_method="spawn")
    got = torch.load(out)
    actor = _make_actor(World())
    for rank in range(WORLD):
        (_loss(actor, _rank_batch(rank)) / WORLD).backward()
    assert got.keys() == dict(actor.model.named_parameters()).keys()
    for name, p in actor.model.named_parameters():
        scale = p.grad.abs().max().item()
        assert scale > 0, name
        torch.testing.assert_close(got[name], p.grad, atol=1e-5 * scale, rtol=1e-4, msg=name)
