"""Prometheus metrics: what each admission adds to which series."""

from __future__ import annotations

import base64
import copy
from typing import Any

import jsonpatch
import orjson
import pytest
from fastapi.testclient import TestClient

import sidecar_injector.webhook.endpoints
from sidecar_injector.profiles.loading import builtin_profiles
from sidecar_injector.runtime.metrics import Metrics
from sidecar_injector.runtime.settings import Settings
from sidecar_injector.webhook.app import create_app


def review(pod: dict[str, Any], uid: str = "u-1") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": "shop",
            "object": pod,
        },
    }


def pod(inject: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"generateName": "web-"}
    if inject is not None:
        meta["annotations"] = {"sidecar.io/inject": inject}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
    }


@pytest.fixture
def client_and_metrics():
    metrics = Metrics()
    with TestClient(create_app(Settings(), builtin_profiles(), metrics=metrics)) as client:
        yield client, metrics


def value(metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_an_injection_counts_the_request_the_profile_and_its_latency(client_and_metrics):
    client, metrics = client_and_metrics
    client.post("/mutate", json=review(pod("logging,metrics")))
    assert value(metrics, "sidecar_injector_admission_requests_total", outcome="injected") == 1
    assert value(metrics, "sidecar_injector_injections_total", profile="logging", outcome="injected") == 1
    assert value(metrics, "sidecar_injector_injections_total", profile="metrics", outcome="injected") == 1
    assert value(metrics, "sidecar_injector_decision_duration_seconds_count") == 1
    assert value(metrics, "sidecar_injector_profiles_loaded") == 8


def test_unknown_profiles_share_one_label_so_pod_authors_cannot_explode_cardinality(client_and_metrics):
    client, metrics = client_and_metrics
    for i in range(5):
        client.post("/mutate", json=review(pod(f"logging,made-up-{i}")))
    assert value(metrics, "sidecar_injector_injections_total", profile="_unknown", outcome="skipped") == 5
    assert value(metrics, "sidecar_injector_admission_warnings_total") == 5


def test_reinvocation_counts_as_already_injected_and_a_skip(client_and_metrics):
    client, metrics = client_and_metrics
    first = pod("logging")
    answer = client.post("/mutate", json=review(first)).json()["response"]
    patched = jsonpatch.apply_patch(copy.deepcopy(first), orjson.loads(base64.b64decode(answer["patch"])))
    client.post("/mutate", json=review(patched))
    assert value(metrics, "sidecar_injector_injections_total", profile="logging", outcome="already_injected") == 1
    assert value(metrics, "sidecar_injector_skips_total", reason="already-injected") == 1


def test_skips_are_counted_by_reason(client_and_metrics):
    client, metrics = client_and_metrics
    client.post("/mutate", json=review(pod(None)))
    client.post("/mutate", json=review(pod("false")))
    assert value(metrics, "sidecar_injector_skips_total", reason="not-requested") == 1
    assert value(metrics, "sidecar_injector_skips_total", reason="opted-out") == 1
    assert value(metrics, "sidecar_injector_admission_requests_total", outcome="skipped") == 2


def test_denials_bad_requests_and_errors_each_have_their_outcome(monkeypatch):
    metrics = Metrics()
    with TestClient(create_app(Settings(strict=True), builtin_profiles(), metrics=metrics)) as client:
        client.post("/mutate", json=review(pod("nope")))
        client.post("/mutate", content=b"[", headers={"Content-Type": "application/json"})

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("bug")

        monkeypatch.setattr(sidecar_injector.webhook.endpoints, "decide", broken)
        assert client.post("/mutate", json=review(pod("logging"))).status_code == 500
    assert value(metrics, "sidecar_injector_admission_requests_total", outcome="denied") == 1
    assert value(metrics, "sidecar_injector_injections_total", profile="_unknown", outcome="denied") == 1
    assert value(metrics, "sidecar_injector_admission_requests_total", outcome="bad_request") == 1
    assert value(metrics, "sidecar_injector_admission_requests_total", outcome="error") == 1


def test_two_apps_keep_separate_numbers():
    one, two = Metrics(), Metrics()  # each its own registry, never prometheus_client's global one
    create_app(Settings(), builtin_profiles(), metrics=two)
    with TestClient(create_app(Settings(), builtin_profiles(), metrics=one)) as client:
        client.post("/mutate", json=review(pod("logging")))
    assert value(one, "sidecar_injector_admission_requests_total", outcome="injected") == 1
    assert value(two, "sidecar_injector_admission_requests_total", outcome="injected") == 0


# -- bounded label values (issue 19, item 5) ------------------------------------------------------------


def _injected(*names: str) -> Any:
    from sidecar_injector.core.decision import Decision

    return Decision("injected", "injected", "injected", requested=names, injected=names)


def _injections(metrics: Metrics) -> dict[str, float]:
    return {
        sample.labels["profile"]: sample.value
        for family in metrics.registry.collect()
        if family.name == "sidecar_injector_injections"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels["outcome"] == "injected"
    }


def test_namespaced_sidecarprofile_names_share_one_label_and_cluster_scoped_names_keep_theirs():
    from sidecar_injector.profiles.loading import ProfileSet

    builtin = builtin_profiles()
    logging_profile = builtin["logging"]
    profiles = ProfileSet(
        {"logging": logging_profile, "audit-team-a": logging_profile, "trace": logging_profile},
        {
            "logging": "built-in",
            "audit-team-a": "SidecarProfile shop/audit-team-a",
            "trace": "ClusterSidecarProfile trace",
        },
    )
    metrics = Metrics()
    metrics.observe_decision(_injected("logging", "audit-team-a", "trace"), profiles, 0.001)
    assert _injections(metrics) == {"logging": 1, "_namespaced": 1, "trace": 1}


def test_profile_label_values_are_capped_with_an_other_bucket():
    from sidecar_injector.runtime import metrics as metrics_module

    metrics = Metrics()
    names = [f"p{n}" for n in range(metrics_module.MAX_PROFILE_LABELS + 50)]
    known = set(names)
    for name in names:
        metrics.observe_decision(_injected(name), known, 0.001)
    counted = _injections(metrics)
    assert len(counted) == metrics_module.MAX_PROFILE_LABELS + 1
    assert counted["_other"] == 50


def test_dropped_log_lines_are_a_metric_by_level():
    import logging

    from sidecar_injector.runtime.logs import LogQueue

    metrics = Metrics()

    def dropped(level: str) -> float:
        value = metrics.registry.get_sample_value("sidecar_injector_log_lines_dropped_total", {"level": level})
        assert value is not None
        return value

    before = dropped("warning")
    full = LogQueue(interval=60, max_pending=0, urgent_reserve=0)
    for _ in range(3):
        full.put_nowait(logging.makeLogRecord({"msg": "x", "levelno": logging.WARNING}))
    assert dropped("warning") == before + 3
