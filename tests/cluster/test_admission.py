"""Pods through the real API server: injection, routing, reinvocation, the webhook down."""

from __future__ import annotations

import json
from typing import Any

from cluster_support import (
    NAMESPACE,
    Injector,
    Webhook,
    container_names,
    deployment_manifest,
    pod_manifest,
    status_of,
    unique,
)
from controlplane import ControlPlane, wait_for


def pods_of(plane: ControlPlane, namespace: str, app: str) -> list[dict[str, Any]]:
    return list(plane.get("pods", "-n", namespace, "-l", f"app={app}")["items"])


def decisions_for(hook: Webhook, namespace: str) -> list[dict[str, Any]]:
    """The webhook's decision log lines about pods of this namespace."""
    return [line for line in hook.logs() if line.get("namespace") == namespace and "outcome" in line]


def test_a_deployments_pods_get_the_sidecars_and_pass_the_api_servers_own_validation(
    control_plane: ControlPlane, webhook: Webhook, namespace: str
) -> None:
    control_plane.apply(deployment_manifest("web", {"sidecar.io/inject": "logging,metrics"}, replicas=2), "-n", namespace)
    wait_for("2 pods from the ReplicaSet", lambda: len(pods_of(control_plane, namespace, "web")) == 2, 60)
    for pod in pods_of(control_plane, namespace, "web"):
        names = container_names(pod)
        assert "app" in names
        status = status_of(pod)
        assert set(status) >= {"logging", "metrics"} or set(status.get("profiles", status)) >= {"logging", "metrics"}, status
        assert len(names) >= 3, names  # the app and at least one sidecar per profile
        assert len(names) == len(set(names))
        # owned by the ReplicaSet the Deployment made: the pod went through the controller, not us
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"


def test_a_bare_pods_warnings_come_back_to_kubectl(control_plane: ControlPlane, webhook: Webhook, namespace: str) -> None:
    pod = pod_manifest("warned", {"sidecar.io/inject": "logging,no-such-profile"})
    result = control_plane.create(pod, "-n", namespace)
    assert "Warning:" in result.stderr and "no-such-profile" in result.stderr, result.stderr
    created = json.loads(result.stdout)
    assert any(n != "app" for n in container_names(created)), "the known profile is still injected"


def test_a_bare_pod_that_gets_none_of_its_profiles_is_stored_with_the_record_of_why(
    control_plane: ControlPlane, webhook: Webhook, namespace: str
) -> None:
    period = "git-sync.sidecar.io/period=2s (on the pod): expected a duration of at least 5s"
    asks = {"sidecar.io/inject": "git-sync", "git-sync.sidecar.io/repo": "https://github.com/acme/site"}
    result = control_plane.create(pod_manifest("skipped", {**asks, "git-sync.sidecar.io/period": "2s"}), "-n", namespace)
    assert "Warning:" in result.stderr and period in result.stderr, result.stderr
    stored = json.loads(result.stdout)
    assert container_names(stored) == ["app"]
    # the API server applied the status-only patch, and nothing else; the decision is still a skip
    annotations = dict(stored["metadata"]["annotations"])
    record = annotations.pop("sidecar.io/status", None)
    assert annotations == {**asks, "git-sync.sidecar.io/period": "2s"}
    assert record is not None and json.loads(record) == {"profiles": {}, "skipped": {"git-sync": period}}

    def reasons() -> list[str]:
        return [d["reason"] for d in decisions_for(webhook, namespace) if d["pod"] == "skipped"]

    wait_for("the decision logged", lambda: bool(reasons()), 10)
    assert set(reasons()) == {"invalid-values"}, reasons()


def test_the_api_server_sends_only_what_the_chart_routes_to_the_webhook(
    control_plane: ControlPlane, webhook: Webhook
) -> None:
    plain, enabled, disabled = unique("plain"), unique("enabled"), unique("disabled")
    for name in (plain, enabled, disabled):
        control_plane.kubectl("create", "namespace", name)
    control_plane.kubectl("label", "namespace", enabled, "sidecar.io/inject=enabled")
    control_plane.kubectl("label", "namespace", disabled, "sidecar.io/inject=disabled")
    try:
        for name in (plain, enabled, disabled):
            wait_for(
                "default SA",
                lambda n=name: control_plane.kubectl("get", "sa", "default", "-n", n, check=False).returncode == 0,
                60,
            )
        # wait until the webhook's namespace cache has seen the label (its informer)
        asks = {"sidecar.io/inject": "logging"}
        cases = [
            (plain, "not-asking", {}, False, False),  # matchConditions: never sent
            (plain, "asking", asks, True, True),
            (enabled, "not-asking", {}, True, True),  # namespace opt-in: default profiles
            (enabled, "opted-out", {"sidecar.io/inject": "false"}, False, False),
            (disabled, "asking", asks, False, False),  # namespaceSelector: never sent
            ("kube-system", unique("asking"), asks, False, False),
            (NAMESPACE, unique("asking"), asks, False, False),  # the injector's own namespace
        ]
        for ns, name, annotations, _, injected in cases:
            pod = json.loads(control_plane.create(pod_manifest(name, annotations), "-n", ns).stdout)
            got = any(n != "app" for n in container_names(pod))
            assert got == injected, (ns, name, container_names(pod))
            if ns in ("kube-system", NAMESPACE):
                control_plane.kubectl("delete", "pod", name, "-n", ns, "--wait=false")
        # the log is written in order by one thread: once a last pod's decision is there, every
        # decision about the pods above is too
        control_plane.create(pod_manifest("last", asks), "-n", plain)
        wait_for("the last decision logged", lambda: any(d["pod"] == "last" for d in decisions_for(webhook, plain)), 10)
        decided = {(line["namespace"], line["pod"]) for line in webhook.logs() if "outcome" in line}
        for ns, name, _, sent, _ in cases:
            assert ((ns, name) in decided) == sent, (ns, name, "should be sent" if sent else "should not be sent")
    finally:
        for name in (plain, enabled, disabled):
            control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_cluster_wide_mode_sends_every_pod_but_the_opted_out_and_excluded(
    control_plane: ControlPlane, injector: Injector, namespace: str
) -> None:
    hook = injector.restart({"injection": {"clusterWide": True}})
    result = control_plane.create(pod_manifest("anyone"), "-n", namespace)
    assert any(n != "app" for n in container_names(json.loads(result.stdout)))
    result = control_plane.create(pod_manifest("nobody", {"sidecar.io/inject": "false"}), "-n", namespace)
    assert container_names(json.loads(result.stdout)) == ["app"]
    configs = control_plane.get("mutatingwebhookconfigurations", "-l", "app.kubernetes.io/instance=sidecar-injector")
    names = [w["name"] for c in configs["items"] for w in c["webhooks"]]
    assert names == ["all.sidecar-injector.sidecar.io"]
    wait_for("the decision logged", lambda: any(d["pod"] == "anyone" for d in decisions_for(hook, namespace)), 10)
    sent = {d["pod"] for d in decisions_for(hook, namespace)}
    assert sent == {"anyone"}  # the opted-out pod was never sent (the CEL matchCondition)


REINVOKER = """
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingAdmissionPolicy
metadata: {name: NAME}
spec:
  matchConstraints:
    resourceRules:
      - {apiGroups: [""], apiVersions: ["v1"], operations: ["CREATE"], resources: ["pods"]}
  failurePolicy: Fail
  reinvocationPolicy: IfNeeded
  mutations:
    - patchType: ApplyConfiguration
      applyConfiguration:
        expression: >
          Object{metadata: Object.metadata{annotations: {
            "test.sidecar.io/containers": string(size(object.spec.containers))}}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingAdmissionPolicyBinding
metadata: {name: NAME}
spec:
  policyName: NAME
  matchResources:
    namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: NAMESPACE}}
"""


def test_reinvocation_by_another_mutation_injects_once(
    control_plane: ControlPlane, webhook: Webhook, namespace: str
) -> None:
    """A MutatingAdmissionPolicy that rewrites an annotation from the container count changes the pod
    after the webhook ran: the API server calls the webhook again (reinvocationPolicy: IfNeeded)
    with the already-injected pod, and nothing is added twice."""
    name = unique("recount")
    control_plane.apply(REINVOKER.replace("NAMESPACE", namespace).replace("NAME", name))
    try:

        def created() -> dict[str, Any]:
            pod = pod_manifest(unique("twice"), {"sidecar.io/inject": "logging,metrics"})
            return dict(json.loads(control_plane.create(pod, "-n", namespace).stdout))

        pod: dict[str, Any] = {}

        def policy_active() -> bool:  # the policy is picked up by the API server asynchronously
            nonlocal pod
            pod = created()
            return "test.sidecar.io/containers" in pod["metadata"]["annotations"]

        wait_for("the MutatingAdmissionPolicy in effect", policy_active, 30, interval=1)
        names = container_names(pod)
        assert len(names) == len(set(names)), names
        # the policy saw the injected pod: the webhook ran before its last run
        assert pod["metadata"]["annotations"]["test.sidecar.io/containers"] == str(len(pod["spec"]["containers"]))

        def calls_for() -> list[str]:
            return [d["reason"] for d in decisions_for(webhook, namespace) if d["pod"] == pod["metadata"]["name"]]

        wait_for("the decisions logged", lambda: len(calls_for()) >= 2, 10)  # logs are written off the request path
        calls = calls_for()
        # called again with the patched pod, which it left alone (the API server also re-runs its
        # ServiceAccount plugin, which mounts the token into the new sidecars: one more call)
        assert calls.count("injected") == 1 and len(calls) >= 2, calls
        assert set(calls) == {"injected", "already-injected"}, calls
        assert status_of(pod), "the status annotation survived the reinvocation"
    finally:
        control_plane.kubectl("delete", "mutatingadmissionpolicybinding,mutatingadmissionpolicy", name, check=False)


def test_with_the_webhook_down_opted_in_pods_are_refused_and_others_are_not(
    control_plane: ControlPlane, injector: Injector, webhook: Webhook, namespace: str
) -> None:
    webhook.process.stop()
    try:
        refused = control_plane.create(pod_manifest("asks", {"sidecar.io/inject": "logging"}), "-n", namespace, check=False)
        assert refused.returncode != 0
        assert "sidecar-injector.sidecar.io" in refused.stderr and "failed calling webhook" in refused.stderr, refused.stderr
        other = control_plane.create(pod_manifest("plain"), "-n", namespace)
        assert json.loads(other.stdout)["metadata"]["name"] == "plain"
    finally:
        injector.stop_all()
        injector.start()
