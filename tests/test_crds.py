"""The SidecarProfile/ClusterSidecarProfile CRDs: generated from the Profile model, structural,
valid for Kubernetes 1.29 and the newest, accepting every valid profile; and reading a
profile resource with problems that name the resource's own fields."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel, Field

from sidecar_injector.profiles.crd_schema import (
    CRD_DIRECTORY,
    SchemaError,
    crd_files,
    custom_resource_definition,
    structural_schema,
)
from sidecar_injector.profiles.loading import ProfileError, builtin_profiles
from sidecar_injector.profiles.resources import (
    CLUSTER,
    NAMESPACED,
    profile_from_resource,
    profile_problems,
    resource_from_profile,
    resource_kind,
)

ROOT = Path(__file__).resolve().parent.parent

#: the OpenAPI v3 keywords a CRD schema may use (apiextensions.k8s.io/v1 JSONSchemaProps), less
#: the ones structural schemas forbid ($ref, definitions, patternProperties, additionalItems, ...)
ALLOWED_KEYWORDS = {
    "description",
    "type",
    "format",
    "title",
    "default",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "multipleOf",
    "enum",
    "maxProperties",
    "minProperties",
    "required",
    "items",
    "properties",
    "additionalProperties",
    "nullable",
    "example",
    "externalDocs",
}


def structural_problems(node: Any, path: str = "") -> list[str]:
    """What makes ``node`` not a structural schema, by the rules of the Kubernetes docs
    ("Specifying a structural schema"); [] when it is one."""
    if not isinstance(node, dict):
        return [f"{path or '<root>'}: not a schema object"]
    problems = [
        f"{path}: keyword {key!r} is not allowed in a CRD schema"
        for key in node
        if key not in ALLOWED_KEYWORDS and not key.startswith("x-kubernetes-")
    ]
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    if int_or_string and "type" in node:
        problems.append(f"{path}: x-kubernetes-int-or-string with a type")
    if not node.get("type") and not (preserve or int_or_string):
        problems.append(f"{path}: no type (and neither preserve-unknown-fields nor int-or-string)")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties together")
    if node.get("type") == "object" and "items" in node:
        problems.append(f"{path}: an object with items")
    if node.get("type") == "array" and not isinstance(node.get("items"), dict):
        problems.append(f"{path}: an array without an items schema")
    problems += [
        f"{path}: {key} must be a boolean in OpenAPI v3.0"
        for key in ("exclusiveMinimum", "exclusiveMaximum")
        if key in node and not isinstance(node[key], bool)
    ]
    for name, child in (node.get("properties") or {}).items():
        problems += structural_problems(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        problems += structural_problems(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        problems += structural_problems(node["additionalProperties"], f"{path}{{}}")
    return problems


def openapi_schema(kind=NAMESPACED) -> dict[str, Any]:
    return custom_resource_definition(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


# -- generation ----------------------------------------------------------------------------------


def test_the_committed_crds_are_the_ones_the_profile_model_generates():
    directory = ROOT / CRD_DIRECTORY
    committed = {p.name: p.read_text(encoding="utf-8") for p in directory.glob("*.yaml")}
    assert committed == crd_files(), "the Profile model changed: run `make crds` and commit the chart's CRDs"


def test_the_generator_script_check_mode_agrees():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_crds.py"), "--check"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("kind", [NAMESPACED, CLUSTER], ids=lambda k: k.kind)
def test_each_crd_schema_is_structural(kind):
    schema = openapi_schema(kind)
    assert structural_problems(schema) == []
    assert schema["properties"]["metadata"] == {"type": "object"}, "metadata may only be typed (no other constraints)"


def test_the_structural_checker_catches_what_kubernetes_refuses():
    assert structural_problems({"type": "object", "properties": {"a": {"$ref": "#/x"}}})
    assert structural_problems({"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}]}}})
    assert structural_problems({"type": "object", "properties": {"a": {"description": "untyped"}}})
    assert structural_problems({"type": "object", "properties": {"a": {"type": "integer", "exclusiveMinimum": 0}}})
    assert structural_problems({"type": "object", "properties": {}, "additionalProperties": {"type": "string"}})
    assert not structural_problems({"type": "object", "properties": {"a": {"x-kubernetes-preserve-unknown-fields": True}}})


@pytest.mark.parametrize("version", ["1.29.0", kubernetes_validate.latest_version()])
@pytest.mark.parametrize("kind", [NAMESPACED, CLUSTER], ids=lambda k: k.kind)
def test_each_crd_is_a_valid_customresourcedefinition(kind, version):
    kubernetes_validate.validate(custom_resource_definition(kind), version, strict=True)


@pytest.mark.parametrize("kind", [NAMESPACED, CLUSTER], ids=lambda k: k.kind)
def test_each_crd_names_scope_status_and_printer_columns(kind):
    crd = custom_resource_definition(kind)
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{kind.plural}.sidecar.io"
    assert spec["group"] == "sidecar.io" and spec["scope"] == ("Namespaced" if kind.namespaced else "Cluster")
    assert spec["names"]["kind"] == kind.kind and spec["names"]["shortNames"]
    [version] = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns["Version"]["jsonPath"] == ".spec.version"
    assert columns["Accepted"]["jsonPath"] == '.status.conditions[?(@.type=="Accepted")].status'
    assert columns["Age"] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def test_container_and_volume_objects_keep_their_unknown_fields_for_the_injector_to_check():
    spec = openapi_schema()["properties"]["spec"]
    for field in ("containers", "initContainers", "volumes", "appVolumeMounts", "appEnv"):
        assert spec["properties"][field]["items"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert "name" not in spec.get("required", []), "metadata.name is the profile's name"
    assert "version" in spec["required"]


@pytest.mark.parametrize("name", sorted(builtin_profiles()))
def test_every_builtin_profile_as_a_resource_passes_the_crd_schema(name):
    """A schema stricter than the profile format would make valid profiles unappliable."""
    resource = resource_from_profile(builtin_profiles()[name])
    resource["metadata"]["creationTimestamp"] = "2025-01-01T00:00:00Z"
    jsonschema.validate(resource, openapi_schema(CLUSTER))
    assert profile_from_resource(resource) == builtin_profiles()[name]


def test_the_scalar_forms_the_profile_loader_accepts_pass_the_crd_schema_too():
    """YAML turns 1.0, 8080 and true into numbers and booleans; the loader takes them as text, so must the CRD."""
    spec = {
        "version": 1.0,
        "containers": [{"name": "s", "image": "busybox:1.36.1", "env": [{"name": "P", "value": "{{ params.port }}"}]}],
        "parameters": {
            "port": {"type": "integer", "default": 8080, "minimum": 1, "maximum": 65535},
            "verbose": {"type": "boolean", "default": True},
            "level": {"type": "enum", "enum": [1, 2, 3], "default": 2},
        },
        "maxResources": {"cpu": 1, "memory": "1Gi"},
    }
    spec["containers"][0]["env"] += [
        {"name": "V", "value": "{{ params.verbose }}"},
        {"name": "L", "value": "{{ params.level }}"},
    ]
    resource = {
        "apiVersion": "sidecar.io/v1alpha1",
        "kind": "ClusterSidecarProfile",
        "metadata": {"name": "p"},
        "spec": spec,
    }

    profile = profile_from_resource(resource)

    assert profile.version == "1.0"
    jsonschema.validate(resource, openapi_schema(CLUSTER))


def test_the_crd_schema_refuses_a_wrongly_typed_field():
    resource = resource_from_profile(builtin_profiles()["logging"])
    resource["spec"]["nativeSidecar"] = "yes"
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'boolean'"):
        jsonschema.validate(resource, openapi_schema(CLUSTER))


class _Parameter(BaseModel):
    type: Literal["string", "integer"]
    default: int | str | None = None
    minimum: int | None = Field(None, gt=0)
    description: str = Field("", description="what the parameter is for")


class _Shapes(BaseModel):
    """A model with the shapes the profile format grows: maps of models, unions, free-form values."""

    parameters: dict[str, _Parameter] = Field(default_factory=dict)
    placement: Literal["first", "last"] = "last"
    anything: Any = None
    pairs: tuple[int, str] | None = None
    items: list[dict[str, Any]] = Field(default_factory=list)
    choice: _Parameter | int | None = None


def test_the_generator_turns_every_shape_into_a_structural_schema():
    schema = structural_schema(_Shapes)

    assert structural_problems(schema) == []
    properties = schema["properties"]
    parameter = properties["parameters"]["additionalProperties"]
    assert parameter["properties"]["type"] == {"type": "string", "enum": ["string", "integer"]}
    assert parameter["properties"]["default"] == {"x-kubernetes-int-or-string": True}
    assert parameter["properties"]["minimum"] == {"type": "integer", "minimum": 0, "exclusiveMinimum": True}
    assert parameter["properties"]["description"]["description"] == "what the parameter is for"
    assert parameter["required"] == ["type"]
    assert properties["placement"] == {"type": "string", "enum": ["first", "last"]}
    assert properties["anything"] == {"x-kubernetes-preserve-unknown-fields": True}
    assert properties["pairs"]["items"] == {"x-kubernetes-preserve-unknown-fields": True}
    assert properties["choice"] == {"x-kubernetes-preserve-unknown-fields": True}
    assert "default" not in str(schema.get("properties", {}).get("placement")), "defaults are never written"


class _Tree(BaseModel):
    children: list[_Tree] = Field(default_factory=list)


def test_a_recursive_model_is_refused_loudly():
    with pytest.raises(SchemaError, match="recursive"):
        structural_schema(_Tree)


# -- reading a profile resource ---------------------------------------------------------------------


def resource(kind: str = "SidecarProfile", name: str = "audit", namespace: str | None = "shop", **spec: Any) -> dict:
    body = {
        "version": "1.0.0",
        "containers": [{"name": "audit", "image": "busybox:1.36.1"}],
        **spec,
    }
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "sidecar.io/v1alpha1", "kind": kind, "metadata": metadata, "spec": body}


def test_metadata_name_is_the_profile_name():
    profile = profile_from_resource(resource())
    assert profile.name == "audit" and profile.version == "1.0.0"
    with_name = resource()
    with_name["spec"]["name"] = "audit"
    assert profile_from_resource(with_name).name == "audit"


def test_problems_name_the_fields_of_the_resource():
    broken = resource(containers=[{"name": "audit", "image": "busybox", "imagePulPolicy": "Always"}])

    profile, problems = profile_problems(broken, NAMESPACED)

    assert profile is None
    assert "spec.containers[0].image: image 'busybox' has no tag: pin a version (e.g. busybox:1.2.3) or a digest" in problems
    assert "spec.containers[0].imagePulPolicy: unknown field" in problems
    _, problems = profile_problems(resource(version=""), NAMESPACED)
    assert problems == ["spec.version: String should have at least 1 character"]


def test_an_unusable_name_is_a_metadata_name_problem():
    _, problems = profile_problems(resource(name="Not.A.Label"), NAMESPACED)
    assert problems and problems[0].startswith("metadata.name: profile name 'Not.A.Label' must be a DNS-1123 label")


def test_spec_name_must_agree_with_metadata_name():
    other = resource(name="audit")
    other["spec"]["name"] = "other"
    _, problems = profile_problems(other, NAMESPACED)
    assert problems == [
        "spec.name: 'other' differs from metadata.name 'audit' (leave it out: metadata.name is the profile's name)"
    ]


def test_a_sidecarprofile_may_not_restrict_namespaces_but_a_clustersidecarprofile_may():
    policy = {"allowedNamespaces": {"names": ["shop"]}}
    _, problems = profile_problems(resource(**policy), NAMESPACED)
    assert [p.split(":")[0] for p in problems] == ["spec.allowedNamespaces"]

    profile, problems = profile_problems(resource("ClusterSidecarProfile", namespace=None, **policy), CLUSTER)
    assert problems == [] and profile is not None and profile.allowed_namespaces is not None


def test_a_problem_without_a_field_is_attributed_to_spec():
    _, problems = profile_problems(resource(containers=[]), NAMESPACED)
    assert problems == ["spec: profile adds nothing: give it containers, initContainers, appEnv or appVolumeMounts"]


@pytest.mark.parametrize(
    ("obj", "problem"),
    [
        ({"metadata": {"name": "x"}}, "spec: required"),
        ({"metadata": {"name": "x"}, "spec": ["a"]}, "spec: expected a mapping, got list"),
        ({"metadata": {}, "spec": {}}, "metadata.name: required"),
    ],
)
def test_a_resource_without_a_usable_spec_or_name_says_so(obj, problem):
    _, problems = profile_problems({"apiVersion": "sidecar.io/v1alpha1", "kind": "SidecarProfile", **obj}, NAMESPACED)
    assert problems[0].startswith(problem)


def test_profile_from_resource_names_the_resource_in_its_error():
    with pytest.raises(ProfileError) as failure:
        profile_from_resource(resource(version=""))
    assert failure.value.problems[0].startswith("SidecarProfile shop/audit: spec.version: ")


def test_only_sidecar_io_kinds_are_profile_resources():
    assert resource_kind(resource()) is NAMESPACED
    assert resource_kind({"apiVersion": "sidecar.io/v1", "kind": "ClusterSidecarProfile"}) is CLUSTER
    assert resource_kind({"apiVersion": "example.com/v1", "kind": "SidecarProfile"}) is None
    assert resource_kind({"apiVersion": "v1", "kind": "Pod"}) is None
    assert resource_kind("text") is None


def test_export_writes_a_profile_as_a_resource_without_defaults():
    exported = resource_from_profile(builtin_profiles()["logging"])
    assert exported["apiVersion"] == "sidecar.io/v1alpha1" and exported["kind"] == "ClusterSidecarProfile"
    assert exported["metadata"] == {"name": "logging"}
    assert "name" not in exported["spec"] and "nativeSidecar" not in exported["spec"]
    yaml.safe_dump(exported)  # plain data
    namespaced = resource_from_profile(builtin_profiles()["logging"], NAMESPACED, "shop")
    assert namespaced["metadata"] == {"name": "logging", "namespace": "shop"}
