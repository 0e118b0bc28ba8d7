"""The control-plane tier: the chart applied to a real API server, the webhook on the host.

One control plane per session (etcd, kube-apiserver, kube-controller-manager from
``make cluster-bin``). The chart's objects come from ``helm template`` of the chart with
``webhook.url`` pointing at the host and ``tls.mode=secret`` (a CA of the test's), applied
with server-side apply. The webhook runs as ``sidecar-injector serve`` with the
environment the chart gives its container, and with **the chart's identity**: a token of
the chart's ServiceAccount from the TokenRequest API in a kubeconfig, so a missing RBAC
rule fails a test here.

Without the binaries the tier skips, naming ``make cluster-bin``. With ``CI=true`` a skip
in this tier is a failure: CI must run it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_support import Injector, Webhook, unique
from controlplane import ROOT, ControlPlane, find_binaries, wait_for

HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cluster: the control-plane tier (real etcd, kube-apiserver, kube-controller-manager; make cluster-bin)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark this tier's tests and run them last: the control plane it starts lives until the end
    of the session, so nothing else runs beside its processes (and the quick tests report first)."""
    tier = [item for item in items if HERE in Path(str(item.fspath)).resolve().parents]
    for item in tier:
        item.add_marker(pytest.mark.cluster)
    if tier:
        chosen = {id(item) for item in tier}
        items[:] = [item for item in items if id(item) not in chosen] + tier


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") == "true" and report.skipped and HERE in Path(str(item.fspath)).resolve().parents:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true: the control-plane tier must run, but it skipped: {reason}"


# --------------------------------------------------------------------------- the control plane


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    binaries, why = find_binaries()
    if not binaries:
        pytest.skip(why)
    workdir = Path(tempfile.mkdtemp(prefix="sidecar-cp-"))
    plane = ControlPlane(binaries, workdir)
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()
        if os.environ.get("KEEP_CLUSTER_LOGS"):
            print(f"control-plane logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    result = subprocess.run([str(ROOT / "scripts" / "fetch-helm.sh")], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"helm could not be fetched (scripts/fetch-helm.sh): {result.stderr.strip()[-300:]}")
    return Path(result.stdout.strip())


# --------------------------------------------------------------------------- the webhook on the host


@pytest.fixture(scope="session")
def injector(control_plane: ControlPlane, helm_binary: Path) -> Iterator[Injector]:
    workdir = control_plane.workdir / "injector"
    workdir.mkdir()
    chart = Injector(control_plane, helm_binary, workdir)
    chart.install()
    chart.start()
    try:
        yield chart
    finally:
        chart.stop_all()


@pytest.fixture
def webhook(injector: Injector) -> Webhook:
    """The running webhook with the chart's default values (restored if a test changed them)."""
    if injector.values or len(injector.webhooks) != 1 or not injector.webhooks[0].process.alive():
        injector.restart({})
    hook = injector.webhooks[0]
    wait_for("webhook ready", hook.is_ready, 30, why=hook.process.tail)
    return hook


# --------------------------------------------------------------------------- objects


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace (with its default ServiceAccount), deleted after the test."""
    name = unique("t")
    control_plane.kubectl("create", "namespace", name)
    wait_for(
        "default ServiceAccount",
        lambda: control_plane.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
        60,
    )
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)
