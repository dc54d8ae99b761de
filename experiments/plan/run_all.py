"""The paper's experiment plan, all five experiments through one pool of runs, then the report.

    python experiments/plan/run_all.py --out runs/plan --report        # ~75 minutes on 2 cores
    python experiments/plan/run_all.py --out runs/plan_quick --quick   # smoke run
"""

from __future__ import annotations

import sys

import clip
import long_response
import reset_plateau
import reset_timing
import temperature
from common import main

EXPERIMENTS = [reset_plateau.EXPERIMENT, temperature.EXPERIMENT, clip.EXPERIMENT, long_response.EXPERIMENT,
               reset_timing.EXPERIMENT]

if __name__ == "__main__":
    sys.exit(main(EXPERIMENTS, doc=__doc__))
