"""Echoing values that come from pods: printable, bounded text for warnings and messages."""

from __future__ import annotations


def printable(value: str, limit: int = 63) -> str:
    """A user-supplied value made safe to echo in a warning: printable ASCII, bounded."""
    cleaned = "".join(ch if " " <= ch <= "~" else "?" for ch in value[: limit + 1])
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."
