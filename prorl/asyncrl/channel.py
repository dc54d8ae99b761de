"""The trainer <-> worker links: a control connection per worker (``multiprocessing.connection``:
pickled messages over TCP, HMAC-authenticated) and one ``torch.distributed`` process group that
carries the weights (gloo on CPU, NCCL on GPUs), built on a ``TCPStore`` the trainer hosts.

The weight groups are created apart from any torchrun world (the trainer may itself run under
torchrun with FSDP2), as vLLM's and TRL's weight-update groups are: a ``ProcessGroupGloo`` /
``ProcessGroupNCCL`` constructed directly on a prefixed store. There is one two-member group per
worker (rank 0 the trainer, rank 1 the worker), not one group of all: no worker holds a link to
another, so a death stays local and nothing needs rebuilding for the survivors (a shared group would
have to be re-formed, under a new prefix, after every death). The trainer starts each tensor's broadcast on
every group at once, then waits for all, in the order of the metadata every worker got at its
handshake. Every collective has the run's ``rollout.async_timeout_s``: a stuck peer is an error,
not a hang.
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
        from prorl.config import ConfigError

        raise ConfigError(f"remote rollout workers need a shared key: set {AUTHKEY_ENV} to the same secret on the "
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


def weight_group(store: dist.Store, *, worker: int, rank: int, timeout_s: float, device: str):
    """The trainer <-> ``worker`` weight group (blocks until both have joined)."""
    prefixed, size = dist.PrefixStore(f"weights/{worker}/", store), 2
    timeout = datetime.timedelta(seconds=timeout_s)
    if torch.device(device).type == "cuda":  # NCCL: untested on this project's CPU machines
        opts = dist.ProcessGroupNCCL.Options()
        opts._timeout = timeout
        return dist.ProcessGroupNCCL(prefixed, rank, size, opts)
    return dist.ProcessGroupGloo(prefixed, rank, size, timeout)


def weights_meta(named: Iterable[tuple[str, torch.Tensor]]) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, dtype) of each tensor, in order: what a worker allocates to receive into."""
    return [(name, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for name, t in named]


def broadcast_weights(groups: dict[int, object], named: Iterable[tuple[str, torch.Tensor]],
                      meta: Sequence[tuple[str, tuple[int, ...], str]]) -> tuple[int, dict[int, str]]:
    """The trainer: send each tensor of ``named`` (in ``meta``'s order) over every worker's group.
    Returns (bytes sent per worker, {worker: error} for those whose link failed: they get nothing
    more). The generator is always run to its end (under FSDP2 every rank gathers each tensor)."""
    sent, i, failed = 0, 0, {}
    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    for name, t in named:
        if i >= len(meta) or meta[i][0] != name:
            raise RuntimeError(f"weight {i} is {name!r}, the workers expect {meta[i][0] if i < len(meta) else 'none'}")
        t = t.detach().contiguous()
        works = {w: g.broadcast([t], opts) for w, g in groups.items() if w not in failed}
        for w, work in works.items():
            try:
                work.wait()
            except RuntimeError as e:
                failed[w] = str(e).splitlines()[0]
        sent += t.numel() * t.element_size()
        i += 1
    if i != len(meta):
        raise RuntimeError(f"sent {i} weights, the workers expect {len(meta)}")
    return sent, failed


def receive_weights(group, buffers: Sequence[torch.Tensor]) -> None:
    """A worker: receive every tensor into ``buffers`` (allocated from the metadata, same order)."""
    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    for buf in buffers:
        group.broadcast([buf], opts).wait()


def allocate(meta: Sequence[tuple[str, tuple[int, ...], str]], device: str) -> list[torch.Tensor]:
    return [torch.empty(shape, dtype=getattr(torch, dtype), device=device) for _, shape, dtype in meta]
