"""The ``<answer>...</answer>`` convention shared by the logic verifiers and evaluation (a leaf module)."""

from __future__ import annotations


def extract_answer(response: str) -> str | None:
    """Text inside the last ``<answer>...</answer>`` pair (stripped), or None."""
    end = response.rfind("</answer>")
    if end < 0:
        return None
    start = response.rfind("<answer>", 0, end)
    if start < 0:
        return None
    return response[start + len("<answer>"):end].strip()
