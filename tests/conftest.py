"""Shared fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def real_isolation_only():
    """For tests that run real attacks (kill(-1), fork bombs, ...): never without isolation, even
    if the environment enables the unsafe fallback; restores the sandbox settings afterwards."""
    from prorl.sandbox import available, backend, configure, get_config

    old = get_config()
    configure(allow_unsafe=False)
    ok, why = available()
    if not ok or backend().kind != "bwrap":
        configure(**{k: getattr(old, k) for k in old.__dataclass_fields__})
        pytest.fail(f"bwrap is installed but the sandbox does not work: {why}")
    yield
    configure(**{k: getattr(old, k) for k in old.__dataclass_fields__})
