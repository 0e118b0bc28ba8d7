"""Profiles as Kubernetes resources on a real cluster: a tenant's SidecarProfile reaches its own
pods (and only those), `kubectl apply` of a broken one is refused with the field, and
`profiles stale --restart` rolls a Deployment onto the new version of its profile."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import yaml
from e2e_support import (
    APP_IMAGE,
    CONTEXT,
    FULLNAME,
    INJECT,
    RELEASE_NAMESPACE,
    REPO,
    assert_injected_once,
    assert_untouched,
    eventually,
    injection_status,
    kubectl,
    pod_manifest,
)

pytestmark = pytest.mark.e2e

GROUP, VERSION, PLURAL = "sidecar.io", "v1alpha1", "sidecarprofiles"
#: the watch brings a new resource to every replica within seconds; generous for slow CI
WATCH_SECONDS = 120


def tenant_profile(name: str, namespace: str, version: str = "1.0.0", **spec: Any) -> dict[str, Any]:
    """A SidecarProfile whose sidecar is the pause image (on every kind node, runs forever)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SidecarProfile",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "version": version,
            "description": f"e2e: {name}",
            "containers": [
                {
                    "name": f"sidecar-{name}",
                    "image": APP_IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "env": [{"name": "PROFILE_VERSION", "value": version}],
                    "resources": {"requests": {"cpu": "5m", "memory": "8Mi"}, "limits": {"memory": "32Mi"}},
                }
            ],
            **spec,
        },
    }


def broken_profile(name: str, namespace: str) -> dict[str, Any]:
    profile = tenant_profile(name, namespace)
    profile["spec"]["containers"][0]["image"] = "registry.k8s.io/pause"  # no tag: refused
    return profile


def apply(obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kubectl("apply", "-f", "-", input=yaml.safe_dump(obj), check=False)


def accepted(kube, namespace: str, name: str) -> dict[str, Any] | None:
    obj = kube.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, _request_timeout=30)
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Accepted" and c["status"] == "True"), None) and obj["status"]


def served_version(kube, namespace: str, profile: str) -> str | None:
    status = injection_status(kube.probe(profile, namespace=namespace))
    return (status or {}).get(profile, {}).get("version")


def every_replica_serves(kube, namespace: str, profile: str, version: str | None) -> bool:
    """Several dry-runs in a row agree (the Service spreads them over the replicas, each with its own watch)."""
    return all(served_version(kube, namespace, profile) == version for _ in range(8))


def stale(*args: str) -> subprocess.CompletedProcess[str]:
    """`sidecar-injector profiles stale` from this working tree, against the kind cluster."""
    return subprocess.run(
        [sys.executable, "-m", "sidecar_injector", "profiles", "stale", "--context", CONTEXT, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )


def test_a_tenants_sidecarprofile_is_injected_into_its_own_pods_only(kube, namespaces):
    tenant = namespaces("tenant")
    other = namespaces("elsewhere")
    result = apply(tenant_profile("e2e-tenant", tenant))
    assert result.returncode == 0, result.stderr

    status = eventually(lambda: accepted(kube, tenant, "e2e-tenant"), timeout=WATCH_SECONDS, what="Accepted=True")
    assert status["version"] == "1.0.0" and status["hash"] and status["observedGeneration"] == 1
    eventually(
        lambda: every_replica_serves(kube, tenant, "e2e-tenant", "1.0.0"),
        timeout=WATCH_SECONDS,
        what="every replica to inject the new SidecarProfile",
    )

    kube.create_pod(tenant, pod_manifest("app", annotations={INJECT: "e2e-tenant"}))
    pod = kube.wait_pod_ready(tenant, "app")
    assert assert_injected_once(pod, ["e2e-tenant"])["e2e-tenant"]["hash"] == status["hash"]

    elsewhere, warnings = kube.create_pod(other, pod_manifest("app", annotations={INJECT: "e2e-tenant"}))
    assert_untouched(elsewhere)
    assert any("unknown sidecar profile" in w and "e2e-tenant" in w for w in warnings), warnings
    assert not any(tenant in w for w in warnings), "another tenant's namespace is never named"


def test_kubectl_apply_of_a_broken_profile_is_refused_with_the_field(kube, namespaces, tmp_path):
    ns = namespaces("broken")
    broken = broken_profile("e2e-broken", ns)

    result = apply(broken)

    assert result.returncode != 0, result.stdout
    assert 'admission webhook "profiles.sidecar-injector.sidecar.io" denied the request' in result.stderr
    line = f"SidecarProfile {ns}/e2e-broken: spec.containers[0].image: image 'registry.k8s.io/pause' has no tag"
    assert line in result.stderr
    # the same line as `profiles validate`
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    offline = subprocess.run(
        [sys.executable, "-m", "sidecar_injector", "profiles", "validate", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert offline.returncode == 1 and line in offline.stderr  # an unusable document (2: a usage error)
    with pytest.raises(Exception) as missing:
        kube.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "e2e-broken", _request_timeout=30)
    assert getattr(missing.value, "status", None) == 404, "nothing was stored"


def test_stale_restart_brings_a_deployments_pods_to_the_new_profile_version(kube, namespaces):
    ns = namespaces("rollout")
    assert apply(tenant_profile("e2e-rollout", ns, "1.0.0")).returncode == 0
    eventually(lambda: every_replica_serves(kube, ns, "e2e-rollout", "1.0.0"), timeout=WATCH_SECONDS, what="version 1.0.0")
    template = pod_manifest("web", annotations={INJECT: "e2e-rollout"}, labels={"app": "web"})
    metadata = {k: v for k, v in template["metadata"].items() if k != "name"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": metadata, "spec": template["spec"]},
        },
    }
    kube.apps.create_namespaced_deployment(ns, deployment, _request_timeout=30)

    def web_versions() -> list[str] | None:
        pods = [p for p in kube.list_pods(ns, "app=web") if not p["metadata"].get("deletionTimestamp")]
        ready = [p for p in pods if all(s.get("ready") for s in (p.get("status") or {}).get("containerStatuses") or [{}])]
        if len(pods) != 2 or len(ready) != 2:
            return None
        return sorted((injection_status(p) or {}).get("e2e-rollout", {}).get("version", "?") for p in pods)

    assert eventually(web_versions, timeout=300, what="two ready pods") == ["1.0.0", "1.0.0"]

    assert apply(tenant_profile("e2e-rollout", ns, "2.0.0")).returncode == 0
    eventually(lambda: every_replica_serves(kube, ns, "e2e-rollout", "2.0.0"), timeout=WATCH_SECONDS, what="version 2.0.0")
    configmap = f"--configmap={RELEASE_NAMESPACE}/{FULLNAME}-profiles"
    listed = stale("-n", ns, configmap)
    assert listed.returncode == 1, listed.stderr
    assert listed.stdout.count("outdated") == 2

    restarted = stale("-n", ns, configmap, "--restart", "--max-per-minute", "60", "--rollout-timeout", "300")

    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert f"restarted Deployment {ns}/web" in restarted.stderr
    assert eventually(lambda: web_versions() == ["2.0.0", "2.0.0"], timeout=300, what="the rolled-out pods")
    after = stale("-n", ns, configmap)
    assert after.returncode == 0 and "no pod runs an outdated or removed profile" in after.stdout
