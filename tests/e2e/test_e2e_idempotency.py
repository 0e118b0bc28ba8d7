"""Never twice: re-created pods, rollout restarts and a second webhook call add nothing."""

from __future__ import annotations

import copy
import time

import pytest
from e2e_support import (
    FULLNAME,
    INJECT,
    STATUS,
    annotations_of,
    assert_injected_once,
    container_names,
    eventually,
    pod_manifest,
)

pytestmark = pytest.mark.e2e


def _deployment(name: str, replicas: int, annotations: dict[str, str]) -> dict:
    template = pod_manifest("unused", annotations=annotations, labels={"app": name})
    del template["metadata"]["name"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": template["metadata"], "spec": template["spec"]},
        },
    }


def _wait_deployment(kube, ns: str, name: str, *, timeout: float = 300) -> list[dict]:
    """Until the rollout finished and only the new pods are left; return them."""

    def done():
        dep = kube.to_dict(kube.apps.read_namespaced_deployment(name, ns))
        status, want = dep.get("status") or {}, dep["spec"]["replicas"]
        pods = kube.list_pods(ns, f"app={name}")
        return (
            pods
            if (
                status.get("observedGeneration", 0) >= dep["metadata"]["generation"]
                and status.get("updatedReplicas") == status.get("availableReplicas") == status.get("replicas") == want
                and len(pods) == want
            )
            else None
        )

    return eventually(done, timeout=timeout, what=f"deployment {ns}/{name} to roll out", interval=3)


def test_rollout_restart_injects_each_new_pod_exactly_once(kube, namespaces):
    ns = namespaces("rollout")
    kube.apps.create_namespaced_deployment(ns, _deployment("web", 2, {INJECT: "logging"}))
    first = _wait_deployment(kube, ns, "web")

    # what `kubectl rollout restart` does: a new template annotation, so every pod is re-created
    restarted_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    kube.apps.patch_namespaced_deployment(
        "web", ns, {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": restarted_at}}}}}
    )
    second = _wait_deployment(kube, ns, "web")

    assert {p["metadata"]["uid"] for p in first}.isdisjoint(p["metadata"]["uid"] for p in second)
    for pod in second:
        assert_injected_once(pod, ["logging"])
        assert container_names(pod).count("sidecar-logging") == 1
    # the webhook mutates pods, never the workload: the template stays as the user wrote it
    template = kube.to_dict(kube.apps.read_namespaced_deployment("web", ns))["spec"]["template"]
    assert [c["name"] for c in template["spec"]["containers"]] == ["app"]
    assert STATUS not in (template["metadata"].get("annotations") or {})


def test_recreating_an_injected_pod_from_its_own_spec_injects_nothing_more(kube, namespaces):
    # `kubectl get pod -o yaml | kubectl create -f -`: the copy arrives already injected
    ns = namespaces("recreate")
    original, _ = kube.create_pod(ns, pod_manifest("first", annotations={INJECT: "logging,metrics"}))
    copy_manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "second",
            "labels": original["metadata"].get("labels") or {},
            "annotations": annotations_of(original),
        },
        "spec": copy.deepcopy(original["spec"]),
    }
    copy_manifest["spec"].pop("nodeName", None)

    recreated, _ = kube.create_pod(ns, copy_manifest)
    assert_injected_once(recreated, ["logging", "metrics"])
    assert container_names(recreated) == container_names(original)
    assert annotations_of(recreated)[STATUS] == annotations_of(original)[STATUS]
    kube.wait_pod_ready(ns, "second")


def test_a_pod_sent_through_the_webhook_twice_is_injected_once(kube, namespaces):
    # A second webhook configuration pointing at the same service, for this namespace only:
    # the API server calls the injector twice for one pod creation, the second time with the
    # pod the first call patched (what reinvocation does). The second call must add nothing.
    ns = namespaces("twice")
    chart_config = kube.webhook_configuration()
    assert chart_config, f"MutatingWebhookConfiguration {FULLNAME} not found"
    [annotated] = [w for w in chart_config["webhooks"] if w["name"].startswith("annotated.")]
    again = copy.deepcopy(annotated)
    again["name"] = "again.e2e.sidecar.io"
    again["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": ns}}
    again["failurePolicy"] = "Fail"
    name = f"{ns}-again"
    kube.admission.create_mutating_webhook_configuration(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name, "labels": {"sidecar-injector-e2e": "true"}},
            "webhooks": [again],
        }
    )
    try:
        # Until the API server uses the second configuration, one call per pod: watch the
        # webhook's own count of "already injected" answers go up on a dry-run.
        def called_twice():
            before = kube.metric_total("sidecar_injector_skips_total", {"reason": "already-injected"})
            pod, _ = kube.create_pod(ns, pod_manifest("probe", annotations={INJECT: "logging"}), dry_run=True)
            assert_injected_once(pod, ["logging"])
            return kube.metric_total("sidecar_injector_skips_total", {"reason": "already-injected"}) > before

        eventually(called_twice, timeout=120, what="the second webhook configuration to take effect", interval=3)
        stored, _ = kube.create_pod(ns, pod_manifest("app", annotations={INJECT: "logging"}))
        assert_injected_once(stored, ["logging"])
        kube.wait_pod_ready(ns, "app")
    finally:
        kube.admission.delete_mutating_webhook_configuration(name)
