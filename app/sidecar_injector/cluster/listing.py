"""Reading the cluster for the CLI (``profiles stale``/``restart``, ``explain``).

Pods, namespaces, profile resources, a workload object, the profiles ConfigMap.

Each list is paged (:func:`~sidecar_injector.cluster.kube.list_pages`); the pure analysis of
what is read is :mod:`sidecar_injector.core.staleness`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sidecar_injector.cluster.kube import list_pages, raw_response
from sidecar_injector.core.inputs import NamespaceFacts, namespace_facts
from sidecar_injector.profiles.resources import CLUSTER, GROUP, NAMESPACED, PROFILE_API_VERSION, VERSION, ResourceKind


def _note(notes: list[str] | None, text: str) -> None:
    if notes is not None:
        notes.append(text)


def list_pods(
    api: client.CoreV1Api | client.ApiClient,
    namespace: str | None = None,
    *,
    page_size: int = 500,
    request_timeout_seconds: float = 30.0,
) -> Iterator[dict[str, Any]]:
    """The pods of ``namespace`` (None: of every namespace) as raw dicts, page by page.

    Raises the client's ApiException (or a urllib3 error) if the API refuses or fails;
    an expired ``continue`` token (a list slower than the API server's limit, minutes)
    is one of those: run the command again.
    """
    core = api if isinstance(api, client.CoreV1Api) else client.CoreV1Api(api)
    call: Callable[..., object] = (
        core.list_pod_for_all_namespaces if namespace is None else functools.partial(core.list_namespaced_pod, namespace)
    )
    for page in list_pages(call, page_size=page_size, request_timeout_seconds=request_timeout_seconds):
        for pod in page.get("items") or ():
            if isinstance(pod, dict):
                yield pod


def list_namespaces(
    api: client.CoreV1Api | client.ApiClient, *, request_timeout_seconds: float = 30.0
) -> dict[str, NamespaceFacts]:
    """Every namespace's labels and annotations (what automatic injection decides with)."""
    core = api if isinstance(api, client.CoreV1Api) else client.CoreV1Api(api)
    found: dict[str, NamespaceFacts] = {}
    for page in list_pages(core.list_namespace, request_timeout_seconds=request_timeout_seconds):
        for obj in page.get("items") or ():
            facts = namespace_facts(obj)
            if facts is not None:
                found[facts.name] = facts
    return found


def list_profile_resources(
    api: client.ApiClient,
    *,
    namespaced: bool = True,
    namespace: str | None = None,
    notes: list[str] | None = None,
    request_timeout_seconds: float = 30.0,
) -> list[dict[str, Any]]:
    """Every ClusterSidecarProfile and SidecarProfile (of ``namespace``, else of every namespace; none
    unless ``namespaced``) of the cluster; none of a kind whose CRD is not installed."""
    custom = client.CustomObjectsApi(api)
    kinds: list[ResourceKind] = [CLUSTER, NAMESPACED] if namespaced else [CLUSTER]
    found: list[dict[str, Any]] = []
    for kind in kinds:
        call: Callable[..., object]
        if kind.namespaced and namespace:
            call = functools.partial(custom.list_namespaced_custom_object, GROUP, VERSION, namespace, kind.plural)
        else:
            call = functools.partial(custom.list_cluster_custom_object, GROUP, VERSION, kind.plural)
        try:
            for page in list_pages(call, request_timeout_seconds=request_timeout_seconds):
                items = [item for item in page.get("items") or () if isinstance(item, dict)]
                found += ({"apiVersion": PROFILE_API_VERSION, "kind": kind.kind, **item} for item in items)
        except ApiException as exc:
            if exc.status != 404:
                raise
            _note(notes, f"no {kind.kind} resources: the {kind.crd_name} CRD is not installed")
    return found


#: what `explain KIND/NAME` reads: kind name or short name -> (Kind, API class, read method)
LIVE_KINDS = {
    **dict.fromkeys(("pod", "pods", "po"), ("Pod", "CoreV1Api", "read_namespaced_pod")),
    **dict.fromkeys(("deployment", "deployments", "deploy"), ("Deployment", "AppsV1Api", "read_namespaced_deployment")),
    **dict.fromkeys(("statefulset", "statefulsets", "sts"), ("StatefulSet", "AppsV1Api", "read_namespaced_stateful_set")),
    **dict.fromkeys(("daemonset", "daemonsets", "ds"), ("DaemonSet", "AppsV1Api", "read_namespaced_daemon_set")),
    **dict.fromkeys(("replicaset", "replicasets", "rs"), ("ReplicaSet", "AppsV1Api", "read_namespaced_replica_set")),
    **dict.fromkeys(("job", "jobs"), ("Job", "BatchV1Api", "read_namespaced_job")),
    **dict.fromkeys(("cronjob", "cronjobs", "cj"), ("CronJob", "BatchV1Api", "read_namespaced_cron_job")),
    **dict.fromkeys(
        ("replicationcontroller", "replicationcontrollers", "rc"),
        ("ReplicationController", "CoreV1Api", "read_namespaced_replication_controller"),
    ),
}


def read_live_object(api: client.ApiClient, kind: str, name: str, namespace: str) -> dict[str, Any]:
    """The object ``kind/name`` of ``namespace`` (``kind``: a key of :data:`LIVE_KINDS`) as a raw dict.

    Raises the client's ApiException (or a urllib3 error) if the API refuses or fails.
    """
    _kind, api_class, method = LIVE_KINDS[kind.lower()]
    reader = getattr(getattr(client, api_class)(api), method)
    response = raw_response(reader(name, namespace, _preload_content=False, _request_timeout=30))
    obj: dict[str, Any] = json.loads(response.data)
    return obj


def read_namespace(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    """The Namespace object ``namespace`` as a raw dict."""
    response = raw_response(client.CoreV1Api(api).read_namespace(namespace, _preload_content=False, _request_timeout=30))
    obj: dict[str, Any] = json.loads(response.data)
    return obj


def configmap_profile_texts(api: client.ApiClient, namespace: str, name: str) -> list[tuple[str, str]]:
    """(source, YAML text) of each ``*.yaml``/``*.yml`` key of the ConfigMap ``namespace/name``, sorted."""
    configmap = client.CoreV1Api(api).read_namespaced_config_map(name, namespace, _request_timeout=30)
    return sorted(
        (f"configmap {namespace}/{name}:{key}", text)
        for key, text in (configmap.data or {}).items()
        if key.endswith((".yaml", ".yml"))
    )
