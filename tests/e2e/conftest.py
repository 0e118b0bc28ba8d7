"""The kind e2e suite: skipped unless asked for and possible; otherwise one cluster for all.

Asked for: ``make e2e`` (``pytest -m e2e tests/e2e``) or ``E2E=1``. A plain ``pytest`` or
``make test`` never runs the tests marked ``e2e`` (they create clusters and pull images);
each shows as skipped with what is missing on this machine, so "skipped" never hides a
broken setup. (test_e2e_harness.py, unmarked, checks the suite's own inputs offline.)

Possible: docker (with a reachable engine), kind and kubectl on PATH; with
``E2E_SKIP_SETUP=1`` also a reachable cluster. Then, once per session: ``make kind-up image
kind-load deploy`` (idempotent: reuses the cluster, rebuilds from the layer cache) unless
``E2E_SKIP_SETUP=1``, and a wait until the webhook rolled out and answers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator

import pytest
from e2e_support import (
    CLUSTER,
    E2E_DIR,
    RELEASE,
    RELEASE_NAMESPACE,
    Kube,
    kubectl,
    make,
    missing_prerequisites,
    skip_setup,
)

HOW_TO_RUN = "run them with `make e2e` (pytest -m e2e tests/e2e) or E2E=1"
NEEDS = "docker with a running engine, kind and kubectl"


def _requested(config: pytest.Config) -> bool:
    if os.environ.get("E2E", "") not in ("", "0", "false"):
        return True
    markexpr = config.getoption("markexpr", default="") or ""
    return re.search(r"(?<!not )\be2e\b", markexpr) is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [item for item in items if item.get_closest_marker("e2e")]
    if not ours:
        return
    requested = _requested(config)
    missing = missing_prerequisites()
    if requested and not missing:
        return
    if requested:
        reason = f"e2e: this machine lacks {'; '.join(missing)} (the kind suite needs {NEEDS})"
    elif missing:
        reason = f"e2e: not requested ({HOW_TO_RUN}); this machine also lacks {'; '.join(missing)}"
    else:
        reason = f"e2e: not requested ({HOW_TO_RUN}); {NEEDS} are available here"
    for item in ours:
        item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def kube() -> Iterator[Kube]:
    """The kind cluster with the chart installed from this working tree, ready to serve."""
    if not skip_setup():
        make("kind-up", "image", "kind-load", "deploy", timeout=1800)
    cluster = Kube()
    cluster.wait_webhook_rollout(timeout=300)
    cluster.wait_serving(timeout=180)
    yield cluster
    if cluster._probe_namespace:
        cluster.delete_namespace(cluster._probe_namespace)


@pytest.fixture
def namespaces(kube: Kube) -> Iterator[Callable[..., str]]:
    """``namespaces("prefix", labels=..., annotations=...)``: a fresh namespace, deleted after the test."""
    created: list[str] = []

    def create(prefix: str, **kwargs: dict[str, str]) -> str:
        name = kube.create_namespace(prefix, **kwargs)
        created.append(name)
        return name

    yield create
    for name in created:
        kube.delete_namespace(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed e2e test's report carries the webhook's recent logs (CI shows them inline)."""
    report = yield
    if report.when == "call" and report.failed and E2E_DIR in item.path.parents:
        try:
            logs = kubectl(
                "-n",
                RELEASE_NAMESPACE,
                "logs",
                "-l",
                f"app.kubernetes.io/instance={RELEASE}",
                "--all-containers",
                "--prefix",
                "--tail=80",
                timeout=30,
                check=False,
            )
            report.sections.append((f"webhook logs (kind-{CLUSTER}, last 80 lines per pod)", logs.stdout + logs.stderr))
        except Exception as exc:  # diagnostics must never mask the failure itself
            report.sections.append(("webhook logs", f"unavailable: {exc}"))
    return report
