"""Which running pods carry an older version of a profile than the one in use now, or miss one.

The webhook records, in each injected pod's ``sidecar.io/status`` annotation, every
profile it injected with that profile's ``version`` and content ``hash``. A pod is stale
for a profile when the recorded hash differs from the current profile's hash (the pod
needs a restart — a rollout of its workload — to get the new sidecars), or when the
profile no longer exists at all. A pod **missed** a profile when the current rules —
decided by the same core as admission — say it should have it and it has not (it was
created while the webhook was unavailable under ``failurePolicy: Ignore``, or before its
namespace opted in). ``stale_pods`` and ``missed_pods`` are pure; the pods, namespaces and profile resources
they compare come from :mod:`sidecar_injector.cluster.listing`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sidecar_injector.base import keys
from sidecar_injector.base.text import printable
from sidecar_injector.core.decide import decide
from sidecar_injector.core.inputs import InjectionPolicy, NamespaceFacts, RequestContext
from sidecar_injector.core.plan import recorded_profiles
from sidecar_injector.core.values import resolve_values
from sidecar_injector.profiles.catalog import INVALID, ProfileResolver
from sidecar_injector.profiles.model import Profile


class InUse(Protocol):
    """What a pod's record is compared with: a profile, or just the version and hash a server reports."""

    @property
    def version(self) -> str: ...

    @property
    def hash(self) -> str: ...


@dataclass(frozen=True)
class ReportedProfile:
    """A profile known only by the version and hash in use (a profile resource's status)."""

    version: str
    hash: str


#: the current profiles: for every pod the same, or per namespace (SidecarProfiles apply to their own)
CurrentProfiles = Mapping[str, InUse] | Callable[[str], Mapping[str, InUse]]

StaleState = Literal["outdated", "removed", "missed", "values"]

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
    #: "values": the hash of the values recorded, and of those the pod would get now ("invalid":
    #: its values no longer pass the profile's checks)
    recorded_values: str | None = None
    current_values: str | None = None


def _running(pod: Any) -> Mapping[str, Any] | None:
    """The pod's metadata when it is a pod that runs on (not finished, not being deleted), else None."""
    metadata = pod.get("metadata") if isinstance(pod, Mapping) else None
    if not isinstance(metadata, Mapping) or metadata.get("deletionTimestamp"):
        return None
    status = pod.get("status")
    if isinstance(status, Mapping) and status.get("phase") in _FINISHED_PHASES:
        return None
    return metadata


def stale_pods(
    pods: Iterable[Mapping[str, Any]],
    profiles: CurrentProfiles,
    notes: list[str] | None = None,
    namespaces: Mapping[str, NamespaceFacts] | None = None,
) -> list[StalePod]:
    """Every (pod, profile) whose injected profile differs from the current one, sorted.

    ``profiles`` are the current profiles, or a function of the pod's namespace giving
    them. Pods without ``sidecar.io/status`` are not ours and are ignored, and so are pods
    that have finished or are being deleted. An unreadable status (or profile entry) never
    raises: the pod is skipped and, if ``notes`` is given, a line saying why is appended.
    """
    found: list[StalePod] = []
    for pod in pods:
        metadata = _running(pod)
        if metadata is None:
            continue
        annotations = metadata.get("annotations")
        raw = annotations.get(keys.STATUS) if isinstance(annotations, Mapping) else None
        if raw is None:
            continue
        namespace = _text(metadata.get("namespace")) or ""
        current_profiles = profiles(namespace) if callable(profiles) else profiles
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
            current = current_profiles.get(profile_name)
            if current is None:
                found.append(StalePod(namespace, name, profile_name, version, digest, None, None, "removed"))
            elif digest != current.hash:
                found.append(
                    StalePod(namespace, name, profile_name, version, digest, current.version, current.hash, "outdated")
                )
            elif isinstance(current, Profile) and isinstance(entry.get("values"), str):
                facts = (namespaces or {}).get(namespace)
                now = _values_now(current, annotations if isinstance(annotations, Mapping) else {}, facts)
                if now != entry["values"]:
                    found.append(
                        StalePod(
                            namespace,
                            name,
                            profile_name,
                            version,
                            digest,
                            current.version,
                            current.hash,
                            "values",
                            entry["values"],
                            now,
                        )
                    )
    found.sort(key=lambda s: (s.namespace, s.pod, s.profile))
    return found


def missed_pods(
    pods: Iterable[Mapping[str, Any]],
    profiles: Mapping[str, Profile] | Callable[[str], Mapping[str, Profile]],
    policy: InjectionPolicy,
    namespaces: Mapping[str, NamespaceFacts] | None = None,
) -> list[StalePod]:
    """Every (pod, profile) the current rules would inject and the pod does not have, sorted.

    Decided by the core, as if the pod were created now in its namespace (``namespaces``
    gives the namespaces' labels and annotations: opt-in, ``sidecar.io/profiles``). Pods
    that have finished or are being deleted are not reported.
    """
    found: list[StalePod] = []
    for pod in pods:
        metadata = _running(pod)
        if metadata is None or not isinstance(pod, dict):
            continue
        namespace = _text(metadata.get("namespace")) or ""
        current = profiles(namespace) if callable(profiles) else profiles
        context = RequestContext(namespace=namespace, namespace_facts=(namespaces or {}).get(namespace))
        decision = decide(pod, context, current, policy)
        if decision.outcome != "injected":
            continue
        name = _text(metadata.get("name")) or ""
        for profile_name in decision.injected:
            profile = current[profile_name]
            found.append(StalePod(namespace, name, profile_name, None, None, profile.version, profile.hash, "missed"))
    found.sort(key=lambda s: (s.namespace, s.pod, s.profile))
    return found


def _values_now(profile: Profile, annotations: Mapping[str, Any], facts: NamespaceFacts | None) -> str:
    """The values hash the pod would be injected with now (its namespace's defaults may have changed)."""
    resolution = resolve_values(profile, annotations, facts.annotations if facts is not None else {})
    if resolution.problems:
        return "invalid"
    return profile.values_hash(resolution.values, resolution.resources) or ""


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def in_use_profiles(resolver: ProfileResolver) -> Callable[[str], Mapping[str, InUse]]:
    """Each namespace's profiles in use, as the server that wrote the resources' status uses them.

    A resource whose spec is broken now is still injected by the server in its last good
    version, which a reader of the resources only knows from the status the server wrote
    (``status.version``/``status.hash``): those count as current, so that pods running
    that version are not called stale (and restarted for nothing).
    """
    snapshot = resolver.table.snapshot if resolver.table is not None else {}
    cluster: dict[str, InUse] = {}
    namespaced: dict[str, dict[str, InUse]] = {}
    for ref, verdict in resolver.resolution.verdicts.items():
        judged = snapshot.get(ref)
        if verdict.reason != INVALID or verdict.in_use is not None or judged is None:
            continue
        version, digest = judged.status.get("version"), judged.status.get("hash")
        if isinstance(version, str) and isinstance(digest, str):
            reported = ReportedProfile(version, digest)
            if ref.namespace is None:
                cluster[ref.name] = reported
            else:
                namespaced.setdefault(ref.namespace, {})[ref.name] = reported

    def profiles(namespace: str) -> Mapping[str, InUse]:
        current: Mapping[str, InUse] = resolver.profiles_for(namespace or None)
        extra = {**cluster, **namespaced.get(namespace, {})}
        return {**current, **extra} if extra else current

    return profiles


def _note(notes: list[str] | None, text: str) -> None:
    if notes is not None:
        notes.append(text)
