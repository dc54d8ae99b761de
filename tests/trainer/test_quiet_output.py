"""A default ``prorl train`` prints the trainer's own lines and progress bar, and no progress bar
of transformers' ("Loading weights" at every model load, "Writing model shards" at every
checkpoint), which carry nothing to act on and break into the trainer's bar."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from prorl.models.policy import no_transformers_progress_bars

BAR = re.compile(r"\d+%\|")  # a tqdm bar: "NN%|"
BARS_OFF = ("HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE")  # environment switches that would hide the bars anyway


def user_env() -> dict[str, str]:
    """The environment of a user who has not switched any progress bar off."""
    env = {k: v for k, v in os.environ.items() if k not in BARS_OFF}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def bars(output: str) -> list[str]:
    """Every progress-bar frame in the output (tqdm redraws with carriage returns)."""
    return [s.strip() for s in re.split(r"[\r\n]", output) if BAR.search(s)]


def test_default_train_prints_no_transformers_progress_bar(tmp_path):
    """The built-in preset (hf engine, CPU, progress bar on) for 2 steps with a checkpoint at each,
    run as a user runs it; stdout and stderr together."""
    cmd = [sys.executable, "-m", "prorl", "train", f"trainer.run_dir={tmp_path}", "trainer.total_steps=2",
           "trainer.save_every=1", "data.builtin_val_size=8", "validation.n=1", "trainer.threads=1"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
                       env=user_env())
    out = p.stdout
    assert p.returncode == 0, out[-3000:]
    assert (tmp_path / "checkpoints" / "step_2" / "model.safetensors").exists()  # a save did happen
    assert "Writing model shards" not in out and "Loading weights" not in out, out[-3000:]
    frames = bars(out)
    assert frames and any(f.startswith("train:") for f in frames), "the trainer's own bar must still show"
    others = [f for f in frames if not f.startswith("train:")]
    assert not others, f"progress bars other than the trainer's: {others[:3]}"
    assert "finished at step 2" in out


def test_no_transformers_progress_bars_is_scoped():
    """Off inside the block (huggingface_hub's download bars stay on), back on after."""
    from huggingface_hub import utils as hub
    from transformers.utils import logging as tf_logging

    if not tf_logging.is_progress_bar_enabled() or hub.are_progress_bars_disabled():
        pytest.skip("progress bars are switched off in this environment")
    with no_transformers_progress_bars():
        assert not tf_logging.is_progress_bar_enabled()
        assert not hub.are_progress_bars_disabled()
    assert tf_logging.is_progress_bar_enabled() and not hub.are_progress_bars_disabled()
    tf_logging.disable_progress_bar()  # already off (e.g. HF_HUB_DISABLE_PROGRESS_BARS=1): left off
    try:
        with no_transformers_progress_bars():
            pass
        assert not tf_logging.is_progress_bar_enabled()
    finally:
        tf_logging.enable_progress_bar()
