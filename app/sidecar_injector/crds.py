"""Profiles as Kubernetes resources: ``sidecar.io/v1alpha1`` SidecarProfile and ClusterSidecarProfile.

A profile resource is a profile file in Kubernetes clothes: ``metadata.name`` is the
profile's name and ``spec`` is the profile format itself (every field of
:class:`~sidecar_injector.profiles.Profile`, ``name`` left out or equal to
``metadata.name``). A ``SidecarProfile`` belongs to its namespace and applies only to the
pods there; a ``ClusterSidecarProfile`` is the cluster administrator's, like the profiles
of the ConfigMap.

This module is pure (no I/O, no API client): the names of the two kinds, reading a
resource into a :class:`Profile` with problems that name the resource's fields
(``spec.containers[0].image: ...``), writing a profile as a resource (``profiles export
--as-crd``), and the two CustomResourceDefinitions, whose structural OpenAPI schema is
*generated* from the Profile model — one source of truth. ``make crds`` writes them into
the chart and a test keeps the committed files equal to what this module generates.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel

from sidecar_injector import yaml_io
from sidecar_injector.profiles import Profile, ProfileError, document_profile, validate_profile

GROUP = "sidecar.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
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
        raise ProfileError([f"not a {NAMESPACED.kind} or {CLUSTER.kind} ({API_VERSION})"])
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
    return {"apiVersion": API_VERSION, "kind": kind.kind, "metadata": metadata, "spec": profile_spec(profile)}


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


def read_profile_documents(texts: list[tuple[str, str]]) -> ProfileDocuments:
    """Plain profiles and profile resources from ``(source, YAML text)`` pairs, in any mix.

    Plain profiles are judged here (with the messages of the profile loader); the
    resources are handed back as objects to be judged with the others (their rules depend
    on each other: no SidecarProfile may take a cluster-level profile's name). A ``List``
    (``kubectl get -o yaml``) contributes its items.
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
            if isinstance(items, list):
                found.resources += [(where, item) for item in items if resource_kind(item) is not None]
                continue
            if resource_kind(doc) is not None:
                found.resources.append((where, doc))
                continue
            profile, problems = document_profile(doc, where)
            found.problems += problems
            if profile is None:
                continue
            if profile.name in found.profiles:
                earlier = found.sources[profile.name]
                found.problems.append(f"{source}: profile {profile.name!r} is already defined in {earlier}")
                continue
            found.profiles[profile.name] = profile
            found.sources[profile.name] = source
    return found


# -- the CustomResourceDefinitions ---------------------------------------------------------------


class SchemaError(Exception):
    """The profile model has a shape a structural CRD schema cannot express."""


#: JSON-schema keywords that mean the same in a Kubernetes structural schema, kept as they are
_KEPT = (
    *("description", "enum", "minLength", "maxLength", "minimum", "maximum"),
    *("minItems", "maxItems", "minProperties", "maxProperties", "multipleOf"),
)
_PRESERVE = "x-kubernetes-preserve-unknown-fields"


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A Kubernetes structural OpenAPI v3 schema of ``model`` (by alias), from pydantic's JSON schema.

    Kubernetes accepts a subset of JSON schema: every node has a type, no ``$ref``, no
    ``anyOf`` of types, no ``properties`` next to ``additionalProperties``. So references
    are inlined; an optional field (``X | None``) is just ``X`` (a null is pruned as
    "unset"); ``int | str`` is ``x-kubernetes-int-or-string``; and what the schema cannot
    say — a free-form ``dict[str, Any]`` such as a Kubernetes Container, a union of
    shapes — keeps its content as is (``x-kubernetes-preserve-unknown-fields``), for the
    injector's own validation, which checks Kubernetes objects field by field, to judge.
    Patterns (Python regular expressions) and formats are left to that validation too;
    defaults are not written (the API server would store them into every object).
    """
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return _convert(schema, schema.get("$defs", {}), ())


def _convert(node: Mapping[str, Any], defs: Mapping[str, Any], seen: tuple[str, ...]) -> dict[str, Any]:
    own = {k: v for k, v in node.items() if k not in ("$ref", "allOf", "anyOf", "oneOf", "discriminator", "$defs")}
    ref = node.get("$ref")
    if ref is None and isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
        ref = node["allOf"][0].get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name in seen:
            raise SchemaError(f"{' -> '.join((*seen, name))}: a recursive model cannot be a CRD schema")
        if name not in defs:
            raise SchemaError(f"unresolvable reference {ref}")
        target = dict(defs[name])
        if "description" in own:  # the field's description says more than the model's docstring
            target["description"] = own["description"]
        return _convert(target, defs, (*seen, name))

    variants = node.get("anyOf") or node.get("oneOf")
    if isinstance(node.get("type"), list):
        variants = [{"type": t} for t in node["type"]]
        own.pop("type")
    if variants:
        present = [v for v in variants if v.get("type") != "null"]
        if len(present) == 1:
            described = {"description": own["description"]} if "description" in own else {}
            return _convert({**own, **present[0], **described}, defs, seen)
        result: dict[str, Any] = {}
        if "description" in own:
            result["description"] = own["description"]
        if {v.get("type") for v in present} == {"integer", "string"} and all(len(v) == 1 for v in present):
            result["x-kubernetes-int-or-string"] = True
        else:
            result[_PRESERVE] = True
        return result

    out: dict[str, Any] = {}
    kind = node.get("type")
    if kind == "object":
        out["type"] = "object"
        properties = node.get("properties") or {}
        extra = node.get("additionalProperties")
        if properties:
            out["properties"] = {key: _convert(value, defs, seen) for key, value in properties.items()}
            required = [key for key in node.get("required") or () if key in properties]
            if required:
                out["required"] = required
            if extra not in (None, False):
                out[_PRESERVE] = True  # known fields and any others: not expressible as both
        elif isinstance(extra, Mapping) and extra:
            out["additionalProperties"] = _convert(extra, defs, seen)
        elif extra is not False:
            out[_PRESERVE] = True  # a free-form mapping
    elif kind == "array":
        out["type"] = "array"
        items = node.get("items")
        out["items"] = _convert(items, defs, seen) if isinstance(items, Mapping) and items else {_PRESERVE: True}
        if "prefixItems" in node:  # tuples: positions with their own types
            out["items"] = {_PRESERVE: True}
    elif kind in ("string", "integer", "number", "boolean"):
        out["type"] = kind
    elif kind is None and "const" not in node and "enum" not in node:
        return {**({"description": node["description"]} if "description" in node else {}), _PRESERVE: True}
    if "const" in node:
        out["enum"] = [node["const"]]
        out.setdefault("type", _json_type(node["const"]))
    if "description" in node:
        out = {"description": node["description"], **out}
    for key in _KEPT:
        if key in node and key not in out:
            out[key] = node[key]
    # JSON schema 2020-12 writes exclusive bounds as numbers; OpenAPI v3.0 as booleans on the bound
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(exclusive), (int, float)) and not isinstance(node[exclusive], bool):
            out[bound] = node[exclusive]
            out[exclusive] = True
    if "enum" in out and "type" not in out:
        out["type"] = _json_type(out["enum"][0])
    return out


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def spec_schema() -> dict[str, Any]:
    """The schema of ``spec``: the Profile model's, with ``name`` optional (metadata.name is the name)."""
    schema = structural_schema(Profile)
    schema["description"] = (
        "The profile, in the format of a profile file (see the sidecar-injector documentation); "
        "metadata.name is its name, so name may be left out here."
    )
    if "name" in schema.get("properties", {}):
        schema["properties"]["name"] = {
            "type": "string",
            "description": "Optional: when given, it must equal metadata.name.",
        }
    schema["required"] = [key for key in schema.get("required", []) if key != "name"]
    if not schema["required"]:
        del schema["required"]
    return schema


def status_schema() -> dict[str, Any]:
    """``status``, written by the injector: Accepted condition, observed generation, version and hash in use."""
    return {
        "type": "object",
        "description": "Written by the injector.",
        "properties": {
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "description": "The metadata.generation the injector last judged.",
            },
            "version": {
                "type": "string",
                "description": "The version the injector uses: the last accepted spec's (an unaccepted edit keeps it).",
            },
            "hash": {
                "type": "string",
                "description": "Content hash of the profile in use (pods record it in sidecar.io/status).",
            },
            "acceptedSpec": {
                "type": "string",
                "description": "The last accepted spec, as JSON: what every replica keeps injecting, even one "
                "that starts while a later edit is refused.",
            },
            "conditions": {
                "type": "array",
                "description": "Accepted: True when the spec is in use; False with a reason and a message naming the field.",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": {
                    "type": "object",
                    "required": ["type", "status", "lastTransitionTime", "reason", "message"],
                    "properties": {
                        "type": {"type": "string", "maxLength": 316},
                        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                        "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
                        "lastTransitionTime": {"type": "string", "format": "date-time"},
                        "reason": {"type": "string", "minLength": 1, "maxLength": 1024},
                        "message": {"type": "string", "maxLength": 32768},
                    },
                },
            },
        },
    }


def _accepted_column(field: str) -> str:
    return f'.status.conditions[?(@.type=="{ACCEPTED}")].{field}'


def custom_resource_definition(kind: ResourceKind) -> dict[str, Any]:
    """The CustomResourceDefinition of one profile kind (what the chart installs)."""
    scope = "the pods of its own namespace" if kind.namespaced else "pods of any namespace its allowedNamespaces allows"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": kind.kind + "List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": ["sidecar-injector"],
            },
            "scope": "Namespaced" if kind.namespaced else "Cluster",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": f"A sidecar profile for {scope}: pods ask for it by metadata.name "
                            "in their sidecar.io/inject annotation.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                            "required": ["spec"],
                        }
                    },
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Version", "type": "string", "jsonPath": ".spec.version"},
                        {"name": "Accepted", "type": "string", "jsonPath": _accepted_column("status")},
                        {"name": "Reason", "type": "string", "jsonPath": _accepted_column("reason"), "priority": 1},
                        {
                            "name": "In-Use",
                            "type": "string",
                            "jsonPath": ".status.version",
                            "priority": 1,
                            "description": "the version the injector uses (the last accepted spec's)",
                        },
                        {"name": "Hash", "type": "string", "jsonPath": ".status.hash", "priority": 1},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


#: where `make crds` writes the CRDs, relative to the repository (the chart renders them from there)
CRD_DIRECTORY = "charts/sidecar-injector/files/crds"
_GENERATED_HEADER = (
    "# Generated by `make crds` from the Profile model (app/sidecar_injector/profiles.py) by\n"
    "# app/sidecar_injector/crds.py. Do not edit: change the model and run `make crds`.\n"
)


def crd_files() -> dict[str, str]:
    """File name -> YAML text of each CRD, exactly as committed in the chart."""
    return {
        f"{kind.crd_name}.yaml": _GENERATED_HEADER
        + yaml.safe_dump(custom_resource_definition(kind), sort_keys=False, width=100, allow_unicode=True)
        for kind in (NAMESPACED, CLUSTER)
    }
