"""Shared fixtures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def load_script():
    """Import a script that is not part of a package (``benchmarks/*.py``, ``experiments/*.py``) by its
    path relative to the repository, as module ``name``; registered in ``sys.modules`` because
    dataclasses look their module up while the class is built."""
    def load(relative_path: str, name: str):
        spec = importlib.util.spec_from_file_location(name, REPO / relative_path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return mod
    return load


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
