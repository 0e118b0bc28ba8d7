"""SidecarProfile and ClusterSidecarProfile on the real API server: status, validation, scope,
and the one status writer (the Lease holder) among several webhook processes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_support import NAMESPACE, Injector, Webhook, container_names, pod_manifest, unique
from controlplane import ControlPlane, free_port, wait_for


def profile(kind: str, name: str, namespace: str | None = None, **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    body = {
        "version": "1.0.0",
        "containers": [
            {
                "name": f"{name}-agent",
                "image": "busybox:1.37.0",
                "command": ["sh", "-c", "sleep 3600"],
                "volumeMounts": [{"name": f"{name}-data", "mountPath": f"/var/{name}"}],
            }
        ],
        "volumes": [{"name": f"{name}-data", "emptyDir": {}}],
        **spec,
    }
    return {"apiVersion": "sidecar.io/v1alpha1", "kind": kind, "metadata": metadata, "spec": body}


def accepted(plane: ControlPlane, resource: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
    args = [resource, name] + (["-n", namespace] if namespace else [])
    obj = plane.get(*args)
    for condition in (obj.get("status") or {}).get("conditions", []):
        if condition["type"] == "Accepted":
            return dict(condition)
    return None


@pytest.fixture
def cluster_profile(control_plane: ControlPlane, webhook: Webhook) -> Iterator[str]:
    name = unique("cp")
    control_plane.apply(profile("ClusterSidecarProfile", name))
    yield name
    control_plane.kubectl("delete", "clustersidecarprofile", name, "--wait=false", check=False)


def test_applied_profiles_are_accepted_in_their_status_by_the_webhook(
    control_plane: ControlPlane, webhook: Webhook, namespace: str, cluster_profile: str
) -> None:
    control_plane.apply(profile("SidecarProfile", "audit", namespace))
    wait_for(
        "SidecarProfile Accepted",
        lambda: (accepted(control_plane, "sidecarprofile", "audit", namespace) or {}).get("status") == "True",
        30,
    )
    wait_for(
        "ClusterSidecarProfile Accepted",
        lambda: (accepted(control_plane, "clustersidecarprofile", cluster_profile) or {}).get("status") == "True",
        30,
    )
    status = control_plane.get("sidecarprofile", "audit", "-n", namespace)["status"]
    assert status["version"] == "1.0.0" and status["hash"]


def test_a_broken_profile_is_refused_at_apply_by_the_validating_webhook(
    control_plane: ControlPlane, webhook: Webhook, namespace: str
) -> None:
    broken = profile("SidecarProfile", "broken", namespace)
    broken["spec"]["containers"][0]["image"] = "busybox"  # no tag: the profile rules refuse it
    result = control_plane.apply(broken, check=False)
    assert result.returncode != 0
    assert "profiles.sidecar-injector.sidecar.io" in result.stderr and "tag" in result.stderr, result.stderr


def test_the_crds_own_schema_is_enforced_by_the_api_server_even_without_the_webhook(
    control_plane: ControlPlane, injector: Injector, webhook: Webhook, namespace: str
) -> None:
    webhook.process.stop()  # the validating webhook is Ignore: only the CRD schema stands
    try:
        wrong = profile("SidecarProfile", "wrong", namespace)
        wrong["spec"]["containers"] = "not-a-list"
        result = control_plane.apply(wrong, check=False)
        assert result.returncode != 0 and "spec.containers" in result.stderr, result.stderr
        unknown = profile("SidecarProfile", "unknown", namespace, colour="blue")
        result = control_plane.kubectl("create", "--validate=strict", "-f", "-", input=json.dumps(unknown), check=False)
        assert result.returncode != 0 and "colour" in result.stderr, result.stderr
    finally:
        injector.stop_all()
        injector.start()


def test_a_namespaced_profile_is_used_only_in_its_namespace(
    control_plane: ControlPlane, webhook: Webhook, namespace: str
) -> None:
    other = unique("other")
    control_plane.kubectl("create", "namespace", other)
    try:
        control_plane.apply(profile("SidecarProfile", "tenant", namespace))
        wait_for(
            "accepted",
            lambda: (accepted(control_plane, "sidecarprofile", "tenant", namespace) or {}).get("status") == "True",
            30,
        )
        wait_for(
            "default SA", lambda: control_plane.kubectl("get", "sa", "default", "-n", other, check=False).returncode == 0, 60
        )
        mine = json.loads(
            control_plane.create(pod_manifest("mine", {"sidecar.io/inject": "tenant"}), "-n", namespace).stdout
        )
        assert "tenant-agent" in container_names(mine)
        theirs = control_plane.create(pod_manifest("theirs", {"sidecar.io/inject": "tenant"}), "-n", other)
        assert container_names(json.loads(theirs.stdout)) == ["app"]
        assert "Warning:" in theirs.stderr and "tenant" in theirs.stderr, theirs.stderr
    finally:
        control_plane.kubectl("delete", "namespace", other, "--wait=false", check=False)


# --------------------------------------------------------------------------- one writer


LEASE = "sidecar-injector-profile-status"


def holder(plane: ControlPlane) -> str | None:
    lease = plane.get("lease", LEASE, "-n", NAMESPACE)
    return (lease.get("spec") or {}).get("holderIdentity")


def leader_of(hooks: list[Webhook]) -> list[Webhook]:
    return [h for h in hooks if h.metric("sidecar_injector_profile_status_leader") == 1]


def writes(hook: Webhook) -> float:
    return hook.metric("sidecar_injector_profile_status_writes_total", result="ok")


def test_two_webhooks_one_status_writer_and_a_frozen_leader_never_writes_again_before_it_reacquires(
    control_plane: ControlPlane, injector: Injector, webhook: Webhook
) -> None:
    second = injector.start("b", port=free_port())  # not called by the API server: it only competes for the Lease
    hooks = [webhook, second]
    try:
        wait_for("exactly one leader", lambda: len(leader_of(hooks)) == 1, 40, interval=0.5)
        leader = leader_of(hooks)[0]
        follower = next(h for h in hooks if h is not leader)
        first = unique("lease")
        control_plane.apply(profile("ClusterSidecarProfile", first))
        wait_for(
            "status written",
            lambda: (accepted(control_plane, "clustersidecarprofile", first) or {}).get("status") == "True",
            30,
        )
        assert writes(follower) == 0, "only the Lease holder writes status"

        leader.process.pause()  # SIGSTOP: a frozen leader, as under a long GC pause or a stuck node
        try:
            # lease duration 15 s: the follower takes over once the Lease has not been renewed for that long
            wait_for(
                "the follower takes the Lease",
                lambda: follower.metric("sidecar_injector_profile_status_leader") == 1,
                40,
                interval=0.5,
            )
            second_profile = unique("lease")
            control_plane.apply(profile("ClusterSidecarProfile", second_profile))
            wait_for(
                "status written by the new leader",
                lambda: (accepted(control_plane, "clustersidecarprofile", second_profile) or {}).get("status") == "True",
                30,
            )
            # a change the old leader will see the moment it wakes up
            control_plane.apply(profile("ClusterSidecarProfile", second_profile, version="2.0.0"))
        finally:
            leader.process.resume()
        frozen_writes = writes(leader)
        time.sleep(5)  # the old leader's threads run again: its renew deadline has long passed
        assert leader.metric("sidecar_injector_profile_status_leader") == 0
        assert writes(leader) == frozen_writes, "the old leader wrote status after it woke, without the Lease"
        assert holder(control_plane) != "" and len(leader_of(hooks)) == 1
    finally:
        second.process.stop()
        injector.webhooks.remove(second)
        for name in control_plane.get("clustersidecarprofiles")["items"]:
            if name["metadata"]["name"].startswith("lease-"):
                control_plane.kubectl("delete", "clustersidecarprofile", name["metadata"]["name"], "--wait=false")


# --------------------------------------------------------------------------- least privilege

AS_WEBHOOK = "--as=system:serviceaccount:sidecar-injector:sidecar-injector"
NEEDED = [
    ("list", "namespaces", None),
    ("watch", "namespaces", None),
    ("create", "events.events.k8s.io", "shop"),
    ("patch", "events.events.k8s.io", "shop"),
    ("get", "replicasets.apps", "shop"),  # Events on the Deployment above a pod's ReplicaSet
    ("get", "jobs.batch", "shop"),  # and on the CronJob above its Job
    ("watch", "clustersidecarprofiles.sidecar.io", None),
    ("list", "sidecarprofiles.sidecar.io", "shop"),
    ("patch", "clustersidecarprofiles.sidecar.io/status", None),
    ("patch", "sidecarprofiles.sidecar.io/status", "shop"),
    ("create", "leases.coordination.k8s.io", NAMESPACE),
    ("update", f"leases.coordination.k8s.io/{LEASE}", NAMESPACE),
]
FORBIDDEN = [
    ("get", "secrets", NAMESPACE),
    ("list", "secrets", "shop"),
    ("list", "pods", "shop"),
    ("create", "pods", "shop"),
    ("patch", "deployments.apps", "shop"),
    ("list", "replicasets.apps", "shop"),  # one get per ReplicaSet, never a list or watch
    ("update", "namespaces", None),
    ("delete", "events.events.k8s.io", "shop"),
    ("patch", "clustersidecarprofiles.sidecar.io", None),  # the spec is the platform team's
    ("update", "sidecarprofiles.sidecar.io", "shop"),
    ("update", "leases.coordination.k8s.io/someone-elses", NAMESPACE),
    ("create", "leases.coordination.k8s.io", "shop"),
    ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io", None),
]


def can(plane: ControlPlane, verb: str, resource: str, namespace: str | None) -> bool:
    where = ["-n", namespace] if namespace else []
    if resource.endswith("/status"):
        resource, where = resource.removesuffix("/status"), [*where, "--subresource=status"]
    answer = plane.kubectl("auth", "can-i", verb, resource, *where, AS_WEBHOOK, check=False).stdout.strip()
    return answer == "yes"


def test_the_charts_rbac_grants_the_webhook_what_it_uses_and_nothing_more(
    control_plane: ControlPlane, webhook: Webhook
) -> None:
    """The other tests prove the rules are enough (the webhook runs with this identity); this one
    proves they are no more: the API server's own authorizer answers each question."""
    missing = [rule for rule in NEEDED if not can(control_plane, *rule)]
    excessive = [rule for rule in FORBIDDEN if can(control_plane, *rule)]
    assert not missing and not excessive, {"missing": missing, "excessive": excessive}
