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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache, cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from sidecar_injector import yaml_io
from sidecar_injector.kube_schema import check_object

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
    allowed_namespaces: NamespacePolicy | None = None

    @field_validator("name")
    @classmethod
    def _name_is_label(cls, value: str) -> str:
        return _dns_label(value, "profile name")

    @field_validator("version", mode="before")
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

    @model_validator(mode="after")
    def _check_kubernetes_objects(self) -> Profile:
        errors: list[str] = []
        for i, volume in enumerate(self.volumes):
            errors += check_object(volume, "V1Volume", f"volumes[{i}]")
        volume_names = _unique_names(self.volumes, "volumes", "volume", errors, label=True)

        for field, items in (("containers", self.containers), ("initContainers", self.init_containers)):
            for i, container in enumerate(items):
                errors += check_object(container, "V1Container", f"{field}[{i}]")
                errors += _container_rules(container, f"{field}[{i}]", volume_names)
        _unique_names(
            [*self.containers, *self.init_containers],
            "containers",
            "container",
            errors,
            label=True,
            where=[f"containers[{i}]" for i in range(len(self.containers))]
            + [f"initContainers[{i}]" for i in range(len(self.init_containers))],
        )
        ports: set[tuple[int, str]] = set()
        for i, container in enumerate(self.containers):
            for j, (port, protocol) in enumerate(declared_ports(container)):
                if (port, protocol) in ports:
                    errors.append(f"containers[{i}].ports[{j}]: port {port}/{protocol} is already used in this profile")
                ports.add((port, protocol))
        for i, port in enumerate(self.local_ports):
            if (port, "TCP") in ports:
                errors.append(f"localPorts[{i}]: port {port} is already used in this profile")
            ports.add((port, "TCP"))

        for i, mount in enumerate(self.app_volume_mounts):
            errors += check_object(mount, "V1VolumeMount", f"appVolumeMounts[{i}]")
        errors += _mount_rules(self.app_volume_mounts, "appVolumeMounts", volume_names)
        for i, env in enumerate(self.app_env):
            errors += check_object(env, "V1EnvVar", f"appEnv[{i}]")
        _unique_names(self.app_env, "appEnv", "variable", errors)

        if not (self.containers or self.init_containers or self.app_env or self.app_volume_mounts):
            errors.append("profile adds nothing: give it containers, initContainers, appEnv or appVolumeMounts")
        if errors:
            raise ValueError("\n".join(errors))
        return self

    # -- derived data, computed once per profile -----------------------------------------

    @cached_property
    def hash(self) -> str:
        """Short content hash of everything that changes what gets injected."""
        # the policy decides where, not what: changing it does not make injected pods stale
        content = self.model_dump(by_alias=True, exclude={"description", "allowed_namespaces"})
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
        return digest[:12]

    @cached_property
    def native_containers(self) -> list[dict[str, Any]]:
        """``containers`` as native sidecars (``restartPolicy: Always``), built once per profile."""
        return [{**container, "restartPolicy": "Always"} for container in self.containers]

    @cached_property
    def ports(self) -> dict[str, tuple[tuple[int, str], ...]]:
        """(containerPort, protocol) pairs of each container and init container, by name."""
        return {c["name"]: tuple(declared_ports(c)) for c in (*self.containers, *self.init_containers)}

    def summary(self) -> str:
        return self.description.strip().splitlines()[0] if self.description.strip() else ""


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
        where = f"{source} (document {number})" if len(documents) > 1 else source
        if doc is None:
            continue
        if not isinstance(doc, dict):
            problems.append(f"{where}: a profile must be a mapping, got {type(doc).__name__}")
            continue
        if isinstance(doc.get("name"), str):
            where += f" profile {doc['name']!r}"
        try:
            profiles.append(Profile.model_validate(doc))
        except ValidationError as exc:
            problems += [f"{where}: {line}" for line in _describe_validation_error(exc)]
    if problems:
        raise ProfileError(problems)
    return profiles


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
