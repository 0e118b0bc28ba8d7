"""An answer for every review (issue 19.2): a failure in any step of /mutate or /validate-profile
is a JSON 500 that is counted and logged with the review's uid, never the framework's plain-text 500.

Each test breaks one step (decode, namespace lookup, profile resolution, decide, Event,
metrics, encode) with a source or function whose method raises, and checks the answer,
the ``sidecar_injector_admission_requests{outcome="error"}`` count and the log line. Each
runs with a small review (decided on the event loop) and with one over the large-body
threshold (read, decoded and decided by a large-review worker). TestClient re-raises what
escapes the app, so an exception that got past the guard fails the test.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytest
from fastapi.testclient import TestClient

import sidecar_injector.webhook.endpoints
from sidecar_injector.core.inputs import NamespaceFacts
from sidecar_injector.profiles.loading import ProfileSet, builtin_profiles
from sidecar_injector.runtime.metrics import Metrics
from sidecar_injector.runtime.settings import Settings
from sidecar_injector.webhook.app import create_app

UID = "uid-of-the-broken-step"


class Broken(RuntimeError):
    """The injected failure."""


def _raise(*_args: Any, **_kwargs: Any) -> Any:
    raise Broken("injected")


class Namespaces:
    """A namespace source; ``broken`` names the method that raises."""

    synced = True

    def __init__(self, broken: str):
        self.broken = broken

    def cached(self, name: str) -> NamespaceFacts | None:
        if self.broken == "cached":
            _raise()
        return None

    def lookup(self, name: str) -> NamespaceFacts | None:
        if self.broken == "lookup":
            _raise()  # not NamespaceUnavailable: a bug, not an API outage
        return None


class Profiles:
    """A profile source whose lookups raise."""

    def profiles_for(self, namespace: str | None) -> ProfileSet:
        return _raise()

    def readiness(self) -> tuple[bool, str]:
        return True, "synced"

    def admission_problems(self, obj: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        return _raise()


class Events:
    def record(self, *_args: Any, **_kwargs: Any) -> bool:
        return _raise()


def pod_review(padding: int) -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "annotations": {"sidecar.io/inject": "logging", "padding": "x" * padding},
        },
        "spec": {"containers": [{"name": "app", "image": "example/app:1.0"}]},
    }
    return review(pod, {"group": "", "version": "v1", "kind": "Pod"})


def profile_review(padding: int) -> dict[str, Any]:
    profile = {
        "apiVersion": "sidecar.io/v1alpha1",
        "kind": "ClusterSidecarProfile",
        "metadata": {"name": "shipper", "annotations": {"padding": "x" * padding}},
        "spec": {"version": "1.0.0", "containers": [{"name": "shipper", "image": "example/shipper:1.0"}]},
    }
    return review(profile, {"group": "sidecar.io", "version": "v1alpha1", "kind": "ClusterSidecarProfile"})


def review(obj: dict[str, Any], kind: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": UID, "kind": kind, "operation": "CREATE", "namespace": "shop", "object": obj},
    }


#: a review well under, and one over, the large-body threshold of SETTINGS
SIZES = {"small": 0, "large": 4096}
SETTINGS = {"large_body_bytes": 2048}


def errors(metrics: Metrics) -> float:
    return metrics.requests.labels("error")._value.get()


def assert_json_500(resp: Any, metrics: Metrics, log: list[logging.LogRecord], doing: str, uid: str = UID) -> None:
    assert resp.status_code == 500, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {"error": f"internal error while {doing}; see the webhook's logs"}
    assert "injected" not in resp.text  # internals stay in the logs
    assert errors(metrics) == 1
    crashes = [r for r in log if r.levelno == logging.ERROR]
    assert len(crashes) == 1, [r.getMessage() for r in log]
    assert crashes[0].getMessage() == f"internal error while {doing}"
    assert crashes[0].uid == uid and crashes[0].exc_info and crashes[0].exc_info[0] is Broken  # type: ignore[attr-defined]


MUTATE_STEPS = [
    "decode",
    "namespace cache",
    "namespace lookup",
    "profile resolution",
    "decide",
    "event",
    "metrics",
    "encode",
]


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize("step", MUTATE_STEPS)
def test_a_failure_in_any_step_of_mutate_is_a_counted_json_500(
    step: str, size: int, monkeypatch: pytest.MonkeyPatch, decision_log: list[logging.LogRecord]
) -> None:
    endpoints = sidecar_injector.webhook.endpoints
    metrics = Metrics()
    parts: dict[str, Any] = {}
    if step == "decode":
        monkeypatch.setattr(endpoints, "_parse_review", _raise)
    elif step in ("namespace cache", "namespace lookup"):
        parts["namespaces"] = Namespaces("cached" if step == "namespace cache" else "lookup")
    elif step == "profile resolution":
        parts["profile_source"] = Profiles()
    elif step == "decide":
        monkeypatch.setattr(endpoints, "decide", _raise)
    elif step == "event":
        parts["events"] = Events()
    elif step == "metrics":
        monkeypatch.setattr(metrics, "observe_decision", _raise)
    elif step == "encode":
        monkeypatch.setattr(endpoints, "review_response", _raise)
    with TestClient(create_app(Settings(**SETTINGS), builtin_profiles(), metrics=metrics, **parts)) as client:
        resp = client.post("/mutate", json=pod_review(size))
        # the request's uid is not known before its body is decoded
        assert_json_500(resp, metrics, decision_log, "deciding", uid="" if step == "decode" else UID)


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize("step", ["decode", "profile source", "metrics", "encode"])
def test_a_failure_in_any_step_of_validate_profile_is_a_counted_json_500(
    step: str, size: int, monkeypatch: pytest.MonkeyPatch, decision_log: list[logging.LogRecord]
) -> None:
    endpoints = sidecar_injector.webhook.endpoints
    metrics = Metrics()
    parts: dict[str, Any] = {}
    if step == "decode":
        monkeypatch.setattr(endpoints, "_parse_review", _raise)
    elif step == "profile source":
        parts["profile_source"] = Profiles()
    elif step == "metrics":
        monkeypatch.setattr(metrics, "profile_validations", None)  # .labels() on None raises
    elif step == "encode":
        monkeypatch.setattr(endpoints, "validation_response", _raise)
    with TestClient(create_app(Settings(**SETTINGS), builtin_profiles(), metrics=metrics, **parts)) as client:
        resp = client.post("/validate-profile", json=profile_review(size))
        if step == "metrics":
            assert resp.status_code == 500 and errors(metrics) == 1
            assert [r.uid for r in decision_log if r.levelno == logging.ERROR] == [UID]  # type: ignore[attr-defined]
        else:
            assert_json_500(resp, metrics, decision_log, "validating", uid="" if step == "decode" else UID)


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_after_a_failure_the_next_review_is_answered(size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure frees what the review held (a large-review worker slot above all)."""
    calls = {"n": 0}
    real = sidecar_injector.webhook.endpoints.decide

    def broken_once(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        return _raise() if calls["n"] == 1 else real(*args, **kwargs)

    monkeypatch.setattr(sidecar_injector.webhook.endpoints, "decide", broken_once)
    with TestClient(create_app(Settings(**SETTINGS), builtin_profiles())) as client:
        assert client.post("/mutate", json=pod_review(size)).status_code == 500
        for _ in range(2):
            answer = client.post("/mutate", json=pod_review(size)).json()["response"]
            assert answer["allowed"] is True and "patch" in answer


def test_large_profile_reviews_are_judged_by_a_large_review_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """/validate-profile offloads large bodies as /mutate does: decoded and judged off the event loop."""
    import threading

    where: list[str] = []
    real = sidecar_injector.webhook.endpoints._parse_review

    def parse(*args: Any) -> Any:
        where.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(sidecar_injector.webhook.endpoints, "_parse_review", parse)
    with TestClient(create_app(Settings(**SETTINGS), builtin_profiles())) as client:
        for size in SIZES.values():
            answer = client.post("/validate-profile", json=profile_review(size)).json()["response"]
            assert answer["allowed"] is True, answer
    assert not where[0].startswith("large-review") and where[1].startswith("large-review"), where


def test_admissions_reach_their_endpoints_before_the_framework() -> None:
    """/mutate and /validate-profile are answered by the dispatcher's endpoints, with no
    framework layer around them; every other request (and method) goes to FastAPI."""
    import asyncio

    import httpx

    app = create_app(Settings(), builtin_profiles())
    framework_saw: list[str] = []
    framework = app.framework

    async def watched(scope: Any, receive: Any, send: Any) -> None:
        framework_saw.append(f"{scope['method']} {scope['path']}")
        await framework(scope, receive, send)

    app.framework = watched  # type: ignore[assignment]

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://webhook") as client:
            assert "patch" in (await client.post("/mutate", json=pod_review(0))).json()["response"]
            assert (await client.post("/validate-profile", json=profile_review(0))).json()["response"]["allowed"]
            assert (await client.get("/mutate")).status_code == 405
            assert (await client.get("/healthz")).status_code == 200

    asyncio.run(scenario())
    assert framework_saw == ["GET /mutate", "GET /healthz"]
