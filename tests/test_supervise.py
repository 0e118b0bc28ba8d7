"""The supervisor of the background jobs (runtime/supervise.py, issue 19 item 3): a job that
raises is logged with its traceback, counted, restarted after a backoff; one that keeps
failing turns /readyz false and is named in /readyz?verbose."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from sidecar_injector.profiles.loading import builtin_profiles
from sidecar_injector.runtime.interfaces import Lifecycle
from sidecar_injector.runtime.metrics import Metrics
from sidecar_injector.runtime.settings import Settings
from sidecar_injector.runtime.supervise import Supervisor
from sidecar_injector.webhook.app import create_app


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fast_supervisor(
    metrics: Metrics | None = None, clock: Callable[[], float] = time.monotonic, **options: float
) -> Supervisor:
    """A supervisor that restarts at once (backoff 0) and gives up after 3 failures in a row."""
    settings = {"failure_threshold": 3, "healthy_after": 60.0, "backoff_initial": 0.0, "backoff_max": 0.0, **options}
    return Supervisor(metrics, clock=clock, **settings)  # type: ignore[arg-type]


def failures(metrics: Metrics, job: str) -> float:
    return metrics.registry.get_sample_value("sidecar_injector_background_job_failures_total", {"job": job}) or 0.0


def failing_gauge(metrics: Metrics, job: str) -> float | None:
    return metrics.registry.get_sample_value("sidecar_injector_background_job_failing", {"job": job})


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_an_async_job_that_raises_is_logged_counted_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    supervisor = fast_supervisor(metrics)
    runs = []

    async def scenario() -> None:
        stop, third = asyncio.Event(), asyncio.Event()

        async def job(stop: asyncio.Event) -> None:
            runs.append(1)
            if len(runs) < 3:
                raise RuntimeError(f"boom {len(runs)}")
            third.set()
            await stop.wait()

        task = asyncio.create_task(supervisor.supervise("reloader", job)(stop))
        await asyncio.wait_for(third.wait(), 10)
        stop.set()
        await asyncio.wait_for(task, 5)

    with caplog.at_level(logging.ERROR, logger="sidecar_injector"):
        asyncio.run(scenario())
    assert len(runs) == 3
    assert failures(metrics, "reloader") == 2
    failed = [r for r in caplog.records if "background job reloader failed" in r.getMessage()]
    assert len(failed) == 2 and all(r.exc_info and "boom" in str(r.exc_info[1]) for r in failed), caplog.records
    assert supervisor.failing() == {}  # 2 < the threshold of 3
    assert "restarting after 2 failure(s)" in supervisor.states()["reloader"]


def test_a_job_that_returns_is_not_restarted() -> None:
    supervisor = fast_supervisor()
    runs = []

    async def job(stop: asyncio.Event) -> None:
        runs.append(1)

    asyncio.run(supervisor.supervise("memory-trim", job)(asyncio.Event()))
    assert runs == [1]
    assert supervisor.states() == {"memory-trim": "ok"}


def test_a_thread_job_that_keeps_failing_turns_failing_after_the_threshold_and_recovers_after_a_healthy_run() -> None:
    metrics = Metrics()
    clock = FakeClock()
    supervisor = fast_supervisor(metrics, clock)
    stopping = threading.Event()
    runs: list[int] = []
    healthy = threading.Event()

    def target() -> None:
        runs.append(1)
        if len(runs) <= 4:
            raise ValueError("a bug")
        healthy.set()
        stopping.wait()

    thread = threading.Thread(target=supervisor.thread_target("event-sender", target, stopping), daemon=True)
    thread.start()
    assert healthy.wait(10)
    assert failures(metrics, "event-sender") == 4
    assert failing_gauge(metrics, "event-sender") == 1
    assert list(supervisor.failing()) == ["event-sender"]
    assert "failed 4 times in a row; last: ValueError: a bug" in supervisor.failing()["event-sender"]
    clock.now += 60.0  # the fifth run has lasted healthy_after
    assert supervisor.failing() == {}
    assert failing_gauge(metrics, "event-sender") == 0
    assert supervisor.states() == {"event-sender": "ok"}
    stopping.set()
    thread.join(5)
    assert not thread.is_alive()


def test_failures_spread_over_healthy_runs_never_reach_the_threshold() -> None:
    clock = FakeClock()
    supervisor = fast_supervisor(clock=clock)
    supervisor.register("informer")
    for _ in range(10):
        supervisor._started("informer")
        clock.now += 61.0  # each run lasted longer than healthy_after
        supervisor.failed("informer", RuntimeError("rare"))
    assert supervisor.failing() == {}


def test_backoff_grows_exponentially_and_is_capped() -> None:
    supervisor = Supervisor(backoff_initial=1.0, backoff_max=8.0)
    for streak, base in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 8.0), (100, 8.0)):
        delay = supervisor.delay(streak)
        assert base / 2 <= delay <= base, (streak, delay)


def test_readyz_is_false_while_a_job_keeps_failing_and_verbose_names_it() -> None:
    supervisor = fast_supervisor()
    lifecycle = Lifecycle(jobs=supervisor)
    supervisor.register("reloader")
    supervisor.register("namespace-informer")
    with TestClient(create_app(Settings(), builtin_profiles(), lifecycle=lifecycle)) as client:
        assert client.get("/readyz").status_code == 200
        verbose = client.get("/readyz?verbose").json()
        assert verbose["backgroundJobs"] == {"namespace-informer": "ok", "reloader": "ok"}
        for _ in range(3):
            supervisor._started("reloader")
            supervisor.failed("reloader", OSError("the certificate folder is gone"))
        answer = client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json() == {"status": "failing", "failingJobs": ["reloader"]}
        verbose = client.get("/readyz?verbose").json()
        assert "OSError: the certificate folder is gone" in verbose["failingJobs"]["reloader"]
