"""List+watch of one kind of Kubernetes object, kept in step in a daemon thread.

The protocol client-go's reflector uses, for any list call of the official client
(``CoreV1Api.list_namespace``, ``CustomObjectsApi.list_cluster_custom_object`` bound to a
group/version/plural, ...):

- **list** (paged with ``limit``/``continue``) and remember the list's resourceVersion;
- **watch** from that resourceVersion with bookmarks, handing ADDED/MODIFIED/DELETED to
  the handler and moving the resourceVersion on every event, BOOKMARKs included;
- a stream that ends (the server's ``timeoutSeconds``, a proxy closing it) or breaks
  (connection errors, a hung server caught by the read timeout) is **re-watched from the
  last resourceVersion** — nothing is missed and nothing is relisted;
- an ``ERROR`` event carrying a **410 Gone** Status (or a 410 answer) means that
  resourceVersion has been compacted away: **relist**;
- failures are retried with capped exponential **backoff with jitter**;
- a full **resync** (relist) every ``resync_seconds`` bounds the damage of any bug;
- anything else (a bug: the handler raising, say) ends the loop, and the
  :class:`~sidecar_injector.runtime.supervise.Supervisor` logs it with its traceback,
  counts it and starts the loop again — from a fresh list — after its backoff.

What the objects become is the handler's business (:class:`InformerHandler`): the informer
hands it each full list (``replace``) and each event (``apply``), from its own thread.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import orjson
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from sidecar_injector.cluster.kube import raw_response
from sidecar_injector.runtime.logs import get_logger
from sidecar_injector.runtime.supervise import Supervisor

#: a watch stream that delivered nothing and ended sooner than this counts as a failure
_MIN_HEALTHY_WATCH_SECONDS = 1.0


class InformerHandler(Protocol):
    """Receives what the informer sees. Called from the informer's thread, one call at a time."""

    def replace(self, objects: list[dict[str, Any]]) -> None:
        """Every object, from a full list: what is not among them no longer exists."""
        ...

    def apply(self, event_type: str, obj: dict[str, Any]) -> None:
        """One watch event: ``ADDED``, ``MODIFIED`` or ``DELETED`` of ``obj``."""
        ...


class Expired(Exception):
    """410 Gone: the resourceVersion was compacted away; only a relist recovers."""


class WatchError(Exception):
    """An ERROR event other than 410, or a line that is not a watch event."""


#: what the list+watch loop retries by itself: the API server down, refusing, slow or
#: answering garbage; anything else is a bug, for the supervisor
_EXPECTED = (ApiException, urllib3.exceptions.HTTPError, OSError, WatchError, orjson.JSONDecodeError)


def resource_version_of(obj: Any) -> str | None:
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
    return version if isinstance(version, str) and version else None


def cut(response: Any) -> None:
    """Unblock a thread reading ``response``: shut its socket down."""
    shutdown = getattr(response, "shutdown", None)  # urllib3 >= 2.3
    if shutdown is not None:
        with contextlib.suppress(OSError):  # already closed: nothing to unblock
            shutdown()
        return
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(2)  # socket.SHUT_RDWR


def release(response: Any) -> None:
    """Close a raw response and give its connection back to the pool, whatever state it is in.

    A connection that breaks while being closed is the pool's to discard: nothing to report.
    """
    with contextlib.suppress(OSError, urllib3.exceptions.HTTPError):
        response.close()
    with contextlib.suppress(OSError, urllib3.exceptions.HTTPError):
        response.release_conn()


class Informer:
    """A list+watch loop over ``list_call``, feeding ``handler``.

    ``list_call(**options)`` is a list method of the official client (any positional
    arguments already bound); it is called with the paging, watch and timeout options, and
    ``_preload_content=False``. ``what`` names the objects in logs ("namespace",
    "ClusterSidecarProfile"). ``on_listed(reason, count)`` is called after every full list
    (reason: initial, expired, resync), e.g. to count relists.

    ``start()`` runs the loop in a daemon thread, under ``supervisor`` (job
    ``<what>-informer``; a supervisor of its own by default); ``stop()`` ends it promptly.
    """

    def __init__(
        self,
        list_call: Callable[..., Any],
        handler: InformerHandler,
        *,
        what: str,
        resync_seconds: float = 300.0,
        watch_timeout_seconds: float = 300.0,
        request_timeout_seconds: float = 30.0,
        page_size: int = 500,
        backoff_initial_seconds: float = 0.5,
        backoff_max_seconds: float = 30.0,
        on_listed: Callable[[str, int], None] | None = None,
        supervisor: Supervisor | None = None,
    ):
        self._list = list_call
        self._handler = handler
        self.what = what
        self._resync = resync_seconds
        self._watch_timeout = watch_timeout_seconds
        self._request_timeout = request_timeout_seconds
        self._page_size = page_size
        self._backoff_initial = backoff_initial_seconds
        self._backoff_max = backoff_max_seconds
        self._on_listed = on_listed
        self._supervisor = supervisor or Supervisor()
        self._log = get_logger()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._synced = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: Any = None  # the open watch stream, for stop() to cut
        #: the resourceVersion the next watch starts from (the last list, event or bookmark)
        self.resource_version: str | None = None

    @property
    def synced(self) -> bool:
        """True once the first full list succeeded (it stays True across reconnects)."""
        return self._synced.is_set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the list+watch thread (once)."""
        if self._thread is not None:
            return
        name = f"{self.what}-informer"
        target = self._supervisor.thread_target(name, self._run, self._stopping)
        self._thread = threading.Thread(target=target, name=name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread: cut the open watch and wait up to ``timeout`` for it to end."""
        self._stopping.set()
        with self._lock:
            response = self._response
        if response is not None:
            cut(response)
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the list+watch loop ----------------------------------------------------------------------

    def _run(self) -> None:
        relist: str | None = "initial"
        streak = 0  # consecutive attempts that got nowhere: the backoff exponent
        next_resync = 0.0
        while not self._stopping.is_set():
            if relist is None and time.monotonic() >= next_resync:
                relist = "resync"
            try:
                if relist is not None:
                    self._relist(relist)
                    relist = None
                    next_resync = time.monotonic() + self._resync
                if self._watch(next_resync):
                    streak = 0
                elif time.monotonic() < next_resync:
                    # ended at once with nothing: don't spin on a server that does that
                    streak += 1
                    self._stopping.wait(self._delay(streak))
            except Expired as exc:
                if self._stopping.is_set():
                    break
                self._log.info(f"{self.what} watch expired; relisting", extra={"reason": str(exc)})
                relist = "expired"
                streak += 1
                if streak > 1:  # a fresh list's resourceVersion expired at once: slow down
                    self._stopping.wait(self._delay(streak))
            except _EXPECTED as exc:
                if self._stopping.is_set():
                    break
                streak += 1
                delay = self._delay(streak)
                self._log.warning(
                    f"{self.what} " + ("list" if relist else "watch") + " failed; retrying",
                    extra={
                        "error": f"{type(exc).__name__}: {exc}"[:500],
                        "retry_in_s": round(delay, 3),
                        "resource_version": self.resource_version or "",
                    },
                )
                self._stopping.wait(delay)

    def _delay(self, streak: int) -> float:
        """Capped exponential backoff with jitter: half fixed, half random."""
        base = min(self._backoff_max, self._backoff_initial * 2 ** min(streak - 1, 32))
        return base / 2 + random.uniform(0, base / 2)

    def _relist(self, reason: str) -> None:
        objects: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            try:
                response = raw_response(
                    self._list(
                        limit=self._page_size,
                        _continue=token,
                        _preload_content=False,
                        _request_timeout=self._request_timeout,
                    )
                )
            except ApiException as exc:
                if exc.status == 410 and token is not None:
                    raise Expired(f"the list's continue token expired: HTTP 410 {exc.reason}") from exc
                raise
            try:
                body = orjson.loads(response.data)
            finally:
                release(response)
            items = body.get("items") if isinstance(body, dict) else None
            metadata = body.get("metadata") if isinstance(body, dict) else None
            if not isinstance(items, (list, type(None))) or not isinstance(metadata, dict):
                raise WatchError(f"the {self.what} list is not a list object")
            objects += (obj for obj in items or () if isinstance(obj, dict))
            token = metadata.get("continue") or None
            token = token if isinstance(token, str) else None
            if token is None:
                break
        version = metadata.get("resourceVersion")
        if not isinstance(version, str) or not version:
            raise WatchError(f"the {self.what} list has no resourceVersion")
        if self._stopping.is_set():
            return
        self._handler.replace(objects)
        with self._lock:
            self.resource_version = version
        self._synced.set()
        if self._on_listed is not None:
            self._on_listed(reason, len(objects))
        self._log.info(f"{self.what} listed", extra={"reason": reason, "objects": len(objects), "resource_version": version})

    def _watch(self, next_resync: float) -> bool:
        """One watch stream, until it ends; True if it delivered something or lasted."""
        started = time.monotonic()
        # the server ends the stream by itself, at the latest when the resync is due
        timeout = max(1, int(min(self._watch_timeout, next_resync - started)))
        # a server that stops sending (hung, or a half-open connection) trips the read timeout
        grace = min(30.0, max(1.0, timeout / 4))
        try:
            response = raw_response(
                self._list(
                    watch=True,
                    allow_watch_bookmarks=True,
                    resource_version=self.resource_version,
                    timeout_seconds=timeout,
                    _preload_content=False,
                    _request_timeout=(self._request_timeout, timeout + grace),
                )
            )
        except ApiException as exc:
            if exc.status == 410:
                raise Expired(f"HTTP 410 {exc.reason}") from exc
            raise
        with self._lock:
            if self._stopping.is_set():
                release(response)
                return False
            self._response = response
        events = 0
        try:
            for line in iter_resp_lines(response):
                if not line.strip():
                    continue
                self._apply(line)
                events += 1
                if self._stopping.is_set() or time.monotonic() >= next_resync + grace:
                    break  # stopping, or the server kept the stream open past its timeout
        finally:
            with self._lock:
                self._response = None
            release(response)
        return events > 0 or time.monotonic() - started >= _MIN_HEALTHY_WATCH_SECONDS

    def _apply(self, line: str) -> None:
        try:
            event = orjson.loads(line)
        except ValueError as exc:
            raise WatchError(f"not a watch event: {line[:100]!r}") from exc
        kind = event.get("type") if isinstance(event, dict) else None
        obj = event.get("object") if isinstance(event, dict) else None
        if kind == "ERROR":
            status: Mapping[str, Any] = obj if isinstance(obj, dict) else {}
            text = f"{status.get('code')} {status.get('reason')}: {status.get('message')}"
            if status.get("code") == 410:
                raise Expired(text)
            raise WatchError("watch error " + text)
        version = resource_version_of(obj)
        if kind in ("ADDED", "MODIFIED", "DELETED") and isinstance(obj, dict):
            self._handler.apply(kind, obj)
        if version and kind in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
            with self._lock:
                self.resource_version = version
