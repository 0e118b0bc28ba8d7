"""Fixtures shared by the test modules (helpers they import live in modules of their own)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from kube_fake_api import FakeKubeApi


@pytest.fixture(autouse=True, scope="session")
def _no_injector_settings_from_the_shell() -> Iterator[None]:
    """Every test starts from the settings' defaults, whatever SIDECAR_INJECTOR_* the shell exports.

    Session-scoped so that module-scoped fixtures building a Settings() see the cleared
    environment too; a test that sets a variable does it with monkeypatch, which restores it.
    """
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("SIDECAR_INJECTOR_")]:
            patch.delenv(name)
        yield


@pytest.fixture
def fake() -> Iterator[FakeKubeApi]:
    """A fresh fake Kubernetes API server on loopback (modules needing state override this)."""
    with FakeKubeApi() as api:
        yield api


@pytest.fixture
def decision_log() -> Iterator[list[logging.LogRecord]]:
    """The records of the injector's logger, whatever an earlier test did to its propagation."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("sidecar_injector")
    handler, old_level = Collect(level=logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
