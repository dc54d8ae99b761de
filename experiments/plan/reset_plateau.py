"""Experiment 3, reset at a plateau: hard reset vs no reset vs optimizer only vs reference only.

The ablation the paper lacks. Setting: the chain warm start on chain4-8 with 40-token responses
and a KL coefficient of 0.01, so the reference anchors the policy. Per seed the no-reset run goes
first; its plateau is the first validation after which three validations in a row brought no gain
of 0.02 over the best so far (``plateau_step`` in common.py, the rule of ``reset.plateau_patience``).
The other arms continue that same run from its plateau checkpoint with (a) a hard reset (reference
+ optimizer), (c) the optimizer only, (d) the reference only, to the same total steps.

    python experiments/plan/reset_plateau.py --out runs/plan [--quick]
"""

from __future__ import annotations

import sys

from common import Arm, Experiment, main, tasks

NONE = "(b) no reset"
SETTING = [*tasks(range(4, 9)), "rollout.max_response_length=40", "validation.max_response_length=48",
           "algo.kl_coef=0.01"]

EXPERIMENT = Experiment(
    name="reset_plateau",
    title="Reset at a plateau",
    setting=SETTING,
    arms={
        NONE: Arm([]),
        "(a) hard reset": Arm(["reset.steps=[{plateau}]"], branch=NONE),
        "(c) optimizer only": Arm(["reset.steps=[{plateau}]", "reset.reset_reference=false"], branch=NONE),
        "(d) reference only": Arm(["reset.steps=[{plateau}]", "reset.reset_optimizer=false"], branch=NONE),
    },
    steps=150,
    eval_tasks={"chain6": (32, 16), "chain7": (32, 16), "chain8": (32, 16)},
    eval_max_new_tokens=48,
)

if __name__ == "__main__":
    sys.exit(main([EXPERIMENT], doc=__doc__))
