"""Warm-up imported by the forkserver and every verifier worker before it reports ready.

The first math-verify call in a process pays about a second for antlr/sympy initialisation; done
here, that cost is neither charged against an item's hard time limit nor repeated after a worker
restart (forkserver children inherit the warmed state).
"""

from __future__ import annotations

_SAMPLES = (
    ("\\boxed{\\frac{1}{2}}", "0.5"),
    ("\\boxed{(1, 2]}", "[1,2)"),
    ("\\boxed{x^2+1}", "2"),
    ("\\boxed{\\text{(C)}}", "C"),
    ("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}", "\\sqrt{3}"),
    ("\\boxed{x = 3}", "\\{1, 3\\}"),
)


def warm() -> None:
    """Exercise the math verifier's parse and compare paths once (errors ignored)."""
    try:
        from prorl.verifiers.math import verify_math
    except Exception:
        return
    for response, gold in _SAMPLES:
        try:
            verify_math(response, gold, {})
        except Exception:
            pass
    try:  # probe the sandbox once here, so forked workers inherit the result (~1 s otherwise)
        from prorl.sandbox import available

        available()
    except Exception:
        pass


warm()
