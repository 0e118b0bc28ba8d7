"""Kubernetes Events about injections (``events.k8s.io/v1``), sent off the admission path.

``EventRecorder.record`` only puts a small record into a bounded queue and returns; a
daemon thread sends them. A full queue drops the event (and counts it): Events are
best-effort, the admission answer never waits for them.

Which decisions become Events (:func:`should_record`): injections, denials, and skips of
a pod that asked for sidecars — never the pods that did not ask, which are most pods in
cluster-wide mode. What an Event is about (:func:`event_target`): the pod's controller
(a ReplicaSet, a Job...) — at admission a pod made from ``generateName`` has no name yet —
else the pod itself when it has a name; the sender then posts it on the workload the user
owns above that controller (the Deployment of a ReplicaSet, the CronJob of a Job:
:class:`~sidecar_injector.cluster.event_owners.OwnerResolver`), where people look.

Bounded like client-go's event correlation (``tools/events``), whatever the pods do:

* **series**: the same Event (object, reason, type and note) again within ``series_window``
  of its last occurrence is not a new Event: the first one gets a ``series`` (count, last
  observed time), patched at the second occurrence and then at most every
  ``series_interval`` — a crash-looping ReplicaSet's thousand pods make one Event;
* **a per-object rate limit** on API calls (a token bucket per object: ``burst``, then
  one per ``refill_seconds``, client-go's spam filter); over it, Events are dropped and
  counted (``rate_limited``);
* the series and the buckets are kept for at most ``max_tracked`` objects each (least
  recently used out).
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sidecar_injector.base.text import printable
from sidecar_injector.cluster.event_owners import OwnerResolver
from sidecar_injector.cluster.kube import raw_response
from sidecar_injector.core.decision import WARNING_PREFIX, Decision
from sidecar_injector.core.pod_shape import controller_reference
from sidecar_injector.runtime.logs import get_logger
from sidecar_injector.runtime.supervise import Supervisor

if TYPE_CHECKING:
    from sidecar_injector.runtime.metrics import Metrics

REPORTING_CONTROLLER = "sidecar.io/sidecar-injector"
ACTION = "Inject"
REASON_INJECTED = "Injected"
REASON_SKIPPED = "InjectionSkipped"
#: the API server refuses a longer note (bytes) or reportingInstance (characters)
MAX_NOTE_BYTES = 1024
MAX_INSTANCE_LENGTH = 128
_MAX_NAME_LENGTH = 253

#: skip reasons that say the pod did not ask for injection (or asked, and already has it)
_NOT_ASKED = frozenset(
    {
        "operation-not-create",
        "not-a-pod",
        "excluded-namespace",
        "not-requested",
        "opted-out",
        "already-injected",
    }
)


def should_record(decision: Decision, *, dry_run: bool = False) -> bool:
    """Whether ``decision`` deserves an Event (never for a dry-run request)."""
    if dry_run:
        return False
    if decision.outcome in ("injected", "denied"):
        return True
    return decision.reason not in _NOT_ASKED and bool(decision.requested)


def event_target(pod: Any, namespace: str) -> dict[str, str] | None:
    """The object reference an Event about ``pod`` is ``regarding``, or None.

    The pod's controller owner (else its first owner), in the pod's namespace; else the
    pod itself when it has a name. A cluster-scoped owner (the Node of a mirror pod)
    cannot be referenced from a namespaced Event.
    """
    metadata = pod.get("metadata") if isinstance(pod, dict) else None
    if not namespace or not isinstance(metadata, dict):
        return None
    references = metadata.get("ownerReferences")
    owners = [
        owner
        for owner in (references if isinstance(references, list) else ())
        if isinstance(owner, dict)
        and all(isinstance(owner.get(key), str) and owner[key] for key in ("apiVersion", "kind", "name"))
        and not (owner["apiVersion"] == "v1" and owner["kind"] == "Node")
    ]
    owner = controller_reference(owners)
    if owner is not None:
        target = {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["name"]}
        uid = owner.get("uid")
    else:
        name = metadata.get("name")
        if not isinstance(name, str) or not name:
            return None
        target = {"apiVersion": "v1", "kind": "Pod", "name": name}
        uid = metadata.get("uid")
    if isinstance(uid, str) and uid:
        target["uid"] = uid
    target["namespace"] = namespace
    return target


def event_note(decision: Decision, pod: Any) -> str:
    """What happened, for people: the pod, the decision and its warnings, ≤ 1024 bytes."""
    metadata = pod.get("metadata") if isinstance(pod, dict) else None
    metadata = metadata if isinstance(metadata, dict) else {}
    name, generate = metadata.get("name"), metadata.get("generateName")
    if isinstance(name, str) and name:
        who = f"pod {printable(name, 253)}"
    elif isinstance(generate, str) and generate:
        who = f"pod {printable(generate, 253)}*"
    else:
        who = "a pod"
    text = f"{who}: {decision.message}"
    if decision.warnings:
        text += "; " + "; ".join(w.removeprefix(WARNING_PREFIX) for w in decision.warnings)
    return _truncate(text, MAX_NOTE_BYTES)


def _truncate(text: str, limit: int) -> str:
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", "ignore") + "..."


def _event_name(target_name: str) -> str:
    """Unique, and a valid DNS subdomain: ``<target name>.<16 random hex digits>``."""
    stem = target_name[: _MAX_NAME_LENGTH - 17].rstrip(".-") or "pod"
    return f"{stem}.{secrets.token_hex(8)}"


def _micro_time(timestamp: float) -> datetime.datetime:
    """``timestamp`` as the aware UTC datetime the client serializes for a MicroTime.

    The client writes datetimes with ``isoformat()``, which leaves the fraction out when it
    is zero, and the API server's MicroTime needs exactly six digits: move such an instant
    by one microsecond rather than send a time the API server refuses.
    """
    when = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    return when if when.microsecond else when.replace(microsecond=1)


@dataclass(frozen=True)
class _Pending:
    namespace: str
    regarding: dict[str, str]
    reason: str
    type: str
    note: str
    timestamp: float


@dataclass
class _Series:
    """One posted Event and how often it has happened since (client-go's isomorphic events)."""

    key: tuple[str, ...]
    namespace: str
    name: str
    bucket: tuple[str, ...]
    count: int
    #: when it last happened: the monotonic clock (the window), the wall clock (lastObservedTime)
    last_seen: float
    last_observed: float
    #: when the series was last written to the API (monotonic); -inf: never
    written_at: float = -float("inf")
    #: the count the API has
    written_count: int = 1


class _Bucket:
    """A token bucket: ``burst`` calls at once, then one per ``refill_seconds``."""

    __slots__ = ("stamp", "tokens")

    def __init__(self, burst: float, now: float):
        self.tokens = burst
        self.stamp = now


_STOP = object()
#: client-go's defaults (tools/events and tools/record): a 6-minute series window, a spam
#: filter of 25 Events per object then one every 5 minutes; the series are written more
#: often than client-go's 30-minute heartbeat, so that kubectl shows a live count
SERIES_WINDOW_SECONDS = 360.0
SERIES_INTERVAL_SECONDS = 30.0
RATE_LIMIT_BURST = 25
RATE_LIMIT_REFILL_SECONDS = 300.0
MAX_TRACKED = 4096


class EventRecorder:
    """Sends Events from a daemon thread; ``record`` never blocks."""

    def __init__(
        self,
        api: client.EventsV1Api | client.ApiClient,
        instance: str,
        *,
        max_queue: int = 1000,
        request_timeout_seconds: float = 5.0,
        log_interval_seconds: float = 60.0,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        supervisor: Supervisor | None = None,
        owners: OwnerResolver | None = None,
        resolve_owners: bool = True,
        series_window_seconds: float = SERIES_WINDOW_SECONDS,
        series_interval_seconds: float = SERIES_INTERVAL_SECONDS,
        rate_limit_burst: int = RATE_LIMIT_BURST,
        rate_limit_refill_seconds: float = RATE_LIMIT_REFILL_SECONDS,
        max_tracked: int = MAX_TRACKED,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self._api = api if isinstance(api, client.EventsV1Api) else client.EventsV1Api(api)
        if owners is None and resolve_owners:
            owners = OwnerResolver(self._api.api_client, request_timeout_seconds=request_timeout_seconds, metrics=metrics)
        #: posts Events on the Deployment above a ReplicaSet, the CronJob above a Job (None: on the controller)
        self.owners = owners
        self._series_window = series_window_seconds
        self._series_interval = series_interval_seconds
        self._burst = float(rate_limit_burst)
        self._refill = rate_limit_refill_seconds
        self._max_tracked = max_tracked
        self._monotonic = monotonic
        #: the sender thread's alone: (namespace, object, reason, type, note) -> the Event posted for it
        self._series: collections.OrderedDict[tuple[str, ...], _Series] = collections.OrderedDict()
        #: the Event's name -> what was posted (for the log lines of a failed series write)
        self._series_item: dict[str, _Pending] = {}
        self._buckets: collections.OrderedDict[tuple[str, ...], _Bucket] = collections.OrderedDict()
        #: reportingInstance: which replica reported (its hostname, say)
        self.instance = instance[:MAX_INSTANCE_LENGTH] or "unknown"
        self._queue: queue.Queue[Any] = queue.Queue(max_queue)
        self._request_timeout = request_timeout_seconds
        self._log_interval = log_interval_seconds
        self._metrics = metrics
        self._clock = clock
        self._supervisor = supervisor or Supervisor()
        self._log = get_logger()
        self._stopping = threading.Event()
        self._deadline = 0.0
        self._thread: threading.Thread | None = None
        self._last_warning = -float("inf")
        self._failures_since_ok = 0
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        #: occurrences counted into an Event already posted, series writes, Events over the per-object limit
        self.aggregated = 0
        self.updated = 0
        self.rate_limited = 0
        self._dropped_lock = threading.Lock()

    # -- the request path -----------------------------------------------------------------

    def record(self, decision: Decision, pod: Any, namespace: str, *, dry_run: bool = False) -> bool:
        """Queue an Event about ``decision`` if it deserves one; True if queued. Never blocks."""
        if not should_record(decision, dry_run=dry_run):
            return False
        regarding = event_target(pod, namespace)
        if regarding is None:
            return False
        injected = decision.outcome == "injected"
        pending = _Pending(
            namespace=namespace,
            regarding=regarding,
            reason=REASON_INJECTED if injected else REASON_SKIPPED,
            type="Warning" if decision.outcome == "denied" or decision.warnings else "Normal",
            note=event_note(decision, pod),
            timestamp=self._clock(),
        )
        if self._stopping.is_set():
            self._count_dropped()
            return False
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            self._count_dropped()
            return False
        return True

    def _count_dropped(self, count: int = 1) -> None:
        with self._dropped_lock:  # record() may run on several threads
            self.dropped += count
        if self._metrics is not None:
            self._metrics.kubernetes_events.labels("dropped").inc(count)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            target = self._supervisor.thread_target("event-sender", self._run, self._stopping)
            self._thread = threading.Thread(target=target, name="event-recorder", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued for up to ``timeout`` seconds, then drop (and count) the rest."""
        self._deadline = time.monotonic() + timeout
        self._stopping.set()
        # _STOP wakes the worker if it waits on an empty queue; when the queue is full the
        # worker is busy, not waiting, and sees the flag after its current send
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_STOP)
        if self._thread is not None:
            self._thread.join(timeout + 1)
        left = 0
        while True:
            try:
                left += self._queue.get_nowait() is not _STOP
            except queue.Empty:
                break
        if left:
            self._count_dropped(left)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the worker ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            if self._stopping.is_set():
                if time.monotonic() >= self._deadline:
                    return
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    self._write_series(final=True)
                    return
            else:
                try:
                    item = self._queue.get(timeout=self._series_interval)
                except queue.Empty:  # quiet: time to write the counts of the series that moved
                    self._write_series()
                    continue
            if item is _STOP:
                continue
            self._handle(item)

    # -- correlation: series and the per-object rate limit -------------------------------------------

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.kubernetes_events.labels(result).inc()

    def _handle(self, item: _Pending) -> None:
        """Post ``item`` as a new Event, or count it into the series of the same Event posted before."""
        regarding = self.owners.resolve(item.regarding) if self.owners is not None else item.regarding
        now = self._monotonic()
        object_key = (item.namespace, regarding["kind"], regarding["name"], regarding.get("uid", ""))
        key = (*object_key, item.reason, item.type, item.note)
        series = self._series.get(key)
        if series is not None and now - series.last_seen <= self._series_window:
            series.count += 1
            series.last_seen, series.last_observed = now, item.timestamp
            self._series.move_to_end(key)
            self.aggregated += 1
            self._count("aggregated")
            if series.written_count == 1 or now - series.written_at >= self._series_interval:
                self._write(series, now)  # the second occurrence at once (as client-go), then at most every interval
            return
        bucket = (item.namespace, regarding["kind"], regarding["name"])
        if not self._take(bucket, now):
            self.rate_limited += 1
            self._count("rate_limited")
            return
        posted = _Pending(item.namespace, regarding, item.reason, item.type, item.note, item.timestamp)
        name = _event_name(regarding["name"])
        try:
            self._send(posted, name)
        except Exception as exc:  # never let one event end the worker
            self._failed(posted, exc)
            return
        self.sent += 1
        self._count("sent")
        self._sent_again()
        self._series[key] = _Series(key, item.namespace, name, bucket, 1, now, item.timestamp)
        self._series_item[name] = posted
        while len(self._series) > self._max_tracked:
            _key, gone = self._series.popitem(last=False)
            self._series_item.pop(gone.name, None)

    def _take(self, bucket_key: tuple[str, ...], now: float) -> bool:
        """One API call's worth from the object's token bucket, if it has one left."""
        bucket = self._buckets.get(bucket_key)
        if bucket is None:
            bucket = self._buckets[bucket_key] = _Bucket(self._burst, now)
            while len(self._buckets) > self._max_tracked:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(bucket_key)
            if self._refill > 0:
                bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.stamp) / self._refill)
            bucket.stamp = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def _write_series(self, *, final: bool = False) -> None:
        """Write the count of every series that moved (each at most every interval); forget the finished ones."""
        now = self._monotonic()
        for key, series in list(self._series.items()):
            due = final or now - series.written_at >= self._series_interval
            if series.count != series.written_count and due:
                self._write(series, now)
            if now - series.last_seen > self._series_window:
                self._series.pop(key, None)
                self._series_item.pop(series.name, None)

    def _write(self, series: _Series, now: float) -> None:
        """PATCH the Event's ``series`` (count, lastObservedTime), within the object's rate limit."""
        if not self._take(series.bucket, now):
            return  # written later, when the bucket has refilled
        item = self._series_item.get(series.name)
        try:
            response = raw_response(
                self._api.patch_namespaced_event(
                    series.name,
                    series.namespace,
                    {"series": {"count": series.count, "lastObservedTime": _micro_time(series.last_observed)}},
                    _content_type="application/merge-patch+json",
                    _preload_content=False,
                    _request_timeout=self._timeout_now(),
                )
            )
            try:
                response.drain_conn()
            finally:
                response.release_conn()
        except ApiException as exc:
            if exc.status == 404:  # the Event expired (the API server keeps them an hour): the next one is new
                self._series.pop(series.key, None)
                self._series_item.pop(series.name, None)
                return
            if item is not None:
                self._failed(item, exc)
            return
        except Exception as exc:
            if item is not None:
                self._failed(item, exc)
            return
        series.written_count, series.written_at = series.count, now
        self.updated += 1
        self._count("updated")
        self._sent_again()

    def _sent_again(self) -> None:
        if self._failures_since_ok:
            self._log.info("sending events again", extra={"failed": self._failures_since_ok})
            self._failures_since_ok = 0
            self._last_warning = -float("inf")

    def _timeout_now(self) -> float:
        if self._stopping.is_set():
            return max(0.1, min(self._request_timeout, self._deadline - time.monotonic()))
        return self._request_timeout

    def _send(self, item: _Pending, name: str) -> None:
        event = client.EventsV1Event(
            api_version="events.k8s.io/v1",
            kind="Event",
            metadata=client.V1ObjectMeta(name=name, namespace=item.namespace),
            event_time=_micro_time(item.timestamp),
            reporting_controller=REPORTING_CONTROLLER,
            reporting_instance=self.instance,
            action=ACTION,
            reason=item.reason,
            type=item.type,
            note=item.note,
            regarding=client.V1ObjectReference(
                api_version=item.regarding["apiVersion"],
                kind=item.regarding["kind"],
                name=item.regarding["name"],
                namespace=item.regarding["namespace"],
                uid=item.regarding.get("uid"),
            ),
        )
        response = raw_response(
            self._api.create_namespaced_event(
                item.namespace, event, _preload_content=False, _request_timeout=self._timeout_now()
            )
        )
        try:
            response.drain_conn()
        finally:
            response.release_conn()

    def _failed(self, item: _Pending, exc: Exception) -> None:
        self.failed += 1
        self._failures_since_ok += 1
        if self._metrics is not None:
            self._metrics.kubernetes_events.labels("failed").inc()
        if isinstance(exc, ApiException):
            error = f"HTTP {exc.status} {exc.reason}: {(exc.body or '')!s:.300}"
        elif isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
            error = f"{type(exc).__name__}: {exc}"[:300]
        else:  # a bug of ours: always worth its traceback
            self._log.exception("internal error while sending an event")
            error = f"{type(exc).__name__}: {exc}"[:300]
        now = time.monotonic()
        if now - self._last_warning < self._log_interval:
            return  # one warning per interval while the API keeps failing
        self._last_warning = now
        self._log.warning(
            "could not send an event",
            extra={
                "namespace": item.namespace,
                "regarding": f"{item.regarding['kind']}/{item.regarding['name']}",
                "reason": item.reason,
                "error": error,
                "failed": self._failures_since_ok,
            },
        )
