"""Sidecar profiles: the format and its strict validation (loading: :mod:`sidecar_injector.profiles.loading`).

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

import difflib
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from sidecar_injector.base.keys import value_key_prefix
from sidecar_injector.base.quantity import parse_quantity
from sidecar_injector.base.text import printable
from sidecar_injector.profiles.checks import DNS_SUBDOMAIN, QUALIFIED_NAME, declared_ports, dns_label, object_problems
from sidecar_injector.profiles.parameters import RESOURCE_KEYS, Parameter, parameter_names_problem, probe_value
from sidecar_injector.profiles.rendering import RENDER_CACHE_SIZE, RenderCache, startup_probe, with_resources
from sidecar_injector.profiles.templating import PodFacts, Ref, Templates, find_templates


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
        return [dns_label(name, "namespace name") for name in value]

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
        return dns_label(value, "profile name")

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
                or not QUALIFIED_NAME.match(name)
                or (prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)))
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
            if len(name) > 253 or not DNS_SUBDOMAIN.match(name):
                raise ValueError(f"imagePullSecrets: {name!r} is not a Secret name (a DNS subdomain)")
        if len(set(value)) != len(value):
            raise ValueError("imagePullSecrets: a name is listed twice")
        return value

    @model_validator(mode="after")
    def _check_kubernetes_objects(self) -> Profile:
        errors: list[str] = list(self.templates.problems)
        declared = set(self.parameters)
        used = {ref.key for ref in self.templates.refs if ref.kind == "param"}
        errors += _undeclared_placeholders(self.templates, declared)
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
            errors += object_problems(rendered, self.local_ports)
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
    def render_cache(self) -> RenderCache[RenderedProfile]:
        """Renderings by the values they read (per profile; not part of the profile's value)."""
        return RenderCache()

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
            containers = [with_resources(c, resources) for c in containers]
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
            if len(cache.entries) > RENDER_CACHE_SIZE:
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
            merged = with_resources(container, resources)["resources"]
            for resource in ("cpu", "memory"):
                request, limit = (merged.get(s, {}).get(resource) for s in ("requests", "limits"))
                if request is None or limit is None:
                    continue
                try:
                    over = parse_quantity(request) > parse_quantity(limit)
                except ValueError:
                    over = False
                if over and any(RESOURCE_KEYS[k][1] == resource for k in resources):
                    problems.append(self._request_over_limit(resource, request, limit, container["name"], resources))
        return problems

    def _request_over_limit(
        self, resource: str, request: str, limit: str, container: str, resources: Mapping[str, str]
    ) -> str:
        """A request above its limit, said from the annotation key(s) that made it so."""
        prefix = value_key_prefix(self.name)
        request_key, limit_key = f"{resource}-request", f"{resource}-limit"
        if request_key in resources and limit_key in resources:
            return (
                f"{prefix}{request_key}={printable(request)} is above {prefix}{limit_key}={printable(limit)} "
                f"(container {container}): a request may not exceed its limit"
            )
        if request_key in resources:
            return (
                f"{prefix}{request_key}={printable(request)}: above the limit {limit} of container {container}; "
                f"set {prefix}{limit_key} too"
            )
        return (
            f"{prefix}{limit_key}={printable(limit)}: below the request {request} of container {container}; "
            f"set {prefix}{request_key} too"
        )

    def summary(self) -> str:
        return self.description.strip().splitlines()[0] if self.description.strip() else ""


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


def _undeclared_placeholders(templates: Templates, declared: set[str]) -> list[str]:
    """One problem per field with a placeholder of an undeclared parameter, naming the field
    (``containers[0].args[1]``) and the closest declared parameter."""
    problems = []
    for slot in templates.slots:
        for part in slot.parts:
            if not isinstance(part, Ref) or part.kind != "param" or part.key in declared:
                continue
            close = difflib.get_close_matches(part.key, sorted(declared), n=1, cutoff=0.6)
            if close:
                hint = f"did you mean params.{close[0]}?"
            elif declared:
                hint = f"the declared ones are {', '.join(sorted(declared))}"
            else:
                hint = "declare it under parameters"
            problems.append(f"{slot.where}: placeholder params.{part.key}: no parameter {part.key} is declared; {hint}")
    return problems
