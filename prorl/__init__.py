"""prorl: prolonged RL (GRPO + DAPO + reference resets) for reasoning LMs with verifiable rewards."""

__version__ = "0.1.0"
