"""Run by tests/trainer/test_distributed.py, under torchrun or plain python: Actor updates on a
fixed global batch (this rank's share of its groups), then the full parameters saved by rank 0.
``sgd``: two SGD updates (parameters move by exactly lr x gradient, so they compare elementwise);
``adamw``: one AdamW update (as in training). ``packed``: padding-free micro-batches of at most 40
tokens (so ranks run different numbers of them), else 3 padded sequences each."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import torch

from prorl.config import load_config
from prorl.models.layout import pad_batch
from prorl.trainer import distributed as D
from prorl.trainer.actor import Actor, TrainBatch


def main(checkpoint: str, out: str, optimizer: str, packed: bool) -> None:
    world = D.init_world("cpu", threads=1)
    cfg = load_config(None, ["model.autocast=none", "algo.kl_coef=0.5", "algo.entropy_coef=0.01", "actor.lr=1e-3", "actor.micro_batch_size=3",
                             "actor.ppo_mini_batch_size=4", "actor.grad_clip=0.5", "algo.loss_agg_mode=token-mean",
                             f"actor.max_tokens_per_micro_batch={40 if packed else 0}"])
    actor = Actor(cfg, world, model_path=checkpoint, needs_reference=True, checkpoint=Path(checkpoint))
    groups, n, vocab, pad = 4, 4, len(actor.tokenizer), actor.tokenizer.pad_token_id
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, vocab, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist() for _ in range(groups * n)]
    responses = [torch.randint(3, vocab, (int(torch.randint(1, 12, (1,), generator=g)),), generator=g).tolist() for _ in range(groups * n)]
    adv = torch.randn(groups * n, generator=g)
    mine = [i for grp in D.split_for_rank(world, range(groups)) for i in range(grp * n, (grp + 1) * n)]
    seqs = pad_batch([prompts[i] for i in mine], [responses[i] for i in mine], pad)
    batch = TrainBatch(seqs, adv[mine], seqs.response_mask, n, 1.2)
    if optimizer == "sgd":
        actor.optimizer = torch.optim.SGD(actor.model.parameters(), lr=0.1)
    for _ in range(2 if optimizer == "sgd" else 1):
        metrics = actor.update(batch, rng=random.Random(0))
    if world.distributed:  # the reference ran its pass (no backward): every parameter sharded again
        from torch.distributed.tensor import DTensor

        gathered = [n for n, p in actor.reference.named_parameters() if not isinstance(p, DTensor)]
        assert not gathered, f"reference parameters left gathered after its pass: {gathered[:3]}"
    full = {name: t.clone() for name, t in actor.named_weights()}
    if world.is_main:
        torch.save({"params": full, "metrics": metrics}, out)
    D.shutdown(world)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "packed")
