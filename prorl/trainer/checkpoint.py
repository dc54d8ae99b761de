"""Atomic, resumable checkpoints: ``RUN_DIR/checkpoints/step_N/``.

Layout: the policy in HF safetensors format (``from_pretrained``-loadable, vLLM-loadable) with its
tokenizer; ``reference/`` (only once a reset made the reference differ from the initial model);
``optimizer/`` (``torch.distributed.checkpoint``: sharded, reloadable at another world size);
``trainer_state.json`` (step, data position, histories, resets, stage) and ``rng/rank_R.pt``.
Under LoRA the HF model is the merged policy, ``adapter/`` holds the PEFT adapter and ``reference/``
the base it sits on (once a reset merged into it; see :mod:`prorl.trainer.lora`). A checkpoint is
written into a temporary directory and renamed into place, so a kill mid-write leaves the previous
checkpoint intact; only directories with ``COMPLETE`` count.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_rng_state(path: Path, rank: int) -> bool:
    """Restore this rank's RNG streams; False when the checkpoint has none for ``rank`` (it was
    written by fewer processes), in which case the caller seeds afresh."""
    f = path / "rng" / f"rank_{rank}.pt"
    if not f.exists():
        return False
    set_rng_state(torch.load(f, weights_only=False))
    return True


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    world,
    write_actor: Callable[[Path], None],
    trainer_state: dict[str, Any],
    keep: int = 2,
    protect: tuple[int, ...] = (),
) -> Path:
    """Write step ``step`` atomically and prune old checkpoints (keeping ``protect`` steps).

    Every rank calls this: ``write_actor(tmp)`` writes the model (rank 0) and the sharded optimizer
    (all ranks); each rank adds its RNG state; rank 0 adds the trainer state and the ``COMPLETE``
    marker and renames the directory into place.
    """
    from prorl.models.policy import no_transformers_progress_bars
    from prorl.trainer import distributed as D
    from prorl.trainer import faults

    root = checkpoint_dir(run_dir)
    final = root / f"step_{step}"
    tmp = root / f".tmp_step_{step}"
    if world.is_main:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / "rng").mkdir(parents=True)
    D.barrier(world)
    with no_transformers_progress_bars():  # "Writing model shards" would break into the trainer's bar
        write_actor(tmp)
    faults.point("checkpoint:actor")
    torch.save(rng_state(), tmp / "rng" / f"rank_{world.rank}.pt")
    faults.point("checkpoint:rng")
    D.barrier(world)
    if world.is_main:
        (tmp / "trainer_state.json").write_text(json.dumps(dict(trainer_state, step=step), indent=1))
        faults.point("checkpoint:state")
        (tmp / "COMPLETE").write_text("ok\n")
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        faults.point("checkpoint:rename")
        prune(run_dir, keep=keep, protect=protect)
    D.barrier(world)
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_dir(run_dir)
    if not root.exists():
        return []
    out = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / "COMPLETE").exists():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    cps = list_checkpoints(run_dir)
    return cps[-1][1] if cps else None


def prune(run_dir: str | Path, *, keep: int, protect: tuple[int, ...] = ()) -> None:
    cps = list_checkpoints(run_dir)
    for step, path in cps[:-keep] if keep > 0 else []:
        if step not in protect:
            shutil.rmtree(path, ignore_errors=True)
    for stale in checkpoint_dir(run_dir).glob(".tmp_step_*"):
        shutil.rmtree(stale, ignore_errors=True)


def load_trainer_state(path: Path) -> dict:
    return json.loads((path / "trainer_state.json").read_text())
