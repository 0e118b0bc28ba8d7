"""Namespace labels and annotations, from a watched in-memory cache.

The admission path must not wait on the Kubernetes API, so a daemon thread keeps every
namespace's name, labels and annotations in memory with the protocol client-go's
reflector uses:

- **list** (paged with ``limit``/``continue``) and remember the list's resourceVersion;
- **watch** from that resourceVersion with bookmarks, applying ADDED/MODIFIED/DELETED
  and moving the resourceVersion on every event, BOOKMARKs included;
- a stream that ends (the server's ``timeoutSeconds``, a proxy closing it) or breaks
  (connection errors, a hung server caught by the read timeout) is **re-watched from the
  last resourceVersion** — nothing is missed and nothing is relisted;
- an ``ERROR`` event carrying a **410 Gone** Status (or a 410 answer) means that
  resourceVersion has been compacted away: **relist**;
- failures are retried with capped exponential **backoff with jitter**;
- a full **resync** (relist) every ``resync_seconds`` bounds the damage of any bug.

``cached`` answers from memory only. ``lookup`` falls back, on a miss, to one GET of the
namespace (a namespace created a moment ago may not have reached the watch yet) and
remembers that answer — the namespace, or its absence — for ``remember_seconds``.

The GET's ``lookup_timeout_seconds`` bounds the lookup only if the client does not retry
reads on its own: build the client with :func:`sidecar_injector.kube.new_api_client`.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from sidecar_injector.injection import NamespaceFacts, namespace_facts
from sidecar_injector.interfaces import NamespaceUnavailable
from sidecar_injector.kube import raw_response
from sidecar_injector.logs import get_logger

if TYPE_CHECKING:
    from sidecar_injector.metrics import Metrics

#: a watch stream that delivered nothing and ended sooner than this counts as a failure
_MIN_HEALTHY_WATCH_SECONDS = 1.0
#: the fetched-answer memory is pruned of expired entries beyond this size
_PRUNE_ABOVE = 256


class _Expired(Exception):
    """410 Gone: the resourceVersion was compacted away; only a relist recovers."""


class _WatchError(Exception):
    """An ERROR event other than 410, or a line that is not a watch event."""


def _resource_version(obj: Any) -> str | None:
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
    return version if isinstance(version, str) and version else None


def _cut(response: Any) -> None:
    """Unblock a thread reading ``response``: shut its socket down."""
    try:
        response.shutdown()  # urllib3 >= 2.3
        return
    except Exception:
        pass
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(2)  # socket.SHUT_RDWR


def _release(response: Any) -> None:
    try:
        response.close()
        response.release_conn()
    except Exception:
        pass


class NamespaceCache:
    """A watched, in-memory map of namespace name -> :class:`NamespaceFacts`.

    ``start()`` runs the list+watch loop in a daemon thread; ``stop()`` ends it promptly.
    ``cached`` never blocks; ``lookup`` makes at most one GET on a miss. Both are safe to
    call from any thread.
    """

    def __init__(
        self,
        api: client.CoreV1Api | client.ApiClient,
        *,
        resync_seconds: float = 300.0,
        lookup_timeout_seconds: float = 1.0,
        watch_timeout_seconds: float = 300.0,
        request_timeout_seconds: float = 30.0,
        page_size: int = 500,
        backoff_initial_seconds: float = 0.5,
        backoff_max_seconds: float = 30.0,
        remember_seconds: float = 5.0,
        metrics: Metrics | None = None,
    ):
        self._api = api if isinstance(api, client.CoreV1Api) else client.CoreV1Api(api)
        self._resync = resync_seconds
        self._lookup_timeout = lookup_timeout_seconds
        self._watch_timeout = watch_timeout_seconds
        self._request_timeout = request_timeout_seconds
        self._page_size = page_size
        self._backoff_initial = backoff_initial_seconds
        self._backoff_max = backoff_max_seconds
        self._remember = remember_seconds
        self._metrics = metrics
        # lookup() may be on the admission path: resolve the counter children once
        self._lookup_counters = (
            {}
            if metrics is None
            else {
                result: metrics.namespace_cache_lookups.labels(result)
                for result in ("hit", "found", "not_found", "unavailable")
            }
        )
        self._log = get_logger()

        # Readers never take the lock: they read one dict entry, atomic under the GIL; the
        # relist swaps the whole dict in one assignment.
        self._items: dict[str, NamespaceFacts] = {}
        #: answers of lookup's GETs: name -> (expiry on the monotonic clock, facts or None)
        self._fetched: dict[str, tuple[float, NamespaceFacts | None]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: Any = None  # the open watch stream, for stop() to cut
        self._synced = False
        #: the resourceVersion the next watch starts from (the last list, event or bookmark)
        self.resource_version: str | None = None

    # -- reading ---------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """True once the first full list succeeded (it stays True across reconnects)."""
        return self._synced

    def cached(self, name: str) -> NamespaceFacts | None:
        """The namespace's facts from memory; None if not known (never blocks, no I/O)."""
        return self._peek(name)[1]

    def lookup(self, name: str) -> NamespaceFacts | None:
        """The namespace's facts: from memory, else from one GET.

        None: the namespace does not exist (404; remembered for ``remember_seconds``).
        Raises NamespaceUnavailable when the API server cannot answer within
        ``lookup_timeout_seconds`` or answers with an error.
        """
        known, facts = self._peek(name)
        if known:
            self._count_lookup("hit")
            return facts
        if not name:
            return None
        try:
            response = raw_response(
                self._api.read_namespace(name, _preload_content=False, _request_timeout=self._lookup_timeout)
            )
            try:
                body = orjson.loads(response.data)
            finally:
                _release(response)
        except ApiException as exc:
            if exc.status == 404:
                self._store_fetched(name, None)
                self._count_lookup("not_found")
                return None
            self._count_lookup("unavailable")
            raise NamespaceUnavailable(f"reading namespace {name}: HTTP {exc.status} {exc.reason}") from exc
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            self._count_lookup("unavailable")
            raise NamespaceUnavailable(f"reading namespace {name}: {exc}") from exc
        facts = namespace_facts(body)
        if facts is None:
            self._count_lookup("unavailable")
            raise NamespaceUnavailable(f"reading namespace {name}: the answer is not a Namespace")
        self._store_fetched(name, facts)
        self._count_lookup("found")
        return facts

    def _peek(self, name: str) -> tuple[bool, NamespaceFacts | None]:
        facts = self._items.get(name)
        if facts is not None:
            return True, facts
        fetched = self._fetched.get(name)
        if fetched is not None and fetched[0] > time.monotonic():
            return True, fetched[1]
        return False, None

    def _store_fetched(self, name: str, facts: NamespaceFacts | None) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._fetched) >= _PRUNE_ABOVE:
                self._fetched = {k: v for k, v in self._fetched.items() if v[0] > now}
            self._fetched[name] = (now + self._remember, facts)

    def _count_lookup(self, result: str) -> None:
        counter = self._lookup_counters.get(result)
        if counter is not None:
            counter.inc()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the list+watch thread (once)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="namespace-cache", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread: cut the open watch and wait up to ``timeout`` for it to end."""
        self._stopping.set()
        with self._lock:
            response = self._response
        if response is not None:
            _cut(response)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._metrics is not None:
            self._metrics.namespace_cache_synced.set(0)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

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
            except _Expired as exc:
                if self._stopping.is_set():
                    break
                self._log.info("namespace watch expired; relisting", extra={"reason": str(exc)})
                relist = "expired"
                streak += 1
                if streak > 1:  # a fresh list's resourceVersion expired at once: slow down
                    self._stopping.wait(self._delay(streak))
            except Exception as exc:
                if self._stopping.is_set():
                    break
                streak += 1
                delay = self._delay(streak)
                self._log.warning(
                    "namespace " + ("list" if relist else "watch") + " failed; retrying",
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
        items: dict[str, NamespaceFacts] = {}
        token: str | None = None
        while True:
            response = raw_response(
                self._api.list_namespace(
                    limit=self._page_size, _continue=token, _preload_content=False, _request_timeout=self._request_timeout
                )
            )
            try:
                body = orjson.loads(response.data)
            finally:
                _release(response)
            for obj in body.get("items") or ():
                facts = namespace_facts(obj)
                if facts is not None:
                    items[facts.name] = facts
            metadata = body.get("metadata") or {}
            token = metadata.get("continue") or None
            if token is None:
                break
        version = metadata.get("resourceVersion")
        if not isinstance(version, str) or not version:
            raise _WatchError("the namespace list has no resourceVersion")
        with self._lock:
            self._items = items
            self._fetched = {}
            self.resource_version = version
            self._synced = True
        if self._metrics is not None:
            self._metrics.namespace_cache_relists.labels(reason).inc()
            self._metrics.namespace_cache_synced.set(1)
        self._log.info(
            "namespace cache listed", extra={"reason": reason, "namespaces": len(items), "resource_version": version}
        )

    def _watch(self, next_resync: float) -> bool:
        """One watch stream, until it ends; True if it delivered something or lasted."""
        started = time.monotonic()
        # the server ends the stream by itself, at the latest when the resync is due
        timeout = max(1, int(min(self._watch_timeout, next_resync - started)))
        # a server that stops sending (hung, or a half-open connection) trips the read timeout
        grace = min(30.0, max(1.0, timeout / 4))
        try:
            response = raw_response(
                self._api.list_namespace(
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
                raise _Expired(f"HTTP 410 {exc.reason}") from exc
            raise
        with self._lock:
            if self._stopping.is_set():
                _release(response)
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
            _release(response)
        return events > 0 or time.monotonic() - started >= _MIN_HEALTHY_WATCH_SECONDS

    def _apply(self, line: str) -> None:
        try:
            event = orjson.loads(line)
        except ValueError as exc:
            raise _WatchError(f"not a watch event: {line[:100]!r}") from exc
        kind = event.get("type") if isinstance(event, dict) else None
        obj = event.get("object") if isinstance(event, dict) else None
        if kind == "ERROR":
            status: Mapping[str, Any] = obj if isinstance(obj, dict) else {}
            text = f"{status.get('code')} {status.get('reason')}: {status.get('message')}"
            if status.get("code") == 410:
                raise _Expired(text)
            raise _WatchError("watch error " + text)
        version = _resource_version(obj)
        if kind == "BOOKMARK":
            if version:
                self.resource_version = version
            return
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            return
        facts = namespace_facts(obj)
        with self._lock:
            if facts is not None:
                if kind == "DELETED":
                    self._items.pop(facts.name, None)
                else:
                    self._items[facts.name] = facts
                self._fetched.pop(facts.name, None)
            if version:
                self.resource_version = version
