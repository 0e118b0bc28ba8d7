"""The webhook with the Kubernetes API: namespace facts and Events through the real edges.

The namespace cache and the event recorder talk to ``kube_fake_api`` (a real HTTP server
speaking the list/watch protocol) over a socket; the app is driven as the API server
would, and finally ``serve --namespace-lookup --events`` runs as a process with a
kubeconfig pointing at the fake API.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from kube_fake_api import FakeKubeApi
from serverproc import SERVICE_DNS, ca_context, free_port, recorded_status, server_env, start_server, stop
from sidecar_injector.base import keys
from sidecar_injector.cluster.events import EventRecorder
from sidecar_injector.cluster.kube import new_api_client
from sidecar_injector.cluster.namespaces import NamespaceCache
from sidecar_injector.profiles.loading import builtin_profiles
from sidecar_injector.runtime.metrics import Metrics
from sidecar_injector.runtime.settings import Settings
from sidecar_injector.webhook.app import create_app
from sidecar_injector.webhook.tls import write_cert_bundle
from waiting import wait_until


def review(namespace: str, annotations: dict[str, str] | None = None, owner: bool = True) -> dict[str, Any]:
    metadata: dict[str, Any] = {"generateName": "web-7d9f-", "namespace": namespace, "annotations": annotations or {}}
    if owner:
        metadata["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f", "uid": str(uuid.uuid4()), "controller": True}
        ]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
    }
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": namespace,
            "object": pod,
        },
    }


def injected_profiles(answer: dict[str, Any]) -> list[str]:
    return sorted(recorded_status(answer))
    for op in json.loads(base64.b64decode(answer["patch"])):
        if op["path"] == "/metadata/annotations":
            return sorted(json.loads(op["value"][keys.STATUS])["profiles"])
        if op["path"] == "/metadata/annotations/sidecar.io~1status":
            return sorted(json.loads(op["value"])["profiles"])
    return []


@pytest.fixture
def fake() -> Iterator[FakeKubeApi]:
    with FakeKubeApi() as api:
        api.add_namespace("shop", {keys.NAMESPACE_INJECT: "enabled"}, {keys.NAMESPACE_PROFILES: "metrics"})
        api.add_namespace("plain")
        api.add_namespace("quiet", {keys.NAMESPACE_INJECT: "disabled"})
        yield api


@pytest.fixture
def wired(fake: FakeKubeApi) -> Iterator[dict[str, Any]]:
    api = new_api_client(fake.configuration())
    metrics = Metrics()
    cache = NamespaceCache(
        api, lookup_timeout_seconds=0.5, backoff_initial_seconds=0.05, backoff_max_seconds=0.2, metrics=metrics
    )
    events = EventRecorder(api, "injector-0", metrics=metrics)
    cache.start()
    events.start()
    settings = Settings(default_profiles=["logging"], namespace="sidecar-injector")
    app = create_app(settings, builtin_profiles(), metrics=metrics, namespaces=cache, events=events)
    try:
        wait_until(lambda: cache.synced, "the namespace cache has listed the namespaces")
        with TestClient(app) as client:
            yield {"client": client, "cache": cache, "events": events, "fake": fake}
    finally:
        cache.stop()
        events.stop()


def mutate(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    resp = client.post("/mutate", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()["response"]


def test_pods_in_an_enabled_namespace_get_its_profiles_without_an_annotation(wired):
    client = wired["client"]
    assert injected_profiles(mutate(client, review("shop"))) == ["metrics"]
    assert injected_profiles(mutate(client, review("shop", {keys.INJECT: "logging"}))) == ["logging", "metrics"]
    assert injected_profiles(mutate(client, review("shop", {keys.INJECT: "false"}))) == []
    assert injected_profiles(mutate(client, review("plain"))) == []
    assert injected_profiles(mutate(client, review("quiet", {keys.INJECT: "logging"}))) == []
    assert client.get("/readyz").json()["namespaceCache"] == "synced"


def test_a_namespace_labelled_after_startup_is_seen_through_the_watch(wired):
    client, fake, cache = wired["client"], wired["fake"], wired["cache"]
    fake.add_namespace("late")
    wait_until(lambda: cache.cached("late") is not None, "the new namespace is in the cache")
    assert injected_profiles(mutate(client, review("late"))) == []
    fake.modify_namespace("late", {keys.NAMESPACE_INJECT: "enabled"})
    wait_until(lambda: cache.cached("late").labels.get(keys.NAMESPACE_INJECT) == "enabled", "the label is seen")
    assert injected_profiles(mutate(client, review("late"))) == ["logging"]  # the cluster default


def test_unreachable_api_on_a_cache_miss_still_answers_with_a_warning(wired):
    client, fake = wired["client"], wired["fake"]
    fake.go_down()
    annotated = mutate(client, review("unseen", {keys.INJECT: "logging"}))
    assert injected_profiles(annotated) == ["logging"]
    assert any("could not be read" in w for w in annotated["warnings"])
    bare = mutate(client, review("unseen-too"))
    assert bare["allowed"] is True and "patch" not in bare
    assert any("could not be read" in w for w in bare["warnings"])


def test_decisions_become_events_on_the_pods_owner(wired):
    client, fake = wired["client"], wired["fake"]
    mutate(client, review("shop"))
    mutate(client, review("plain", {keys.INJECT: "nope"}))
    mutate(client, review("plain"))  # not requested: no event
    wait_until(lambda: len(fake.events) >= 2, "two events were posted")
    time.sleep(0.2)
    by_reason = {body["reason"]: (ns, body) for ns, body in fake.events}
    assert set(by_reason) == {"Injected", "InjectionSkipped"}
    ns, injected = by_reason["Injected"]
    assert ns == "shop" and injected["regarding"]["kind"] == "ReplicaSet" and "metrics" in injected["note"]
    assert by_reason["InjectionSkipped"][1]["type"] == "Warning"  # the unknown profile is warned about


def test_serve_with_namespace_lookup_and_events_uses_the_kubeconfig_cluster(fake, tmp_path: Path):
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    certs = write_cert_bundle(tmp_path / "certs", "sidecar-injector", "sidecar-injector", extra_ips=["127.0.0.1"])
    ca, port = ca_context(certs.ca_cert), free_port()
    proc = start_server(
        [
            "--cert-file",
            str(certs.cert),
            "--key-file",
            str(certs.key),
            "--metrics-port",
            "0",
            "--drain-seconds",
            "0",
            "--namespace-lookup",
            "--events",
            "--default-profiles",
            "logging",
        ],
        tmp_path / "stderr",
        ca=ca,
        port=port,
        env=server_env(KUBECONFIG=str(kubeconfig)),
    )
    try:
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ca, timeout=10, trust_env=False) as client:
            sni = {"sni_hostname": SERVICE_DNS}
            wait_until(
                lambda: client.get("/readyz", extensions=sni).json().get("namespaceCache") == "synced",
                "the server's namespace cache is synced",
            )
            resp = client.post("/mutate", json=review("shop"), extensions=sni)
            assert injected_profiles(resp.json()["response"]) == ["metrics"]
            wait_until(lambda: any(body["reason"] == "Injected" for _, body in fake.events), "an event is posted")
    finally:
        stop(proc)
    assert proc.returncode == 0, (tmp_path / "stderr").read_text()
