"""Which profile a pod's ``foo`` means: its namespace's SidecarProfile, else the cluster's.

A pod in namespace N asking for ``foo`` gets N's ``SidecarProfile`` ``foo``, else the
``ClusterSidecarProfile`` ``foo``, else the ``foo`` of the injector's own profiles (the
ConfigMap or directory, and the built-ins). A tenant can never shadow a profile the
platform injects: a ``SidecarProfile`` that takes the name of a cluster-level profile is
not accepted (its status says why), and namespaced profiles can be turned off entirely.

Pure and thread-safe, no API client:

* :class:`ResourceTable` holds the watched resources as the informers hand them over,
  each read into a profile once per change — and keeps the **last good** profile of a
  resource whose new spec is broken;
* :func:`resolve` judges every resource against the others and the injector's own
  profiles (:class:`Verdict`: accepted or not, why, and the profile in use);
* :class:`ProfileResolver` gives the core, per request, the ``Mapping[str, Profile]`` of
  a namespace: views built once when the watched set or the injector's own profiles
  change, never per request;
* :func:`desired_status` is the ``status`` a resource should carry.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sidecar_injector.profiles.loading import ProfileSet
from sidecar_injector.profiles.model import Profile
from sidecar_injector.profiles.resources import (
    ACCEPTED,
    CLUSTER,
    NAMESPACED,
    ResourceKind,
    ResourceRef,
    document_role,
    profile_problems,
    resource_kind,
    resource_ref,
)

#: the reasons of the Accepted condition (stable: users and alerts match on them)
VALID = "Valid"
INVALID = "Invalid"
SHADOWS = "ShadowsClusterProfile"
DISABLED = "NamespacedProfilesDisabled"


@dataclass(frozen=True)
class Judged:
    """One watched resource, read once per change."""

    ref: ResourceRef
    uid: str | None
    generation: int | None
    resource_version: str | None
    #: the status the object carries now (what the status writer compares with)
    status: Mapping[str, Any]
    #: this generation's profile, None when the spec is broken
    profile: Profile | None
    #: why the spec is broken, each ``field: problem``
    problems: tuple[str, ...]
    #: the last good profile of this resource: ``profile``, or an earlier generation's (seen by
    #: this process, or recorded by the status writer in ``status.acceptedSpec``)
    last_good: Profile | None
    #: the spec as received (the status writer records it as ``status.acceptedSpec`` once accepted)
    spec: Mapping[str, Any] | None = None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def judge(obj: Mapping[str, Any], kind: ResourceKind, previous: Judged | None = None) -> Judged | None:
    """Read one resource object; None when it has no usable kind/name/namespace.

    ``previous`` is what the same resource was before: when the new spec is broken, its
    last good profile stays in use (never for a different object of the same name).
    """
    ref = resource_ref(obj, kind)
    if ref is None:
        return None
    metadata = obj.get("metadata") or {}
    uid = metadata.get("uid") if isinstance(metadata.get("uid"), str) else None
    version = metadata.get("resourceVersion") if isinstance(metadata.get("resourceVersion"), str) else None
    generation = _int(metadata.get("generation"))
    status = obj.get("status")
    status = status if isinstance(status, Mapping) else {}
    spec = obj.get("spec")
    spec = spec if isinstance(spec, Mapping) else None
    same_object = previous is not None and previous.uid == uid
    if same_object and previous is not None and previous.generation == generation and generation is not None:
        # only the status or metadata changed (our own status write, say): nothing to read again
        return Judged(ref, uid, generation, version, status, previous.profile, previous.problems, previous.last_good, spec)
    profile, problems = profile_problems(obj, kind)
    last_good: Profile | None
    if profile is not None:
        last_good = profile
    elif same_object and previous is not None and previous.last_good is not None:
        last_good = previous.last_good
    else:
        last_good = recorded_last_good(obj, kind, status)
    return Judged(ref, uid, generation, version, status, profile, tuple(problems), last_good, spec)


def recorded_last_good(obj: Mapping[str, Any], kind: ResourceKind, status: Mapping[str, Any]) -> Profile | None:
    """The last accepted profile the status records (``status.acceptedSpec``), or None.

    This is how a replica that starts (or relists) while a resource's spec is broken still
    injects the version the other replicas keep using. The recorded spec is read and
    validated like any spec, and used only when it is the profile the status names
    (``status.hash``): a spec that fails today's rules, or that is not what was in use,
    is not.
    """
    recorded = status.get("acceptedSpec")
    if not isinstance(recorded, str) or not isinstance(status.get("hash"), str):
        return None
    try:
        accepted = json.loads(recorded)
    except ValueError:
        return None
    if not isinstance(accepted, Mapping):
        return None
    profile, _problems = profile_problems({**obj, "spec": accepted}, kind)
    return profile if profile is not None and profile.hash == status["hash"] else None


class ResourceTable:
    """The watched profile resources of both kinds, by reference. Fed by the informers.

    ``handler(kind)`` is the :class:`~sidecar_injector.cluster.informer.InformerHandler` of one
    kind. Every change replaces the table's snapshot (readers never see a half-applied
    list) and bumps ``generation``; ``on_change`` (if set) is called after each.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[ResourceRef, Judged] = {}
        self.snapshot: Mapping[ResourceRef, Judged] = {}
        self.generation = 0
        self.on_change: Callable[[], None] | None = None

    def handler(self, kind: ResourceKind) -> _KindHandler:
        return _KindHandler(self, kind)

    def replace(self, kind: ResourceKind, objects: Iterable[Mapping[str, Any]]) -> None:
        """Every object of ``kind`` (a full list): the others of that kind are gone."""
        with self._lock:
            kept = {ref: item for ref, item in self._items.items() if ref.kind is not kind}
            for obj in objects:
                ref = resource_ref(obj, kind)
                judged = judge(obj, kind, self._items.get(ref)) if ref is not None else None
                if judged is not None:
                    kept[judged.ref] = judged
            changed = kept.keys() != self._items.keys() or any(
                _resolves_differently(self._items[ref], item) for ref, item in kept.items()
            )
            self._items = kept
            self._publish(changed)

    def apply(self, kind: ResourceKind, event_type: str, obj: Mapping[str, Any]) -> None:
        """One watch event of ``kind``."""
        ref = resource_ref(obj, kind)
        if ref is None:
            return
        with self._lock:
            if event_type == "DELETED":
                if self._items.pop(ref, None) is None:
                    return
                changed = True
            else:
                previous = self._items.get(ref)
                judged = judge(obj, kind, previous)
                if judged is None:
                    return
                self._items[ref] = judged
                changed = previous is None or _resolves_differently(previous, judged)
            self._publish(changed)

    def _publish(self, changed: bool) -> None:
        """A new snapshot (with the statuses and resource versions the status writer reads);
        a new ``generation`` only when the resolution could differ, so that a status-only
        change (every status write comes back by the watch) rebuilds no per-namespace views."""
        self.snapshot = dict(self._items)
        if changed:
            self.generation += 1
        if self.on_change is not None:
            self.on_change()


def _resolves_differently(before: Judged, after: Judged) -> bool:
    """Whether ``resolve`` could judge ``after`` otherwise than ``before`` (it reads nothing else of them)."""
    return (
        after.profile is not before.profile or after.last_good is not before.last_good or after.problems != before.problems
    )


@dataclass
class _KindHandler:
    table: ResourceTable
    kind: ResourceKind

    def replace(self, objects: list[dict[str, Any]]) -> None:
        self.table.replace(self.kind, objects)

    def apply(self, event_type: str, obj: dict[str, Any]) -> None:
        self.table.apply(self.kind, event_type, obj)


# -- judging and resolving ----------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What the injector makes of one resource: the Accepted condition, and the profile it uses."""

    accepted: bool
    reason: str
    message: str
    #: the profile the injector uses for this resource (the last good one), None when none
    in_use: Profile | None


@dataclass(frozen=True)
class Catalog:
    """Every resource judged, and the profiles in use: the cluster's by name, each namespace's by name."""

    verdicts: Mapping[ResourceRef, Verdict] = field(default_factory=dict)
    cluster: Mapping[str, Profile] = field(default_factory=dict)
    namespaced: Mapping[str, Mapping[str, Profile]] = field(default_factory=dict)

    def namespaces_with(self, name: str) -> list[str]:
        """The namespaces whose SidecarProfile ``name`` is in use."""
        return sorted(ns for ns, profiles in self.namespaced.items() if name in profiles)


def _shadow_message(name: str, cluster_resource: bool) -> str:
    owner = f"ClusterSidecarProfile {name}" if cluster_resource else f"the injector's profile {name}"
    return (
        f"metadata.name: a cluster-level profile of this name exists ({owner}); a SidecarProfile may not "
        "take its name: rename this one"
    )


_DISABLED_MESSAGE = (
    "namespaced profiles are turned off on this cluster (SIDECAR_INJECTOR_NAMESPACED_PROFILES=false): "
    "ask the cluster administrator for a ClusterSidecarProfile"
)


def _problems_message(problems: Iterable[str], in_use: Profile | None) -> str:
    text = "; ".join(problems)
    if in_use is not None:
        return f"{text} (the last accepted version {in_use.version}, hash {in_use.hash}, stays in use)"
    return f"{text} (not in use)"


def resolve_catalog(
    base: Mapping[str, Profile], judged: Mapping[ResourceRef, Judged], *, namespaced_enabled: bool = True
) -> Catalog:
    """Judge every resource against the injector's own profiles (``base``) and each other."""
    verdicts: dict[ResourceRef, Verdict] = {}
    cluster: dict[str, Profile] = {}
    for ref, item in sorted(judged.items(), key=lambda pair: pair[0].name):
        if ref.kind is not CLUSTER:
            continue
        if item.profile is not None:
            replaces = " (replaces the injector's own profile of that name)" if ref.name in base else ""
            verdict = Verdict(True, VALID, f"in use: version {item.profile.version}{replaces}", item.profile)
        else:
            verdict = Verdict(False, INVALID, _problems_message(item.problems, item.last_good), item.last_good)
        verdicts[ref] = verdict
        if verdict.in_use is not None:
            cluster[ref.name] = verdict.in_use

    namespaced: dict[str, dict[str, Profile]] = {}
    for ref, item in judged.items():
        if ref.kind is not NAMESPACED or ref.namespace is None:
            continue
        if not namespaced_enabled:
            verdicts[ref] = Verdict(False, DISABLED, _DISABLED_MESSAGE, None)
            continue
        if ref.name in cluster or ref.name in base:
            verdicts[ref] = Verdict(False, SHADOWS, _shadow_message(ref.name, ref.name in cluster), None)
            continue
        if item.profile is not None:
            message = f"in use for pods of namespace {ref.namespace}: version {item.profile.version}"
            verdict = Verdict(True, VALID, message, item.profile)
        else:
            verdict = Verdict(False, INVALID, _problems_message(item.problems, item.last_good), item.last_good)
        verdicts[ref] = verdict
        if verdict.in_use is not None:
            namespaced.setdefault(ref.namespace, {})[ref.name] = verdict.in_use
    return Catalog(verdicts, cluster, namespaced)


def admission_problems(
    obj: Mapping[str, Any], resolution: Catalog, base: Mapping[str, Profile], *, namespaced_enabled: bool = True
) -> tuple[list[str], list[str]]:
    """Why a profile resource being applied must be refused, and warnings for one that may be applied.

    The problems are the lines of ``profiles validate`` (``<resource>: <field>: <problem>``);
    the rules that depend on the other profiles (no shadowing) use ``resolution`` and the
    injector's own profiles (``base``), as the watcher will.
    """
    kind = resource_kind(obj)
    if kind is None:
        return [f"not a {NAMESPACED.kind} or {CLUSTER.kind}"], []
    ref = resource_ref(obj, kind)
    where = str(ref) if ref is not None else kind.kind
    if kind.namespaced and not namespaced_enabled:
        return [f"{where}: {_DISABLED_MESSAGE}"], []
    _profile, problems = profile_problems(obj, kind)
    lines = [f"{where}: {problem}" for problem in problems]
    warnings: list[str] = []
    if ref is not None and kind.namespaced and (ref.name in resolution.cluster or ref.name in base):
        lines.append(f"{where}: {_shadow_message(ref.name, ref.name in resolution.cluster)}")
    if ref is not None and not kind.namespaced and not lines:
        if ref.name in base:
            warnings.append(f"{where} replaces the injector's own profile {ref.name} in every namespace")
        tenants = resolution.namespaces_with(ref.name)
        if tenants:
            shown = ", ".join(tenants[:5]) + (f" and {len(tenants) - 5} more" if len(tenants) > 5 else "")
            warnings.append(f"the SidecarProfiles {ref.name} of namespaces {shown} will no longer be used")
    return lines, warnings


def _source(ref: ResourceRef) -> str:
    return str(ref)


@dataclass(frozen=True)
class _ResolverState:
    base: ProfileSet
    generation: int
    resolution: Catalog
    #: the view of a namespace without SidecarProfiles in use
    shared: ProfileSet
    views: Mapping[str, ProfileSet]


class ProfileResolver:
    """The profiles a pod of a namespace may ask for, as one ``Mapping[str, Profile]`` per namespace.

    ``base()`` returns the injector's own profiles (the reloader swaps them); ``table`` is
    the watched resources (None: profiles as resources are off). The views are rebuilt
    only when either changes — a request only compares two references and reads a dict.
    """

    def __init__(
        self,
        base: Callable[[], ProfileSet],
        table: ResourceTable | None = None,
        *,
        namespaced_enabled: bool = True,
    ):
        self._base = base
        self.table = table
        self.namespaced_enabled = namespaced_enabled
        self._lock = threading.Lock()
        self._state = self._build(base(), -1)

    def base(self) -> ProfileSet:
        """The injector's own profiles (the ConfigMap or directory, and the built-ins) now."""
        return self._base()

    def _build(self, base: ProfileSet, generation: int) -> _ResolverState:
        judged = self.table.snapshot if self.table is not None else {}
        resolution = resolve_catalog(base, judged, namespaced_enabled=self.namespaced_enabled)
        sources = dict(base.sources)
        refs = {ref.name: ref for ref in resolution.verdicts if ref.kind is CLUSTER}
        shared_profiles = {**base.profiles, **resolution.cluster}
        sources.update({name: _source(refs[name]) for name in resolution.cluster})
        shared = ProfileSet(shared_profiles, sources) if resolution.cluster else base
        views: dict[str, ProfileSet] = {}
        for namespace, own in resolution.namespaced.items():
            views[namespace] = ProfileSet(
                {**shared_profiles, **own},
                {**sources, **{name: _source(ResourceRef(NAMESPACED, namespace, name)) for name in own}},
            )
        return _ResolverState(base, generation, resolution, shared, views)

    def _current(self) -> _ResolverState:
        state = self._state
        base = self._base()
        generation = self.table.generation if self.table is not None else -1
        if state.base is base and state.generation == generation:
            return state
        with self._lock:
            state = self._state
            generation = self.table.generation if self.table is not None else -1
            if state.base is not base or state.generation != generation:
                state = self._state = self._build(base, generation)
        return state

    def profiles_for(self, namespace: str | None) -> ProfileSet:
        """The profiles a pod of ``namespace`` may ask for (None: no namespace, cluster-level only)."""
        state = self._current()
        return state.views.get(namespace, state.shared) if namespace else state.shared

    @property
    def resolution(self) -> Catalog:
        return self._current().resolution


# -- the status a resource should carry ------------------------------------------------------------------


#: the top-level status fields besides the conditions; the writer removes (nulls) those a status no longer has
STATUS_KEYS = ("observedGeneration", "version", "hash")


def desired_status(judged: Judged, verdict: Verdict, now: str) -> dict[str, Any]:
    """The ``status`` of a resource for this verdict. ``now`` (RFC 3339) becomes the condition's
    lastTransitionTime only when the condition's status changes."""
    condition_status = "True" if verdict.accepted else "False"
    previous = next(
        (
            c
            for c in judged.status.get("conditions") or ()
            if isinstance(c, Mapping) and c.get("type") == ACCEPTED and isinstance(c.get("lastTransitionTime"), str)
        ),
        None,
    )
    since = previous["lastTransitionTime"] if previous is not None and previous.get("status") == condition_status else now
    condition: dict[str, Any] = {
        "type": ACCEPTED,
        "status": condition_status,
        "reason": verdict.reason,
        "message": verdict.message[:32768],
        "lastTransitionTime": since,
    }
    status: dict[str, Any] = {}
    if judged.generation is not None:
        status["observedGeneration"] = judged.generation
        condition["observedGeneration"] = judged.generation
    if verdict.in_use is not None:
        status["version"] = verdict.in_use.version
        status["hash"] = verdict.in_use.hash
    if verdict.accepted and judged.spec is not None and verdict.in_use is judged.profile:
        # what a replica starting while a later edit is broken falls back to (recorded_last_good),
        # as JSON text: a merge patch replaces a string whole (an object it would merge into the
        # old one); left as it is (a merge patch without the key) while the spec is not accepted
        status["acceptedSpec"] = accepted_spec_text(judged.spec)
    status["conditions"] = [condition]
    return status


def accepted_spec_text(spec: Mapping[str, Any]) -> str:
    """``status.acceptedSpec``: the spec as compact JSON, keys sorted (the same spec, the same text)."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def status_is_current(judged: Judged, desired: Mapping[str, Any]) -> bool:
    """Whether the resource already carries ``desired`` (the version, hash and condition we would write)."""
    current = judged.status
    if any(current.get(key) != desired.get(key) for key in STATUS_KEYS):
        return False
    if "acceptedSpec" in desired and current.get("acceptedSpec") != desired["acceptedSpec"]:
        return False
    conditions = [c for c in current.get("conditions") or () if isinstance(c, Mapping) and c.get("type") == ACCEPTED]
    if len(conditions) != 1:
        return False
    have, want = conditions[0], desired["conditions"][0]
    return all(have.get(key) == want.get(key) for key in ("status", "reason", "message", "observedGeneration"))


# -- offline: profile resources in the input of inject, explain and profiles validate ---------------------


def profile_resources_in(documents: Iterable[Any]) -> list[Mapping[str, Any]]:
    """The SidecarProfile/ClusterSidecarProfile objects among parsed documents (``List`` items included),
    of the one version the API server serves (``sidecar.io/v1alpha1``: another is refused there)."""
    found: list[Mapping[str, Any]] = []
    for doc in documents:
        items = doc.get("items") if isinstance(doc, Mapping) and doc.get("kind") == "List" else [doc]
        found += [item for item in items if document_role(item)[0] == "resource"] if isinstance(items, list) else []
    return found


def offline_resolver(
    base: ProfileSet, resources: Iterable[Mapping[str, Any]], *, namespaced_enabled: bool = True
) -> ProfileResolver:
    """A resolver over profile resources given as objects (a file), as the server would resolve them."""
    table = ResourceTable()
    objects = list(resources)
    for kind in (CLUSTER, NAMESPACED):
        table.replace(kind, [obj for obj in objects if resource_kind(obj) is kind])
    return ProfileResolver(lambda: base, table, namespaced_enabled=namespaced_enabled)


def unused_resources(resolution: Catalog) -> list[str]:
    """One line per profile resource that is not accepted: which, why."""
    return [
        f"{ref} is not used: {verdict.reason}: {verdict.message}"
        for ref, verdict in sorted(resolution.verdicts.items(), key=lambda item: str(item[0]))
        if not verdict.accepted and verdict.in_use is None
    ]


def elsewhere_warnings(
    requested: Iterable[str], namespace: str | None, profiles: Mapping[str, Profile], resolution: Catalog
) -> list[str]:
    """Warnings for requested names that are only SidecarProfiles of other namespaces.

    A SidecarProfile applies to the pods of its own namespace: a pod elsewhere asking for
    it gets nothing from it, which the server can only call an unknown profile (it must
    not list other tenants' profiles); offline, the author of the manifests is told why.
    """
    warnings = []
    for name in dict.fromkeys(requested):
        if name in profiles:
            continue
        owners = [ns for ns in resolution.namespaces_with(name) if ns != namespace]
        if owners:
            warnings.append(
                f"profile {name} is a SidecarProfile of namespace {', '.join(owners)}: it applies only to pods "
                f"there, not to this one (namespace {namespace or 'unknown'})"
            )
    return warnings
