"""Namespace labels and annotations, from a watched in-memory cache.

The admission path must not wait on the Kubernetes API, so a daemon thread keeps every
namespace's name, labels and annotations in memory, listed and watched by an
:class:`~sidecar_injector.cluster.informer.Informer` (bookmarks, resume from the last
resourceVersion, 410 → relist, backoff with jitter, periodic resync).

``cached`` answers from memory only. ``lookup`` falls back, on a miss, to one GET of the
namespace (a namespace created a moment ago may not have reached the watch yet) and
remembers that answer — the namespace, or its absence — for ``remember_seconds``.

The GET's ``lookup_timeout_seconds`` bounds the lookup only if the client does not retry
reads on its own: build the client with :func:`sidecar_injector.cluster.kube.new_api_client`.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import orjson
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sidecar_injector.cluster.informer import Informer, release
from sidecar_injector.cluster.kube import raw_response
from sidecar_injector.core.inputs import NamespaceFacts, namespace_facts
from sidecar_injector.runtime.interfaces import NamespaceUnavailable

if TYPE_CHECKING:
    from sidecar_injector.runtime.metrics import Metrics

#: the fetched-answer memory is pruned of expired entries beyond this size
_PRUNE_ABOVE = 256


class NamespaceCache:
    """A watched, in-memory map of namespace name -> :class:`NamespaceFacts`.

    ``start()`` runs the list+watch loop in a daemon thread; ``stop()`` ends it promptly.
    ``cached`` never blocks; ``lookup`` makes at most one GET on a miss. Both are safe to
    call from any thread. ``informer_options`` go to the :class:`Informer` (resync, watch and
    request timeouts, page size, backoff).
    """

    def __init__(
        self,
        api: client.CoreV1Api | client.ApiClient,
        *,
        lookup_timeout_seconds: float = 1.0,
        remember_seconds: float = 5.0,
        metrics: Metrics | None = None,
        **informer_options: Any,
    ):
        self._api = api if isinstance(api, client.CoreV1Api) else client.CoreV1Api(api)
        self._lookup_timeout = lookup_timeout_seconds
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

        # Readers never take the lock: they read one dict entry, atomic under the GIL; the
        # relist swaps the whole dict in one assignment.
        self._items: dict[str, NamespaceFacts] = {}
        #: answers of lookup's GETs: name -> (expiry on the monotonic clock, facts or None)
        self._fetched: dict[str, tuple[float, NamespaceFacts | None]] = {}
        self._lock = threading.Lock()
        self._informer = Informer(
            self._api.list_namespace,
            self,
            what="namespace",
            on_listed=self._listed,
            **informer_options,
        )

    # -- reading ---------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """True once the first full list succeeded (it stays True across reconnects)."""
        return self._informer.synced

    @property
    def resource_version(self) -> str | None:
        """The resourceVersion the next watch starts from (the last list, event or bookmark)."""
        return self._informer.resource_version

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
                release(response)
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

    # -- what the informer hands over ----------------------------------------------------------

    def replace(self, objects: list[dict[str, Any]]) -> None:
        items = {facts.name: facts for facts in map(namespace_facts, objects) if facts is not None}
        with self._lock:
            self._items = items
            self._fetched = {}

    def apply(self, event_type: str, obj: dict[str, Any]) -> None:
        facts = namespace_facts(obj)
        if facts is None:
            return
        with self._lock:
            if event_type == "DELETED":
                self._items.pop(facts.name, None)
            else:
                self._items[facts.name] = facts
            self._fetched.pop(facts.name, None)

    def _listed(self, reason: str, _count: int) -> None:
        if self._metrics is not None:
            self._metrics.namespace_cache_relists.labels(reason).inc()
            self._metrics.namespace_cache_synced.set(1)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the list+watch thread (once)."""
        self._informer.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread: cut the open watch and wait up to ``timeout`` for it to end."""
        self._informer.stop(timeout)
        if self._metrics is not None:
            self._metrics.namespace_cache_synced.set(0)

    @property
    def running(self) -> bool:
        return self._informer.running
