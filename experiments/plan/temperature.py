"""Experiment 1, rollout temperature: 0.6 vs 0.9 vs 1.2 in the early stage.

The paper expects 1.2 to start lower (noisier samples) and overtake (more exploration). Setting:
the chain warm start trained on chain3-6 (chain7 validated, never trained), 60 steps, 3 seeds; the
final policy is evaluated on held-out chain5-7 (32 problems x 16 samples: pass@1 and pass@16).

    python experiments/plan/temperature.py --out runs/plan [--quick]
"""

from __future__ import annotations

import sys

from common import Arm, Experiment, main, tasks

EXPERIMENT = Experiment(
    name="temperature",
    title="Rollout temperature (0.6 / 0.9 / 1.2)",
    setting=[*tasks(range(3, 8), train=range(3, 7)), "rollout.max_response_length=32", "validation.max_response_length=40"],
    arms={f"T={t}": Arm([f"rollout.temperature={t}"]) for t in ("0.6", "0.9", "1.2")},
    steps=60,
    eval_tasks={"chain5": (32, 16), "chain6": (32, 16), "chain7": (32, 16)},
)

if __name__ == "__main__":
    sys.exit(main([EXPERIMENT], doc=__doc__))
