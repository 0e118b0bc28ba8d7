"""Build time only: the SidecarProfile/ClusterSidecarProfile CustomResourceDefinitions, generated from the Profile model.

Their structural OpenAPI schema is *generated* from :class:`~sidecar_injector.profiles.model.Profile`
— one source of truth. ``make crds`` (scripts/generate_crds.py) writes them into the chart
and a test keeps the committed files equal to what this module generates. Nothing in the
package imports this module at runtime (tests/test_layout.py checks it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import BaseModel

from sidecar_injector.profiles.model import Profile
from sidecar_injector.profiles.resources import ACCEPTED, CLUSTER, GROUP, NAMESPACED, VERSION, ResourceKind

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
# the header names the modules as they were when the chart's CRDs were last generated: the chart's
# files must change with it (`make crds`), which the chart's owners do
_GENERATED_HEADER = (
    "# Generated by `make crds` from the Profile model (app/sidecar_injector/profiles/model.py) by\n"
    "# app/sidecar_injector/profiles/crd_schema.py. Do not edit: change the model and run `make crds`.\n"
)


def crd_files() -> dict[str, str]:
    """File name -> YAML text of each CRD, exactly as committed in the chart."""
    return {
        f"{kind.crd_name}.yaml": _GENERATED_HEADER
        + yaml.safe_dump(custom_resource_definition(kind), sort_keys=False, width=100, allow_unicode=True)
        for kind in (NAMESPACED, CLUSTER)
    }
