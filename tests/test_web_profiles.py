"""The webhook with profile resources: admissions resolved per namespace, /validate-profile refusing
what `profiles validate` refuses (with the same lines), readiness on the first list, and
`serve --profile-resources` as a process against the fake API server."""

from __future__ import annotations

import copy
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from kube_fake_api import FakeKubeApi
from serverproc import SERVICE_DNS, ca_context, free_port, recorded_status, server_env, start_server, stop
from sidecar_injector.cli import main
from sidecar_injector.cluster.kube import new_api_client
from sidecar_injector.cluster.profile_sources import ProfileResources
from sidecar_injector.profiles.loading import builtin_profiles
from sidecar_injector.runtime.metrics import Metrics
from sidecar_injector.runtime.settings import Settings
from sidecar_injector.webhook.app import create_app
from sidecar_injector.webhook.tls import write_cert_bundle
from waiting import wait_until

SCP = "sidecar.io/v1alpha1/sidecarprofiles"
CSCP = "sidecar.io/v1alpha1/clustersidecarprofiles"
BASE = builtin_profiles()


def profile_resource(kind: str, name: str, namespace: str | None = None, **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    body = {"version": "1.0.0", "containers": [{"name": f"sidecar-{name}", "image": "busybox:1.36.1"}], **spec}
    return {"apiVersion": "sidecar.io/v1alpha1", "kind": kind, "metadata": metadata, "spec": body}


def pod_review(namespace: str, inject: str) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": namespace,
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"generateName": "web-", "namespace": namespace, "annotations": {"sidecar.io/inject": inject}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            },
        },
    }


def profile_review(obj: dict[str, Any], operation: str = "CREATE") -> dict[str, Any]:
    namespace = obj["metadata"].get("namespace")
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "sidecar.io", "version": "v1alpha1", "kind": obj["kind"]},
            "operation": operation,
            **({"namespace": namespace} if namespace else {}),
            "object": obj,
        },
    }


@pytest.fixture
def resources(fake: FakeKubeApi) -> Iterator[ProfileResources]:
    fake.put_object(SCP, profile_resource("SidecarProfile", "audit", "shop"))
    fake.put_object(CSCP, profile_resource("ClusterSidecarProfile", "trace"))
    source = ProfileResources(
        new_api_client(fake.configuration()),
        lambda: BASE,
        write_status=False,
        informer_options={"backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.2},
    )
    source.start()
    wait_until(lambda: source.synced, what="the first lists")
    yield source
    source.stop()


@pytest.fixture
def client(resources: ProfileResources) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(), BASE, profile_source=resources)) as c:
        yield c


# -- admissions ---------------------------------------------------------------------------------------


def test_a_pod_gets_its_namespaces_sidecarprofile_and_the_clusters(client):
    answer = client.post("/mutate", json=pod_review("shop", "audit,trace,logging")).json()["response"]
    assert sorted(recorded_status(answer)) == ["audit", "logging", "trace"]


def test_a_pod_of_another_namespace_does_not_get_a_tenants_profile(client):
    answer = client.post("/mutate", json=pod_review("other", "audit,trace")).json()["response"]

    assert sorted(recorded_status(answer)) == ["trace"]
    [warning] = answer["warnings"]
    assert "unknown sidecar profile(s) audit" in warning
    assert "shop" not in warning, "another tenant's profiles are never listed"


def test_a_new_sidecarprofile_is_used_as_soon_as_the_watch_brings_it(fake, client):
    fake.put_object(SCP, profile_resource("SidecarProfile", "billing", "other"))
    wait_until(
        lambda: "billing" in recorded_status(client.post("/mutate", json=pod_review("other", "billing")).json()["response"]),
        what="the new profile to be injected",
    )


# -- readiness ------------------------------------------------------------------------------------------


def test_readyz_is_503_until_the_profile_resources_are_listed(fake):
    fake.go_down()
    source = ProfileResources(
        new_api_client(fake.configuration()),
        lambda: BASE,
        write_status=False,
        sync_timeout_seconds=600,
        informer_options={"backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.2},
    )
    source.start()
    try:
        with TestClient(create_app(Settings(), BASE, profile_source=source)) as c:
            waiting = c.get("/readyz")
            assert waiting.status_code == 503
            assert waiting.json()["profileResources"].startswith("waiting for the first list of ClusterSidecarProfiles")
            fake.come_up()
            wait_until(lambda: c.get("/readyz").status_code == 200, what="ready after the first list")
            assert c.get("/readyz").json()["profileResources"] == "synced"
    finally:
        source.stop()


# -- /validate-profile ------------------------------------------------------------------------------------------


def validate(client: TestClient, obj: dict[str, Any], operation: str = "CREATE") -> dict[str, Any]:
    resp = client.post("/validate-profile", json=profile_review(obj, operation))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    return body["response"]


def test_a_valid_profile_resource_is_allowed(client):
    answer = validate(client, profile_resource("SidecarProfile", "billing", "shop"))
    assert answer["allowed"] is True and "status" not in answer


def test_a_broken_profile_resource_is_refused_naming_the_field(client):
    broken = profile_resource("SidecarProfile", "billing", "shop", containers=[{"name": "x", "image": "busybox"}])

    answer = validate(client, broken)

    assert answer["allowed"] is False
    assert answer["status"]["code"] == 422 and answer["status"]["reason"] == "Invalid"
    assert answer["status"]["message"] == (
        "invalid profiles:\n  SidecarProfile shop/billing: spec.containers[0].image: image 'busybox' has no tag: "
        "pin a version (e.g. busybox:1.2.3) or a digest"
    )


def test_the_refusal_is_the_message_of_profiles_validate(client, tmp_path: Path):
    broken = profile_resource(
        "SidecarProfile",
        "billing",
        "shop",
        containers=[{"name": "x", "image": "busybox:latest", "imagePulPolicy": "Always"}],
        allowedNamespaces={"names": ["shop"]},
    )
    path = tmp_path / "billing.yaml"
    path.write_text(yaml.safe_dump(broken))
    out, err = io.StringIO(), io.StringIO()

    code = main(["profiles", "validate", str(path)], out, err)

    assert code == 1  # a document that is not usable (2 is a usage error)
    webhook_lines = validate(client, broken)["status"]["message"].splitlines()[1:]
    cli_lines = err.getvalue().splitlines()[1:]
    assert len(webhook_lines) == 3
    assert cli_lines == [f"  {path}: {line.strip()}" for line in webhook_lines]


def test_a_sidecarprofile_taking_a_cluster_level_name_is_refused(client):
    for name in ("trace", "logging"):
        answer = validate(client, profile_resource("SidecarProfile", name, "shop"))
        assert answer["allowed"] is False
        assert "a cluster-level profile of this name exists" in answer["status"]["message"]


def test_a_clustersidecarprofile_replacing_the_injectors_own_is_allowed_with_warnings(client):
    answer = validate(client, profile_resource("ClusterSidecarProfile", "logging"))
    assert answer["allowed"] is True
    replaces = "ClusterSidecarProfile logging replaces the injector's own profile logging in every namespace"
    assert answer["warnings"] == [replaces]

    answer = validate(client, profile_resource("ClusterSidecarProfile", "audit"))
    assert answer["warnings"] == ["the SidecarProfiles audit of namespaces shop will no longer be used"]


def test_allowed_namespaces_on_a_sidecarprofile_is_refused_at_apply_time(client):
    answer = validate(client, profile_resource("SidecarProfile", "billing", "shop", allowedNamespaces={"names": ["a"]}))
    assert answer["allowed"] is False
    assert "spec.allowedNamespaces: not allowed on a SidecarProfile" in answer["status"]["message"]


def test_the_namespace_of_the_request_is_used_when_the_object_has_none(client):
    obj = profile_resource("SidecarProfile", "billing", None, version="")
    review = profile_review(obj)
    review["request"]["namespace"] = "shop"
    answer = client.post("/validate-profile", json=review).json()["response"]
    assert answer["status"]["message"].startswith("invalid profiles:\n  SidecarProfile shop/billing: spec.version:")


def _update(client, old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    review = profile_review(new, "UPDATE")
    if old is not None:
        review["request"]["oldObject"] = old
    resp = client.post("/validate-profile", json=review)
    assert resp.status_code == 200, resp.text
    return resp.json()["response"]


BROKEN_IMAGE = [{"name": "x", "image": "busybox"}]


def test_an_update_leaving_a_broken_spec_alone_is_allowed_naming_what_is_still_wrong(client):
    broken = profile_resource("SidecarProfile", "billing", "shop", containers=BROKEN_IMAGE)
    relabelled = copy.deepcopy(broken)
    relabelled["metadata"]["labels"] = {"team": "billing"}
    relabelled["metadata"]["finalizers"] = []

    answer = _update(client, broken, relabelled)

    assert answer["allowed"] is True and "status" not in answer
    assert any(
        w.startswith("unchanged spec, still refused by the watcher: ") and "spec.containers[0].image" in w
        for w in answer["warnings"]
    ), answer["warnings"]


def test_an_update_changing_a_broken_spec_is_judged_as_a_create(client):
    broken = profile_resource("SidecarProfile", "billing", "shop", containers=BROKEN_IMAGE)
    still_broken = profile_resource("SidecarProfile", "billing", "shop", containers=[{"name": "y", "image": "busybox"}])
    fixed = profile_resource("SidecarProfile", "billing", "shop")

    refused = _update(client, broken, still_broken)
    assert refused["allowed"] is False and "spec.containers[0].image" in refused["status"]["message"]
    assert _update(client, broken, fixed)["allowed"] is True


def test_an_update_without_its_old_object_is_judged_as_a_create(client):
    broken = profile_resource("SidecarProfile", "billing", "shop", containers=BROKEN_IMAGE)
    assert _update(client, None, broken)["allowed"] is False


def test_deletes_are_always_allowed(client):
    review = profile_review(profile_resource("SidecarProfile", "billing", "shop"), "DELETE")
    review["request"]["object"] = None
    assert client.post("/validate-profile", json=review).json()["response"]["allowed"] is True


def test_namespaced_profiles_turned_off_refuse_sidecarprofiles_without_a_profile_source():
    with TestClient(create_app(Settings(namespaced_profiles=False), BASE)) as c:
        answer = validate(c, profile_resource("SidecarProfile", "billing", "shop"))
        assert answer["allowed"] is False and "namespaced profiles are turned off" in answer["status"]["message"]
        assert validate(c, profile_resource("ClusterSidecarProfile", "billing"))["allowed"] is True


def test_a_bad_validation_request_is_a_4xx_and_counted():
    metrics = Metrics()
    with TestClient(create_app(Settings(), BASE, metrics=metrics)) as c:
        resp = c.post("/validate-profile", content=b"{", headers={"content-type": "application/json"})
        assert resp.status_code == 400 and resp.json()["error"] == "request body is not valid JSON"
        validate(c, profile_resource("ClusterSidecarProfile", "billing"))
    sample = metrics.registry.get_sample_value
    assert sample("sidecar_injector_profile_validations_total", {"result": "accepted"}) == 1


# -- the real server --------------------------------------------------------------------------------------------


def test_serve_with_profile_resources_resolves_them_and_writes_their_status(fake, tmp_path: Path):
    fake.put_object(SCP, profile_resource("SidecarProfile", "audit", "shop"))
    fake.put_object(SCP, profile_resource("SidecarProfile", "broken", "shop", version=""))
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    certs = write_cert_bundle(tmp_path / "certs", "sidecar-injector", "sidecar-injector", extra_ips=["127.0.0.1"])
    ca, port = ca_context(certs.ca_cert), free_port()
    args = ["--cert-file", str(certs.cert), "--key-file", str(certs.key), "--metrics-port", "0", "--drain-seconds", "0"]
    args += ["--profile-resources", "--namespace", "sidecar-injector"]
    proc = start_server(args, tmp_path / "stderr", ca=ca, port=port, env=server_env(KUBECONFIG=str(kubeconfig)))
    try:
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ca, timeout=10, trust_env=False) as c:
            sni = {"sni_hostname": SERVICE_DNS}
            wait_until(lambda: c.get("/readyz", extensions=sni).status_code == 200, what="ready")
            answer = c.post("/mutate", json=pod_review("shop", "audit"), extensions=sni).json()["response"]
            assert sorted(recorded_status(answer)) == ["audit"]
            broken = profile_review(profile_resource("SidecarProfile", "x", "shop", version=""))
            refused = c.post("/validate-profile", json=broken, extensions=sni).json()["response"]
            assert refused["allowed"] is False

        def condition(name: str) -> dict[str, Any] | None:
            status = (fake.get_object(SCP, "shop", name) or {}).get("status") or {}
            return next(iter(status.get("conditions") or []), None)

        wait_until(lambda: condition("audit") and condition("broken"), what="both statuses written")
        assert condition("audit")["status"] == "True"
        assert condition("broken")["reason"] == "Invalid" and condition("broken")["message"].startswith("spec.version:")
    finally:
        stop(proc)
    assert proc.returncode == 0, (tmp_path / "stderr").read_text()
    lease = fake.get_object("coordination.k8s.io/v1/leases", "sidecar-injector", "sidecar-injector-profile-status")
    assert lease is not None and not lease["spec"].get("holderIdentity"), "the Lease is released at shutdown"


def test_serve_refuses_to_write_status_without_its_namespace(tmp_path: Path):
    certs = write_cert_bundle(tmp_path / "certs", "sidecar-injector", "sidecar-injector")
    out, err = io.StringIO(), io.StringIO()
    args = ["serve", "--cert-file", str(certs.cert), "--key-file", str(certs.key), "--metrics-port", "0"]
    code = main([*args, "--profile-resources"], out, err)
    assert code == 2 and "--profile-status needs --namespace" in err.getvalue()
