"""The pure algorithm core. Importing the package registers every built-in policy loss (each loss
module registers itself; ``losses_cov`` builds on ``losses``), so ``algo.policy_loss`` can name any
of them however the package was first imported."""

from prorl.algo import losses, losses_cov  # noqa: F401
