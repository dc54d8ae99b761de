"""Metric sinks: ``RUN_DIR/metrics.jsonl`` (one object per line with ``step``), TensorBoard,
optional Weights & Biases, and ``RUN_DIR/events.jsonl`` for resets and stage changes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from prorl.trainer import faults


class MetricsLogger:
    """Rank 0's sinks for one run; built once (its ``trainer`` keys are fixed for the run)."""

    FIXED_KEYS = ("trainer.tensorboard", "trainer.wandb", "trainer.wandb_project")

    @classmethod
    def from_config(cls, trainer, *, config: dict | None = None, resume_step: int = -1) -> "MetricsLogger":
        """The logger the ``trainer`` config section describes; ``config`` is the run's (for W&B)."""
        return cls(trainer.run_dir, tensorboard=trainer.tensorboard, wandb=trainer.wandb,
                   wandb_project=trainer.wandb_project, config=config, resume_step=resume_step)

    def __init__(self, run_dir: str | Path, *, tensorboard: bool = True, wandb: bool = False,
                 wandb_project: str = "prorl", config: dict | None = None, resume_step: int = 0):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.events_path = self.run_dir / "events.jsonl"
        self.prompts_path = self.run_dir / "trained_prompts.jsonl"
        # on resume, drop lines logged after the checkpoint (they will be logged again)
        for p in (self.metrics_path, self.events_path, self.prompts_path):
            _truncate_after(p, resume_step)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)
        self._wandb = None
        if wandb:
            try:
                import wandb as _wandb
            except ImportError as e:
                raise RuntimeError("trainer.wandb=true needs `pip install wandb`") from e
            self._wandb = _wandb.init(project=wandb_project, config=config, dir=str(self.run_dir), resume="allow")

    def log_prompts(self, step: int, indices: list[int]) -> None:
        """Which training prompts (their index in the training set) the step trained on: the data
        order, auditable (and checked across kills and resumes by the tests)."""
        with self.prompts_path.open("a") as fh:
            fh.write(json.dumps({"step": step, "prompts": indices}) + "\n")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        clean = {k: _plain(v) for k, v in metrics.items()}
        with self.metrics_path.open("a") as fh:
            fh.write(json.dumps({"step": step, **clean}) + "\n")
        faults.point("metrics")
        for k, v in clean.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                if self._tb is not None:
                    self._tb.add_scalar(k, v, step)
        if self._tb is not None:
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(clean, step=step)

    def event(self, step: int, kind: str, cause: str, **extra: Any) -> None:
        with self.events_path.open("a") as fh:
            fh.write(json.dumps({"step": step, "type": kind, "cause": cause, **extra}) + "\n")
        faults.point("event")
        if self._tb is not None:
            self._tb.add_text(f"events/{kind}", f"step {step}: {cause}", step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _truncate_after(path: Path, step: int) -> None:
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    path.write_text("".join(line + "\n" for line in keep))


def read_metrics(run_dir: str | Path) -> list[dict]:
    p = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.exists() else []


class NullLogger:
    """What ranks other than 0 log to: nothing (rank 0 writes metrics, events and TensorBoard)."""

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        pass

    def log_prompts(self, step: int, indices: list[int]) -> None:
        pass

    def event(self, step: int, kind: str, cause: str, **extra: Any) -> None:
        pass

    def close(self) -> None:
        pass


_SUMMED = ("dynamic_sampling/generated_groups", "dynamic_sampling/kept_groups", "dynamic_sampling/dropped_all_correct",
           "dynamic_sampling/dropped_all_wrong", "dynamic_sampling/dropped_other_equal", "perf/total_num_tokens")


def reduce_rank_metrics(parts: list[dict[str, float]]) -> dict[str, float]:
    """One metrics dict from every rank's: maxima of ``*/max`` and timings, minima of ``*/min``,
    sums of counts, means of the rest."""
    if len(parts) == 1:
        return parts[0]
    out: dict[str, float] = {}
    for k in {k for p in parts for k in p}:
        vals = [p[k] for p in parts if k in p and isinstance(p[k], (int, float))]
        if not vals:
            continue
        if k.endswith("/max") or k.startswith("timing_s/"):
            out[k] = max(vals)
        elif k.endswith("/min"):
            out[k] = min(vals)
        elif k in _SUMMED:
            out[k] = sum(vals)
        else:
            out[k] = sum(vals) / len(vals)
    if "dynamic_sampling/generated_groups" in out:
        out["dynamic_sampling/yield"] = out["dynamic_sampling/kept_groups"] / max(1, out["dynamic_sampling/generated_groups"])
    return out
