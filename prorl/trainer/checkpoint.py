"""Atomic, resumable checkpoints: ``RUN_DIR/checkpoints/step_N/``.

Layout: the policy in HF safetensors format (``from_pretrained``-loadable, vLLM-loadable) with its
tokenizer; ``reference/`` (only once a reset made the reference differ from the initial model);
``optimizer.pt``; ``trainer_state.json`` (step, data position, histories, resets, stage) and
``rng.pt``. A checkpoint is written into a temporary directory and renamed into place, so a kill
mid-write leaves the previous checkpoint intact; only directories with ``COMPLETE`` count.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model,
    tokenizer,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    reference=None,
    keep: int = 2,
    protect: tuple[int, ...] = (),
) -> Path:
    """Write step ``step`` atomically and prune old checkpoints (keeping ``protect`` steps)."""
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step}"
    tmp = root / f".tmp_step_{step}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if reference is not None:
        reference.save_pretrained(tmp / "reference", safe_serialization=True)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    (tmp / "trainer_state.json").write_text(json.dumps(dict(trainer_state, step=step), indent=1))
    (tmp / "COMPLETE").write_text("ok\n")
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    prune(run_dir, keep=keep, protect=protect)
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


def load_weights_into(model, path: Path) -> None:
    """Copy safetensors weights from a checkpoint directory into an existing model in place."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if "lm_head" in k and getattr(model.config, "tie_word_embeddings", False)}
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"checkpoint {path} does not match the model: missing={missing}, unexpected={unexpected}")
    if tied:
        model.tie_weights()
