"""Shared fixtures for the model tests."""

from __future__ import annotations

import pytest

from prorl.models.policy import BUILTIN_TINY, load_policy


@pytest.fixture(scope="module")
def policy():
    """The shipped tiny warm start in eval mode, and its tokenizer."""
    model, tok = load_policy(BUILTIN_TINY)
    model.eval()
    return model, tok
