"""Kubernetes Events about injections: what is recorded, about which object, and how it is sent.

The recorder posts through the official client to ``kube_fake_api.FakeKubeApi``, which
validates each Event as the API server's events.k8s.io/v1 validation does (required
fields, lengths, the MicroTime format of ``eventTime``) before accepting it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kube_fake_api import MICRO_TIME, FakeKubeApi
from sidecar_injector.cluster.events import (
    MAX_NOTE_BYTES,
    REPORTING_CONTROLLER,
    EventRecorder,
    event_note,
    event_target,
    should_record,
)
from sidecar_injector.cluster.kube import new_api_client
from sidecar_injector.core.decision import REASONS, Decision
from sidecar_injector.runtime.metrics import Metrics
from waiting import wait_until

RS_OWNER = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f", "uid": "rs-uid", "controller": True}


def pod(name: str | None = None, generate: str | None = "web-7d9f-", owners: list[Any] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"annotations": {"sidecar.io/inject": "logging"}}
    if name:
        metadata["name"] = name
    if generate:
        metadata["generateName"] = generate
    if owners is not None:
        metadata["ownerReferences"] = owners
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
    }


INJECTED = Decision(
    "injected", "injected", "injected logging, metrics", requested=("logging", "metrics"), injected=("logging", "metrics")
)


# -- what an Event is about --------------------------------------------------------------------


def test_the_target_is_the_controller_owner_in_the_pods_namespace():
    other = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "cm-uid"}
    assert event_target(pod(owners=[other, RS_OWNER]), "shop") == {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": "web-7d9f",
        "uid": "rs-uid",
        "namespace": "shop",
    }


def test_without_a_controller_the_first_owner_is_the_target():
    first = {"apiVersion": "batch/v1", "kind": "Job", "name": "nightly", "uid": "job-uid"}
    second = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "cm-uid"}
    assert event_target(pod(owners=[first, second]), "ops")["name"] == "nightly"


def test_without_owners_a_named_pod_is_its_own_target():
    assert event_target(pod(name="debug", generate=None), "shop") == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "debug",
        "namespace": "shop",
    }


def test_an_unnamed_pod_without_owners_has_no_target():
    assert event_target(pod(generate="web-"), "shop") is None


def test_a_cluster_scoped_node_owner_is_not_a_target():
    node = {"apiVersion": "v1", "kind": "Node", "name": "node-1", "uid": "n", "controller": True}
    assert event_target(pod(name="etcd-node-1", owners=[node]), "infra")["kind"] == "Pod"


@pytest.mark.parametrize("owners", ["nope", [None, {"kind": "ReplicaSet"}, {"apiVersion": "apps/v1", "name": 3}]])
def test_malformed_owner_references_are_ignored(owners):
    assert event_target(pod(name="p", owners=owners), "shop")["kind"] == "Pod"
    assert event_target(pod(owners=owners), "shop") is None


@pytest.mark.parametrize("bad", [None, [], "pod", {"metadata": "x"}])
def test_a_malformed_pod_or_no_namespace_has_no_target(bad):
    assert event_target(bad, "shop") is None
    assert event_target(pod(name="p"), "") is None


# -- which decisions are recorded ----------------------------------------------------------------


@pytest.mark.parametrize(
    "decision, expected",
    [
        (INJECTED, True),
        (Decision("denied", "unknown-profiles", "unknown", requested=("nope",)), True),
        (Decision("denied", "conflicts", "conflicts", requested=("logging",)), True),
        (Decision("skipped", "no-known-profiles", "none exist", requested=("nope",)), True),
        (Decision("skipped", "unsupported-os", "windows", requested=("logging",)), True),
        (Decision("skipped", "annotations-too-large", "too large", requested=("logging",)), True),
        (Decision("skipped", "invalid-pod", "bad spec", requested=("logging",)), True),
        (Decision("skipped", "not-requested", "no annotation"), False),
        (Decision("skipped", "operation-not-create", "UPDATE"), False),
        (Decision("skipped", "excluded-namespace", "kube-system"), False),
        (Decision("skipped", "not-a-pod", "Deployment"), False),
        (Decision("skipped", "opted-out", "false"), False),
        (Decision("skipped", "already-injected", "again", requested=("logging",)), False),
        (Decision("skipped", "invalid-pod", "metadata is not a map"), False),
    ],
)
def test_only_injections_denials_and_skips_of_pods_that_asked_are_recorded(decision, expected):
    assert should_record(decision) is expected
    assert should_record(decision, dry_run=True) is False


def test_every_skip_reason_of_the_core_has_a_recording_rule():
    """Of a pod that asked for profiles, only the skips that say it did not really ask (or has them
    already) are silent; every other reason of the core — a new one included — is recorded."""
    silent = {reason for reason in REASONS if not should_record(Decision("skipped", reason, "m", requested=("logging",)))}
    assert silent == {
        "operation-not-create",
        "not-a-pod",
        "excluded-namespace",
        "not-requested",
        "opted-out",
        "already-injected",
    }
    assert "invalid-values" in REASONS and "invalid-values" not in silent  # a Deployment's skipped sidecar is seen


def test_the_note_names_the_pod_and_fits_the_api_limit():
    decision = Decision(
        "skipped",
        "no-known-profiles",
        "none of the requested profiles exist",
        requested=("x",),
        warnings=("sidecar-injector: unknown sidecar profile(s) x",),
    )
    assert event_note(decision, pod()) == (
        "pod web-7d9f-*: none of the requested profiles exist; unknown sidecar profile(s) x"
    )
    huge = Decision("denied", "conflicts", "é" * 5000, requested=("logging",))
    note = event_note(huge, pod(name="p"))
    assert len(note.encode()) <= MAX_NOTE_BYTES and note.endswith("...")


# -- sending -------------------------------------------------------------------------------------


@pytest.fixture
def make_recorder(fake: FakeKubeApi) -> Iterator[Callable[..., EventRecorder]]:
    recorders: list[EventRecorder] = []

    def make(**options: Any) -> EventRecorder:
        recorder = EventRecorder(
            new_api_client(fake.configuration()), "sidecar-injector-5f7b9-x2x4q", request_timeout_seconds=2, **options
        )
        recorders.append(recorder)
        return recorder

    yield make
    for recorder in recorders:
        recorder.stop(timeout=2)


def test_an_injection_is_posted_as_an_events_k8s_io_v1_event(fake, make_recorder):
    metrics = Metrics()
    recorder = make_recorder(metrics=metrics)
    recorder.start()

    assert recorder.record(INJECTED, pod(owners=[RS_OWNER]), "shop") is True

    wait_until(lambda: fake.events, what="the event")
    namespace, event = fake.events[0]
    assert namespace == "shop"
    assert event["apiVersion"] == "events.k8s.io/v1" and event["kind"] == "Event"
    assert event["regarding"] == {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": "web-7d9f",
        "uid": "rs-uid",
        "namespace": "shop",
    }
    assert event["reason"] == "Injected" and event["type"] == "Normal" and event["action"] == "Inject"
    assert event["note"] == "pod web-7d9f-*: injected logging, metrics"
    assert event["reportingController"] == REPORTING_CONTROLLER == "sidecar.io/sidecar-injector"
    assert event["reportingInstance"] == "sidecar-injector-5f7b9-x2x4q"
    assert MICRO_TIME.match(event["eventTime"])
    assert event["metadata"]["name"].startswith("web-7d9f.")
    wait_until(lambda: recorder.sent == 1, what="the count")
    assert metrics.registry.get_sample_value("sidecar_injector_kubernetes_events_total", {"result": "sent"}) == 1


def test_denials_and_warnings_are_warning_events_and_skips_are_injection_skipped(fake, make_recorder):
    recorder = make_recorder()
    recorder.start()
    denied = Decision("denied", "unknown-profiles", "unknown sidecar profile(s) nope", requested=("nope",))
    warned = Decision(
        "injected",
        "injected",
        "injected logging",
        requested=("logging", "nope"),
        injected=("logging",),
        warnings=("sidecar-injector: unknown sidecar profile(s) nope",),
    )
    skipped = Decision("skipped", "unsupported-os", "windows pods are not injected", requested=("logging",))

    for decision in (denied, warned, skipped):
        assert recorder.record(decision, pod(name="p"), "shop")

    wait_until(lambda: len(fake.events) == 3, what="three events")
    summary = [(e["reason"], e["type"]) for _, e in fake.events]
    assert summary == [("InjectionSkipped", "Warning"), ("Injected", "Warning"), ("InjectionSkipped", "Normal")]


def test_an_instant_on_a_whole_second_is_still_a_valid_micro_time(fake, make_recorder):
    # the client writes datetimes with isoformat(), which drops a zero fraction
    recorder = make_recorder(clock=lambda: 1_700_000_000.0)
    recorder.start()
    recorder.record(INJECTED, pod(name="p"), "shop")
    wait_until(lambda: fake.events, what="the event the API server accepted")
    assert fake.events[0][1]["eventTime"].startswith("2023-11-14T22:13:20.00000")


def test_event_names_are_unique_valid_names(fake, make_recorder):
    recorder = make_recorder()
    recorder.start()
    long_owner = dict(RS_OWNER, name="w" * 250)
    for number in range(5):  # five pods: five notes, five Events (the same one again would be a series)
        recorder.record(INJECTED, pod(name=f"p{number}", owners=[long_owner]), "shop")
    wait_until(lambda: len(fake.events) == 5, what="five accepted events")
    names = {e["metadata"]["name"] for _, e in fake.events}
    assert len(names) == 5 and all(len(n) <= 253 for n in names)


def test_decisions_that_are_not_recorded_are_not_queued(fake, make_recorder):
    recorder = make_recorder()
    assert recorder.record(Decision("skipped", "not-requested", "none"), pod(name="p"), "shop") is False
    assert recorder.record(INJECTED, pod(name="p"), "shop", dry_run=True) is False
    assert recorder.record(INJECTED, pod(generate="web-"), "shop") is False  # nothing to point at
    assert recorder.dropped == 0


def test_a_full_queue_drops_and_counts_without_blocking(make_recorder):
    metrics = Metrics()
    recorder = make_recorder(max_queue=2, metrics=metrics)  # not started: nothing drains the queue

    results = [recorder.record(INJECTED, pod(name=f"p{i}"), "shop") for i in range(5)]

    assert results == [True, True, False, False, False]
    assert recorder.dropped == 3
    assert metrics.registry.get_sample_value("sidecar_injector_kubernetes_events_total", {"result": "dropped"}) == 3


def test_api_errors_are_logged_and_the_worker_carries_on(fake, make_recorder, caplog):
    recorder = make_recorder()
    recorder.start()
    fake.event_post_status = 500
    recorder.record(INJECTED, pod(name="first"), "shop")
    wait_until(lambda: recorder.failed == 1, what="the failure")
    warning = next(r for r in caplog.records if r.getMessage() == "could not send an event")
    assert warning.error.startswith("HTTP 500") and warning.regarding == "Pod/first"

    fake.event_post_status = None
    recorder.record(INJECTED, pod(name="second"), "shop")

    wait_until(lambda: recorder.sent == 1, what="the next event")
    assert recorder.running
    assert [e["regarding"]["name"] for _, e in fake.events] == ["second"]


def test_an_unreachable_api_server_fails_events_without_ending_the_worker(fake, make_recorder, caplog):
    recorder = make_recorder()
    recorder.start()
    fake.go_down()
    recorder.record(INJECTED, pod(name="lost"), "shop")
    wait_until(lambda: recorder.failed == 1, what="the failure")

    fake.come_up()
    recorder.record(INJECTED, pod(name="kept"), "shop")

    wait_until(lambda: recorder.sent == 1, what="the event after the outage")
    assert "could not send an event" in caplog.text


def test_stop_sends_what_is_queued(fake, make_recorder):
    recorder = make_recorder()
    for i in range(3):
        recorder.record(INJECTED, pod(name=f"p{i}"), "shop")
    recorder.start()

    recorder.stop(timeout=5)

    assert not recorder.running
    assert recorder.sent == 3 and len(fake.events) == 3
    assert recorder.record(INJECTED, pod(name="late"), "shop") is False
    assert recorder.dropped == 1


def test_stop_gives_up_on_an_unanswering_api_and_counts_the_rest_dropped(fake, make_recorder):
    fake.go_down()
    recorder = make_recorder()
    for i in range(3):
        recorder.record(INJECTED, pod(name=f"p{i}"), "shop")

    recorder.stop(timeout=0)  # never started: nothing can be sent

    assert recorder.dropped == 3 and recorder.sent == 0


# -- aggregation: series and the per-object rate limit (issue 19, item 5) ----------------------------------


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def sent_metric(metrics: Metrics, result: str) -> float | None:
    return metrics.registry.get_sample_value("sidecar_injector_kubernetes_events_total", {"result": result})


def test_the_same_event_again_is_one_event_with_a_series_count(fake, make_recorder):
    metrics, clock = Metrics(), Clock()
    recorder = make_recorder(metrics=metrics, monotonic=clock, series_interval_seconds=60)
    recorder.start()
    crash_looping = pod(owners=[RS_OWNER])  # every pod of the ReplicaSet: the same note

    recorder.record(INJECTED, crash_looping, "shop")
    wait_until(lambda: recorder.sent == 1, what="the first Event")
    recorder.record(INJECTED, crash_looping, "shop")
    wait_until(lambda: recorder.updated == 1, what="the series, written at the second occurrence")
    for _ in range(50):
        recorder.record(INJECTED, crash_looping, "shop")
    wait_until(lambda: recorder.aggregated == 51, what="the occurrences counted")

    assert len(fake.events) == 1 and recorder.sent == 1
    assert fake.events[0][1]["series"]["count"] == 2
    assert recorder.updated == 1  # the other 50 within the interval: counted in memory only
    clock.now += 61  # the interval has passed: the next quiet moment writes the count
    recorder.record(INJECTED, crash_looping, "shop")
    wait_until(lambda: fake.events[0][1]["series"]["count"] == 53, what="the count written")
    assert MICRO_TIME.match(fake.events[0][1]["series"]["lastObservedTime"])
    assert sent_metric(metrics, "sent") == 1 and sent_metric(metrics, "aggregated") == 52


def test_a_different_note_reason_or_object_is_another_event(fake, make_recorder):
    recorder = make_recorder(resolve_owners=False)
    recorder.start()
    recorder.record(INJECTED, pod(owners=[RS_OWNER]), "shop")
    recorder.record(INJECTED, pod(generate="api-5c8d-", owners=[RS_OWNER]), "shop")  # another note
    recorder.record(INJECTED, pod(owners=[dict(RS_OWNER, name="api-5c8d", uid="rs2")]), "shop")  # another object
    recorder.record(Decision("denied", "unknown-profiles", "unknown", requested=("x",)), pod(owners=[RS_OWNER]), "shop")
    wait_until(lambda: len(fake.events) == 4, what="four Events")
    assert recorder.aggregated == 0


def test_after_the_series_window_the_same_event_is_posted_anew(fake, make_recorder):
    clock = Clock()
    recorder = make_recorder(resolve_owners=False, monotonic=clock, series_window_seconds=360)
    recorder.start()
    recorder.record(INJECTED, pod(owners=[RS_OWNER]), "shop")
    wait_until(lambda: recorder.sent == 1, what="the first Event")
    clock.now += 361
    recorder.record(INJECTED, pod(owners=[RS_OWNER]), "shop")
    wait_until(lambda: recorder.sent == 2, what="a new Event after the window")
    assert len(fake.events) == 2 and recorder.aggregated == 0


def test_an_expired_event_starts_a_new_one(fake, make_recorder):
    recorder = make_recorder(resolve_owners=False)
    recorder.start()
    recorder.record(INJECTED, pod(owners=[RS_OWNER]), "shop")
    wait_until(lambda: recorder.sent == 1, what="the first Event")
    fake.events.clear()  # the API server dropped it (its TTL): the series write gets a 404
    recorder.record(INJECTED, pod(owners=[RS_OWNER]), "shop")
    wait_until(lambda: fake.event_patches, what="the series write")
    recorder.record(INJECTED, pod(owners=[RS_OWNER]), "shop")
    wait_until(lambda: recorder.sent == 2, what="a new Event")
    assert recorder.failed == 0


def test_each_object_is_rate_limited_and_the_rest_is_counted(fake, make_recorder):
    metrics, clock = Metrics(), Clock()
    recorder = make_recorder(
        metrics=metrics, resolve_owners=False, monotonic=clock, rate_limit_burst=3, rate_limit_refill_seconds=300
    )
    recorder.start()
    for number in range(10):  # ten different Events about one ReplicaSet
        recorder.record(INJECTED, pod(generate=f"web-{number}-", owners=[RS_OWNER]), "shop")
    recorder.record(INJECTED, pod(name="elsewhere"), "shop")  # another object has its own budget
    wait_until(lambda: recorder.sent + recorder.rate_limited == 11, what="every record handled")
    assert recorder.sent == 4 and recorder.rate_limited == 7
    assert sent_metric(metrics, "rate_limited") == 7
    clock.now += 300  # one more token
    recorder.record(INJECTED, pod(generate="web-late-", owners=[RS_OWNER]), "shop")
    wait_until(lambda: recorder.sent == 5, what="one more after the refill")


def test_the_series_and_buckets_are_bounded(fake, make_recorder):
    recorder = make_recorder(resolve_owners=False, max_tracked=5)
    recorder.start()
    for number in range(20):
        recorder.record(INJECTED, pod(name=f"p{number}"), "shop")
    wait_until(lambda: recorder.sent == 20, what="twenty Events")
    assert len(recorder._series) == 5 and len(recorder._buckets) == 5


# -- on the workload the user owns (issue 20, item 1(b)) --------------------------------------------------


def deployment_and_replicaset(fake: FakeKubeApi) -> dict[str, Any]:
    deployment = fake.put_object("apps/v1/deployments", {"metadata": {"name": "web", "namespace": "shop"}, "spec": {}})
    owner = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "uid": deployment["metadata"]["uid"],
        "controller": True,
    }
    replicaset = fake.put_object(
        "apps/v1/replicasets",
        {"metadata": {"name": "web-7d9f", "namespace": "shop", "ownerReferences": [owner]}, "spec": {}},
    )
    return {**RS_OWNER, "uid": replicaset["metadata"]["uid"], "deployment_uid": deployment["metadata"]["uid"]}


def test_an_event_about_a_deployments_pod_is_on_the_deployment(fake, make_recorder):
    metrics = Metrics()
    rs = deployment_and_replicaset(fake)
    recorder = make_recorder(metrics=metrics)
    recorder.start()
    rs_owner = {k: v for k, v in rs.items() if k != "deployment_uid"}
    for number in range(5):
        recorder.record(INJECTED, pod(generate=f"web-7d9f-{number}", owners=[rs_owner]), "shop")
    wait_until(lambda: recorder.sent == 5, what="five Events")
    assert {e["regarding"]["kind"] for _, e in fake.events} == {"Deployment"}
    assert fake.events[0][1]["regarding"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "namespace": "shop",
        "uid": rs["deployment_uid"],
    }
    assert len(fake.received(lambda r: r.path.endswith("/replicasets/web-7d9f"))) == 1  # cached
    assert metrics.registry.get_sample_value("sidecar_injector_event_owner_lookups_total", {"result": "cached"}) == 4


def test_an_event_about_a_cronjobs_pod_is_on_the_cronjob(fake, make_recorder):
    job_owner_of_job = {"apiVersion": "batch/v1", "kind": "CronJob", "name": "backup", "uid": "cj-uid", "controller": True}
    job = fake.put_object(
        "batch/v1/jobs", {"metadata": {"name": "backup-2903", "namespace": "ops", "ownerReferences": [job_owner_of_job]}}
    )
    job_owner = {"apiVersion": "batch/v1", "kind": "Job", "name": "backup-2903", "uid": job["metadata"]["uid"]}
    recorder = make_recorder()
    recorder.start()
    recorder.record(INJECTED, pod(generate="backup-2903-", owners=[dict(job_owner, controller=True)]), "ops")
    wait_until(lambda: fake.events, what="the Event")
    assert fake.events[0][1]["regarding"]["kind"] == "CronJob" and fake.events[0][1]["regarding"]["name"] == "backup"


@pytest.mark.parametrize("kind", ["StatefulSet", "DaemonSet"])
def test_statefulset_and_daemonset_pods_need_no_lookup(fake, make_recorder, kind):
    recorder = make_recorder()
    recorder.start()
    owner = {"apiVersion": "apps/v1", "kind": kind, "name": "db", "uid": "u", "controller": True}
    recorder.record(INJECTED, pod(generate="db-", owners=[owner]), "shop")
    wait_until(lambda: fake.events, what="the Event")
    assert fake.events[0][1]["regarding"]["kind"] == kind
    assert not fake.received(lambda r: r.method == "GET")


@pytest.mark.parametrize("case", ["not-found", "replaced", "no-owner", "forbidden"])
def test_without_a_readable_owner_the_event_stays_on_the_replicaset(fake, make_recorder, caplog, case):
    if case == "replaced":  # a ReplicaSet of that name, but not the pod's (another uid)
        deployment_and_replicaset(fake)
    elif case == "no-owner":  # a ReplicaSet made by hand
        fake.put_object("apps/v1/replicasets", {"metadata": {"name": "web-7d9f", "namespace": "shop"}, "spec": {}})
    elif case == "forbidden":  # the chart's RBAC without get on replicasets
        fake.go_down()
    recorder = make_recorder()
    if case == "forbidden":
        recorder.owners._timeout = 0.2  # type: ignore[union-attr]
    recorder.start()
    recorder.record(INJECTED, pod(owners=[RS_OWNER]), "shop")
    if case == "forbidden":
        wait_until(lambda: recorder.failed == 1, what="the lookup and the post, both failing")
        fake.come_up()
        recorder.record(INJECTED, pod(name="next", owners=[RS_OWNER]), "shop")
    wait_until(lambda: fake.events, what="the Event")
    assert fake.events[0][1]["regarding"]["kind"] == "ReplicaSet"
    if case in ("not-found", "forbidden"):
        assert "cannot read a ReplicaSet" in caplog.text
