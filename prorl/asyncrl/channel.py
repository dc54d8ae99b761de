"""The trainer <-> worker links: a control connection per worker (``multiprocessing.connection``:
pickled messages over TCP, HMAC-authenticated) and one ``torch.distributed`` process group that
carries the weights (gloo on CPU, NCCL on GPUs), built on a ``TCPStore`` the trainer hosts.

The weight group is created apart from any torchrun world (the trainer may itself run under
torchrun with FSDP2), as vLLM's and TRL's weight-update groups are: a ``ProcessGroupGloo`` /
``ProcessGroupNCCL`` constructed directly on a prefixed store. Rank 0 is the trainer; it
broadcasts each tensor in turn, in the order of the metadata every worker got at its handshake.
When a worker dies the survivors build a new group under a new prefix (its *epoch*).
Every collective has the run's ``rollout.async_timeout_s``: a stuck peer is an error, not a hang.
"""

from __future__ import annotations

import datetime
import os
import secrets
from typing import Iterable, Sequence

import torch
import torch.distributed as dist

AUTHKEY_ENV = "PRORL_ROLLOUT_AUTHKEY"


def authkey(*, required: bool) -> bytes:
    """The control channel's key: ``PRORL_ROLLOUT_AUTHKEY`` when set (remote workers need the same
    one), else a fresh random key handed to the local workers through their environment."""
    key = os.environ.get(AUTHKEY_ENV)
    if key:
        return key.encode()
    if required:
        raise RuntimeError(f"remote rollout workers need a shared key: set {AUTHKEY_ENV} to the same secret on the "
                           "trainer and on every `prorl rollout-worker`")
    return secrets.token_hex(16).encode()


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def make_store(host: str, port: int, *, is_master: bool, timeout_s: float) -> dist.TCPStore:
    return dist.TCPStore(host, port, is_master=is_master, wait_for_workers=False,
                         timeout=datetime.timedelta(seconds=timeout_s))


def weight_group(store: dist.Store, *, epoch: int, rank: int, size: int, timeout_s: float, device: str):
    """The weight process group of ``epoch`` (blocks until all ``size`` members have joined)."""
    prefixed = dist.PrefixStore(f"weights/{epoch}/", store)
    timeout = datetime.timedelta(seconds=timeout_s)
    if torch.device(device).type == "cuda":  # NCCL: untested on this project's CPU machines
        opts = dist.ProcessGroupNCCL.Options()
        opts._timeout = timeout
        return dist.ProcessGroupNCCL(prefixed, rank, size, opts)
    return dist.ProcessGroupGloo(prefixed, rank, size, timeout)


def weights_meta(named: Iterable[tuple[str, torch.Tensor]]) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, dtype) of each tensor, in order: what a worker allocates to receive into."""
    return [(name, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for name, t in named]


def broadcast_weights(group, named: Iterable[tuple[str, torch.Tensor]],
                      meta: Sequence[tuple[str, tuple[int, ...], str]]) -> int:
    """Rank 0: send each tensor of ``named`` (in ``meta``'s order) to every member; returns bytes sent.
    The generator is always run to its end (under FSDP2 every rank gathers each tensor in turn)."""
    sent, i = 0, 0
    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    for name, t in named:
        if i >= len(meta) or meta[i][0] != name:
            raise RuntimeError(f"weight {i} is {name!r}, the workers expect {meta[i][0] if i < len(meta) else 'none'}")
        t = t.detach().contiguous()
        group.broadcast([t], opts).wait()
        sent += t.numel() * t.element_size()
        i += 1
    if i != len(meta):
        raise RuntimeError(f"sent {i} weights, the workers expect {len(meta)}")
    return sent


def receive_weights(group, buffers: Sequence[torch.Tensor]) -> None:
    """A worker: receive every tensor into ``buffers`` (allocated from the metadata, same order)."""
    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    for buf in buffers:
        group.broadcast([buf], opts).wait()


def allocate(meta: Sequence[tuple[str, tuple[int, ...], str]], device: str) -> list[torch.Tensor]:
    return [torch.empty(shape, dtype=getattr(torch, dtype), device=device) for _, shape, dtype in meta]
