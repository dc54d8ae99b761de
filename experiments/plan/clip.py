"""Experiment 2, clip bounds: symmetric 0.2/0.2, decoupled 0.2/0.4 and the box around it.

On-policy (two updates per batch) the clip hardly binds here (the temperature experiment's runs
log its clip fractions), so this runs the regime where it does: 4 epochs x 4 mini-batches = 16
updates per batch. The grid [0.1, 0.3] x [0.3, 0.5] (eps_low x eps_high) is sampled at its corners
and centre. Entropy over the run, clip fractions and held-out accuracy on chain5-7; 3 seeds.

    python experiments/plan/clip.py --out runs/plan [--quick]
"""

from __future__ import annotations

import sys

from common import Arm, Experiment, main, tasks
from temperature import EXPERIMENT as TEMPERATURE

BOUNDS = [("0.2", "0.2"), ("0.2", "0.4"), ("0.1", "0.3"), ("0.1", "0.5"), ("0.3", "0.3"), ("0.3", "0.5")]

EXPERIMENT = Experiment(
    name="clip",
    title="Clip bounds (eps_low / eps_high), 16 updates per batch",
    setting=[*TEMPERATURE.setting, "actor.ppo_epochs=4", "actor.ppo_mini_batch_size=4"],
    arms={f"{lo}/{hi}": Arm([f"algo.eps_low={lo}", f"algo.eps_high={hi}"]) for lo, hi in BOUNDS},
    steps=30,
    eval_tasks=TEMPERATURE.eval_tasks,
)

if __name__ == "__main__":
    sys.exit(main([EXPERIMENT], doc=__doc__))
