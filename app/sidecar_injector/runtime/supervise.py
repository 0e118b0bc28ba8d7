"""One supervisor for every long-running job of the server.

The certificate and profile reloader, each informer (namespaces, profile resources), the
event sender, the profile status writer and its Lease election, the metrics listener and
the memory trimmer run for the life of the process. Each handles the failures it expects
(an API server that is down, a broken profile file) itself; what it does not expect — a
bug, an error of a kind nobody thought of — ends its run, and then the :class:`Supervisor`:

* logs it with its traceback and counts it in
  ``sidecar_injector_background_job_failures_total{job}``;
* starts the job again after a capped exponential backoff (with jitter);
* after ``failure_threshold`` failures in a row (runs shorter than ``healthy_after``
  seconds), marks the job failing — ``sidecar_injector_background_job_failing{job}`` is 1
  and ``/readyz`` answers 503 naming the job — so that a broken replica leaves the Service
  (a dead reloader would otherwise serve an expired certificate weeks later). A run that
  lasts ``healthy_after`` seconds clears it.

Asynchronous jobs (a :data:`~sidecar_injector.runtime.interfaces.Background`) are wrapped
with :meth:`Supervisor.supervise`; thread loops get their thread target from
:meth:`Supervisor.thread_target`. A job that returns normally has finished and is not
started again.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sidecar_injector.runtime.interfaces import Background
from sidecar_injector.runtime.logs import get_logger

if TYPE_CHECKING:
    from sidecar_injector.runtime.metrics import Metrics

#: failures in a row after which a job turns readiness off
FAILURE_THRESHOLD = 5
#: a run that lasts this long without failing counts as healthy again (seconds)
HEALTHY_AFTER_SECONDS = 60.0
BACKOFF_INITIAL_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0


@dataclass
class _JobState:
    name: str
    #: failures in a row (runs that ended in an exception before ``healthy_after``)
    streak: int = 0
    #: when the current run started (the supervisor's clock), None when not running
    started: float | None = None
    last_error: str = ""
    #: the failure threshold was reached and no run has lasted ``healthy_after`` since
    failing: bool = False


class Supervisor:
    """Restarts failed background jobs with backoff, counts their failures, reports the ones that keep failing.

    Thread-safe: jobs run in the event loop and in threads; ``/readyz`` reads :meth:`failing`.
    """

    def __init__(
        self,
        metrics: Metrics | None = None,
        *,
        failure_threshold: int = FAILURE_THRESHOLD,
        healthy_after: float = HEALTHY_AFTER_SECONDS,
        backoff_initial: float = BACKOFF_INITIAL_SECONDS,
        backoff_max: float = BACKOFF_MAX_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._metrics = metrics
        self.failure_threshold = failure_threshold
        self.healthy_after = healthy_after
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._clock = clock
        self._lock = threading.Lock()
        self._jobs: dict[str, _JobState] = {}
        self._log = get_logger()

    # -- what readiness reads ------------------------------------------------------------------

    def failing(self) -> dict[str, str]:
        """The jobs past the failure threshold, with why: ``{job: "failed 5 times in a row; last: ..."}``."""
        with self._lock:
            self._refresh()
            return {
                name: f"failed {state.streak} times in a row; last: {state.last_error}"
                for name, state in sorted(self._jobs.items())
                if state.failing
            }

    def states(self) -> dict[str, str]:
        """Every job known so far: ``ok``, ``restarting after N failures (last: ...)`` or ``failing: ...``."""
        failing = self.failing()
        with self._lock:
            states = {}
            for name, state in sorted(self._jobs.items()):
                if name in failing:
                    states[name] = "failing: " + failing[name]
                elif state.streak:
                    states[name] = f"restarting after {state.streak} failure(s) (last: {state.last_error})"
                else:
                    states[name] = "ok"
            return states

    def _refresh(self) -> None:
        """A run that has lasted ``healthy_after`` clears its job's streak (called with the lock held)."""
        now = self._clock()
        for state in self._jobs.values():
            if state.streak and state.started is not None and now - state.started >= self.healthy_after:
                state.streak = 0
                state.failing = False
                if self._metrics is not None:
                    self._metrics.background_job_failing.labels(state.name).set(0)

    # -- bookkeeping ---------------------------------------------------------------------------------

    def register(self, name: str) -> None:
        """Know the job (so its metrics read 0 before any failure)."""
        with self._lock:
            if name in self._jobs:
                return
            self._jobs[name] = _JobState(name)
        if self._metrics is not None:
            self._metrics.background_job_failures.labels(name)
            self._metrics.background_job_failing.labels(name).set(0)

    def _started(self, name: str) -> None:
        with self._lock:
            self._refresh()
            self._jobs[name].started = self._clock()

    def _finished(self, name: str) -> None:
        with self._lock:
            self._refresh()
            self._jobs[name].started = None

    def failed(self, name: str, exc: BaseException) -> float:
        """Log and count a failure of ``name``; the delay before its next run (seconds)."""
        self.register(name)
        error = f"{type(exc).__name__}: {exc}"[:300]
        with self._lock:
            self._refresh()
            state = self._jobs[name]
            lasted = self._clock() - state.started if state.started is not None else 0.0
            state.streak = 1 if lasted >= self.healthy_after else state.streak + 1
            state.started = None
            state.last_error = error
            newly_failing = not state.failing and state.streak >= self.failure_threshold
            state.failing = state.failing or newly_failing
            streak = state.streak
        delay = self.delay(streak)
        self._log.error(
            f"background job {name} failed; restarting it",
            exc_info=(type(exc), exc, exc.__traceback__),
            extra={"job": name, "failures_in_a_row": streak, "restart_in_s": round(delay, 3)},
        )
        if self._metrics is not None:
            self._metrics.background_job_failures.labels(name).inc()
            if newly_failing:
                self._metrics.background_job_failing.labels(name).set(1)
        if newly_failing:
            self._log.error(
                f"background job {name} keeps failing: readiness is off until it runs for {self.healthy_after:g} s",
                extra={"job": name, "failures_in_a_row": streak, "error": error},
            )
        return delay

    def delay(self, streak: int) -> float:
        """Capped exponential backoff with jitter (half fixed, half random) after ``streak`` failures."""
        base = min(self.backoff_max, self.backoff_initial * 2 ** min(max(streak, 1) - 1, 32))
        return base / 2 + random.uniform(0, base / 2)

    # -- running jobs ------------------------------------------------------------------------------

    def supervise(self, name: str, job: Background) -> Background:
        """``job`` as a background job that is started again, after a backoff, whenever it raises."""
        self.register(name)

        async def supervised(stop: asyncio.Event) -> None:
            while not stop.is_set():
                self._started(name)
                try:
                    await job(stop)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if stop.is_set():
                        return
                    delay = self.failed(name, exc)
                    try:
                        await asyncio.wait_for(stop.wait(), delay)
                    except TimeoutError:
                        continue
                    return
                else:
                    self._finished(name)
                    return

        return supervised

    def thread_target(self, name: str, target: Callable[[], None], stopping: threading.Event) -> Callable[[], None]:
        """A thread target: ``target`` until it returns or ``stopping`` is set, run again after a backoff when it raises."""
        self.register(name)

        def run() -> None:
            while not stopping.is_set():
                self._started(name)
                try:
                    target()
                except Exception as exc:
                    if stopping.is_set():
                        return
                    stopping.wait(self.failed(name, exc))
                else:
                    self._finished(name)
                    return

        return run
