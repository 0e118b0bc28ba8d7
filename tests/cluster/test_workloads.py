"""Workloads a real controller manager runs: stale and missed pods, restarts, Events."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster_support import CHART, CLI, NAMESPACE, Injector, Webhook, deployment_manifest, status_of, unique
from controlplane import ControlPlane, kubeconfig, wait_for
from test_profile_objects import accepted, profile

READY = {
    "status": {
        "phase": "Running",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": "True"},
            {"type": "Ready", "status": "True"},
        ],
    }
}


@pytest.fixture
def kubelet_stand_in(control_plane: ControlPlane, namespace: str) -> Iterator[None]:
    """Marks the namespace's pods Running and Ready, as a kubelet would once their containers run:
    without a kubelet no rollout would ever finish. Only the status is touched."""
    stop = threading.Event()

    def mark() -> None:
        while not stop.wait(0.5):
            result = control_plane.kubectl("get", "pods", "-n", namespace, "-o", "json", check=False)
            if result.returncode != 0:
                continue
            for pod in json.loads(result.stdout)["items"]:
                if pod["status"].get("phase") != "Running" and not pod["metadata"].get("deletionTimestamp"):
                    control_plane.kubectl(
                        "patch",
                        "pod",
                        pod["metadata"]["name"],
                        "-n",
                        namespace,
                        "--subresource=status",
                        "--type=merge",
                        "-p",
                        json.dumps(READY),
                        check=False,
                    )

    thread = threading.Thread(target=mark, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(10)


def stale_job(injector: Injector, values: dict[str, Any]) -> tuple[list[str], dict[str, str], Path]:
    """The chart's stale-restart CronJob, as its container would run: argv, environment, and a
    kubeconfig with a token of the CronJob's own ServiceAccount (so its RBAC is what is tested)."""
    docs = injector.render(values, in_cluster=True)
    cronjob = next(d for d in docs if d["kind"] == "CronJob")
    spec = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = spec["containers"][0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_INJECTOR_")}
    for item in container.get("env", []):
        env[item["name"]] = item.get("value") or NAMESPACE  # the one fieldRef is metadata.namespace
    token = injector.plane.token(spec["serviceAccountName"], NAMESPACE)
    config = kubeconfig(injector.workdir / "stale.kubeconfig", injector.plane.server, injector.plane.ca_file, token=token)
    env["KUBECONFIG"] = str(config)
    return list(container["args"]), env, config


STALE_VALUES = {"staleRestart": {"enabled": True, "maxPerMinute": 30}}


def run_stale(args: list[str], env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args, *extra], env=env, capture_output=True, text=True, timeout=300, check=False)


def pods(plane: ControlPlane, namespace: str, app: str) -> list[dict[str, Any]]:
    return [
        p
        for p in plane.get("pods", "-n", namespace, "-l", f"app={app}")["items"]
        if not p["metadata"].get("deletionTimestamp")
    ]


def recorded_versions(plane: ControlPlane, namespace: str, app: str, profile_name: str) -> set[str]:
    return {status_of(p).get("profiles", {}).get(profile_name, {}).get("version", "-") for p in pods(plane, namespace, app)}


@pytest.mark.usefixtures("kubelet_stand_in")
def test_a_changed_profile_is_reported_stale_and_restart_rolls_the_deployment_with_the_chart_cronjobs_identity(
    control_plane: ControlPlane, injector: Injector, namespace: str
) -> None:
    injector.restart(STALE_VALUES)
    name = unique("stale")
    control_plane.apply(profile("ClusterSidecarProfile", name))
    wait_for("accepted", lambda: (accepted(control_plane, "clustersidecarprofile", name) or {}).get("status") == "True", 30)
    try:
        control_plane.apply(deployment_manifest("web", {"sidecar.io/inject": name}, replicas=2), "-n", namespace)
        wait_for(
            "rolled out at 1.0.0",
            lambda: (
                len(pods(control_plane, namespace, "web")) == 2
                and recorded_versions(control_plane, namespace, "web", name) == {"1.0.0"}
            ),
            60,
        )
        control_plane.kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=60s")
        args, env, _ = stale_job(injector, STALE_VALUES)
        listing = [a for a in args if a != "--restart"]
        fresh = run_stale(listing, env, "-n", namespace)
        assert fresh.returncode == 0, fresh.stdout + fresh.stderr

        control_plane.apply(profile("ClusterSidecarProfile", name, version="2.0.0"))
        wait_for(
            "2.0.0 in use",
            lambda: control_plane.get("clustersidecarprofile", name).get("status", {}).get("version") == "2.0.0",
            30,
        )
        stale = run_stale(listing, env, "-n", namespace)
        assert stale.returncode == 1, stale.stdout + stale.stderr
        assert stale.stdout.count("outdated") == 2 and "1.0.0" in stale.stdout and "2.0.0" in stale.stdout, stale.stdout

        replicasets_before = {r["metadata"]["name"] for r in control_plane.get("replicasets", "-n", namespace)["items"]}
        restarted = run_stale(args, env, "-n", namespace)
        assert restarted.returncode in (0, 1), restarted.stdout + restarted.stderr
        assert "Forbidden" not in restarted.stderr, restarted.stderr
        replicasets = {r["metadata"]["name"] for r in control_plane.get("replicasets", "-n", namespace)["items"]}
        assert replicasets - replicasets_before, "a new ReplicaSet: a real rollout"
        wait_for(
            "the new pods carry 2.0.0", lambda: recorded_versions(control_plane, namespace, "web", name) == {"2.0.0"}, 90
        )
        after = run_stale(listing, env, "-n", namespace)
        assert after.returncode == 0, after.stdout
    finally:
        control_plane.kubectl("delete", "clustersidecarprofile", name, "--wait=false", check=False)
        injector.restart({})


def test_pods_created_while_the_webhook_was_down_under_ignore_are_reported_missed(
    control_plane: ControlPlane, injector: Injector, namespace: str
) -> None:
    values = {**STALE_VALUES, "webhook": {"failurePolicy": "Ignore"}}
    hook = injector.restart(values)
    hook.process.stop()
    try:
        control_plane.apply(deployment_manifest("missed", {"sidecar.io/inject": "logging"}), "-n", namespace)
        wait_for("a pod, created without the webhook", lambda: len(pods(control_plane, namespace, "missed")) == 1, 60)
        assert status_of(pods(control_plane, namespace, "missed")[0]) == {}
        args, env, _ = stale_job(injector, values)
        report = run_stale([a for a in args if a != "--restart"], env, "-n", namespace)
        assert report.returncode == 1, report.stdout + report.stderr
        assert "missed" in report.stdout and "logging" in report.stdout, report.stdout
    finally:
        injector.restart({})


def test_events_are_posted_on_the_owner_within_the_charts_rbac(
    control_plane: ControlPlane, webhook: Webhook, namespace: str
) -> None:
    control_plane.apply(deployment_manifest("evented", {"sidecar.io/inject": "logging,no-such-profile"}), "-n", namespace)

    def events() -> list[dict[str, Any]]:
        return [
            e
            for e in control_plane.get("events.events.k8s.io", "-n", namespace)["items"]
            if e.get("reportingController") == "sidecar.io/sidecar-injector"
        ]

    wait_for("an Event from the injector", lambda: bool(events()), 30, why=webhook.process.tail)
    event = events()[0]
    # the pod names its ReplicaSet; the Event is on the Deployment the user owns (issue 20, item 1(b))
    deployment = control_plane.get("deployment/evented", "-n", namespace)
    assert event["regarding"]["kind"] == "Deployment" and event["regarding"]["name"] == "evented", event["regarding"]
    assert event["regarding"]["uid"] == deployment["metadata"]["uid"]
    assert "logging" in event["note"]
    assert webhook.metric("sidecar_injector_kubernetes_events_total", result="failed") == 0
    shown = control_plane.kubectl("get", "events", "-n", namespace).stdout
    assert "Inject" in shown or "logging" in shown


@pytest.mark.parametrize("mode", ["helm", "secret"])
def test_every_object_of_the_chart_passes_server_side_dry_run(
    control_plane: ControlPlane, injector: Injector, mode: str
) -> None:
    """Each TLS mode without cert-manager, everything on: `kubectl apply --dry-run=server` runs the
    API server's own validation and admission on every object, nothing is stored."""
    values: dict[str, Any] = {
        "replicaCount": 2,
        "staleRestart": {"enabled": True},
        "networkPolicy": {"enabled": True, "apiServer": {"cidrs": ["10.0.0.0/8"]}},
        "tls": {"mode": mode},
    }
    if mode == "secret":
        values["tls"]["secret"] = {"name": "my-webhook-tls", "caBundle": injector.ca_bundle()}
    # another release in another namespace: applying over the installed one would merge with it
    release, namespace = "dry", unique("dry-run")
    control_plane.kubectl("create", "namespace", namespace)
    text = subprocess.run(
        [
            str(injector.helm),
            "template",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--kube-version",
            "1.37.2",
            "-f",
            "-",
        ],
        input=json.dumps(values),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # the CRDs are cluster-wide and shared with the installed release, which applied them for real
    docs = [d for d in yaml.safe_load_all(text) if d and d["kind"] != "CustomResourceDefinition"]
    text = "\n---\n".join(json.dumps(d) for d in docs)
    try:
        result = control_plane.kubectl(
            "apply", "--dry-run=server", "--server-side", "--field-manager=dry-run", "-f", "-", input=text, check=False
        )
    finally:
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false")
    assert result.returncode == 0, result.stderr
    kinds = {line.split("/")[0] for line in result.stdout.splitlines()}
    assert any(k.startswith("deployment") for k in kinds), result.stdout
