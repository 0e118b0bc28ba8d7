"""Sidecar profiles: the format, strict validation, and loading.

A profile is one YAML document::

    name: logging
    version: "1.0.0"
    description: ships /var/log/app/*.log
    nativeSidecar: false          # inject `containers` as native sidecars
    containers: [...]             # Kubernetes Container objects (sidecars)
    initContainers: [...]         # Kubernetes Container objects (run to completion)
    volumes: [...]                # Kubernetes Volume objects
    appVolumeMounts: [...]        # VolumeMounts added to every application container
    appEnv: [...]                 # EnvVars added to every application container
    podAnnotations: {...}         # pod annotations added when absent
    localPorts: [15000]           # ports the sidecars bind without declaring them (checked for clashes)
    hostNetwork: refused          # "allowed": inject into host-network pods despite ports (default refused)
    allowedNamespaces:            # policy: where the profile may be used (absent: everywhere)
      names: [payments]           #   these namespaces, and/or
      selector: {matchLabels: {team: platform}}   # namespaces whose labels match

Kubernetes objects stay plain dicts (any field Kubernetes knows passes through) but are
checked field by field against the Kubernetes object schema at load, so a typo is an
error naming the file and field rather than a silently broken pod.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache, cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from sidecar_injector import yaml_io
from sidecar_injector.annotations import value_key_prefix
from sidecar_injector.kube_schema import check_object
from sidecar_injector.parameters import RESOURCE_KEYS, Parameter, parameter_names_problem, probe_value
from sidecar_injector.quantity import parse_quantity
from sidecar_injector.templating import PodFacts, Ref, Templates, find_templates
from sidecar_injector.text import printable

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def image_tag_problem(image: str) -> str | None:
    """Why an image reference is not pinned, or None when it is."""
    if _DIGEST.search(image):
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image!r} has no tag: pin a version (e.g. {image}:1.2.3) or a digest"
    if last.rsplit(":", 1)[1] == "latest":
        return f"image {image!r} uses 'latest': pin a version or a digest"
    return None


def _dns_label(value: str, what: str) -> str:
    if len(value) > 63 or not DNS_LABEL.match(value):
        raise ValueError(
            f"{what} {value!r} must be a DNS-1123 label "
            "(lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63)"
        )
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


class LabelSelectorRequirement(_Strict):
    key: str = Field(min_length=1, max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs values")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels


class LabelSelector(_Strict):
    """A Kubernetes label selector (matchLabels AND every matchExpression)."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            requirement.matches(labels) for requirement in self.match_expressions
        )

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.match_labels.items()]
        for r in self.match_expressions:
            values = ",".join(r.values)
            parts.append(
                {
                    "In": f"{r.key} in ({values})",
                    "NotIn": f"{r.key} notin ({values})",
                    "Exists": r.key,
                    "DoesNotExist": f"!{r.key}",
                }[r.operator]
            )
        return ", ".join(parts) or "(everything)"


class NamespacePolicy(_Strict):
    """Where a profile may be used: namespaces by name, or whose labels match a selector."""

    names: list[str] = Field(default_factory=list)
    selector: LabelSelector | None = None

    @field_validator("names")
    @classmethod
    def _names_are_labels(cls, value: list[str]) -> list[str]:
        return [_dns_label(name, "namespace name") for name in value]

    @model_validator(mode="after")
    def _says_something(self) -> NamespacePolicy:
        if not self.names and self.selector is None:
            raise ValueError("allowedNamespaces needs names, a selector or both")
        return self

    def allows(self, namespace: str | None, labels: Mapping[str, str] | None) -> bool | None:
        """True/False; None when only the namespace's (unknown) labels could tell."""
        if namespace is not None and namespace in self.names:
            return True
        if self.selector is None:
            return False
        if labels is None:
            return None
        return self.selector.matches(labels)

    def describe(self) -> str:
        parts = []
        if self.names:
            parts.append("namespaces " + ", ".join(self.names))
        if self.selector is not None:
            parts.append("namespaces labelled " + self.selector.describe())
        return " or ".join(parts)


class ResourceCap(_Strict):
    """``maxResources``: an admin's cap on what pods may set for a profile's sidecars."""

    cpu: str | None = None
    memory: str | None = None

    @field_validator("cpu", "memory", mode="before", json_schema_input_type=str | int | float | None)
    @classmethod
    def _as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    def problems(self) -> list[str]:
        errors = []
        for resource in ("cpu", "memory"):
            value = getattr(self, resource)
            if value is None:
                continue
            try:
                parse_quantity(value)
            except ValueError as exc:
                errors.append(f"maxResources.{resource}: {exc}")
        return errors

    def amounts(self) -> dict[str, Any]:
        return {r: parse_quantity(getattr(self, r)) for r in ("cpu", "memory") if getattr(self, r) is not None}

    def value(self, resource: str) -> str:
        return str(getattr(self, resource))


class Profile(BaseModel):
    """One validated sidecar profile. Immutable once loaded."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
    )

    name: str
    version: str = Field(min_length=1, max_length=64)
    description: str = ""
    native_sidecar: bool = False
    containers: list[dict[str, Any]] = Field(default_factory=list)
    init_containers: list[dict[str, Any]] = Field(default_factory=list)
    volumes: list[dict[str, Any]] = Field(default_factory=list)
    app_volume_mounts: list[dict[str, Any]] = Field(default_factory=list)
    app_env: list[dict[str, Any]] = Field(default_factory=list)
    pod_annotations: dict[str, str] = Field(default_factory=dict)
    #: TCP ports the sidecars bind without declaring them as container ports (e.g. an admin port
    #: on 127.0.0.1): checked against the pod's ports and against mesh proxies already in it
    local_ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(default_factory=list)
    #: host-network pods: every port binds on the node; "allowed" only when the author knows it is safe
    host_network: Literal["refused", "allowed"] = "refused"
    #: what a pod (or its namespace) may set, by annotation <profile>.sidecar.io/<name>
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    #: first: native sidecars before the pod's own init containers, regular ones before the app containers
    placement: Literal["first", "last"] = "last"
    #: native sidecars get a startupProbe from their readinessProbe: the app starts once they are ready
    wait_ready: bool = False
    #: Secrets for pulling the sidecar images, added to the pod's imagePullSecrets when absent
    image_pull_secrets: list[str] = Field(default_factory=list)
    #: the most a pod may set with the <profile>.sidecar.io/{cpu,memory}-{request,limit} keys
    max_resources: ResourceCap | None = None
    allowed_namespaces: NamespacePolicy | None = None

    @field_validator("name")
    @classmethod
    def _name_is_label(cls, value: str) -> str:
        return _dns_label(value, "profile name")

    @field_validator("version", mode="before", json_schema_input_type=str | int | float)
    @classmethod
    def _version_as_text(cls, value: object) -> object:
        # `version: 1.0` in YAML is a float; users mean the text they typed.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("pod_annotations")
    @classmethod
    def _annotation_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            prefix, _, name = key.rpartition("/")
            if (
                len(name) > 63
                or not _QUALIFIED_NAME.match(name)
                or (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)))
                or (not prefix and "/" in key)
            ):
                raise ValueError(
                    f"annotation key {key!r} is not a valid Kubernetes key "
                    "([prefix/]name: prefix a DNS subdomain, name ≤63 of [A-Za-z0-9-_.])"
                )
        return value

    @field_validator("parameters", mode="before")
    @classmethod
    def _parameter_names(cls, value: object) -> object:
        if isinstance(value, dict) and (problems := parameter_names_problem(value)):
            raise ValueError("\n".join(problems))
        return value

    @field_validator("image_pull_secrets")
    @classmethod
    def _secret_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
                raise ValueError(f"imagePullSecrets: {name!r} is not a Secret name (a DNS subdomain)")
        if len(set(value)) != len(value):
            raise ValueError("imagePullSecrets: a name is listed twice")
        return value

    @model_validator(mode="after")
    def _check_kubernetes_objects(self) -> Profile:
        errors: list[str] = list(self.templates.problems)
        declared = set(self.parameters)
        used = {ref.key for ref in self.templates.refs if ref.kind == "param"}
        errors += [f"placeholder params.{name}: no parameter {name} is declared" for name in sorted(used - declared)]
        errors += [f"parameters.{name}: declared but never used in a placeholder" for name in sorted(declared - used)]
        integers = self._integer_parameters
        for slot in self.templates.slots:
            part = slot.parts[0]
            single = len(slot.parts) == 1 and isinstance(part, Ref) and part.kind == "param" and part.key in integers
            if slot.kind == "int" and not single:
                errors.append(f"{slot.where}: takes an integer: make it exactly one placeholder of an integer parameter")
        if not errors:
            # check what a pod would get, with each parameter's default (or a value of its type)
            probe = {name: probe_value(parameter) for name, parameter in self.parameters.items()}
            rendered = self.templates.render(self._sections, probe, PodFacts(), integers)
            errors += _object_problems(rendered, self.local_ports)
        if self.wait_ready:
            errors += [
                f"containers[{i}]: waitReady needs a readinessProbe to derive the start-up check from"
                for i, c in enumerate(self.containers)
                if not isinstance(c.get("readinessProbe"), dict)
            ]
            if not self.containers:
                errors.append("waitReady: the profile has no containers to wait for")
        if self.max_resources is not None:
            errors += self.max_resources.problems()
        if not (self.containers or self.init_containers or self.app_env or self.app_volume_mounts):
            errors.append("profile adds nothing: give it containers, initContainers, appEnv or appVolumeMounts")
        if errors:
            raise ValueError("\n".join(errors))
        return self

    # -- derived data, computed once per profile -----------------------------------------

    @cached_property
    def _sections(self) -> dict[str, Any]:
        return {
            "containers": self.containers,
            "initContainers": self.init_containers,
            "volumes": self.volumes,
            "appVolumeMounts": self.app_volume_mounts,
            "appEnv": self.app_env,
            "podAnnotations": self.pod_annotations,
        }

    @cached_property
    def templates(self) -> Templates:
        """The placeholders of the profile, found once."""
        return find_templates(self._sections)

    @cached_property
    def _sorted_refs(self) -> tuple[Ref, ...]:
        return tuple(sorted(self.templates.refs, key=lambda r: (r.kind, r.key)))

    @cached_property
    def reads_pod_facts(self) -> bool:
        """Whether rendering needs facts about the pod (else they are never computed)."""
        return any(ref.kind != "param" for ref in self.templates.refs)

    @cached_property
    def _integer_parameters(self) -> frozenset[str]:
        return frozenset(name for name, p in self.parameters.items() if p.type == "integer")

    @cached_property
    def hash(self) -> str:
        """Short content hash of everything that changes what gets injected."""
        # the policy decides where, not what: changing it does not make injected pods stale
        content = self.model_dump(by_alias=True, exclude={"description", "allowed_namespaces"})
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
        return digest[:12]

    @cached_property
    def derived(self) -> dict[str, Any]:
        """Values other modules derive from the profile once (not part of the profile's value)."""
        return {}

    @cached_property
    def render_cache(self) -> _RenderCache:
        """Renderings by the values they read (per profile; not part of the profile's value)."""
        return _RenderCache()

    @cached_property
    def plain(self) -> RenderedProfile:
        """The profile as injected when nothing is templated or overridden (built once)."""
        return RenderedProfile(
            self,
            self.containers,
            self.init_containers,
            self.volumes,
            self.app_volume_mounts,
            self.app_env,
            self.pod_annotations,
            None,
        )

    @cached_property
    def default_rendering(self) -> RenderedProfile | None:
        """The profile as a pod that sets nothing gets it (None when that depends on the pod,
        or a parameter is required): rendered once, the typical admission's path."""
        if self.reads_pod_facts or any(p.required for p in self.parameters.values()):
            return None
        values = {name: p.default_text or "" for name, p in self.parameters.items()}
        return self.render(values, PodFacts())

    def render(
        self, values: Mapping[str, str], facts: PodFacts, resources: Mapping[str, str] | None = None
    ) -> RenderedProfile:
        """The profile with its placeholders filled and its sidecars' resources overridden.

        ``values`` has a text for every declared parameter (checked by the caller);
        ``resources`` maps resource keys (``cpu-limit``...) to quantities. Renders once per
        distinct set of the values the templates actually read (a bounded cache), so a
        Deployment's replicas share one rendering.
        """
        resources = resources or {}
        if not self.templates.slots and not resources:
            return self.plain
        key = (
            tuple(values[r.key] if r.kind == "param" else facts.value(r) for r in self._sorted_refs),
            tuple(sorted(resources.items())),
        )
        cache = self.render_cache
        with cache.lock:
            cached = cache.entries.get(key)
            if cached is not None:
                cache.entries.move_to_end(key)
                return cached
        sections = self.templates.render(self._sections, values, facts, self._integer_parameters)
        containers = sections["containers"]
        if resources:
            containers = [_with_resources(c, resources) for c in containers]
        digest = self.values_hash(values, resources)
        rendered = RenderedProfile(
            self,
            containers,
            sections["initContainers"],
            sections["volumes"],
            sections["appVolumeMounts"],
            sections["appEnv"],
            sections["podAnnotations"],
            digest,
        )
        with cache.lock:
            cache.entries[key] = rendered
            if len(cache.entries) > _RENDER_CACHE_SIZE:
                cache.entries.popitem(last=False)
        return rendered

    def values_hash(self, values: Mapping[str, str], resources: Mapping[str, str]) -> str | None:
        """Short hash of resolved values (recorded in sidecar.io/status); None when the profile
        has no parameters and nothing is overridden."""
        if not self.parameters and not resources:
            return None
        resolved = {"parameters": dict(sorted(values.items())), "resources": dict(sorted(resources.items()))}
        return hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:12]

    def resource_problems(self, resources: Mapping[str, str]) -> list[str]:
        """Why these resource overrides cannot apply: a request above the limit it ends up with,
        or a value above the profile's maxResources."""
        problems: list[str] = []
        limits = self.max_resources
        cap = limits.amounts() if limits is not None else {}
        for key, text in resources.items():
            _section, resource = RESOURCE_KEYS[key]
            if limits is not None and resource in cap and parse_quantity(text) > cap[resource]:
                problems.append(
                    f"{value_key_prefix(self.name)}{key}={printable(text)}: above the profile's "
                    f"maxResources {resource} {limits.value(resource)}"
                )
        for container in self.containers:
            merged = _with_resources(container, resources)["resources"]
            for resource in ("cpu", "memory"):
                request, limit = (merged.get(s, {}).get(resource) for s in ("requests", "limits"))
                if request is None or limit is None:
                    continue
                try:
                    over = parse_quantity(request) > parse_quantity(limit)
                except ValueError:
                    over = False
                if over and any(RESOURCE_KEYS[k][1] == resource for k in resources):
                    problems.append(
                        f"{resource} request {request} would be above the limit {limit} of container {container['name']}; "
                        f"set {value_key_prefix(self.name)}{resource}-limit too"
                    )
        return problems

    def summary(self) -> str:
        return self.description.strip().splitlines()[0] if self.description.strip() else ""


_RENDER_CACHE_SIZE = 256


class _RenderCache:
    """A bounded LRU of renderings, safe to share between worker threads."""

    def __init__(self) -> None:
        self.entries: OrderedDict[Any, RenderedProfile] = OrderedDict()
        self.lock = threading.Lock()


def _with_resources(container: dict[str, Any], resources: Mapping[str, str]) -> dict[str, Any]:
    found = container.get("resources")
    old: dict[str, Any] = found if isinstance(found, dict) else {}
    merged = {section: dict(old.get(section) or {}) for section in ("requests", "limits")}
    for key, text in resources.items():
        section, resource = RESOURCE_KEYS[key]
        merged[section][resource] = text
    return {**container, "resources": {**old, **{k: v for k, v in merged.items() if v}}}


@dataclass(frozen=True)
class RenderedProfile:
    """A profile as it goes into one pod: placeholders filled, resources overridden."""

    profile: Profile
    containers: list[dict[str, Any]]
    init_containers: list[dict[str, Any]]
    volumes: list[dict[str, Any]]
    app_volume_mounts: list[dict[str, Any]]
    app_env: list[dict[str, Any]]
    pod_annotations: dict[str, str]
    #: hash of the resolved parameter values and resource overrides (None: the profile has neither)
    values_hash: str | None

    @property
    def name(self) -> str:
        return self.profile.name

    @cached_property
    def native_containers(self) -> list[dict[str, Any]]:
        """``containers`` as native sidecars (``restartPolicy: Always``); with ``waitReady``, each
        gets a startupProbe derived from its readinessProbe, so the kubelet starts the next
        containers only once it is ready."""
        native = []
        for container in self.containers:
            sidecar = {**container, "restartPolicy": "Always"}
            if (
                self.profile.wait_ready
                and "startupProbe" not in container
                and isinstance(container.get("readinessProbe"), dict)
            ):
                sidecar["startupProbe"] = startup_probe(container["readinessProbe"])
            native.append(sidecar)
        return native

    @cached_property
    def app_bytes(self) -> tuple[int, tuple[int, ...]]:
        """The encoded (JSON) size of what each application container gets: its mounts together,
        and each env var (the injection core's bound on a patch that grows with the containers)."""
        return (
            sum(len(orjson.dumps(m)) for m in self.app_volume_mounts),
            tuple(len(orjson.dumps(e)) for e in self.app_env),
        )

    @cached_property
    def ports(self) -> dict[str, tuple[tuple[int, str], ...]]:
        """(containerPort, protocol) pairs of each container and init container, by name."""
        return {c["name"]: tuple(declared_ports(c)) for c in (*self.containers, *self.init_containers)}

    @cached_property
    def bound_ports(self) -> list[tuple[int, str]]:
        """The ports the long-running sidecars bind: declared ones and ``localPorts``."""
        return [p for c in self.containers for p in self.ports[c["name"]]] + [(p, "TCP") for p in self.profile.local_ports]


def startup_probe(readiness: dict[str, Any]) -> dict[str, Any]:
    """A startupProbe with the readiness check's handler, polled every second for up to two minutes."""
    handler = {k: v for k, v in readiness.items() if k in ("exec", "httpGet", "tcpSocket", "grpc")}
    return {
        **handler,
        "timeoutSeconds": readiness.get("timeoutSeconds", 1),
        "periodSeconds": 1,
        "failureThreshold": 120,
        "successThreshold": 1,
    }


def _object_problems(sections: dict[str, Any], local_ports: list[int]) -> list[str]:
    """The Kubernetes-object checks of a profile's (rendered) sections."""
    errors: list[str] = []
    volumes, containers, init_containers = sections["volumes"], sections["containers"], sections["initContainers"]
    for i, volume in enumerate(volumes):
        errors += check_object(volume, "V1Volume", f"volumes[{i}]")
    volume_names = _unique_names(volumes, "volumes", "volume", errors, label=True)
    for field, items in (("containers", containers), ("initContainers", init_containers)):
        for i, container in enumerate(items):
            errors += check_object(container, "V1Container", f"{field}[{i}]")
            errors += _container_rules(container, f"{field}[{i}]", volume_names)
    _unique_names(
        [*containers, *init_containers],
        "containers",
        "container",
        errors,
        label=True,
        where=[f"containers[{i}]" for i in range(len(containers))]
        + [f"initContainers[{i}]" for i in range(len(init_containers))],
    )
    ports: set[tuple[int, str]] = set()
    for i, container in enumerate(containers):
        for j, (port, protocol) in enumerate(declared_ports(container)):
            if (port, protocol) in ports:
                errors.append(f"containers[{i}].ports[{j}]: port {port}/{protocol} is already used in this profile")
            ports.add((port, protocol))
    for i, port in enumerate(local_ports):
        if (port, "TCP") in ports:
            errors.append(f"localPorts[{i}]: port {port} is already used in this profile")
        ports.add((port, "TCP"))
    for i, mount in enumerate(sections["appVolumeMounts"]):
        errors += check_object(mount, "V1VolumeMount", f"appVolumeMounts[{i}]")
    errors += _mount_rules(sections["appVolumeMounts"], "appVolumeMounts", volume_names)
    for i, env in enumerate(sections["appEnv"]):
        errors += check_object(env, "V1EnvVar", f"appEnv[{i}]")
    _unique_names(sections["appEnv"], "appEnv", "variable", errors)
    return errors


def _missing(value: Any) -> bool:
    """Absent or empty. A value of the wrong type is not "missing": check_object reports it."""
    return value is None or value == ""


def _unique_names(
    items: list[dict[str, Any]],
    field: str,
    what: str,
    errors: list[str],
    *,
    label: bool = False,
    where: list[str] | None = None,
) -> set[str]:
    """The ``name`` of each item, reporting missing, duplicate and (``label``) non-DNS names."""
    seen: set[str] = set()
    for i, item in enumerate(items):
        path = (where[i] if where else f"{field}[{i}]") + ".name"
        name = item.get("name")
        if _missing(name):
            errors.append(f"{path}: required")
        elif not isinstance(name, str):
            continue
        elif name in seen:
            errors.append(f"{path}: duplicate {what} {name!r} in this profile")
        else:
            if label:
                try:
                    _dns_label(name, f"{what} name")
                except ValueError as exc:
                    errors.append(f"{path}: {exc}")
            seen.add(name)
    return seen


def declared_ports(container: dict[str, Any]) -> list[tuple[int, str]]:
    """(containerPort, protocol) pairs of a container, skipping entries of the wrong shape."""
    found = []
    ports = container.get("ports")
    for port in ports if isinstance(ports, list) else []:
        if isinstance(port, dict) and isinstance(port.get("containerPort"), int):
            protocol = port.get("protocol") or "TCP"
            if isinstance(protocol, str):
                found.append((port["containerPort"], protocol))
    return found


def _container_rules(container: dict[str, Any], where: str, volume_names: set[str]) -> list[str]:
    errors: list[str] = []
    image = container.get("image")
    if _missing(image) or (isinstance(image, str) and not image.strip()):
        errors.append(f"{where}.image: required (a pinned image such as registry/name:1.2.3)")
    elif isinstance(image, str) and (problem := image_tag_problem(image)):
        errors.append(f"{where}.image: {problem}")
    if "restartPolicy" in container:
        errors.append(
            f"{where}.restartPolicy: not allowed; set `nativeSidecar: true` on the profile instead "
            "(the injector decides native vs regular sidecars)"
        )
    mounts = container.get("volumeMounts")
    if isinstance(mounts, list):
        errors += _mount_rules(mounts, f"{where}.volumeMounts", volume_names)
    return errors


def _mount_rules(mounts: list[Any], where: str, volume_names: set[str]) -> list[str]:
    """Each mount names a volume of the profile, at an absolute path used once."""
    errors: list[str] = []
    paths: set[str] = set()
    for i, mount in enumerate(mounts):
        if not isinstance(mount, dict):
            continue
        name, path = mount.get("name"), mount.get("mountPath")
        if _missing(name):
            errors.append(f"{where}[{i}].name: required")
        elif isinstance(name, str) and name not in volume_names:
            errors.append(f"{where}[{i}].name: volume {name!r} is not declared in this profile's volumes")
        if _missing(path) or (isinstance(path, str) and not path.startswith("/")):
            errors.append(f"{where}[{i}].mountPath: required, an absolute path")
        elif isinstance(path, str):
            if path in paths:
                errors.append(f"{where}[{i}].mountPath: {path!r} is mounted twice")
            paths.add(path)
    return errors


# -- loading -------------------------------------------------------------------------------


class ProfileError(Exception):
    """A profile source is broken. ``problems`` lists every problem, each naming file and field."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid profiles:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class ProfileSet(Mapping[str, Profile]):
    """The loaded profiles by name, and where each came from."""

    profiles: Mapping[str, Profile]
    sources: Mapping[str, str]

    def __getitem__(self, name: str) -> Profile:
        return self.profiles[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.profiles)

    def __len__(self) -> int:
        return len(self.profiles)

    def names(self) -> list[str]:
        return sorted(self.profiles)

    @classmethod
    def of(cls, profiles: Iterable[Profile], source: str = "<memory>") -> ProfileSet:
        items = {p.name: p for p in profiles}
        return cls(items, dict.fromkeys(items, source))


def _describe_validation_error(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
            msg = "unknown field (allowed: " + ", ".join(sorted(_allowed_keys())) + ")"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        # one error from the cross-field checks holds one problem per line
        lines += [f"{loc}: {line}" if loc else line for line in msg.splitlines()]
    return lines


@cache
def _allowed_keys() -> frozenset[str]:
    return frozenset(field.alias or name for name, field in Profile.model_fields.items())


def parse_profiles(text: str, source: str) -> list[Profile]:
    """Every profile in a YAML text (one profile per document). Raises ProfileError."""
    try:
        documents = yaml_io.load_all(text)
    except yaml.YAMLError as exc:
        raise ProfileError([f"{source}: not valid YAML: {exc}"]) from None
    profiles: list[Profile] = []
    problems: list[str] = []
    for number, doc in enumerate(documents, start=1):
        if doc is None:
            continue
        profile, doc_problems = document_profile(doc, f"{source} (document {number})" if len(documents) > 1 else source)
        problems += doc_problems
        if profile is not None:
            profiles.append(profile)
    if problems:
        raise ProfileError(problems)
    return profiles


def document_profile(doc: Any, where: str) -> tuple[Profile | None, list[str]]:
    """One YAML document read as a plain profile: the profile, or None and its problems, each
    prefixed with ``where`` (the file and document) and the profile's name when it has one."""
    if not isinstance(doc, Mapping):
        return None, [f"{where}: a profile must be a mapping, got {type(doc).__name__}"]
    if isinstance(doc.get("name"), str):
        where += f" profile {doc['name']!r}"
    try:
        return validate_profile(doc), []
    except ProfileError as exc:
        return None, [f"{where}: {line}" for line in exc.problems]


def validate_profile(document: Mapping[str, Any]) -> Profile:
    """One profile from its parsed document. Raises ProfileError, one ``field: problem`` per line."""
    try:
        return Profile.model_validate(document)
    except ValidationError as exc:
        raise ProfileError(_describe_validation_error(exc)) from None


def _merge(sources: Iterable[tuple[str, str]], problems: list[str]) -> tuple[dict[str, Profile], dict[str, str]]:
    profiles: dict[str, Profile] = {}
    origin: dict[str, str] = {}
    for source, text in sources:
        try:
            found = parse_profiles(text, source)
        except ProfileError as exc:
            problems += exc.problems
            continue
        for profile in found:
            if profile.name in profiles:
                problems.append(f"{source}: profile {profile.name!r} is already defined in {origin[profile.name]}")
                continue
            profiles[profile.name] = profile
            origin[profile.name] = source
    return profiles, origin


def _profile_files(directory: Path) -> list[Path]:
    # Hidden entries are skipped: a mounted ConfigMap keeps its real files in `..data/`.
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and not p.name.startswith("."))


def directory_fingerprint(directory: Path) -> str:
    """A digest of the profile files in ``directory`` (names and contents): changes when they do."""
    digest = hashlib.sha256()
    try:
        for path in _profile_files(directory):
            digest.update(path.name.encode() + b"\0")
            try:
                digest.update(path.read_bytes())
            except OSError as exc:
                digest.update(f"unreadable: {exc}".encode())
            digest.update(b"\0")
    except OSError as exc:
        digest.update(f"no directory: {exc}".encode())
    return digest.hexdigest()


def _directory_texts(directory: Path, problems: list[str]) -> list[tuple[str, str]]:
    if not directory.is_dir():
        problems.append(f"{directory}: profiles directory does not exist or is not a directory")
        return []
    texts = []
    for path in _profile_files(directory):
        try:
            texts.append((str(path), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{path}: cannot read: {exc}")
    return texts


@cache
def builtin_profiles() -> ProfileSet:
    """The profiles shipped in the package (``sidecar_injector/builtin_profiles/*.yaml``)."""
    package = resources.files("sidecar_injector") / "builtin_profiles"
    texts = sorted(
        (f"builtin:{entry.name}", entry.read_text(encoding="utf-8"))
        for entry in package.iterdir()
        if entry.name.endswith((".yaml", ".yml"))
    )
    problems: list[str] = []
    profiles, origin = _merge(texts, problems)
    if problems:  # a broken built-in is a bug in this package, never a user error
        raise ProfileError(problems)
    return ProfileSet(profiles, origin)


def load_directory(directory: Path) -> ProfileSet:
    """Profiles from ``directory/*.yaml|*.yml``. Raises ProfileError listing every problem."""
    problems: list[str] = []
    profiles, origin = _merge(_directory_texts(directory, problems), problems)
    if problems:
        raise ProfileError(problems)
    return ProfileSet(profiles, origin)


def _overlaid(extra: ProfileSet | None, include_builtin: bool) -> ProfileSet:
    """The built-in profiles (if included) with ``extra`` on top: same name, ``extra`` wins."""
    base = builtin_profiles() if include_builtin else ProfileSet({}, {})
    extra = extra or ProfileSet({}, {})
    return ProfileSet({**base.profiles, **extra.profiles}, {**base.sources, **extra.sources})


def profiles_from_texts(texts: Iterable[tuple[str, str]], *, include_builtin: bool = True) -> ProfileSet:
    """Built-in profiles overlaid with those in ``(source, yaml text)`` pairs (e.g. a ConfigMap's data)."""
    problems: list[str] = []
    profiles, origin = _merge(texts, problems)
    if problems:
        raise ProfileError(problems)
    return _overlaid(ProfileSet(profiles, origin), include_builtin)


def load_profiles(profiles_dir: Path | None, *, include_builtin: bool = True) -> ProfileSet:
    """Built-in profiles overlaid with those in ``profiles_dir`` (same name: the directory wins)."""
    return _overlaid(load_directory(profiles_dir) if profiles_dir is not None else None, include_builtin)
