"""What happens around the webhook: it is down, its certificate is replaced, it is uninstalled."""

from __future__ import annotations

import base64

import pytest
from cryptography import x509
from e2e_support import (
    FULLNAME,
    INJECT,
    RELEASE,
    RELEASE_NAMESPACE,
    assert_injected_once,
    assert_untouched,
    eventually,
    helm,
    injection_status,
    metric_value,
    pod_manifest,
    unique_name,
)
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.e2e


def test_webhook_down_blocks_only_pods_that_asked_for_sidecars(kube, namespaces):
    ns = namespaces("down")
    replicas = kube.webhook_deployment()["spec"]["replicas"]
    kube.scale_webhook(0)
    try:
        eventually(
            lambda: not kube.list_pods(RELEASE_NAMESPACE, kube.webhook_selector()),
            timeout=120,
            what="the webhook pods to be gone",
        )

        # never sent to the webhook (matchConditions): unrelated pods do not depend on it
        plain, _ = kube.create_pod(ns, pod_manifest("plain"))
        assert_untouched(plain)
        opted_out, _ = kube.create_pod(ns, pod_manifest("quiet", annotations={INJECT: "false"}))
        assert_untouched(opted_out)

        # a pod that asked is refused rather than started without what it asked for (failurePolicy Fail)
        with pytest.raises(ApiException) as refused:
            kube.create_pod(ns, pod_manifest("asked", annotations={INJECT: "logging"}))
        assert refused.value.status == 500, refused.value
        assert "failed calling webhook" in str(refused.value.body)
        assert "annotated.sidecar-injector.sidecar.io" in str(refused.value.body)
        names = {p["metadata"]["name"] for p in kube.list_pods(ns, "app.kubernetes.io/part-of=sidecar-injector-e2e")}
        assert names == {"plain", "quiet"}
    finally:
        kube.scale_webhook(replicas)
        kube.wait_webhook_rollout()
        kube.wait_serving()

    stored, _ = kube.create_pod(ns, pod_manifest("asked", annotations={INJECT: "logging"}))
    assert_injected_once(stored, ["logging"])


def _certificate(kube, name: str) -> x509.Certificate:
    secret = kube.to_dict(kube.core.read_namespaced_secret(name, RELEASE_NAMESPACE))
    return x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))


def test_replaced_serving_certificate_is_picked_up_live_while_serving(kube):
    # tls.mode=helm: deleting the serving Secret makes the next `helm upgrade` issue a new
    # certificate from the same CA (the webhook's caBundle stays valid). The server reloads
    # the new files when kubelet updates the mounted Secret - no restart, no failed admission.
    secret_name = f"{FULLNAME}-tls"
    old = _certificate(kube, secret_name)
    ca_bundle = kube.webhook_configuration()["webhooks"][0]["clientConfig"]["caBundle"]
    before = kube.webhook_identities()
    expiry_metric = "sidecar_injector_certificate_expiry_timestamp_seconds"

    kube.core.delete_namespaced_secret(secret_name, RELEASE_NAMESPACE)
    kube.deploy()
    new = _certificate(kube, secret_name)
    assert new.serial_number != old.serial_number
    assert new.issuer == old.issuer
    assert kube.webhook_configuration()["webhooks"][0]["clientConfig"]["caBundle"] == ca_bundle

    new_expiry = new.not_valid_after_utc.timestamp()
    assert new_expiry - old.not_valid_after_utc.timestamp() >= 1, "the old and new certificates must be told apart"
    failures = []

    def every_replica_serves_the_new_certificate():
        try:  # meanwhile every admission keeps working
            if injection_status(kube.probe("logging")) is None:
                failures.append("a dry-run pod was admitted without its sidecar")
        except Exception as exc:
            failures.append(repr(exc)[:300])
        return all(
            abs(metric_value(kube.metrics(p["metadata"]["name"]), expiry_metric) - new_expiry) < 1
            for p in kube.webhook_pods()
        )

    eventually(
        every_replica_serves_the_new_certificate,
        timeout=240,
        interval=5,
        what="every webhook replica to load the new certificate",
    )
    assert not failures, f"admissions failed during the certificate change: {failures}"
    assert kube.webhook_identities() == before, "the webhook pods were restarted or replaced"


def test_uninstall_leaves_no_webhook_configuration_behind(kube, namespaces):
    ns = namespaces("uninstalled")
    try:
        helm("uninstall", RELEASE, "--wait", "--timeout", "5m")
        assert kube.webhook_configuration() is None
        leftovers = kube.admission.list_mutating_webhook_configuration(
            label_selector=f"app.kubernetes.io/instance={RELEASE}"
        ).items
        assert not leftovers, [item.metadata.name for item in leftovers]
        for kind, lister in (
            ("ClusterRole", kube.rbac.list_cluster_role),
            ("ClusterRoleBinding", kube.rbac.list_cluster_role_binding),
        ):
            items = lister(label_selector=f"app.kubernetes.io/instance={RELEASE}").items
            assert not items, f"{kind} left behind: {[i.metadata.name for i in items]}"
        # nothing fails closed any more: a pod that asks for sidecars is admitted as it is (once
        # the API server dropped the configuration it had cached: dry-run until then)
        eventually(
            lambda: kube.create_pod(ns, pod_manifest(unique_name("asked"), annotations={INJECT: "logging"}), dry_run=True),
            timeout=60,
            what="pods to be admitted without the webhook",
        )
        stored, _ = kube.create_pod(ns, pod_manifest(unique_name("asked"), annotations={INJECT: "logging"}))
        assert_untouched(stored)
    finally:
        kube.deploy()
