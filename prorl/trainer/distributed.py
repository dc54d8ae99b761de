"""Everything that knows the world size: process-group setup (gloo on CPU, NCCL on GPU), FSDP2
wrapping, broadcast of rank-0 decisions and global sums. Under plain ``python`` (no torchrun) the
world is one process, no process group exists and every helper here is the identity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Sequence, TypeVar

import torch
import torch.distributed as dist

from prorl.models.policy import decoder_layers

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_world(device: str = "auto", threads: int = 0) -> World:
    """Join the torchrun job if there is one (``WORLD_SIZE`` > 1), pick this rank's device and the
    torch CPU threads (``threads``, else cores / local processes, so ranks do not spin against
    each other)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    if threads:
        torch.set_num_threads(threads)
    elif local_world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=timedelta(minutes=60))
    return World(rank, world_size, local_rank, device)


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def broadcast(world: World, obj: T) -> T:
    """Rank 0's ``obj`` on every rank (decisions: resets, validation results, stopping)."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(world: World, obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order."""
    if not world.distributed:
        return [obj]
    out: list[Any] = [None] * world.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce(world: World, value: float, op: str = "sum") -> float:
    """A scalar reduced over ranks (``sum`` or ``max``), e.g. the global token count of a loss."""
    if not world.distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return float(t.item())


def split_for_rank(world: World, items: Sequence[T]) -> list[T]:
    """This rank's contiguous share of ``items`` (sizes differ by at most one)."""
    n, w, r = len(items), world.world_size, world.rank
    start = r * (n // w) + min(r, n % w)
    return list(items[start:start + n // w + (1 if r < n % w else 0)])


def fsdp_wrap(model: torch.nn.Module, world: World, *, mixed_precision: bool) -> torch.nn.Module:
    """FSDP2 (``fully_shard``) each decoder layer, then the whole model; the identity on one process.
    ``mixed_precision``: bf16 parameters in forward/backward, fp32 gradient reduction (GPU)."""
    if not world.distributed:
        return model
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if mixed_precision \
        else MixedPrecisionPolicy()
    for layer in decoder_layers(model) or []:
        fully_shard(layer, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    return model


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a (possibly) sharded DTensor; a collective under FSDP2."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t
