"""The server's profile resources: watched, resolved per namespace, and their status written.

:class:`ProfileResources` is what the web layer gets as its
:class:`~sidecar_injector.runtime.interfaces.ProfileSource`:

* two :class:`~sidecar_injector.cluster.informer.Informer` s list and watch the
  ``ClusterSidecarProfile`` s and (unless namespaced profiles are off) every namespace's
  ``SidecarProfile`` s into a :class:`~sidecar_injector.profiles.catalog.ResourceTable`, with
  the same machinery as the namespace cache (bookmarks, resume, 410 → relist, backoff,
  resync);
* a :class:`~sidecar_injector.profiles.catalog.ProfileResolver` turns them, with the injector's
  own profiles, into the profiles of each namespace;
* readiness waits for the first list of both kinds — at most ``sync_timeout_seconds``, so
  an unreachable API server never keeps the webhook from serving the profiles it has;
* a :class:`ProfileStatusWriter` writes each resource's ``status`` (the Accepted
  condition, observedGeneration, the version and hash in use), on one replica at a time:
  the holder of a ``coordination.k8s.io`` Lease (:class:`~sidecar_injector.cluster.lease.LeaseElector`),
  and only while its renew deadline has not passed on this process's monotonic clock.
"""

from __future__ import annotations

import datetime
import functools
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sidecar_injector.cluster.informer import Informer
from sidecar_injector.cluster.lease import LeaseElector
from sidecar_injector.profiles.catalog import (
    STATUS_KEYS,
    Catalog,
    ProfileResolver,
    ResourceTable,
    admission_problems,
    desired_status,
    status_is_current,
)
from sidecar_injector.profiles.loading import ProfileSet
from sidecar_injector.profiles.resources import CLUSTER, GROUP, NAMESPACED, VERSION, ResourceRef
from sidecar_injector.runtime.logs import get_logger
from sidecar_injector.runtime.supervise import Supervisor

if TYPE_CHECKING:
    from sidecar_injector.runtime.metrics import Metrics

#: a status write that failed is tried again this soon
_RETRY_SECONDS = 5.0


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ProfileResources:
    """Watched SidecarProfiles/ClusterSidecarProfiles, resolved per namespace, with their status written.

    ``base()`` returns the injector's own profiles (the store the reloader swaps).
    ``start()``/``stop()`` run the informers and, with ``write_status``, the status writer.
    """

    def __init__(
        self,
        api: client.ApiClient,
        base: Callable[[], ProfileSet],
        *,
        namespaced: bool = True,
        sync_timeout_seconds: float = 30.0,
        write_status: bool = True,
        lease_namespace: str | None = None,
        lease_name: str = "sidecar-injector-profile-status",
        identity: str | None = None,
        metrics: Metrics | None = None,
        informer_options: Mapping[str, Any] | None = None,
        election_options: Mapping[str, Any] | None = None,
        supervisor: Supervisor | None = None,
    ):
        self.table = ResourceTable()
        self.resolver = ProfileResolver(base, self.table, namespaced_enabled=namespaced)
        self.namespaced = namespaced
        self._sync_timeout = sync_timeout_seconds
        self._metrics = metrics
        self._started: float | None = None
        custom = client.CustomObjectsApi(api)
        kinds = [CLUSTER, NAMESPACED] if namespaced else [CLUSTER]
        self.informers = [
            Informer(
                functools.partial(custom.list_cluster_custom_object, GROUP, VERSION, kind.plural),
                self.table.handler(kind),
                what=kind.kind,
                on_listed=functools.partial(self._listed, kind.kind),
                supervisor=supervisor,
                **(informer_options or {}),
            )
            for kind in kinds
        ]
        self.writer: ProfileStatusWriter | None = None
        if write_status:
            if not lease_namespace:
                raise ValueError("writing the profiles' status needs the namespace of its Lease (the injector's own)")
            self.writer = ProfileStatusWriter(
                api,
                self.table,
                lambda: self.resolver.resolution,
                lease_namespace=lease_namespace,
                lease_name=lease_name,
                identity=identity,
                metrics=metrics,
                supervisor=supervisor,
                **(election_options or {}),
            )
            self.table.on_change = self.writer.notify

    # -- what the web layer asks --------------------------------------------------------------

    def profiles_for(self, namespace: str | None) -> ProfileSet:
        return self.resolver.profiles_for(namespace)

    @property
    def synced(self) -> bool:
        return all(informer.synced for informer in self.informers)

    def readiness(self) -> tuple[bool, str]:
        """Whether the server may report ready, and what to say about the profile resources."""
        kinds = " and ".join(f"{i.what}s" for i in self.informers)
        if self.synced:
            return True, "synced"
        waited = time.monotonic() - self._started if self._started is not None else 0.0
        if waited < self._sync_timeout:
            return False, f"waiting for the first list of {kinds} (ready without them after {self._sync_timeout:g} s)"
        return True, f"{kinds} not listed yet: answering without them (the Kubernetes API is unreachable or refuses)"

    def admission_problems(self, obj: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        """Why a profile resource being applied is refused (problems), and warnings for an accepted one."""
        return admission_problems(obj, self.resolver.resolution, self.resolver.base(), namespaced_enabled=self.namespaced)

    def _listed(self, kind: str, reason: str, _count: int) -> None:
        if self._metrics is not None:
            self._metrics.profile_resource_relists.labels(kind, reason).inc()
            self._metrics.profile_resources_synced.set(1 if self.synced else 0)

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        self._started = time.monotonic()
        for informer in self.informers:
            informer.start()
        if self.writer is not None:
            self.writer.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self.writer is not None:
            self.writer.stop(timeout)
        for informer in self.informers:
            informer.stop(timeout)
        if self._metrics is not None:
            self._metrics.profile_resources_synced.set(0)


class ProfileStatusWriter:
    """Writes each profile resource's status, while this replica holds the Lease.

    ``notify()`` (the table calls it on every change) wakes the writer; it also looks
    every ``resync_seconds``. Only statuses that differ from what the resource carries are
    written, as a merge patch of the status subresource.
    """

    def __init__(
        self,
        api: client.ApiClient,
        table: ResourceTable,
        resolution: Callable[[], Catalog],
        *,
        lease_namespace: str,
        lease_name: str,
        identity: str | None = None,
        lease_duration_seconds: int = 15,
        renew_deadline_seconds: int = 10,
        retry_period_seconds: int = 2,
        resync_seconds: float = 60.0,
        request_timeout_seconds: float = 10.0,
        metrics: Metrics | None = None,
        supervisor: Supervisor | None = None,
    ):
        self._api = api
        self._custom = client.CustomObjectsApi(api)
        self._table = table
        self._resolution = resolution
        self.lease_namespace = lease_namespace
        self.lease_name = lease_name
        self.identity = identity or f"{socket.gethostname()}_{secrets.token_hex(4)}"
        self._elector = LeaseElector(
            api,
            lease_name,
            lease_namespace,
            self.identity,
            lease_duration_seconds=lease_duration_seconds,
            renew_deadline_seconds=renew_deadline_seconds,
            retry_period_seconds=retry_period_seconds,
            request_timeout_seconds=request_timeout_seconds,
            on_change=self._leadership_changed,
        )
        self._resync = resync_seconds
        self._timeout = request_timeout_seconds
        self._metrics = metrics
        self._supervisor = supervisor or Supervisor()
        self._log = get_logger()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._failures = 0
        #: ref -> (resourceVersion the status was written against, the status written)
        self._written: dict[ResourceRef, tuple[str | None, dict[str, Any]]] = {}

    @property
    def leading(self) -> bool:
        """Holding the Lease, and its renew deadline not passed (this process's monotonic clock)."""
        return self._elector.leading()

    def notify(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._threads:
            return
        supervised = self._supervisor.thread_target
        self._threads = [
            threading.Thread(
                target=supervised("profile-status-election", lambda: self._elector.run(self._stopping), self._stopping),
                name="profile-status-election",
                daemon=True,
            ),
            threading.Thread(
                target=supervised("profile-status-writer", self._write_loop, self._stopping),
                name="profile-status-writer",
                daemon=True,
            ),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        self._elector.release()
        for thread in self._threads:
            thread.join(timeout)

    # -- the election ------------------------------------------------------------------------------

    def _leadership_changed(self, leading: bool) -> None:
        if leading:
            self._log.info("profile status: this replica writes the status now", extra={"identity": self.identity})
            self._written = {}  # a new map, not clear(): the writer thread may be iterating the old one
            self._wake.set()
        else:
            self._log.info(
                "profile status: not the Lease holder; another replica writes it", extra={"identity": self.identity}
            )
        if self._metrics is not None:
            self._metrics.profile_status_leader.set(1 if leading else 0)

    # -- writing ------------------------------------------------------------------------------------

    def _write_loop(self) -> None:
        # run again by the supervisor after a failure: write at once (its backoff was the wait)
        wait = 0.0 if self._failures else self._resync
        while not self._stopping.is_set():
            self._wake.wait(wait)
            self._wake.clear()
            if self._stopping.is_set():
                return
            self._failures = 0
            if self.leading:
                try:
                    self.write_all()
                except Exception:
                    # a bug: the supervisor logs it with its traceback, counts it and starts this loop
                    # again after its backoff (the statuses must not stop being written for good)
                    self._failures += 1
                    raise
            # a status the API refused is tried again soon, not at the next resync
            wait = min(self._resync, _RETRY_SECONDS) if self._failures else self._resync

    def write_all(self) -> int:
        """Write every status that differs from the desired one; the number written."""
        snapshot = self._table.snapshot
        verdicts = self._resolution().verdicts
        for gone in [ref for ref in self._written if ref not in verdicts]:
            del self._written[gone]
        written = 0
        for ref, verdict in verdicts.items():
            if not self.leading or self._stopping.is_set():
                break
            judged = snapshot.get(ref)
            if judged is None:
                continue
            desired = desired_status(judged, verdict, _now())
            if status_is_current(judged, desired):
                continue
            if self._written.get(ref) == (judged.resource_version, desired):
                continue  # written already; the watch has not brought it back yet
            if self._patch(ref, desired):
                self._written[ref] = (judged.resource_version, desired)
                written += 1
        return written

    def _patch(self, ref: ResourceRef, desired: dict[str, Any]) -> bool:
        # a merge patch: keys we no longer write are removed with a null
        body = {"status": {**dict.fromkeys(STATUS_KEYS), **desired}}
        # a write made as the leader must land while this replica still leads
        timeout = min(self._timeout, self._elector.remaining())
        if timeout <= 0:
            return False
        try:
            if ref.namespace is not None:
                self._custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, ref.namespace, ref.kind.plural, ref.name, body, _request_timeout=timeout
                )
            else:
                self._custom.patch_cluster_custom_object_status(
                    GROUP, VERSION, ref.kind.plural, ref.name, body, _request_timeout=timeout
                )
        except ApiException as exc:
            if exc.status == 404:  # deleted meanwhile
                return False
            self._failed(ref, f"HTTP {exc.status} {exc.reason}")
            return False
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            self._failed(ref, str(exc))
            return False
        if self._metrics is not None:
            self._metrics.profile_status_writes.labels("ok").inc()
        self._log.info(
            "profile status written",
            extra={
                "resource": str(ref),
                "accepted": desired["conditions"][0]["status"],
                "reason": desired["conditions"][0]["reason"],
            },
        )
        return True

    def _failed(self, ref: ResourceRef, error: str) -> None:
        self._failures += 1
        if self._metrics is not None:
            self._metrics.profile_status_writes.labels("error").inc()
        self._log.warning("profile status not written; retrying later", extra={"resource": str(ref), "error": error[:300]})
