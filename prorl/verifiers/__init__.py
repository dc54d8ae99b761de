"""Verifiers: one function per domain, each returning a :class:`Verdict`."""

from prorl.verifiers.base import Status, Verdict, get_verifier, register, resolve_domain, verify_one

__all__ = ["Status", "Verdict", "get_verifier", "register", "resolve_domain", "verify_one"]
