"""Experiment 5, long-response failure: the termination penalty and the overlong buffer.

A setting where responses run on: chain5-8 with a 32-token limit, which chain8 needs nearly all
of, so a policy that counts past the target (as the warm start often does) is truncated. Arms:
no shaping, the termination penalty (0.5 off responses that never stop), DAPO's overlong buffer
(the last 8 tokens before the limit), and both. Length, truncation rate and accuracy over steps.

    python experiments/plan/long_response.py --out runs/plan [--quick]
"""

from __future__ import annotations

import sys

from common import Arm, Experiment, main, tasks

PENALTY = ["reward.truncation_penalty=0.5"]
BUFFER = ["reward.overlong_buffer_len=8", "reward.overlong_penalty_factor=1.0"]

EXPERIMENT = Experiment(
    name="long_response",
    title="Long responses: termination penalty and overlong buffer",
    setting=[*tasks(range(5, 9)), "rollout.max_response_length=32", "validation.max_response_length=32"],
    arms={"no shaping": Arm([]), "termination penalty": Arm(PENALTY), "overlong buffer": Arm(BUFFER),
          "both": Arm(PENALTY + BUFFER)},
    steps=50,
    eval_tasks={"chain6": (32, 16), "chain7": (32, 16), "chain8": (32, 16)},
    eval_max_new_tokens=32,
)

if __name__ == "__main__":
    sys.exit(main([EXPERIMENT], doc=__doc__))
