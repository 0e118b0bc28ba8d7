"""Automatic injection: namespaces that opt in, and the cluster-wide mode."""

from __future__ import annotations

import pytest
from e2e_support import (
    INJECT,
    NAMESPACE_PROFILES,
    RELEASE_NAMESPACE,
    assert_injected_once,
    assert_untouched,
    eventually,
    injection_status,
    pod_manifest,
    unique_name,
)

pytestmark = pytest.mark.e2e


def test_namespace_opt_in_injects_the_default_profiles_into_unannotated_pods(kube, namespaces):
    ns = namespaces("optin", labels={INJECT: "enabled"})
    stored, _ = kube.create_pod(ns, pod_manifest("app"))
    assert_injected_once(stored, ["logging"])  # injection.defaultProfiles in tests/e2e/values.yaml
    kube.wait_pod_ready(ns, "app")


def test_namespace_profiles_annotation_chooses_what_automatic_injection_adds(kube, namespaces):
    ns = namespaces("optin-metrics", labels={INJECT: "enabled"}, annotations={NAMESPACE_PROFILES: "metrics"})
    stored, _ = kube.create_pod(ns, pod_manifest("app"))
    assert_injected_once(stored, ["metrics"])
    kube.wait_pod_ready(ns, "app")


def test_pod_annotation_adds_profiles_to_those_of_an_opted_in_namespace(kube, namespaces):
    ns = namespaces("optin-pod", labels={INJECT: "enabled"}, annotations={NAMESPACE_PROFILES: "metrics"})
    stored, _ = kube.create_pod(ns, pod_manifest("app", annotations={INJECT: "logging"}))
    assert_injected_once(stored, ["metrics", "logging"])


def test_cluster_wide_mode_injects_everywhere_except_opt_outs_then_turns_off(kube, namespaces):
    plain = namespaces("wide")
    disabled = namespaces("wide-off", labels={INJECT: "disabled"})
    try:
        kube.deploy({"injection": {"clusterWide": True}})
        config = kube.webhook_configuration()
        [webhook] = config["webhooks"]
        assert webhook["name"] == "all.sidecar-injector.sidecar.io"
        assert webhook["failurePolicy"] == "Ignore", "cluster-wide: every pod must not depend on the webhook"

        # the API server picks the new configuration up within moments: dry-run until it does
        eventually(
            lambda: injection_status(kube.create_pod(plain, pod_manifest(unique_name("p")), dry_run=True)[0]),
            timeout=120,
            what="cluster-wide injection into an unannotated pod",
        )
        stored, _ = kube.create_pod(plain, pod_manifest("app"))
        assert_injected_once(stored, ["logging"])
        kube.wait_pod_ready(plain, "app")

        opted_out, _ = kube.create_pod(plain, pod_manifest("quiet", annotations={INJECT: "false"}))
        assert_untouched(opted_out)
        in_disabled, _ = kube.create_pod(disabled, pod_manifest("app"))
        assert_untouched(in_disabled)
        # never the system namespaces or the injector's own, even cluster-wide (dry-run: nothing stored)
        for ns in ("kube-system", RELEASE_NAMESPACE):
            probe, _ = kube.create_pod(ns, pod_manifest(unique_name("probe")), dry_run=True)
            assert_untouched(probe)
    finally:
        kube.deploy()

    names = [w["name"] for w in kube.webhook_configuration()["webhooks"]]
    assert sorted(names) == ["annotated.sidecar-injector.sidecar.io", "namespace.sidecar-injector.sidecar.io"]
    eventually(
        lambda: injection_status(kube.create_pod(plain, pod_manifest(unique_name("p")), dry_run=True)[0]) is None,
        timeout=120,
        what="unannotated pods to be left alone again",
    )
