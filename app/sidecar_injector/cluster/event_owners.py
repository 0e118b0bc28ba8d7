"""Which workload the user owns, for an Event about one of its pods.

A Deployment's pods are created by its ReplicaSet and a CronJob's by its Job: the pod's
controller reference names the ReplicaSet ``web-7d9f8c6b5`` or the Job ``backup-29034``,
which nobody looks at. :class:`OwnerResolver` reads that object (one GET, from the event
sender's thread — never on the admission path) and follows its own controller reference
one step: ReplicaSet → Deployment, Job → CronJob. A StatefulSet's or DaemonSet's pods name
it directly, a bare Job's pods name the Job: those need no lookup.

The ReplicaSet name convention (``<deployment>-<pod-template-hash>``) is not relied on:
a ReplicaSet made by hand, or by another controller, has the same shape of name.

Answers are cached, bounded (least recently used out) and keyed by the object's uid, so a
crash-looping ReplicaSet costs one GET however many pods it makes. A failed read (the
chart's RBAC without ``get`` on replicasets/jobs, the object gone, the API down) falls back
to the ReplicaSet or Job itself and is remembered for a shorter while.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sidecar_injector.cluster.kube import raw_response
from sidecar_injector.core.pod_shape import controller_reference
from sidecar_injector.runtime.logs import get_logger

if TYPE_CHECKING:
    from sidecar_injector.runtime.metrics import Metrics

#: (apiVersion, kind) of a pod's controller -> (apiVersion, kind) of the workload that owns it
PARENTS = {
    ("apps/v1", "ReplicaSet"): ("apps/v1", "Deployment"),
    ("batch/v1", "Job"): ("batch/v1", "CronJob"),
}

Target = dict[str, str]


class OwnerResolver:
    """``resolve(target)``: the workload the user owns above ``target`` (an Event's ``regarding``), else ``target``."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        max_entries: int = 4096,
        ttl_seconds: float = 600.0,
        failure_ttl_seconds: float = 60.0,
        request_timeout_seconds: float = 2.0,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._apps = client.AppsV1Api(api)
        self._batch = client.BatchV1Api(api)
        self._max_entries = max_entries
        self._ttl = ttl_seconds
        self._failure_ttl = failure_ttl_seconds
        self._timeout = request_timeout_seconds
        self._metrics = metrics
        self._clock = clock
        self._log = get_logger()
        self._lock = threading.Lock()
        #: key -> (expiry on the clock, the owner found or None for "no owner above it")
        self._cache: collections.OrderedDict[tuple[str, ...], tuple[float, Target | None]] = collections.OrderedDict()
        self._warned = False

    def resolve(self, target: Target) -> Target:
        kind = (target.get("apiVersion", ""), target.get("kind", ""))
        if kind not in PARENTS:
            return target
        key = (target["namespace"], *kind, target["name"], target.get("uid", ""))
        now = self._clock()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] > now:
                self._cache.move_to_end(key)
                self._count("cached")
                return cached[1] or target
        owner, ttl = self._lookup(target, PARENTS[kind])
        with self._lock:
            self._cache[key] = (now + ttl, owner)
            self._cache.move_to_end(key)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return owner or target

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.event_owner_lookups.labels(result).inc()

    def _lookup(self, target: Target, parent: tuple[str, str]) -> tuple[Target | None, float]:
        """The owner of ``target`` of kind ``parent`` (None: none), and how long to remember the answer."""
        read = self._apps.read_namespaced_replica_set if target["kind"] == "ReplicaSet" else self._batch.read_namespaced_job
        try:
            response = raw_response(
                read(target["name"], target["namespace"], _preload_content=False, _request_timeout=self._timeout)
            )
            try:
                body = orjson.loads(response.data)
            finally:
                response.release_conn()
        except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            self._count("error")
            if not self._warned:  # once: the usual cause (RBAC) does not go away by itself
                self._warned = True
                error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, ApiException):
                    error = f"HTTP {exc.status} {exc.reason}"
                self._log.warning(
                    f"cannot read a {target['kind']} to post its Events on its owner; posting them on the {target['kind']}",
                    extra={"object": f"{target['namespace']}/{target['name']}", "error": error[:300]},
                )
            return None, self._failure_ttl
        metadata = body.get("metadata") if isinstance(body, dict) else None
        metadata = metadata if isinstance(metadata, dict) else {}
        uid = target.get("uid")
        if uid and metadata.get("uid") != uid:  # another object of the same name now: not the pod's controller
            self._count("not_owned")
            return None, self._failure_ttl
        owner: Any = controller_reference(metadata.get("ownerReferences"))
        if (
            owner is None
            or owner.get("controller") is not True
            or (owner.get("apiVersion"), owner.get("kind")) != parent
            or not isinstance(owner.get("name"), str)
            or not owner["name"]
        ):
            self._count("not_owned")
            return None, self._ttl
        found: Target = {"apiVersion": parent[0], "kind": parent[1], "name": owner["name"], "namespace": target["namespace"]}
        if isinstance(owner.get("uid"), str) and owner["uid"]:
            found["uid"] = owner["uid"]
        self._count("resolved")
        return found, self._ttl
