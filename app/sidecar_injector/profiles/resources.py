"""Profiles as Kubernetes resources: ``sidecar.io/v1alpha1`` SidecarProfile and ClusterSidecarProfile.

A profile resource is a profile file in Kubernetes clothes: ``metadata.name`` is the
profile's name and ``spec`` is the profile format itself (every field of
:class:`~sidecar_injector.profiles.model.Profile`, ``name`` left out or equal to
``metadata.name``). A ``SidecarProfile`` belongs to its namespace and applies only to the
pods there; a ``ClusterSidecarProfile`` is the cluster administrator's, like the profiles
of the ConfigMap.

This module is pure (no I/O, no API client): the names of the two kinds, reading a
resource into a :class:`Profile` with problems that name the resource's fields
(``spec.containers[0].image: ...``), writing a profile as a resource (``profiles export
--as-crd``), and the two CustomResourceDefinitions, whose structural OpenAPI schema is
*generated* from the Profile model by the build-time module
:mod:`sidecar_injector.profiles.crd_schema` (``make crds``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from sidecar_injector.base import yaml_io
from sidecar_injector.profiles.loading import ProfileError, document_profile, validate_profile
from sidecar_injector.profiles.model import Profile

GROUP = "sidecar.io"
VERSION = "v1alpha1"
PROFILE_API_VERSION = f"{GROUP}/{VERSION}"
#: the condition the injector writes on every profile resource
ACCEPTED = "Accepted"


@dataclass(frozen=True)
class ResourceKind:
    """One of the two profile kinds, with the names the API uses for it."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    namespaced: bool

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


NAMESPACED = ResourceKind("SidecarProfile", "sidecarprofiles", ("scp",), namespaced=True)
CLUSTER = ResourceKind("ClusterSidecarProfile", "clustersidecarprofiles", ("cscp",), namespaced=False)
KINDS: dict[str, ResourceKind] = {k.kind: k for k in (NAMESPACED, CLUSTER)}


def resource_kind(obj: Any) -> ResourceKind | None:
    """The profile kind of a raw object (any ``sidecar.io`` version), or None for anything else."""
    if not isinstance(obj, Mapping):
        return None
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not api_version.startswith(GROUP + "/") or not isinstance(kind, str):
        return None
    return KINDS.get(kind)


def document_role(doc: Any) -> tuple[str, str | None]:
    """What a YAML document of a profile source is, as ``(role, line)``.

    ``("resource", None)``: a SidecarProfile/ClusterSidecarProfile of ``sidecar.io/v1alpha1``;
    ``("profile", None)``: a plain profile (no ``apiVersion``/``kind``); ``("object", note)``: another
    Kubernetes object (a Deployment next to its profiles), not a profile; ``("invalid", problem)``:
    meant as a profile resource but not one the API server would take (an unknown kind of
    ``sidecar.io``, a misspelt kind, a version that does not exist), in one line with a did-you-mean.
    Stricter than :func:`resource_kind`, which takes any ``sidecar.io`` version (what a watch returns).
    """
    if not isinstance(doc, Mapping) or ("apiVersion" not in doc and "kind" not in doc):
        return "profile", None
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    kind_text = kind if isinstance(kind, str) else repr(kind)
    version_text = api_version if isinstance(api_version, str) else repr(api_version)
    ours = isinstance(api_version, str) and api_version.split("/")[0] == GROUP
    if isinstance(kind, str) and kind in KINDS:
        if api_version == PROFILE_API_VERSION:
            return "resource", None
        return "invalid", (
            f'{kind}: no matches for kind "{kind}" in version "{version_text}" (the API server would refuse it); '
            f"did you mean apiVersion: {PROFILE_API_VERSION}?"
        )
    close = difflib.get_close_matches(kind, list(KINDS), n=1, cutoff=0.75) if isinstance(kind, str) else []
    if not close and isinstance(kind, str):
        close = [k for k in KINDS if k.lower() == kind.lower()]
    if close or ours:
        hint = f"did you mean kind: {close[0]}?" if close else f"the kinds of {GROUP} are {', '.join(KINDS)}"
        return "invalid", f'unknown kind "{kind_text}" in version "{version_text}" (not a profile); {hint}'
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return "object", f"{kind_text}/{name if isinstance(name, str) else '?'} is not a profile: skipped"


def with_namespace(obj: Mapping[str, Any], namespace: str | None) -> Mapping[str, Any]:
    """A SidecarProfile without ``metadata.namespace`` in ``namespace`` (None: ``default``), as
    ``kubectl apply [-n NAMESPACE]`` creates it; every other object unchanged."""
    if resource_kind(obj) is not NAMESPACED:
        return obj
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping) or metadata.get("namespace"):
        return obj
    return {**obj, "metadata": {**metadata, "namespace": namespace or "default"}}


@dataclass(frozen=True)
class ResourceRef:
    """Which profile resource: kind, namespace (None for cluster-scoped) and name."""

    kind: ResourceKind
    namespace: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.kind.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind.kind} {self.name}"


def resource_ref(obj: Mapping[str, Any], kind: ResourceKind | None = None) -> ResourceRef | None:
    """The reference of a profile resource, or None when its kind or metadata is unusable."""
    kind = kind or resource_kind(obj)
    metadata = obj.get("metadata")
    if kind is None or not isinstance(metadata, Mapping):
        return None
    name, namespace = metadata.get("name"), metadata.get("namespace")
    if not isinstance(name, str) or not name:
        return None
    if kind.namespaced:
        if not isinstance(namespace, str) or not namespace:
            return None
        return ResourceRef(kind, namespace, name)
    return ResourceRef(kind, None, name)


_FIELD_PATH = re.compile(r"^[A-Za-z_][\w.\[\]-]*: ")


def _spec_line(line: str) -> str:
    """A problem of the profile model, with its field moved to where it is in the resource."""
    if line.startswith("name: "):
        return "metadata." + line
    if _FIELD_PATH.match(line):
        return "spec." + line
    return "spec: " + line


def profile_problems(obj: Mapping[str, Any], kind: ResourceKind) -> tuple[Profile | None, list[str]]:
    """Read a profile resource: the profile, or None and every problem as ``field: problem``.

    The fields are the resource's (``metadata.name``, ``spec.containers[0].image``), so a
    problem reads the same in ``kubectl apply``'s refusal, in the resource's status and in
    ``profiles validate``.
    """
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if not isinstance(name, str) or not name:
        return None, ["metadata.name: required"]
    spec = obj.get("spec")
    if spec is None:
        return None, ["spec: required (the profile: containers, volumes, ...)"]
    if not isinstance(spec, Mapping):
        return None, [f"spec: expected a mapping, got {type(spec).__name__}"]
    problems: list[str] = []
    if "name" in spec and spec["name"] != name:
        problems.append(
            f"spec.name: {spec['name']!r} differs from metadata.name {name!r} "
            "(leave it out: metadata.name is the profile's name)"
        )
    if kind.namespaced and spec.get("allowedNamespaces") is not None:
        problems.append(
            "spec.allowedNamespaces: not allowed on a SidecarProfile, which applies to the pods of its own "
            "namespace only (a ClusterSidecarProfile can restrict where it is used)"
        )
    profile: Profile | None = None
    try:
        profile = validate_profile({**spec, "name": name})
    except ProfileError as exc:
        problems += [_spec_line(line) for line in exc.problems]
    return (None, problems) if problems else (profile, [])


def profile_from_resource(obj: Mapping[str, Any]) -> Profile:
    """The profile of a SidecarProfile/ClusterSidecarProfile object. Raises ProfileError naming it and its fields."""
    kind = resource_kind(obj)
    if kind is None:
        raise ProfileError([f"not a {NAMESPACED.kind} or {CLUSTER.kind} ({PROFILE_API_VERSION})"])
    profile, problems = profile_problems(obj, kind)
    if profile is None:
        ref = resource_ref(obj, kind)
        where = str(ref) if ref else kind.kind
        raise ProfileError([f"{where}: {line}" for line in problems])
    return profile


def profile_spec(profile: Profile) -> dict[str, Any]:
    """A profile as the ``spec`` of a resource: the fields that differ from their defaults, without name."""
    spec = profile.model_dump(by_alias=True, exclude_defaults=True, mode="json")
    spec.pop("name", None)
    return spec


def resource_from_profile(profile: Profile, kind: ResourceKind = CLUSTER, namespace: str | None = None) -> dict[str, Any]:
    """A profile as a ClusterSidecarProfile (or, with a namespace, SidecarProfile) manifest."""
    metadata: dict[str, Any] = {"name": profile.name}
    if kind.namespaced:
        if not namespace:
            raise ValueError("a SidecarProfile needs a namespace")
        metadata["namespace"] = namespace
    return {"apiVersion": PROFILE_API_VERSION, "kind": kind.kind, "metadata": metadata, "spec": profile_spec(profile)}


@dataclass
class ProfileDocuments:
    """What YAML texts of profiles hold: plain profiles (the file format) and profile resources."""

    profiles: dict[str, Profile]
    #: profile name -> the file it came from
    sources: dict[str, str]
    #: (where: file and document, the object) of each SidecarProfile/ClusterSidecarProfile
    resources: list[tuple[str, Mapping[str, Any]]]
    #: every problem of the plain profiles and of the texts, each naming file and field
    problems: list[str]
    #: the other Kubernetes objects, skipped (one line each)
    notes: list[str] = field(default_factory=list)


def read_profile_documents(texts: list[tuple[str, str]], namespace: str | None = None) -> ProfileDocuments:
    """Plain profiles and profile resources from ``(source, YAML text)`` pairs, in any mix.

    Plain profiles are judged here (with the messages of the profile loader); the
    resources are handed back as objects to be judged with the others (their rules depend
    on each other: no SidecarProfile may take a cluster-level profile's name). A ``List``
    (``kubectl get -o yaml``) contributes its items. A SidecarProfile without a namespace
    is in ``namespace`` (None: ``default``), as ``kubectl apply`` would create it; other
    Kubernetes objects are skipped with a note; a misspelt kind or a version that does not
    exist is a problem.
    """
    found = ProfileDocuments({}, {}, [], [])
    for source, text in texts:
        try:
            documents = yaml_io.load_all(text)
        except yaml.YAMLError as exc:
            found.problems.append(f"{source}: not valid YAML: {exc}")
            continue
        for number, doc in enumerate(documents, start=1):
            where = f"{source} (document {number})" if len(documents) > 1 else source
            if doc is None:
                continue
            items = doc.get("items") if isinstance(doc, Mapping) and doc.get("kind") == "List" else None
            for item in items if isinstance(items, list) else [doc]:
                _read_document(found, source, where, item, namespace)
    return found


def _read_document(found: ProfileDocuments, source: str, where: str, doc: Any, namespace: str | None) -> None:
    role, line = document_role(doc)
    if role == "resource":
        found.resources.append((where, with_namespace(doc, namespace)))
        return
    if role == "object":
        found.notes.append(f"{where}: {line}")
        return
    if role == "invalid":
        found.problems.append(f"{where}: {line}")
        return
    profile, problems = document_profile(doc, where)
    found.problems += problems
    if profile is None:
        return
    if profile.name in found.profiles:
        earlier = found.sources[profile.name]
        found.problems.append(f"{source}: profile {profile.name!r} is already defined in {earlier}")
        return
    found.profiles[profile.name] = profile
    found.sources[profile.name] = source
