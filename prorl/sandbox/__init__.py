"""Sandboxed execution of untrusted (model-written) Python.

``run_python`` runs a program once; ``PythonSession`` loads one and calls its functions or runs
it on test inputs, with only plain data crossing the boundary; ``self_check`` probes which
protections are active on this machine (``prorl sandbox-check`` prints them). The seccomp
policy is in ``syscall_filter``, per-run cgroups in ``cgroups``, shared types in ``config``.
"""

from prorl.sandbox.runner import (Limits, RunResult, SandboxClosed, SandboxConfig,
                                  SandboxProcess, SandboxTimeout, SandboxUnavailable, available,
                                  backend, configure, get_config, run_python, spawn_python)
from prorl.sandbox.session import (PythonSession, RemoteError, SessionAbort, SessionDied,
                                   SessionTimeout, StdioResult)


def self_check(allow_unsafe: bool = False):  # noqa: D401 - thin lazy wrapper
    """Probe every protection; returns a list of ``Check`` (see ``prorl.sandbox.selfcheck``)."""
    from prorl.sandbox.selfcheck import self_check as _self_check

    return _self_check(allow_unsafe=allow_unsafe)


__all__ = [
    "Limits", "RunResult", "SandboxClosed", "SandboxConfig", "SandboxProcess", "SandboxTimeout",
    "SandboxUnavailable", "available", "backend", "configure", "get_config", "run_python",
    "spawn_python", "PythonSession", "RemoteError", "SessionAbort", "SessionDied",
    "SessionTimeout", "StdioResult", "self_check",
]
