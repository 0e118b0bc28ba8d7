"""Fixtures shared by the test modules (helpers they import live in modules of their own)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kube_fake_api import FakeKubeApi


@pytest.fixture
def fake() -> Iterator[FakeKubeApi]:
    """A fresh fake Kubernetes API server on loopback (modules needing state override this)."""
    with FakeKubeApi() as api:
        yield api
