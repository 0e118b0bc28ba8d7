"""Which running pods carry an older version of a profile than the one loaded now.

The webhook records, in each injected pod's ``sidecar.io/status`` annotation, every
profile it injected with that profile's ``version`` and content ``hash``. A pod is stale
for a profile when the recorded hash differs from the current profile's hash (the pod
needs a restart — a rollout of its workload — to get the new sidecars), or when the
profile no longer exists at all. ``stale_pods`` is pure; ``list_pods`` reads the pods
from the Kubernetes API, page by page.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from kubernetes import client

from sidecar_injector import annotations as keys
from sidecar_injector.injection import printable, recorded_profiles
from sidecar_injector.kube import raw_response
from sidecar_injector.profiles import Profile

StaleState = Literal["outdated", "removed"]

#: pods that have finished never run their sidecars again: not worth a restart
_FINISHED_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class StalePod:
    namespace: str
    pod: str
    profile: str
    recorded_version: str | None
    recorded_hash: str | None
    #: None when the profile was removed
    current_version: str | None
    current_hash: str | None
    state: StaleState


def stale_pods(
    pods: Iterable[Mapping[str, Any]],
    profiles: Mapping[str, Profile],
    notes: list[str] | None = None,
) -> list[StalePod]:
    """Every (pod, profile) whose injected profile differs from the current one, sorted.

    Pods without ``sidecar.io/status`` are not ours and are ignored, and so are pods that
    have finished. An unreadable status (or profile entry) never raises: the pod is skipped
    and, if ``notes`` is given, a line saying why is appended to it.
    """
    found: list[StalePod] = []
    for pod in pods:
        metadata = pod.get("metadata") if isinstance(pod, Mapping) else None
        if not isinstance(metadata, Mapping):
            continue
        annotations = metadata.get("annotations")
        raw = annotations.get(keys.STATUS) if isinstance(annotations, Mapping) else None
        if raw is None:
            continue
        status = pod.get("status")
        if isinstance(status, Mapping) and status.get("phase") in _FINISHED_PHASES:
            continue
        namespace = _text(metadata.get("namespace")) or ""
        name = _text(metadata.get("name")) or ""
        where = f"{printable(namespace)}/{printable(name)}"
        recorded = recorded_profiles(raw)
        if recorded is None:
            _note(notes, f'{where}: {keys.STATUS} is not valid JSON with a "profiles" map; skipped')
            continue
        for profile_name, entry in recorded.items():
            if not isinstance(entry, Mapping):
                _note(notes, f"{where}: {keys.STATUS} entry for {printable(str(profile_name))} is not a map; skipped")
                continue
            version, digest = _text(entry.get("version")), _text(entry.get("hash"))
            current = profiles.get(profile_name)
            if current is None:
                found.append(StalePod(namespace, name, profile_name, version, digest, None, None, "removed"))
            elif digest != current.hash:
                found.append(
                    StalePod(namespace, name, profile_name, version, digest, current.version, current.hash, "outdated")
                )
    found.sort(key=lambda s: (s.namespace, s.pod, s.profile))
    return found


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


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
    token: str | None = None
    while True:
        options: dict[str, Any] = {
            "limit": page_size,
            "_continue": token,
            "_preload_content": False,
            "_request_timeout": request_timeout_seconds,
        }
        if namespace is None:
            response = raw_response(core.list_pod_for_all_namespaces(**options))
        else:
            response = raw_response(core.list_namespaced_pod(namespace, **options))
        try:
            page = orjson.loads(response.data)
        finally:
            response.release_conn()
        for pod in page.get("items") or ():
            if isinstance(pod, dict):
                yield pod
        token = (page.get("metadata") or {}).get("continue") or None
        if token is None:
            return
