"""A failure injected into each long-running job of the server (issue 19, item 3): it is logged
with its traceback, counted in sidecar_injector_background_job_failures_total{job}, the job is
started again, and once it has failed past the threshold /readyz answers 503 naming it.

Each job is made to fail the way a bug would (a method raising an exception nobody expects),
under a supervisor that restarts at once (backoff 0) and gives up after 3 failures in a row.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kube_fake_api import FakeKubeApi
from sidecar_injector.cluster.events import EventRecorder
from sidecar_injector.cluster.kube import new_api_client
from sidecar_injector.cluster.namespaces import NamespaceCache
from sidecar_injector.cluster.profile_sources import ProfileResources
from sidecar_injector.core.decision import Decision
from sidecar_injector.profiles.loading import builtin_profiles
from sidecar_injector.runtime.interfaces import Lifecycle, ProfileStore
from sidecar_injector.runtime.metrics import Metrics
from sidecar_injector.runtime.settings import Settings
from sidecar_injector.runtime.supervise import Supervisor
from sidecar_injector.server.reload import Reloader
from sidecar_injector.webhook.app import create_app
from waiting import wait_until

THRESHOLD = 3
FAST_INFORMERS = {"backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.2, "request_timeout_seconds": 5}
FAST_ELECTION = {"lease_duration_seconds": 3, "renew_deadline_seconds": 2, "retry_period_seconds": 1}


class Bug(RuntimeError):
    """What a job was made to raise."""


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def supervisor(metrics: Metrics) -> Supervisor:
    return Supervisor(metrics, failure_threshold=THRESHOLD, healthy_after=3600, backoff_initial=0.0, backoff_max=0.0)


@pytest.fixture
def caplog_errors(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.ERROR, logger="sidecar_injector")
    return caplog


def failures(metrics: Metrics, job: str) -> float:
    return metrics.registry.get_sample_value("sidecar_injector_background_job_failures_total", {"job": job}) or 0.0


class Raising:
    """A callable that raises :class:`Bug` and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        raise Bug(f"injected failure #{self.calls}")


def assert_supervised(
    job: str, metrics: Metrics, supervisor: Supervisor, caplog: pytest.LogCaptureFixture, raising: Raising
) -> None:
    """Logged with its traceback, counted, started again, and /readyz off naming it."""
    wait_until(lambda: failures(metrics, job) >= THRESHOLD, what=f"{THRESHOLD} failures of {job}")
    assert raising.calls >= THRESHOLD  # started again after each failure
    logged = [r for r in caplog.records if r.getMessage() == f"background job {job} failed; restarting it"]
    assert logged, caplog.text
    assert logged[0].exc_info is not None and isinstance(logged[0].exc_info[1], Bug)
    assert "Traceback" in caplog.text and "injected failure #1" in caplog.text
    assert metrics.registry.get_sample_value("sidecar_injector_background_job_failing", {"job": job}) == 1
    with TestClient(create_app(Settings(), builtin_profiles(), lifecycle=Lifecycle(jobs=supervisor))) as client:
        answer = client.get("/readyz")
        assert answer.status_code == 503, answer.text
        assert job in answer.json()["failingJobs"]
        verbose = client.get("/readyz?verbose").json()
        assert "Bug: injected failure" in verbose["failingJobs"][job]


def test_the_reloader(tmp_path: Path, metrics, supervisor, caplog_errors) -> None:
    profiles_dir = tmp_path / "profiles"
    profiles_dir.mkdir()
    settings = Settings(profiles_dir=profiles_dir)
    reloader = Reloader(settings, ProfileStore(builtin_profiles()), metrics, None, check_interval=0.05, debounce_ms=10)
    raising = Raising()

    async def scenario() -> None:
        stop, counted = asyncio.Event(), asyncio.Event()

        async def check() -> None:
            if raising.calls >= THRESHOLD:  # the failures before this call have all been handled
                counted.set()
            raising()

        reloader.check = check  # type: ignore[method-assign]
        task = asyncio.create_task(supervisor.supervise("reloader", reloader.run)(stop))
        await asyncio.wait_for(counted.wait(), 30)
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    assert_supervised("reloader", metrics, supervisor, caplog_errors, raising)


def test_the_reloaders_polling_fallback(tmp_path: Path, metrics, supervisor, caplog_errors, monkeypatch) -> None:
    """The watcher broken, the periodic checks that replace it are supervised too."""
    settings = Settings(profiles_dir=tmp_path)
    reloader = Reloader(settings, ProfileStore(builtin_profiles()), metrics, None, check_interval=0.01)

    async def broken_watcher(*args: Any, **kwargs: Any) -> Any:  # as awatch: fails when first iterated
        raise OSError("inotify watch limit reached")
        yield

    monkeypatch.setattr("sidecar_injector.server.reload.awatch", broken_watcher)
    raising = Raising()

    async def scenario() -> None:
        stop, counted = asyncio.Event(), asyncio.Event()

        async def check() -> None:
            if raising.calls >= THRESHOLD:  # the failures before this call have all been handled
                counted.set()
            raising()

        reloader.check = check  # type: ignore[method-assign]
        task = asyncio.create_task(supervisor.supervise("reloader", reloader.run)(stop))
        await asyncio.wait_for(counted.wait(), 30)
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    assert "file watcher failed" in caplog_errors.text
    assert_supervised("reloader", metrics, supervisor, caplog_errors, raising)


@pytest.fixture
def stopping() -> Iterator[list[Callable[[], None]]]:
    stops: list[Callable[[], None]] = []
    yield stops
    for stop in stops:
        stop()


def test_the_namespace_informer(fake: FakeKubeApi, metrics, supervisor, caplog_errors, stopping) -> None:
    fake.add_namespace("shop")
    cache = NamespaceCache(new_api_client(fake.configuration()), supervisor=supervisor, **FAST_INFORMERS)
    raising = Raising()
    cache.replace = raising  # type: ignore[method-assign]  # the handler of every full list
    cache.start()
    stopping.append(cache.stop)
    assert_supervised("namespace-informer", metrics, supervisor, caplog_errors, raising)
    assert cache.running  # still there, trying


@pytest.mark.parametrize("kind", ["SidecarProfile", "ClusterSidecarProfile"])
def test_each_profile_resource_informer(fake: FakeKubeApi, metrics, supervisor, caplog_errors, stopping, kind) -> None:
    resources = ProfileResources(
        new_api_client(fake.configuration()),
        builtin_profiles,
        write_status=False,
        informer_options=FAST_INFORMERS,
        supervisor=supervisor,
    )
    informer = next(i for i in resources.informers if i.what == kind)
    raising = Raising()

    class BrokenHandler:
        replace = raising
        apply = raising

    informer._handler = BrokenHandler()  # type: ignore[assignment]
    resources.start()
    stopping.append(resources.stop)
    assert_supervised(f"{kind}-informer", metrics, supervisor, caplog_errors, raising)
    other = next(i for i in resources.informers if i.what != kind)
    wait_until(lambda: other.synced, what="the other kind, unaffected")


def test_the_event_sender(fake: FakeKubeApi, metrics, supervisor, caplog_errors, stopping) -> None:
    recorder = EventRecorder(new_api_client(fake.configuration()), "replica", metrics=metrics, supervisor=supervisor)
    raising = Raising()
    recorder._queue.get = raising  # type: ignore[method-assign]  # the worker loop itself breaks
    recorder.start()
    stopping.append(lambda: (delattr(recorder._queue, "get"), recorder.stop(timeout=1)))
    assert_supervised("event-sender", metrics, supervisor, caplog_errors, raising)


def test_the_event_sender_sends_again_once_the_failure_is_gone(fake: FakeKubeApi, metrics, supervisor, stopping) -> None:
    recorder = EventRecorder(new_api_client(fake.configuration()), "replica", metrics=metrics, supervisor=supervisor)
    real_get, raising = recorder._queue.get, Raising()

    def get_failing_twice(*args: Any, **kwargs: Any) -> Any:
        if raising.calls < 2:
            raising()
        return real_get(*args, **kwargs)

    recorder._queue.get = get_failing_twice  # type: ignore[method-assign]
    recorder.start()
    stopping.append(lambda: (delattr(recorder._queue, "get"), recorder.stop(timeout=1)))
    injected = Decision("injected", "injected", "injected logging", requested=("logging",), injected=("logging",))
    pod = {"metadata": {"name": "web", "namespace": "shop"}}
    assert recorder.record(injected, pod, "shop")
    wait_until(lambda: fake.events, what="the event, after two failures of the worker")
    assert failures(metrics, "event-sender") == 2
    assert supervisor.failing() == {}


def profile_resources_writing(fake: FakeKubeApi, supervisor: Supervisor, metrics: Metrics) -> ProfileResources:
    return ProfileResources(
        new_api_client(fake.configuration()),
        builtin_profiles,
        write_status=True,
        lease_namespace="sidecar-injector",
        identity="replica-a",
        informer_options=FAST_INFORMERS,
        election_options=FAST_ELECTION,
        metrics=metrics,
        supervisor=supervisor,
    )


def test_the_status_writer(fake: FakeKubeApi, metrics, supervisor, caplog_errors, stopping) -> None:
    fake.put_object("sidecar.io/v1alpha1/clustersidecarprofiles", {"metadata": {"name": "trace"}, "spec": {}})
    resources = profile_resources_writing(fake, supervisor, metrics)
    assert resources.writer is not None
    raising = Raising()
    resources.writer.write_all = raising  # type: ignore[method-assign]
    resources.start()
    stopping.append(resources.stop)
    assert_supervised("profile-status-writer", metrics, supervisor, caplog_errors, raising)


def test_the_status_writers_lease_election(fake: FakeKubeApi, metrics, supervisor, caplog_errors, stopping) -> None:
    resources = profile_resources_writing(fake, supervisor, metrics)
    assert resources.writer is not None
    raising = Raising()
    resources.writer._elector.step = raising  # type: ignore[method-assign]
    resources.start()
    stopping.append(resources.stop)
    assert_supervised("profile-status-election", metrics, supervisor, caplog_errors, raising)
    assert not resources.writer.leading


def test_a_thread_job_stops_promptly_while_waiting_to_restart(metrics) -> None:
    slow = Supervisor(metrics, backoff_initial=3600, backoff_max=3600)
    stopping = threading.Event()
    raising = Raising()
    thread = threading.Thread(target=slow.thread_target("event-sender", raising, stopping), daemon=True)
    thread.start()
    wait_until(lambda: raising.calls == 1, what="the first failure")
    stopping.set()
    thread.join(10)
    assert not thread.is_alive() and raising.calls == 1
