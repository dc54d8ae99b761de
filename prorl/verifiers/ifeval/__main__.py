"""``python -m prorl.verifiers.ifeval INPUT_DATA RESPONSES [--json OUT]``: IFEval accuracies."""

import sys

from prorl.verifiers.ifeval.evaluation import main

sys.exit(main())
