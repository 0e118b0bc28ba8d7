"""What the injection core is given besides the pod: the namespace's facts, the cluster policy, the request.

Plain data, below everything else in the core (the pod-shape readers and the decision both
take :class:`NamespaceFacts`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

NativeSidecarMode = Literal["auto", "always", "never"]

#: Namespaces that are never injected into, whatever a request says.
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})

#: etcd's default request limit (--max-request-bytes): a larger object is never stored
MAX_OBJECT_BYTES = 1536 * 1024


@dataclass(frozen=True)
class NamespaceFacts:
    """What the injector knows about the pod's namespace (from the Kubernetes API)."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


def string_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def namespace_facts(obj: Any) -> NamespaceFacts | None:
    """The facts the injector keeps about a Namespace object (a raw dict), or None."""
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str) or not metadata["name"]:
        return None
    return NamespaceFacts(metadata["name"], string_map(metadata.get("labels")), string_map(metadata.get("annotations")))


@dataclass(frozen=True)
class InjectionPolicy:
    """The cluster-wide rules the core applies: built once from the settings at the edges.

    Plain data, so the core depends on no settings or environment machinery and a test
    builds exactly the policy it means.
    """

    #: deny instead of warn on unknown profiles, conflicts and bad values
    strict: bool = False
    #: auto: run-to-completion pods and on request; always; never
    native_sidecars: NativeSidecarMode = "auto"
    #: profiles for ``sidecar.io/inject: true`` and automatic injection without sidecar.io/profiles
    default_profiles: tuple[str, ...] = ()
    #: never injected into, whatever a request says (system namespaces, the injector's own, exclusions)
    never_inject_namespaces: frozenset[str] = SYSTEM_NAMESPACES
    #: inject the default profiles into every pod of every namespace not excluded or disabled
    cluster_wide: bool = False
    #: never answer with a patch that makes the pod's JSON larger than this (bytes)
    max_object_bytes: int = MAX_OBJECT_BYTES


@dataclass(frozen=True)
class RequestContext:
    """What the AdmissionReview says about the request, beyond the pod itself."""

    operation: str = "CREATE"
    #: kind of the object under admission; only pods are ever mutated
    kind: str = "Pod"
    namespace: str | None = None
    dry_run: bool = False
    #: kind of the pod's (future) owner when the pod has no ownerReferences yet, e.g. "Job"
    #: for a pod template injected offline; None = read ``metadata.ownerReferences``.
    owner_kind: str | None = None
    #: its name, when known (offline: the workload's name where the workload owns its pods)
    owner_name: str | None = None
    #: the namespace's labels/annotations; None = not known (no lookup, or API unreachable)
    namespace_facts: NamespaceFacts | None = None
    #: the lookup was attempted and failed (API unreachable): automatic injection cannot be decided
    namespace_unavailable: bool = False
    #: size of the pod's JSON as received (the edge knows it); None = not known, size not checked
    object_bytes: int | None = None
