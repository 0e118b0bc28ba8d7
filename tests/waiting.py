"""Waiting for something to happen in another thread or process, with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

#: generous: a passing test returns as soon as the condition holds; a shared machine can be slow
DEFAULT_TIMEOUT = 30.0


def wait_until(
    predicate: Callable[[], object], what: str = "condition", timeout: float = DEFAULT_TIMEOUT, interval: float = 0.02
) -> None:
    """Poll ``predicate`` until it is true; fail the test (never hang) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting until {what}")
        time.sleep(interval)
