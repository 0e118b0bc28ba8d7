"""Leader election on a ``coordination.k8s.io`` Lease, judged on this process's monotonic clock.

What client-go's ``leaderelection`` does, and what the Python client's election did not:

* **Every call has a request timeout** shorter than the renew deadline, so a hung renew
  cannot outlive the leadership it is trying to keep.
* **Leadership ends on this process's own clock.** A renew that succeeded when it *started*
  at ``t`` keeps this replica the leader until ``t + renew_deadline`` on ``time.monotonic``
  — never on wall-clock time, which jumps, and never on the Lease's ``renewTime``, which
  another machine's clock wrote. A process frozen for longer (SIGSTOP, a stuck node, a long
  pause) wakes up no longer leading and writes nothing until it has renewed again.
* **Another holder's Lease expires by observation**: a replica takes the Lease only after it
  has seen the same record (holder, renewTime, resourceVersion) unchanged for the Lease's
  ``leaseDurationSeconds`` on its own clock. With ``renew_deadline < lease_duration`` the old
  leader has stopped before anyone else can start.
* Conflicts are settled by the API server: every write carries the ``resourceVersion`` it
  read, so of two replicas racing for an expired Lease exactly one wins (409 for the other).
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sidecar_injector.runtime.logs import get_logger

Clock = Callable[[], float]


def _micro_time() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class _Observed:
    """Another replica's Lease record as last seen, and when (this process's monotonic clock)."""

    record: tuple[str | None, str | None, str | None]
    since: float
    duration: float


class LeaseElector:
    """Acquires and renews one Lease; ``leading()`` says whether this replica may act now.

    ``run(stopping)`` loops until ``stopping`` is set: it tries to acquire or renew every
    ``retry_period`` seconds. ``on_change(leading)`` is called when leadership is gained or
    lost (lost also when the renew deadline passes without a successful renew).
    """

    def __init__(
        self,
        api: client.ApiClient,
        name: str,
        namespace: str,
        identity: str,
        *,
        lease_duration_seconds: float = 15.0,
        renew_deadline_seconds: float = 10.0,
        retry_period_seconds: float = 2.0,
        request_timeout_seconds: float | None = None,
        on_change: Callable[[bool], None] | None = None,
        clock: Clock = time.monotonic,
    ):
        if not 0 < retry_period_seconds < renew_deadline_seconds < lease_duration_seconds:
            raise ValueError("a Lease needs 0 < retry period < renew deadline < lease duration")
        self._leases = client.CoordinationV1Api(api)
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self._duration = lease_duration_seconds
        self._deadline = renew_deadline_seconds
        self._retry = retry_period_seconds
        # a call that started inside the deadline must end inside it: at most half of it
        limit = renew_deadline_seconds / 2
        self._timeout = min(request_timeout_seconds or limit, limit)
        self._on_change = on_change
        self._clock = clock
        self._log = get_logger()
        self._lock = threading.Lock()
        self._held_until: float | None = None  # monotonic; None: not the holder
        self._announced = False
        self._observed: _Observed | None = None
        self._holder_is_other = False  # the last attempt saw another replica's live Lease

    # -- what the user of the Lease asks ----------------------------------------------------------

    def leading(self) -> bool:
        with self._lock:
            return self._held_until is not None and self._clock() < self._held_until

    def remaining(self) -> float:
        """Seconds of leadership left (0 when not leading): a bound for any call made as the leader."""
        with self._lock:
            if self._held_until is None:
                return 0.0
            return max(0.0, self._held_until - self._clock())

    # -- the loop -------------------------------------------------------------------------------------

    def run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            self.step()
            # wake up at the deadline too, to announce a lost leadership on time
            wait = self._retry
            left = self.remaining()
            if self._announced and 0 < left < wait:
                wait = left
            stopping.wait(wait)
        self._set(None)

    def step(self) -> bool:
        """One attempt to acquire or renew; whether this replica leads afterwards."""
        started = self._clock()
        try:
            held = self._acquire_or_renew(started)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            self._log.warning(
                "lease: acquire/renew failed",
                extra={"lease": self.name, "error": f"{type(exc).__name__}: {exc}"[:300]},
            )
            held = False
        if held:
            self._set(started + self._deadline)
        elif self._holder_is_other or not self.leading():
            self._set(None)  # someone else holds it, or the deadline passed without a renew
        self._announce()
        return self.leading()

    def release(self) -> None:
        """Give the Lease up (at shutdown), so that another replica takes over at once."""
        was = self._held_until is not None
        self._set(None)
        self._announce()
        if not was:
            return
        try:
            lease = self._leases.read_namespaced_lease(self.name, self.namespace, _request_timeout=self._timeout)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            self._leases.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=self._timeout)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            self._log.info("lease: could not release it", extra={"lease": self.name, "error": str(exc)[:300]})

    # -- one attempt ------------------------------------------------------------------------------

    def _acquire_or_renew(self, now: float) -> bool:
        self._holder_is_other = False
        try:
            lease = self._leases.read_namespaced_lease(self.name, self.namespace, _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return self._create()
        spec = lease.spec or client.V1LeaseSpec()
        holder = spec.holder_identity or None
        if holder == self.identity:
            return self._write(lease, renew=True)
        if holder is not None:
            version = lease.metadata.resource_version if lease.metadata is not None else None
            record = (holder, str(spec.renew_time), version)
            duration = float(spec.lease_duration_seconds or self._duration)
            if self._observed is None or self._observed.record != record:
                self._observed = _Observed(record, now, duration)
            if now - self._observed.since < self._observed.duration:
                self._holder_is_other = True
                return False
        return self._write(lease, renew=False)

    def _create(self) -> bool:
        now = _micro_time()
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=client.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=int(self._duration),
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            self._leases.create_namespaced_lease(self.namespace, body, _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status == 409:  # another replica created it first
                return False
            raise
        return True

    def _write(self, lease: Any, *, renew: bool) -> bool:
        now = _micro_time()
        spec = lease.spec or client.V1LeaseSpec()
        if not renew:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity = self.identity
        spec.lease_duration_seconds = int(self._duration)
        spec.renew_time = now
        lease.spec = spec
        try:  # carries the resourceVersion read: a concurrent writer makes this a 409
            self._leases.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    # -- reporting ------------------------------------------------------------------------------

    def _set(self, until: float | None) -> None:
        with self._lock:
            self._held_until = until

    def _announce(self) -> None:
        leading = self.leading()
        if leading == self._announced:
            return
        self._announced = leading
        if self._on_change is not None:
            self._on_change(leading)
