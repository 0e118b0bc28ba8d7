"""Custom profiles from Helm values: where they may be used, and live changes without restarts."""

from __future__ import annotations

import pytest
from e2e_support import (
    APP_IMAGE,
    INJECT,
    assert_injected_once,
    assert_untouched,
    eventually,
    injection_status,
    pod_manifest,
    unique_name,
)

pytestmark = pytest.mark.e2e

#: kubelet refreshes a mounted ConfigMap within its sync period plus cache TTL (about a
#: minute by default); the server then reloads the profiles on the file change
CONFIGMAP_PROPAGATION_SECONDS = 240


def _profile(name: str, version: str, **extra) -> dict:
    return {
        "version": version,
        "description": f"e2e: {name}",
        "containers": [
            {
                "name": f"sidecar-{name}",
                "image": APP_IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "resources": {"requests": {"cpu": "5m", "memory": "8Mi"}, "limits": {"memory": "32Mi"}},
            }
        ],
        **extra,
    }


def _probe_version(kube, namespace: str, profile: str) -> str | None:
    status = injection_status(kube.probe(profile, namespace=namespace))
    return (status or {}).get(profile, {}).get("version")


def _every_replica_has(kube, namespace: str, profile: str, version: str | None) -> bool:
    """Several dry-runs in a row agree: each webhook replica reloads on its own kubelet's schedule,
    and the Service spreads the API server's calls over them."""
    return all(_probe_version(kube, namespace, profile) == version for _ in range(8))


def test_profile_policy_refuses_other_namespaces_with_a_warning(kube, namespaces):
    allowed = namespaces("policy-allowed")
    other = namespaces("policy-other")
    try:
        kube.deploy(
            {
                "profiles": {
                    "custom": {
                        "e2e-policy": _profile("e2e-policy", "1.0.0", allowedNamespaces={"names": [allowed]}),
                    }
                }
            }
        )
        eventually(
            lambda: _every_replica_has(kube, allowed, "e2e-policy", "1.0.0"),
            timeout=CONFIGMAP_PROPAGATION_SECONDS,
            what="the custom profile to be loaded",
        )

        refused, warnings = kube.create_pod(other, pod_manifest("app", annotations={INJECT: "e2e-policy,logging"}))
        # the refused profile is dropped, the allowed one still injected, and the user is told why
        assert_injected_once(refused, ["logging"])
        assert "sidecar-e2e-policy" not in str(refused["spec"])
        # the warning names the profile, the namespace and the policy (where it is allowed)
        assert any("e2e-policy" in w and "not allowed" in w and other in w and allowed in w for w in warnings), warnings

        admitted, warnings = kube.create_pod(allowed, pod_manifest("app", annotations={INJECT: "e2e-policy"}))
        assert_injected_once(admitted, ["e2e-policy"])
        assert not [w for w in warnings if "not allowed" in w]
        kube.wait_pod_ready(allowed, "app")
    finally:
        kube.deploy()


def test_changed_profile_is_used_for_new_pods_without_restarting_the_webhook(kube, namespaces):
    ns = namespaces("reload")
    try:
        kube.deploy({"profiles": {"custom": {"e2e-reload": _profile("e2e-reload", "1.0.0")}}})
        eventually(
            lambda: _every_replica_has(kube, ns, "e2e-reload", "1.0.0"),
            timeout=CONFIGMAP_PROPAGATION_SECONDS,
            what="version 1.0.0 of the custom profile",
        )
        before = kube.webhook_identities()

        kube.deploy({"profiles": {"custom": {"e2e-reload": _profile("e2e-reload", "2.0.0")}}})
        eventually(
            lambda: _every_replica_has(kube, ns, "e2e-reload", "2.0.0"),
            timeout=CONFIGMAP_PROPAGATION_SECONDS,
            what="version 2.0.0 of the custom profile",
        )

        stored, _ = kube.create_pod(ns, pod_manifest(unique_name("app"), annotations={INJECT: "e2e-reload"}))
        assert assert_injected_once(stored, ["e2e-reload"])["e2e-reload"]["version"] == "2.0.0"
        assert kube.webhook_identities() == before, "the webhook pods were restarted or replaced"
    finally:
        kube.deploy()


def test_removed_custom_profile_is_no_longer_injected(kube, namespaces):
    ns = namespaces("removed")
    try:
        kube.deploy({"profiles": {"custom": {"e2e-gone": _profile("e2e-gone", "1.0.0")}}})
        eventually(
            lambda: _every_replica_has(kube, ns, "e2e-gone", "1.0.0"),
            timeout=CONFIGMAP_PROPAGATION_SECONDS,
            what="the custom profile to be loaded",
        )
    finally:
        kube.deploy()
    eventually(
        lambda: _every_replica_has(kube, ns, "e2e-gone", None),
        timeout=CONFIGMAP_PROPAGATION_SECONDS,
        what="the removed profile to be unloaded",
    )
    stored, warnings = kube.create_pod(ns, pod_manifest("app", annotations={INJECT: "e2e-gone"}))
    assert_untouched(stored)
    assert any("unknown sidecar profile" in w and "e2e-gone" in w for w in warnings), warnings
