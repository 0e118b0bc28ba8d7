"""Restarting the workloads of stale and missed pods, as ``kubectl rollout restart`` does.

A pod gets the current profiles only when it is created again. The owners that can
recreate their pods safely — Deployments, StatefulSets and DaemonSets with a rolling
update strategy — are restarted the way ``kubectl rollout restart`` does it: an annotation
``kubectl.kubernetes.io/restartedAt`` on the pod template, and the owner's controller rolls
the pods at its own pace, honouring its maxUnavailable and PodDisruptionBudgets.

:class:`Restarter` restarts **one owner at a time**: it waits for that owner's rollout to
finish before the next (a rollout that does not finish stops the run: new sidecars that
keep pods from becoming ready must not roll through the cluster), at most
``max_per_minute`` restarts a minute, and never touches an owner that is already mid-
rollout, paused, or updated only on delete. Bare pods, Jobs (their pods run to
completion; the next run gets the current profiles) and pods of other owners are listed,
never touched.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sidecar_injector.cluster.kube import raw_response
from sidecar_injector.core.pod_shape import controller_reference
from sidecar_injector.core.staleness import StalePod

#: the pod-template annotation kubectl rollout restart sets (the time of the restart, RFC 3339)
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
#: owner kinds restarted through their pod template
RESTARTABLE = ("Deployment", "StatefulSet", "DaemonSet")
_PLURALS = {"Deployment": "deployment", "StatefulSet": "stateful_set", "DaemonSet": "daemon_set"}


@dataclass(frozen=True, order=True)
class Owner:
    """What recreates a pod: a workload, a Job, or nothing (``kind`` "Pod": a bare pod)."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def _controller(metadata: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The controlling owner reference (else the first one), or None."""
    return controller_reference(metadata.get("ownerReferences"))


def owner_of(pod: Mapping[str, Any], read_replicaset: Callable[[str, str], Mapping[str, Any] | None]) -> Owner:
    """The owner that recreates ``pod``: a ReplicaSet's Deployment is looked up with ``read_replicaset``."""
    metadata = pod.get("metadata") or {}
    namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
    reference = _controller(metadata)
    if reference is None:
        return Owner("Pod", namespace, name)
    kind, owner_name = str(reference.get("kind") or "?"), str(reference.get("name") or "?")
    if kind == "ReplicaSet":
        replicaset = read_replicaset(namespace, owner_name)
        above = _controller((replicaset or {}).get("metadata") or {})
        if above is not None and above.get("kind") == "Deployment":
            return Owner("Deployment", namespace, str(above.get("name")))
    return Owner(kind, namespace, owner_name)


def untouchable(owner: Owner) -> str | None:
    """Why an owner is never restarted (None: it may be), in words for the person reading the list."""
    if owner.kind == "Pod":
        return "a bare pod: nothing recreates it; delete and create it again to get the current profiles"
    if owner.kind == "Job":
        return "a Job's pod runs to completion; the Job's next pods get the current profiles"
    if owner.kind not in RESTARTABLE:
        return f"owned by a {owner.kind}: restart it the way that controller allows"
    return None


def rollout_state(kind: str, obj: Mapping[str, Any]) -> str | None:
    """Why ``obj`` cannot be restarted now (mid-rollout, paused, updated on delete), or None."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation") or 0
    if (status.get("observedGeneration") or 0) < generation:
        return "mid-rollout (its controller has not seen its latest change yet)"
    if kind == "Deployment":
        if spec.get("paused"):
            return "paused"
        replicas = spec.get("replicas", 1)
        updated = status.get("updatedReplicas") or 0
        if updated < replicas or (status.get("replicas") or 0) > updated or (status.get("availableReplicas") or 0) < updated:
            return f"mid-rollout ({updated} of {replicas} replicas updated and available)"
        return None
    strategy = (spec.get("updateStrategy") or {}).get("type") or "RollingUpdate"
    if strategy == "OnDelete":
        return "updateStrategy OnDelete: its pods are replaced only when deleted"
    if kind == "StatefulSet":
        replicas = spec.get("replicas", 1)
        if status.get("updateRevision") != status.get("currentRevision") or (status.get("updatedReplicas") or 0) < replicas:
            return "mid-rollout (not every replica runs the current revision)"
        return None
    desired = status.get("desiredNumberScheduled") or 0
    if (status.get("updatedNumberScheduled") or 0) < desired or (status.get("numberAvailable") or 0) < desired:
        return f"mid-rollout ({status.get('updatedNumberScheduled') or 0} of {desired} nodes updated and available)"
    return None


Action = Literal["restarted", "would restart", "skipped", "not touched", "failed", "not finished", "stopped"]


@dataclass(frozen=True)
class RestartOutcome:
    """What was done about one owner, and why."""

    owner: Owner
    action: Action
    detail: str = ""
    pods: tuple[str, ...] = field(default=())


def owners_of(
    found: Iterable[StalePod],
    pods: Mapping[tuple[str, str], Mapping[str, Any]],
    read_replicaset: Callable[[str, str], Mapping[str, Any] | None],
) -> dict[Owner, list[str]]:
    """The owners of the stale and missed pods, each with its pods' names.

    ``pods``: (namespace, name) -> the pod as listed (its owner references are read there);
    each ReplicaSet is read once.
    """
    replicasets: dict[tuple[str, str], Mapping[str, Any] | None] = {}

    def cached(namespace: str, name: str) -> Mapping[str, Any] | None:
        if (namespace, name) not in replicasets:
            replicasets[(namespace, name)] = read_replicaset(namespace, name)
        return replicasets[(namespace, name)]

    owners: dict[Owner, list[str]] = {}
    for item in found:
        pod = pods.get((item.namespace, item.pod)) or {"metadata": {"namespace": item.namespace, "name": item.pod}}
        names = owners.setdefault(owner_of(pod, cached), [])
        if item.pod not in names:
            names.append(item.pod)
    return owners


class Restarter:
    """Restarts owners one at a time, rate-limited, waiting for each rollout (unless ``rollout_timeout`` is 0).

    ``clock``/``sleep``/``now`` are injectable so that tests control time.
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        max_per_minute: float = 6.0,
        dry_run: bool = False,
        rollout_timeout_seconds: float = 600.0,
        poll_seconds: float = 2.0,
        request_timeout_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
        log: Callable[[str], None] = lambda line: None,
    ):
        if max_per_minute <= 0:
            raise ValueError("max_per_minute must be positive")
        self._apps = client.AppsV1Api(api)
        self._interval = 60.0 / max_per_minute
        self.dry_run = dry_run
        self._rollout_timeout = rollout_timeout_seconds
        self._poll = poll_seconds
        self._timeout = request_timeout_seconds
        self._clock, self._sleep, self._now = clock, sleep, now
        self._log = log
        self._last_restart: float | None = None

    def read_replicaset(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self._read("ReplicaSet", namespace, name)

    def _read(self, kind: str, namespace: str, name: str) -> Mapping[str, Any] | None:
        method = getattr(self._apps, f"read_namespaced_{_PLURALS.get(kind, 'replica_set')}")
        try:
            # raw JSON: the client's models refuse objects that lack fields they expect
            response = raw_response(method(name, namespace, _preload_content=False, _request_timeout=self._timeout))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        try:
            result = orjson.loads(response.data)
        finally:
            response.release_conn()
        return result if isinstance(result, dict) else None

    def run(self, owners: Mapping[Owner, list[str]]) -> list[RestartOutcome]:
        """Restart each restartable owner (sorted), list the others. ``owners``: owner -> its pods' names."""
        outcomes: list[RestartOutcome] = []
        stopped: str | None = None
        for owner in sorted(owners):
            pods = tuple(sorted(owners[owner]))
            why_not = untouchable(owner)
            if why_not is not None:
                outcomes.append(RestartOutcome(owner, "not touched", why_not, pods))
                continue
            if stopped is not None:
                outcomes.append(RestartOutcome(owner, "stopped", stopped, pods))
                continue
            outcome = self._restart(owner, pods)
            outcomes.append(outcome)
            if outcome.action in ("not finished", "failed"):
                stopped = f"not restarted: the run stopped after {owner} ({outcome.action})"
        return outcomes

    def _restart(self, owner: Owner, pods: tuple[str, ...]) -> RestartOutcome:
        try:
            obj = self._read(owner.kind, owner.namespace, owner.name)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            return RestartOutcome(owner, "failed", f"cannot read it: {_error(exc)}", pods)
        if obj is None:
            return RestartOutcome(owner, "skipped", "it no longer exists", pods)
        state = rollout_state(owner.kind, obj)
        if state is not None:
            return RestartOutcome(owner, "skipped", state, pods)
        if self.dry_run:
            return RestartOutcome(owner, "would restart", "", pods)
        self._wait_turn()
        stamp = self._now().strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        method = getattr(self._apps, f"patch_namespaced_{_PLURALS[owner.kind]}")
        try:
            response = raw_response(
                method(
                    owner.name,
                    owner.namespace,
                    body,
                    _content_type="application/strategic-merge-patch+json",
                    _preload_content=False,
                    _request_timeout=self._timeout,
                )
            )
            try:
                _ = response.data  # read it all: an unread body would poison the pooled connection
            finally:
                response.release_conn()
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            return RestartOutcome(owner, "failed", f"the restart was refused: {_error(exc)}", pods)
        self._last_restart = self._clock()
        self._log(f"restarted {owner} ({len(pods)} pod(s))")
        if self._rollout_timeout <= 0:
            return RestartOutcome(owner, "restarted", "", pods)
        return self._await_rollout(owner, pods)

    def _wait_turn(self) -> None:
        """At most one restart every 60/max_per_minute seconds."""
        if self._last_restart is None:
            return
        wait = self._last_restart + self._interval - self._clock()
        if wait > 0:
            self._log(f"rate limit: waiting {wait:.0f} s before the next restart")
            self._sleep(wait)

    def _await_rollout(self, owner: Owner, pods: tuple[str, ...]) -> RestartOutcome:
        deadline = self._clock() + self._rollout_timeout
        while True:
            try:
                obj = self._read(owner.kind, owner.namespace, owner.name)
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
                obj, error = None, _error(exc)
            else:
                error = "it no longer exists" if obj is None else ""
            if obj is not None and rollout_state(owner.kind, obj) is None:
                return RestartOutcome(owner, "restarted", "rolled out", pods)
            if self._clock() >= deadline:
                detail = f"its rollout did not finish within {self._rollout_timeout:g} s"
                return RestartOutcome(owner, "not finished", f"{detail}{': ' + error if error else ''}", pods)
            self._sleep(self._poll)


def _error(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return str(exc)[:300]
