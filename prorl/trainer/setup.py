"""What a run needs before its first step: the model path, validated data, the run directory, and
the operator's controls (a reset request file, SIGUSR1). Kept out of the loop so it reads top to bottom."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import yaml

from prorl.config import Config, ConfigError, to_dict
from prorl.data.dataset import load_rows
from prorl.models.policy import BUILTIN_TINY, resolve_model_path  # noqa: F401  (the run's model names)

RESET_REQUEST = "RESET_REQUEST"


def load_dataset_rows(cfg: Config) -> tuple[list[dict], list[dict]]:
    """Validated (train rows, val rows) from files or the built-in tasks. Runs before any model is
    loaded, so a malformed row stops the run at once, naming its file and row."""
    from prorl.data.builtin_tasks import generate_rows, usable_size

    if cfg.data.train_files:
        train_rows = load_rows(cfg.data.train_files)
    else:
        train_rows = [r for t in cfg.data.builtin_tasks
                      for r in generate_rows(t, usable_size(t, cfg.data.builtin_train_size), cfg.trainer.seed, "train")]
    if cfg.data.val_files:
        val_rows = load_rows(cfg.data.val_files)
    elif not cfg.data.train_files:
        val_rows = [r for t in cfg.data.builtin_tasks for r in generate_rows(t, cfg.data.builtin_val_size, 1234, "val")]
    else:
        val_rows = []
    if cfg.data.val_max_prompts:
        seen: dict[str, int] = {}
        capped = []
        for r in val_rows:
            seen[r["data_source"]] = seen.get(r["data_source"], 0) + 1
            if seen[r["data_source"]] <= cfg.data.val_max_prompts:
                capped.append(r)
        val_rows = capped
    return train_rows, val_rows


def check_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run on top of an old one unless told what to do with it."""
    if not resume and not overwrite and (run_dir / "metrics.jsonl").exists():
        raise ConfigError(f"{run_dir} already holds a run: pass --resume to continue it or --overwrite to start over")


def prepare_run_dir(run_dir: Path, cfg: Config, *, fresh: bool) -> None:
    """Called once everything has loaded (so a failed start changes nothing): a fresh run clears
    what an earlier run left; the resolved config is written."""
    if fresh and run_dir.exists():
        for name in ("metrics.jsonl", "events.jsonl", "final_validation.json", "best_checkpoint.json"):
            (run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


class ManualControls:
    """An operator's reset request: ``prorl reset RUN_DIR`` (a file) or SIGUSR1. Checked on rank 0."""

    def __init__(self, run_dir: Path):
        self.request_file = run_dir / RESET_REQUEST
        self._signalled = False
        if hasattr(signal, "SIGUSR1"):
            try:
                signal.signal(signal.SIGUSR1, self._on_signal)
            except ValueError:  # not in the main thread
                pass

    def _on_signal(self, signum, frame) -> None:
        self._signalled = True

    def take_reset_request(self) -> str | None:
        """The cause of a pending request (consumed), or None."""
        if self.request_file.exists():
            cause = self.request_file.read_text().strip()
            self.request_file.unlink(missing_ok=True)
            self._signalled = False
            return f"manual: {cause or 'reset requested'}"
        if self._signalled:
            self._signalled = False
            return "manual: SIGUSR1"
        return None
