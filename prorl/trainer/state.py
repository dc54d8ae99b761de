"""The controller's run state (typed, round-trips through ``trainer_state.json``) and the stage
schedule (which config is in force at which step)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from prorl.config import Config, StageConfig, apply_overrides


@dataclass
class RunState:
    """Everything the loop decides from, saved with every checkpoint and identical on all ranks."""

    step: int = 0
    stage: int = 0
    resets: list[dict] = field(default_factory=list)  # {"step", "cause"}
    kl_history: list[float] = field(default_factory=list)  # actor/kl_loss per step
    entropy_history: list[float] = field(default_factory=list)  # actor/entropy per step
    val_history: dict[str, list[float]] = field(default_factory=dict)  # per data_source
    # per data_source, aligned with val_history: {"prompts", "samples", "scored"} of each validation
    # (None for validations recorded by a checkpoint from before counts were kept)
    val_counts: dict[str, list[dict[str, int] | None]] = field(default_factory=dict)
    blended_val_history: list[float] = field(default_factory=list)
    val_steps: list[int | None] = field(default_factory=list)  # the step of each validation (None: unknown)
    # validations (indices) left out of the measured look-to-look noise: discarded by a rollback, or a drop that fired
    noise_excluded: list[int] = field(default_factory=list)
    last_reset_step: int | None = None
    evals_at_last_reset: int = 0
    best_val: float | None = None
    best_step: int | None = None
    best_ckpt: str | None = None
    best_ckpt_step: int | None = None
    reference_reset: bool = False  # the reference differs from the initial model (saved with checkpoints)
    best_scores: dict[str, float] = field(default_factory=dict)  # per-source validation at best_step
    best_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # their sample counts
    defended: dict[str, float] | None = None  # scores of the checkpoint the last rollback restored
    defended_counts: dict[str, dict[str, int]] | None = None  # their sample counts
    failed_recoveries: int = 0  # rollbacks in a row after which validation never got back to `defended`
    sampler: dict = field(default_factory=dict)
    pending_prompts: list[int] = field(default_factory=list)  # async: drawn, not yet trained (redone after --resume)

    def __post_init__(self) -> None:
        # a state saved before steps were kept: its validations have unknown steps
        if len(self.val_steps) < len(self.blended_val_history):
            self.val_steps[:0] = [None] * (len(self.blended_val_history) - len(self.val_steps))
        # a state saved before sample counts were kept: its validations have unknown counts
        for ds, hist in self.val_history.items():
            counts = self.val_counts.setdefault(ds, [])
            if len(counts) < len(hist):
                counts[:0] = [None] * (len(hist) - len(counts))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunState":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def record_validation(self, step: int, per_source: dict[str, float],
                          counts: dict[str, dict[str, int]] | None = None) -> float:
        """Append a validation result (scores and, per source, ``{"prompts", "samples", "scored"}``
        sample counts); returns the blended (mean over sources) score."""
        counts = counts or {}
        for ds, v in per_source.items():
            self.val_history.setdefault(ds, []).append(v)
            self.val_counts.setdefault(ds, []).append(dict(counts[ds]) if ds in counts else None)
        blended = sum(per_source.values()) / max(1, len(per_source))
        self.blended_val_history.append(blended)
        self.val_steps.append(int(step))
        if self.best_val is None or blended > self.best_val:
            self.best_val, self.best_step, self.best_scores = blended, step, dict(per_source)
            self.best_counts = {ds: dict(c) for ds, c in counts.items()}
        return blended

    def validation_at(self, step: int | None) -> tuple[float, dict[str, float]] | None:
        """The blended and per-source scores of the (latest) validation recorded at ``step``; None if
        there is none. Every recorded validation covers every data_source, so the histories align."""
        idx = [i for i, s in enumerate(self.val_steps) if s is not None and s == step]
        if not idx:
            return None
        i = idx[-1]
        return self.blended_val_history[i], {ds: h[i] for ds, h in self.val_history.items()}

    def record_rollback(self) -> None:
        """The policy was rolled back to the best checkpoint: its scores become the level to defend.
        A rollback while the previous one never recovered counts as a failed recovery."""
        if self.defended is not None:
            self.failed_recoveries += 1
        restored = self.best_ckpt_step
        self.exclude_from_noise([i for i, s in enumerate(self.val_steps)
                                 if s is not None and restored is not None and s > restored])
        self.defended = dict(self.best_scores)
        self.defended_counts = {ds: dict(c) for ds, c in self.best_counts.items()}

    def check_recovery(self, per_source: dict[str, float], margin: float) -> None:
        """Validation is back within ``margin`` of the defended level on every source: recovered."""
        if self.defended is not None and all(per_source.get(ds, 0.0) >= v - margin for ds, v in self.defended.items()):
            self.defended, self.defended_counts, self.failed_recoveries = None, None, 0

    def exclude_from_noise(self, indices: list[int]) -> None:
        """Leave these validations out of the look-to-look noise the measured test judges by: they
        belong to a policy that a rollback threw away, or to a drop that fired."""
        self.noise_excluded = sorted(set(self.noise_excluded) | {int(i) for i in indices})

    def noise_histories(self) -> dict[str, tuple[list[float], list[int | None]]]:
        """Per data_source (scores, scored counts) of the whole history across resets, less the
        validations :meth:`exclude_from_noise` left out: what the measured-noise test measures."""
        out, skip = {}, set(self.noise_excluded)
        for ds, hist in self.val_history.items():
            counts = [c["scored"] if c else None for c in self.val_counts.get(ds, [None] * len(hist))]
            keep = [i for i in range(len(hist)) if i not in skip]
            out[ds] = ([hist[i] for i in keep], [counts[i] for i in keep])
        return out

    def trigger_histories(self) -> tuple[dict[str, list[float]], list[float], int | None]:
        """Validation histories since the last reset, as the trigger policies see them; after a
        rollback they start from the restored checkpoint's scores, so a relapse below that level
        fires again even before the new policy has produced a best of its own."""
        n = self.evals_since_reset()
        if n is None or self.defended is None:
            return self.val_history, self.blended_val_history, n
        val = {ds: [self.defended.get(ds, float("nan"))] + h[len(h) - n:] for ds, h in self.val_history.items()}
        restored = sum(self.defended.values()) / max(1, len(self.defended))
        return val, [restored] + self.blended_val_history[len(self.blended_val_history) - n:], n + 1

    def trigger_counts(self) -> dict[str, list[int | None]]:
        """The scored-sample counts behind :meth:`trigger_histories`' scores, aligned with them
        (``None`` where unknown)."""
        scored = {ds: [c["scored"] if c else None for c in cs] for ds, cs in self.val_counts.items()}
        n = self.evals_since_reset()
        if n is None or self.defended is None:
            return scored
        restored = self.defended_counts or {}
        return {ds: [restored[ds]["scored"] if ds in restored else None] + c[len(c) - n:] for ds, c in scored.items()}

    def record_reset(self, step: int, cause: str) -> None:
        self.resets.append({"step": step, "cause": cause})
        self.last_reset_step, self.evals_at_last_reset = step, len(self.blended_val_history)

    def steps_since_reset(self, step: int) -> int | None:
        return None if self.last_reset_step is None else step - self.last_reset_step

    def evals_since_reset(self) -> int | None:
        return None if self.last_reset_step is None else len(self.blended_val_history) - self.evals_at_last_reset


class StageSchedule:
    """ProRL's chained runs: stage ``i`` applies its overrides to the base config from the step after
    the previous stage's ``until_step`` (or when a trigger ends a stage marked ``until_trigger``)."""

    def __init__(self, base: Config):
        self.base = base
        self.stages: list[StageConfig] = list(base.stages)
        self._configs: dict[int, Config] = {}

    def config(self, idx: int) -> Config:
        """The resolved config of stage ``idx`` (the base config when there are no stages)."""
        if not self.stages:
            return self.base
        if idx not in self._configs:
            self._configs[idx] = apply_overrides(self.base, self.stages[idx].overrides)
        return self._configs[idx]

    def stage_at(self, step: int, current: int) -> int:
        """The stage ``step`` belongs to, moving only forward from ``current``."""
        idx = current
        while idx < len(self.stages) - 1 and self.stages[idx].until_step and step > self.stages[idx].until_step:
            idx += 1
        return idx

    def next_on_trigger(self, current: int) -> int | None:
        """The stage a fired trigger moves to, when the current stage ends on triggers."""
        if self.stages and self.stages[current].until_trigger and current < len(self.stages) - 1:
            return current + 1
        return None

    def name(self, idx: int) -> str:
        return (self.stages[idx].name or str(idx)) if self.stages else "0"

    def resets_on_enter(self, idx: int) -> bool:
        return bool(self.stages) and self.stages[idx].reset_on_enter

    def needs_reference(self) -> bool:
        """Whether any stage uses a KL penalty (so a reference model must be kept)."""
        return self.base.algo.kl_coef > 0 or any(s.overrides.get("algo.kl_coef", 0) for s in self.stages)
