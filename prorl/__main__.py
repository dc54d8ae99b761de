"""``python -m prorl ...`` (and ``torchrun -m prorl train ...``): the ``prorl`` command line."""

import sys

from prorl.cli import main

sys.exit(main())
