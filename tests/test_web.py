"""The webhook's HTTP edge (sidecar_injector.webhook.endpoints), driven through FastAPI's TestClient.

Covers the AdmissionReview contract of design.md sections 2 and 5: the answer's shape,
patches that apply and give a valid pod, the skip rules (operation, namespace, opt-out,
reinvocation), unknown profiles (warn / strict deny), and the two error families: a bad
*webhook request* is a 4xx JSON error (never a 500), a refused pod is an HTTP 200
``allowed: false``. A bug in the core is the one 500, so the API server applies its
failurePolicy.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import jsonpatch
import pytest
from fastapi.testclient import TestClient

import sidecar_injector.webhook.endpoints
from podcheck import assert_valid_pod
from required_values import values_for
from sidecar_injector.base import keys
from sidecar_injector.base.text import printable
from sidecar_injector.profiles.loading import ProfileSet, builtin_profiles, parse_profiles
from sidecar_injector.runtime.settings import Settings
from sidecar_injector.webhook.admission import ADMISSION_API_VERSION
from sidecar_injector.webhook.app import create_app
from skip_record import assert_skipped_answer

INJECT = keys.INJECT
STATUS = keys.STATUS

BUILTIN_NAMES = builtin_profiles().names()  # test_builtin_profiles checks they are the eight


# --------------------------------------------------------------------------- test profiles

TEST_PROFILES_YAML = """
name: shipper
version: "1.0.0"
description: tails the app's log files
containers:
  - name: shipper
    image: busybox:1.36.1
    args: ["sh", "-c", "touch /var/log/app/app.log && tail -F /var/log/app/app.log"]
    volumeMounts:
      - name: app-logs
        mountPath: /var/log/app
        readOnly: true
volumes:
  - name: app-logs
    emptyDir: {}
appVolumeMounts:
  - name: app-logs
    mountPath: /var/log/app
---
name: stats
version: "2.1"
containers:
  - name: stats
    image: prom/statsd-exporter:v0.26.1
    ports:
      - name: metrics
        containerPort: 9102
appEnv:
  - name: STATSD_HOST
    value: localhost
"""


@pytest.fixture(scope="module")
def test_profiles() -> ProfileSet:
    return ProfileSet.of(parse_profiles(TEST_PROFILES_YAML, "test"))


@pytest.fixture(scope="module")
def client(test_profiles: ProfileSet) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(), test_profiles)) as c:
        yield c


@pytest.fixture(scope="module")
def strict_client(test_profiles: ProfileSet) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(strict=True), test_profiles)) as c:
        yield c


@pytest.fixture(scope="module")
def builtin_client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(), builtin_profiles())) as c:
        yield c


# --------------------------------------------------------------------------- helpers


def make_pod(inject: str | None = None, *, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A minimal valid pod: one app container, no volumes, no init containers."""
    notes = dict(annotations or {})
    if inject is not None:
        notes[INJECT] = inject
        notes.update({k: v for k, v in values_for(inject).items() if k not in notes})
    metadata: dict[str, Any] = {"name": "web", "namespace": "default", "labels": {"app": "web"}}
    if notes:
        metadata["annotations"] = notes
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/web:1.4.2"}]},
    }


def make_rich_pod(inject: str) -> dict[str, Any]:
    """A pod with every optional array present, created from a ReplicaSet (generateName)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-7c9f8d-",
            "labels": {"app": "web", "pod-template-hash": "7c9f8d"},
            "annotations": {INJECT: inject, "example.com/owner": "team-a", **values_for(inject)},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "web-7c9f8d",
                    "uid": "5f0c3c4e-6a43-4d1f-9d36-0a9f0a5b7e11",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "initContainers": [
                {
                    "name": "migrate",
                    "image": "registry.example.com/migrate:2.0.0",
                    "command": ["/migrate"],
                }
            ],
            "containers": [
                {
                    "name": "app",
                    "image": "registry.example.com/web:1.4.2",
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "env": [{"name": "MODE", "value": "production"}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
                },
                {"name": "worker", "image": "registry.example.com/worker:1.4.2"},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "restartPolicy": "Always",
        },
    }


def review(
    obj: dict[str, Any] | None,
    *,
    operation: str = "CREATE",
    namespace: str = "default",
    uid: str | None = None,
    dry_run: bool = False,
    old_object: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An AdmissionReview as the API server sends it for a pod."""
    request: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()),
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": namespace,
        "operation": operation,
        "userInfo": {
            "username": "system:serviceaccount:kube-system:replicaset-controller",
            "groups": ["system:serviceaccounts", "system:authenticated"],
        },
        "dryRun": dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": f"{operation.capitalize()}Options"},
    }
    if obj is not None:
        request["object"] = obj
    if old_object is not None:
        request["oldObject"] = old_object
    return {"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview", "request": request}


def post_review(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    """POST a review, check the envelope every 200 answer must have, return ``response``."""
    resp = client.post("/mutate", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    answer = resp.json()
    assert answer["apiVersion"] == ADMISSION_API_VERSION
    assert answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == body["request"]["uid"]
    assert isinstance(response["allowed"], bool)
    # patchType appears only together with a patch, and the other way round
    assert ("patchType" in response) == ("patch" in response), response
    if "patch" in response:
        assert response["patchType"] == "JSONPatch"
    if "warnings" in response:
        assert isinstance(response["warnings"], list)
        assert all(isinstance(w, str) and w for w in response["warnings"])
    return response


def decode_patch(response: dict[str, Any]) -> list[dict[str, Any]]:
    ops = json.loads(base64.b64decode(response["patch"], validate=True))
    assert isinstance(ops, list) and ops
    return ops


def apply(pod: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """Apply the answer's patch exactly as the API server would (the input is not touched)."""
    ops = decode_patch(response)
    protected = ("/metadata/name", "/metadata/namespace", "/metadata/uid", "/kind", "/apiVersion")
    for op in ops:
        assert not any(op["path"] == p or op["path"].startswith(p + "/") for p in protected), op
    return jsonpatch.apply_patch(copy.deepcopy(pod), ops)


def inject_ok(client: TestClient, pod: dict[str, Any], **kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Send ``pod`` for CREATE, expect an allowed patch; return (patched pod, response)."""
    response = post_review(client, review(pod, **kw))
    assert response["allowed"] is True, response
    assert "patch" in response, response
    return apply(pod, response), response


def assert_admitted_unchanged(response: dict[str, Any]) -> None:
    assert response["allowed"] is True, response
    assert "patch" not in response and "patchType" not in response, response
    assert "status" not in response or response["status"].get("code", 200) < 400


def container_names(pod: dict[str, Any]) -> list[str]:
    spec = pod["spec"]
    return [c["name"] for c in spec.get("initContainers", []) + spec["containers"]]


def status_profiles(pod: dict[str, Any]) -> dict[str, Any]:
    return json.loads(pod["metadata"]["annotations"][STATUS])["profiles"]


def post_raw(
    client: TestClient, content: Any, content_type: str | None = "application/json", headers: dict[str, str] | None = None
):
    all_headers = dict(headers or {})
    if content_type is not None:
        all_headers["content-type"] = content_type
    return client.post("/mutate", content=content, headers=all_headers)


# --------------------------------------------------------------------------- injection


def test_create_annotated_pod_is_patched(client: TestClient) -> None:
    pod = make_pod("shipper")
    patched, response = inject_ok(client, pod, uid="705ab4f5-6393-11e8-b7cc-42010a800002")
    assert response["uid"] == "705ab4f5-6393-11e8-b7cc-42010a800002"
    assert "status" not in response
    assert "warnings" not in response
    assert container_names(patched) == ["app", "shipper"]
    assert patched["spec"]["volumes"] == [{"name": "app-logs", "emptyDir": {}}]
    assert {"name": "app-logs", "mountPath": "/var/log/app"} in patched["spec"]["containers"][0]["volumeMounts"]
    assert set(status_profiles(patched)) == {"shipper"}
    assert_valid_pod(patched)


def test_patch_is_valid_base64_json_patch(client: TestClient) -> None:
    response = post_review(client, review(make_pod("shipper,stats")))
    raw = base64.b64decode(response["patch"], validate=True)
    ops = json.loads(raw.decode("utf-8"))
    assert all(op["op"] in ("add", "replace", "remove", "test") for op in ops)
    assert all(op["path"].startswith("/") for op in ops)


def test_fields_unknown_to_the_webhook_survive(client: TestClient) -> None:
    pod = make_pod("shipper,stats")
    pod["metadata"]["labels"] = {"app": "web", "tier": "frontend"}
    pod["metadata"]["annotations"]["example.com/keep_me.v2"] = "kept"
    pod["metadata"]["uid"] = "0b7a5b5e-1111-2222-3333-444455556666"
    pod["spec"]["someFutureField"] = {"enabled": True, "nested": [1, 2, 3]}
    pod["spec"]["containers"][0]["futureContainerField"] = "x"
    pod["spec"]["priorityClassName"] = "high"
    pod["status"] = {"phase": "Pending"}
    patched, _ = inject_ok(client, pod)

    assert patched["spec"]["someFutureField"] == {"enabled": True, "nested": [1, 2, 3]}
    assert patched["spec"]["containers"][0]["futureContainerField"] == "x"
    assert patched["spec"]["priorityClassName"] == "high"
    assert patched["metadata"]["labels"] == {"app": "web", "tier": "frontend"}
    assert patched["metadata"]["annotations"]["example.com/keep_me.v2"] == "kept"
    assert patched["metadata"]["annotations"][INJECT] == "shipper,stats"
    for key in ("name", "namespace", "uid"):
        assert patched["metadata"][key] == pod["metadata"][key]
    assert (patched["apiVersion"], patched["kind"]) == ("v1", "Pod")
    assert patched["status"] == {"phase": "Pending"}

    # apart from the fields a real API server would not know, the result is a valid pod
    del patched["spec"]["someFutureField"], patched["spec"]["containers"][0]["futureContainerField"]
    del patched["status"]
    assert_valid_pod(patched)


def test_pod_with_every_optional_array_present(client: TestClient) -> None:
    pod = make_rich_pod("shipper, stats")  # spaces tolerated
    patched, response = inject_ok(client, pod)
    assert "warnings" not in response
    assert container_names(patched) == ["migrate", "app", "worker", "shipper", "stats"]
    assert [v["name"] for v in patched["spec"]["volumes"]] == ["data", "app-logs"]
    app_container = patched["spec"]["containers"][0]
    assert [e["name"] for e in app_container["env"]] == ["MODE", "STATSD_HOST"]
    assert [m["mountPath"] for m in app_container["volumeMounts"]] == ["/data", "/var/log/app"]
    assert patched["metadata"]["annotations"]["example.com/owner"] == "team-a"
    assert patched["metadata"]["ownerReferences"] == pod["metadata"]["ownerReferences"]
    assert_valid_pod(patched)


def test_no_annotation_means_no_patch(client: TestClient) -> None:
    response = post_review(client, review(make_pod()))
    assert_admitted_unchanged(response)
    assert "warnings" not in response


def test_other_annotations_only_means_no_patch(client: TestClient) -> None:
    response = post_review(client, review(make_pod(annotations={"example.com/x": "y"})))
    assert_admitted_unchanged(response)


@pytest.mark.parametrize("value", ["false", "False", " false "])
def test_opt_out_means_no_patch(client: TestClient, value: str) -> None:
    response = post_review(client, review(make_pod(value)))
    assert_admitted_unchanged(response)


def test_dry_run_gets_the_same_patch(client: TestClient) -> None:
    pod = make_rich_pod("shipper,stats")
    normal = post_review(client, review(pod))
    dry = post_review(client, review(pod, dry_run=True))
    assert dry["allowed"] is True
    assert decode_patch(dry) == decode_patch(normal)


@pytest.mark.parametrize("operation", ["UPDATE", "CONNECT"])
def test_non_create_operations_are_admitted_unchanged(client: TestClient, operation: str) -> None:
    pod = make_pod("shipper")
    response = post_review(client, review(pod, operation=operation, old_object=pod))
    assert_admitted_unchanged(response)


def test_delete_without_object_is_admitted_unchanged(client: TestClient) -> None:
    # DELETE carries the pod in oldObject and no object at all
    response = post_review(client, review(None, operation="DELETE", old_object=make_pod("shipper")))
    assert_admitted_unchanged(response)


def test_delete_with_null_object_is_admitted_unchanged(client: TestClient) -> None:
    body = review(None, operation="DELETE", old_object=make_pod("shipper"))
    body["request"]["object"] = None
    assert_admitted_unchanged(post_review(client, body))


@pytest.mark.parametrize("namespace", ["kube-system", "kube-public", "kube-node-lease"])
def test_system_namespaces_are_never_injected(client: TestClient, namespace: str) -> None:
    pod = make_pod("shipper")
    pod["metadata"]["namespace"] = namespace
    response = post_review(client, review(pod, namespace=namespace))
    assert_admitted_unchanged(response)


def test_system_namespace_from_the_pod_metadata_alone(client: TestClient) -> None:
    pod = make_pod("shipper")
    pod["metadata"]["namespace"] = "kube-system"
    body = review(pod)
    del body["request"]["namespace"]
    assert_admitted_unchanged(post_review(client, body))


def test_own_namespace_is_never_injected(test_profiles: ProfileSet) -> None:
    with TestClient(create_app(Settings(namespace="sidecar-injector"), test_profiles)) as c:
        pod = make_pod("shipper")
        pod["metadata"]["namespace"] = "sidecar-injector"
        assert_admitted_unchanged(post_review(c, review(pod, namespace="sidecar-injector")))
        # and other namespaces still are
        inject_ok(c, make_pod("shipper"))


def test_reinvocation_adds_nothing(client: TestClient) -> None:
    for pod in (make_pod("shipper,stats"), make_rich_pod("stats,shipper")):
        patched, _ = inject_ok(client, pod)
        again = post_review(client, review(patched))
        assert_admitted_unchanged(again)


def test_reinvocation_with_a_new_profile_adds_only_that_one(client: TestClient) -> None:
    patched, _ = inject_ok(client, make_pod("shipper"))
    patched["metadata"]["annotations"][INJECT] = "shipper,stats"
    twice, _ = inject_ok(client, patched)
    assert container_names(twice) == ["app", "shipper", "stats"]
    assert set(status_profiles(twice)) == {"shipper", "stats"}
    assert_valid_pod(twice)


# --------------------------------------------------------------------------- unknown profiles


def test_unknown_profile_warns_and_injects_the_known_ones(client: TestClient) -> None:
    pod = make_pod("shipper,nosuchprofile")
    patched, response = inject_ok(client, pod)
    warnings = response.get("warnings")
    assert warnings, response
    text = " ".join(warnings)
    assert "nosuchprofile" in text
    assert "shipper" in text and "stats" in text  # lists the available ones
    assert container_names(patched) == ["app", "shipper"]
    assert_valid_pod(patched)


def test_only_unknown_profiles_warn_and_the_patch_only_records_why(client: TestClient) -> None:
    response = post_review(client, review(make_pod("nosuchprofile")))
    assert_skipped_answer(response, make_pod("nosuchprofile"), {"nosuchprofile": "unknown profile"})
    text = " ".join(response.get("warnings", []))
    assert "nosuchprofile" in text
    assert "shipper" in text and "stats" in text


def test_strict_unknown_profile_is_denied(strict_client: TestClient) -> None:
    response = post_review(strict_client, review(make_pod("shipper,nosuchprofile")))
    assert response["allowed"] is False
    assert "patch" not in response and "patchType" not in response
    status = response["status"]
    assert isinstance(status["code"], int) and status["code"] >= 400
    assert "nosuchprofile" in status["message"]
    assert "shipper" in status["message"]  # says what is available


def test_strict_known_profiles_are_still_injected(strict_client: TestClient) -> None:
    patched, _ = inject_ok(strict_client, make_pod("shipper,stats"))
    assert_valid_pod(patched)


def test_unknown_profile_name_is_echoed_safely(client: TestClient) -> None:
    hostile = "evil\nname\x1b[31m" + "x" * 500
    response = post_review(client, review(make_pod(hostile)))
    # recorded under its printable, bounded form
    assert_skipped_answer(response, make_pod(hostile), [printable(hostile)])
    for warning in response.get("warnings", []):
        assert "\n" not in warning and "\x1b" not in warning
        assert len(warning) < 1000


# --------------------------------------------------------------------------- built-in profiles


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_profile_is_shipped(name: str) -> None:
    assert name in builtin_profiles().names()


@pytest.mark.parametrize("pod_factory", [make_pod, make_rich_pod], ids=["minimal-pod", "rich-pod"])
@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_each_builtin_profile_alone(builtin_client: TestClient, name: str, pod_factory: Any) -> None:
    pod = pod_factory(name)
    patched, _response = inject_ok(builtin_client, pod)
    assert set(status_profiles(patched)) == {name}
    assert len(container_names(patched)) >= len(container_names(pod))
    assert_valid_pod(patched)
    again = post_review(builtin_client, review(patched))
    assert_admitted_unchanged(again)


def test_all_builtin_profiles_together(builtin_client: TestClient) -> None:
    pod = make_pod(",".join(BUILTIN_NAMES))
    patched, response = inject_ok(builtin_client, pod)
    # built-ins must not conflict with each other (else something is silently skipped)
    assert "warnings" not in response, response["warnings"]
    assert set(status_profiles(patched)) == set(BUILTIN_NAMES)
    assert_valid_pod(patched)
    assert_admitted_unchanged(post_review(builtin_client, review(patched)))


def test_all_builtin_profiles_together_on_a_rich_pod(builtin_client: TestClient) -> None:
    pod = make_rich_pod(", ".join(reversed(BUILTIN_NAMES)))
    patched, _ = inject_ok(builtin_client, pod)
    assert set(status_profiles(patched)) == set(BUILTIN_NAMES)
    assert_valid_pod(patched)


def test_builtins_no_profile_requested(builtin_client: TestClient) -> None:
    pod = make_pod()
    response = post_review(builtin_client, review(pod))
    assert_admitted_unchanged(response)
    assert_valid_pod(pod)


def test_builtin_job_pod_gets_native_sidecars(builtin_client: TestClient) -> None:
    pod = make_pod(",".join(BUILTIN_NAMES))
    pod["spec"]["restartPolicy"] = "Never"
    patched, _ = inject_ok(builtin_client, pod)
    # a Job's pod must be able to finish: every injected long-running sidecar is native
    assert [c["name"] for c in patched["spec"]["containers"]] == ["app"]
    assert_valid_pod(patched)


# --------------------------------------------------------------------------- malformed pods


_SHAPE_WARNING_CASES = {
    "containers-not-a-list": lambda p: p["spec"].__setitem__("containers", "app"),
    "containers-a-map": lambda p: p["spec"].__setitem__("containers", {"name": "app"}),
    "containers-empty": lambda p: p["spec"].__setitem__("containers", []),
    "container-without-name": lambda p: p["spec"]["containers"][0].pop("name"),
    "spec-not-an-object": lambda p: p.__setitem__("spec", ["x"]),
    "spec-missing": lambda p: p.pop("spec"),
    "initContainers-not-a-list": lambda p: p["spec"].__setitem__("initContainers", "x"),
    "volumes-not-a-list": lambda p: p["spec"].__setitem__("volumes", {"name": "v"}),
    "volumeMounts-not-a-list": lambda p: p["spec"]["containers"][0].__setitem__("volumeMounts", "x"),
    "metadata-not-an-object": lambda p: p.__setitem__("metadata", "web"),
    "inject-not-a-string": lambda p: p["metadata"]["annotations"].__setitem__(INJECT, ["shipper"]),
}
#: the request cannot be read: nothing was asked for, nothing is written
_UNREADABLE_REQUEST = ("metadata-not-an-object", "inject-not-a-string")


@pytest.mark.parametrize("case", list(_SHAPE_WARNING_CASES))
def test_malformed_pod_is_admitted_with_a_warning(client: TestClient, case: str) -> None:
    pod = make_pod("shipper")
    _SHAPE_WARNING_CASES[case](pod)
    response = post_review(client, review(pod))
    if case in _UNREADABLE_REQUEST:
        assert_admitted_unchanged(response)
    else:  # the pod asked for shipper, readably: its status records why it did not get it
        assert_skipped_answer(response, pod, ["shipper"])
    assert response.get("warnings"), response


def test_annotations_not_a_map_is_admitted(client: TestClient) -> None:
    pod = make_pod("shipper")
    pod["metadata"]["annotations"] = ["sidecar.io/inject=shipper"]
    assert_admitted_unchanged(post_review(client, review(pod)))


_CORE_CRASH_CASES = {
    # Types the API server's typed decoding never lets through, but the webhook must still
    # answer (never a 500): found crashing app/sidecar_injector/core/plan.py (PatchPlan builds sets of them).
    "volume-name-a-list": lambda p: p["spec"].__setitem__("volumes", [{"name": ["x"], "emptyDir": {}}]),
    "mountPath-a-list": lambda p: p["spec"]["containers"][0].__setitem__(
        "volumeMounts", [{"name": "v", "mountPath": ["/x"]}]
    ),
    "env-name-a-map": lambda p: p["spec"]["containers"][0].__setitem__("env", [{"name": {"a": 1}}]),
    "port-protocol-a-list": lambda p: p["spec"]["containers"][0].__setitem__(
        "ports", [{"containerPort": 80, "protocol": ["TCP"]}]
    ),
}


@pytest.mark.parametrize("mangle", list(_CORE_CRASH_CASES.values()), ids=list(_CORE_CRASH_CASES))
def test_malformed_field_types_never_give_500(client: TestClient, mangle: Any) -> None:
    pod = make_pod("shipper,stats")
    mangle(pod)
    resp = client.post("/mutate", json=review(pod))
    assert resp.status_code == 200, resp.text
    assert resp.json()["response"]["allowed"] is True


# --------------------------------------------------------------------------- bad webhook requests


def _valid_body() -> dict[str, Any]:
    return review(make_pod("shipper"))


def _without(path: tuple[str, ...]) -> dict[str, Any]:
    body = _valid_body()
    target = body
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return body


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    body = _valid_body()
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


BAD_REQUESTS: dict[str, tuple[bytes, str | None, int]] = {
    # name: (body, content type, expected status)
    "empty-body": (b"", "application/json", 400),
    "whitespace-body": (b"  \n", "application/json", 400),
    "not-json": (b"this is not json", "application/json", 400),
    "truncated-json": (_json(_valid_body())[:-5], "application/json", 400),
    "json-array": (_json([_valid_body()]), "application/json", 400),
    "json-null": (b"null", "application/json", 400),
    "json-string": (b'"AdmissionReview"', "application/json", 400),
    "text-plain": (_json(_valid_body()), "text/plain", 415),
    "no-content-type": (_json(_valid_body()), None, 415),
    "form-content-type": (b"a=b", "application/x-www-form-urlencoded", 415),
    "v1beta1": (_json(_with(("apiVersion",), "admission.k8s.io/v1beta1")), "application/json", 400),
    "missing-apiVersion": (_json(_without(("apiVersion",))), "application/json", 400),
    "kind-foo": (_json(_with(("kind",), "Foo")), "application/json", 400),
    "missing-request": (_json(_without(("request",))), "application/json", 400),
    "request-null": (_json(_with(("request",), None)), "application/json", 400),
    "request-a-list": (_json(_with(("request",), [])), "application/json", 400),
    "missing-uid": (_json(_without(("request", "uid"))), "application/json", 400),
    "empty-uid": (_json(_with(("request", "uid"), "")), "application/json", 400),
    "uid-a-number": (_json(_with(("request", "uid"), 42)), "application/json", 400),
    "missing-operation": (_json(_without(("request", "operation"))), "application/json", 400),
    "unknown-operation": (_json(_with(("request", "operation"), "PATCH")), "application/json", 400),
    "create-without-object": (_json(_without(("request", "object"))), "application/json", 400),
    "create-with-null-object": (_json(_with(("request", "object"), None)), "application/json", 400),
    "object-a-string": (_json(_with(("request", "object"), "pod")), "application/json", 400),
    "object-a-list": (_json(_with(("request", "object"), [make_pod("shipper")])), "application/json", 400),
    "invalid-utf8": (b'{"apiVersion": "admission.k8s.io/v1", "kind": "\xff\xfe"}', "application/json", 400),
    "invalid-utf8-start": (b"\xff\xfe\x00{", "application/json", 400),
    "utf16-bom-body": (
        "\ufeff".encode("utf-16") + _json(_valid_body()).decode().encode("utf-16-le"),
        "application/json",
        400,
    ),
}


@pytest.mark.parametrize("content,content_type,status", list(BAD_REQUESTS.values()), ids=list(BAD_REQUESTS))
def test_bad_webhook_request_is_a_4xx_json_error(
    client: TestClient, content: bytes, content_type: str | None, status: int
) -> None:
    resp = post_raw(client, content, content_type)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()
    assert set(error) == {"error", "details"}
    assert isinstance(error["error"], str) and error["error"]
    assert isinstance(error["details"], list) and all(isinstance(d, str) for d in error["details"])
    # the same client still gets a correct answer right after
    inject_ok(client, make_pod("shipper"))


def test_bad_request_details_name_the_problem(client: TestClient) -> None:
    error = post_raw(client, _json(_without(("request", "uid")))).json()
    assert any("uid" in d for d in error["details"]), error
    error = post_raw(client, _json(_with(("apiVersion",), "admission.k8s.io/v1beta1"))).json()
    assert any("apiVersion" in d for d in error["details"]), error
    error = post_raw(client, _json(_without(("request", "object")))).json()
    assert "CREATE" in json.dumps(error) and "object" in json.dumps(error)
    error = post_raw(client, b"{}", "text/plain").json()
    assert "application/json" in error["error"]


def test_json_content_type_with_charset_is_accepted(client: TestClient) -> None:
    resp = post_raw(client, _json(_valid_body()), "application/json; charset=utf-8")
    assert resp.status_code == 200
    assert "patch" in resp.json()["response"]


def test_unknown_envelope_fields_are_ignored(client: TestClient) -> None:
    body = _valid_body()
    body["futureTopLevel"] = 1
    body["request"]["futureRequestField"] = {"x": 1}
    response = post_review(client, body)
    assert response["allowed"] is True and "patch" in response


@pytest.fixture(scope="module")
def small_client(test_profiles: ProfileSet) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(max_body_bytes=4096), test_profiles)) as c:
        yield c


def _padded_body(size: int) -> bytes:
    """A valid review whose JSON is at least ``size`` bytes (the padding is an annotation)."""
    body = _valid_body()
    body["request"]["object"]["metadata"]["annotations"]["example.com/padding"] = "x" * size
    return _json(body)


def test_body_over_the_cap_with_content_length_is_413(small_client: TestClient) -> None:
    content = _padded_body(5000)
    resp = post_raw(small_client, content)
    assert resp.status_code == 413, resp.text
    assert "4096" in resp.json()["error"]
    assert isinstance(resp.json()["details"], list)
    inject_ok(small_client, make_pod("shipper"))


def test_body_over_the_cap_streamed_in_chunks_is_413(small_client: TestClient) -> None:
    content = _padded_body(20000)

    def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
        for i in range(0, len(content), 1000):
            yield content[i : i + 1000]

    resp = post_raw(small_client, chunks())
    assert resp.status_code == 413, resp.text
    assert set(resp.json()) == {"error", "details"}
    inject_ok(small_client, make_pod("shipper"))


def test_body_under_the_cap_streamed_in_chunks_is_answered(small_client: TestClient) -> None:
    content = _json(_valid_body())
    assert len(content) < 4096

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(content), 100):
            yield content[i : i + 100]

    resp = post_raw(small_client, chunks())
    assert resp.status_code == 200, resp.text
    assert "patch" in resp.json()["response"]


def test_lying_small_content_length_does_not_bypass_the_cap(small_client: TestClient) -> None:
    content = _padded_body(5000)
    # the cap is enforced on the bytes read, not only on what the header declares
    resp = post_raw(small_client, content, headers={"content-length": "100"})
    assert resp.status_code == 413, resp.text


# --------------------------------------------------------------------------- other endpoints


def test_healthz(client: TestClient) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok"


def test_readyz_lists_the_profiles(client: TestClient) -> None:
    resp = client.get("/readyz")
    assert resp.status_code == 200
    assert resp.json()["profiles"] == ["shipper", "stats"]


def test_readyz_lists_the_builtin_profiles(builtin_client: TestClient) -> None:
    resp = builtin_client.get("/readyz")
    assert resp.status_code == 200
    assert set(BUILTIN_NAMES) <= set(resp.json()["profiles"])


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_mutate_only_accepts_post(client: TestClient, method: str) -> None:
    resp = client.request(method, "/mutate")
    assert resp.status_code == 405


def test_unknown_path_is_404(client: TestClient) -> None:
    assert client.post("/validate", json=_valid_body()).status_code == 404


def test_no_api_docs_are_exposed(client: TestClient) -> None:
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 404


# --------------------------------------------------------------------------- core failures


def test_core_exception_is_a_500_json_error_and_the_next_request_works(
    test_profiles: ProfileSet, monkeypatch: pytest.MonkeyPatch, decision_log: list[logging.LogRecord]
) -> None:
    with TestClient(create_app(Settings(), test_profiles), raise_server_exceptions=False) as c:
        real_decide = sidecar_injector.webhook.endpoints.decide
        calls = {"n": 0}

        def broken_once(*args: Any, **kwargs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("boom in the core")
            return real_decide(*args, **kwargs)

        monkeypatch.setattr(sidecar_injector.webhook.endpoints, "decide", broken_once)
        body = review(make_pod("shipper"), uid="uid-of-the-crash")
        resp = c.post("/mutate", json=body)
        assert resp.status_code == 500
        assert resp.headers["content-type"].startswith("application/json")
        error = resp.json()
        assert isinstance(error.get("error"), str) and error["error"]
        assert "boom" not in resp.text  # internals stay in the logs
        crash = [r for r in decision_log if getattr(r, "uid", None) == "uid-of-the-crash"]
        assert len(crash) == 1 and crash[0].levelno == logging.ERROR and crash[0].exc_info

        inject_ok(c, make_pod("shipper"))
        assert calls["n"] == 2


def test_core_exception_every_time_keeps_answering_500(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("spec")

    monkeypatch.setattr(sidecar_injector.webhook.endpoints, "decide", broken)
    for i in range(3):
        body = _valid_body()  # a pod no earlier test sent: not answered from the decision memo
        body["request"]["object"]["metadata"]["labels"] = {"crash-test": str(i)}
        resp = client.post("/mutate", json=body)
        assert resp.status_code == 500
        assert "error" in resp.json()
    monkeypatch.undo()
    inject_ok(client, make_pod("shipper"))


# --------------------------------------------------------------------------- logging


def test_one_log_record_per_decision_with_the_uid(client: TestClient, decision_log: list[logging.LogRecord]) -> None:
    uids = {"injected": "uid-log-1", "skipped": "uid-log-2"}
    post_review(client, review(make_pod("shipper"), uid=uids["injected"]))
    post_review(client, review(make_pod(), uid=uids["skipped"]))
    for outcome, uid in uids.items():
        records = [r for r in decision_log if getattr(r, "uid", None) == uid]
        assert len(records) == 1, [r.getMessage() for r in records]
        record = records[0]
        assert record.outcome == outcome
        assert record.namespace == "default"
        assert record.pod == "web"
        assert isinstance(record.duration_ms, float)


def test_absurdly_deep_json_is_a_400_not_a_crash(client: TestClient) -> None:
    pod = make_pod("shipper")
    body = json.dumps(review(pod)).replace('"image": ', '"x": ' + "[" * 50_000 + "]" * 50_000 + ', "image": ', 1)
    assert "[[[[" in body
    resp = post_raw(client, body.encode())
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "request body is not valid JSON"
    inject_ok(client, make_pod("shipper"))


def test_a_rejected_request_is_logged_with_its_status_and_error(
    client: TestClient, decision_log: list[logging.LogRecord]
) -> None:
    before = len(decision_log)
    resp = post_raw(client, b'{"apiVersion": "admission.k8s.io/v1beta1"')
    assert resp.status_code == 400
    rejected = [r for r in decision_log[before:] if r.getMessage() == "rejected webhook request"]
    assert len(rejected) == 1
    assert rejected[0].levelno == logging.WARNING
    assert rejected[0].status == 400 and rejected[0].error == "request body is not valid JSON"
    inject_ok(client, make_pod("shipper"))


def test_a_review_whose_pod_would_outgrow_what_etcd_stores_is_admitted_without_a_patch(client):
    # ~1.5 MiB of containers: the API server could still send it, but the injected pod could
    # not be stored; the answer says so instead of returning a patch that fails later
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "big-", "namespace": "default", "annotations": {"sidecar.io/inject": "shipper"}},
        "spec": {
            "containers": [
                {"name": f"c{i}", "image": "registry.example.com/app:1.4.2", "args": ["x" * 200]} for i in range(6200)
            ]
        },
    }
    response = client.post(
        "/mutate",
        json={
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-big",
                "operation": "CREATE",
                "namespace": "default",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "object": pod,
            },
        },
    )
    assert response.status_code == 200
    answer = response.json()["response"]
    assert answer["allowed"] is True and "patch" not in answer
    assert any("over the" in w and "KiB" in w for w in answer["warnings"])
