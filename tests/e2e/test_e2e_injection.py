"""Injection as a user sees it on a real cluster: pods that ask get running sidecars, others nothing."""

from __future__ import annotations

import json

import pytest
from e2e_support import (
    INJECT,
    JOB_IMAGE,
    Fatal,
    annotations_of,
    assert_injected_once,
    assert_untouched,
    container_names,
    eventually,
    injection_status,
    kubectl,
    pod_manifest,
)

pytestmark = pytest.mark.e2e


def test_annotated_pod_gets_its_sidecar_and_it_runs(kube, namespaces):
    ns = namespaces("one")
    kube.create_pod(ns, pod_manifest("app", annotations={INJECT: "logging"}))
    pod = kube.wait_pod_ready(ns, "app")

    status = assert_injected_once(pod, ["logging"])
    assert status["logging"]["version"]
    assert "sidecar-logging" in container_names(pod)
    app = next(c for c in pod["spec"]["containers"] if c["name"] == "app")
    assert {"name": "LOG_DIR", "value": "/var/log/app"} in app.get("env", [])
    assert any(m["mountPath"] == "/var/log/app" for m in app.get("volumeMounts", []))
    ready = {s["name"]: s["ready"] for s in pod["status"]["containerStatuses"]}
    assert ready == {"app": True, "sidecar-logging": True}


def test_several_profiles_at_once_all_run(kube, namespaces):
    ns = namespaces("several")
    kube.create_pod(ns, pod_manifest("app", annotations={INJECT: "logging, metrics"}))
    pod = kube.wait_pod_ready(ns, "app")

    assert_injected_once(pod, ["logging", "metrics"])
    assert {"sidecar-logging", "sidecar-metrics"} <= set(container_names(pod))
    # the metrics profile's pod annotations, for annotation-based Prometheus scraping
    assert annotations_of(pod).get("prometheus.io/port") == "9102"
    assert all(s["ready"] for s in pod["status"]["containerStatuses"])


def test_unannotated_pod_is_untouched(kube, namespaces):
    ns = namespaces("plain")
    sent = pod_manifest("app")
    stored, warnings = kube.create_pod(ns, sent)
    assert_untouched(stored)
    assert warnings == []
    assert stored["spec"]["containers"][0]["image"] == sent["spec"]["containers"][0]["image"]
    assert not stored["spec"].get("initContainers") and not stored["spec"].get("volumes")
    kube.wait_pod_ready(ns, "app")


def test_opt_out_annotation_gets_nothing_even_in_an_opted_in_namespace(kube, namespaces):
    plain = namespaces("optout")
    enabled = namespaces("optout-enabled", labels={INJECT: "enabled"})
    for ns in (plain, enabled):
        stored, _ = kube.create_pod(ns, pod_manifest("app", annotations={INJECT: "false"}))
        assert_untouched(stored)


def test_namespace_labelled_disabled_gets_nothing(kube, namespaces):
    ns = namespaces("disabled", labels={INJECT: "disabled"})
    stored, warnings = kube.create_pod(ns, pod_manifest("app", annotations={INJECT: "logging"}))
    assert_untouched(stored)
    assert warnings == []  # excluded by the namespaceSelector: the webhook is not even called


def test_unknown_profile_is_admitted_with_a_warning_kubectl_shows(kube, namespaces):
    ns = namespaces("unknown")
    manifest = pod_manifest("app", annotations={INJECT: "logging,no-such-profile"})
    result = kubectl("-n", ns, "create", "-f", "-", input=json.dumps(manifest))

    warning_lines = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert any("no-such-profile" in line and "available" in line for line in warning_lines), result.stderr
    assert any("logging" in line for line in warning_lines), "the warning lists the available profiles"
    # the known profile is still injected
    assert_injected_once(kube.read_pod(ns, "app"), ["logging"])


def test_job_with_an_injected_sidecar_completes(kube, namespaces):
    ns = namespaces("job")
    template = pod_manifest(
        "unused",
        annotations={INJECT: "logging"},
        image=JOB_IMAGE,
        restart_policy="Never",
        command=["sh", "-c", 'echo "job ran" >> "$LOG_DIR/app.log" && sleep 3'],
    )
    del template["metadata"]["name"]
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "work"},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 300,
            "template": {"metadata": template["metadata"], "spec": template["spec"]},
        },
    }
    kube.batch.create_namespaced_job(ns, job, _request_timeout=kube.REQUEST_TIMEOUT)

    def finished():
        status = kube.to_dict(kube.batch.read_namespaced_job_status("work", ns)).get("status") or {}
        conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
        if conditions.get("Failed") == "True":
            raise Fatal(f"the Job failed: {status}")
        return conditions.get("Complete") == "True"

    eventually(finished, timeout=300, what="the Job to complete", interval=3)
    [pod] = kube.list_pods(ns, "job-name=work")
    status = assert_injected_once(pod, ["logging"])
    assert status["logging"]["native"] is True, "a Job's pod gets native sidecars by default"
    sidecar = next(c for c in pod["spec"]["initContainers"] if c["name"] == "sidecar-logging")
    assert sidecar["restartPolicy"] == "Always"
    assert pod["status"]["phase"] == "Succeeded"


def test_dry_run_answers_like_a_real_creation(kube, namespaces):
    # The suite's probes use server-side dry-run: make sure it is what a real creation gets.
    ns = namespaces("dryrun")
    manifest = pod_manifest("app", annotations={INJECT: "metrics"})
    dry, _ = kube.create_pod(ns, manifest, dry_run=True)
    real, _ = kube.create_pod(ns, manifest)
    assert injection_status(dry) == injection_status(real)
    assert container_names(dry) == container_names(real)
