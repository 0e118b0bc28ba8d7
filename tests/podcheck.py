"""Test helper: is this Pod one the Kubernetes API server would accept?

Three layers, all working on a Pod as a plain dict (JSON-decoded, as found in an
AdmissionReview or produced by applying the webhook's JSON Patch):

* the OpenAPI schema shipped by ``kubernetes-validate`` in strict mode (unknown
  fields are errors, types are checked), for every version in ``SCHEMA_VERSIONS``;
* the API server's hand-written Pod validation that no schema can express
  (``pkg/apis/core/validation``): name formats and uniqueness, volume references,
  native-sidecar rules, port clashes, probe placement, request <= limit, annotations;
* optionally the Pod Security Standards "restricted" profile (baseline included).

Public API::

    SCHEMA_VERSIONS                      # ("1.29.0", "1.37.0")
    pod_problems(pod, versions=...)      # -> list[str], empty when valid
    assert_valid_pod(pod, versions=...)  # AssertionError listing every problem
    schema_problems(pod, versions=...)   # the schema layer alone
    api_rule_problems(pod)               # the API-server-rule layer alone
    pss_restricted_problems(pod)         # -> list[str]
    assert_pss_restricted(pod)
    parse_quantity(value) -> Decimal     # Kubernetes resource.Quantity parser

Every problem is one line naming the field path and the rule, e.g.
``spec.initContainers[0].restartPolicy: only "Always" is allowed (native sidecar), got "OnFailure"``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

import jsonschema
from kubernetes_validate import utils as _kv
from packaging.version import Version
from referencing import Registry, Resource

__all__ = [
    "SCHEMA_VERSIONS",
    "api_rule_problems",
    "assert_pss_restricted",
    "assert_valid_pod",
    "parse_quantity",
    "pod_problems",
    "pss_restricted_problems",
    "schema_problems",
]

# Oldest schema with native sidecars (restartPolicy on init containers, beta and on by
# default since 1.29) and the newest kubernetes-validate ships.
SCHEMA_VERSIONS: tuple[str, ...] = ("1.29.0", "1.37.0")

_MAX_MESSAGE = 300  # jsonschema messages can embed whole sub-objects; keep lines readable


# --------------------------------------------------------------------------- public API


def pod_problems(pod: dict, versions: Sequence[str] = SCHEMA_VERSIONS) -> list[str]:
    """Human-readable list of every rule the pod breaks (empty list = valid).

    Schema problems (strict, per version in ``versions``) come first, then the
    API-server rules the schema cannot express.
    """
    return schema_problems(pod, versions) + api_rule_problems(pod)


def assert_valid_pod(pod: dict, versions: Sequence[str] = SCHEMA_VERSIONS) -> None:
    """Raise AssertionError listing all problems if the API server would reject the pod."""
    problems = pod_problems(pod, versions)
    if problems:
        raise AssertionError(_report("pod is not valid", problems))


def pss_restricted_problems(pod: dict) -> list[str]:
    """Every Pod Security Standards "restricted" (which includes "baseline") violation."""
    return _PssChecker(pod).run()


def assert_pss_restricted(pod: dict) -> None:
    """Raise AssertionError listing all violations of the PSS "restricted" profile."""
    problems = pss_restricted_problems(pod)
    if problems:
        raise AssertionError(_report("pod violates Pod Security Standard 'restricted'", problems))


def _report(title: str, problems: list[str]) -> str:
    return f"{title} ({len(problems)} problem{'s' if len(problems) != 1 else ''}):\n" + "\n".join(
        f"  - {p}" for p in problems
    )


# --------------------------------------------------------------------------- schema layer


@cache
def _pod_schema_validator(version: str) -> tuple[str, Any]:
    """``(schema version used, validator)`` for the strict Pod schema, built once per version.

    Resolves the version and loads the files exactly as ``kubernetes_validate.validate``
    does (latest shipped schema not newer than ``version``, ``v<x>-local-strict`` dir,
    ``pod-v1.json`` + ``_definitions.json``), but keeps the validator: ``validate`` re-reads
    and re-parses the 1.8 MB definitions file on every call and stops at the first error,
    while we want every error, hundreds of times per test run.
    """
    wanted = version.removeprefix("v")
    wanted_mm = Version(_kv.major_minor(wanted))
    shipped = _kv.all_versions()
    if wanted_mm > Version(_kv.major_minor(shipped[-1])):
        raise _kv.VersionNotSupportedError(version=_kv.major_minor(wanted))
    candidates = [v for v in shipped if Version(_kv.major_minor(v)) <= wanted_mm]
    if not candidates:
        raise _kv.VersionNotSupportedError(version=_kv.major_minor(wanted))
    resolved = candidates[-1]
    schema_dir = f"kubernetes-json-schema/v{resolved}-local-strict"
    schema = _kv.schema_contents(f"{schema_dir}/pod-v1.json", wanted)
    definitions = _kv.schema_contents(f"{schema_dir}/_definitions.json", wanted)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    validator = jsonschema.validators.Draft202012Validator(schema, registry=registry)
    return _kv.major_minor(resolved), validator


def _with_type_meta(pod: dict) -> dict:
    """The pod with apiVersion/kind filled in (on a shallow copy) when missing, e.g. templates."""
    if pod.get("apiVersion") is not None and pod.get("kind") is not None:
        return pod
    filled = dict(pod)
    filled.setdefault("apiVersion", "v1")
    filled.setdefault("kind", "Pod")
    if filled["apiVersion"] is None:
        filled["apiVersion"] = "v1"
    if filled["kind"] is None:
        filled["kind"] = "Pod"
    return filled


def _json_path(parts: Iterator[Any] | Sequence[Any]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<pod>"


def _schema_error_text(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set((error.schema or {}).get("properties", {}))
        extra = sorted(k for k in error.instance if k not in known)
        if extra:
            return "unknown field" + ("s " if len(extra) > 1 else " ") + ", ".join(map(repr, extra))
    message = error.message
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 3] + "..."
    return message


def schema_problems(pod: dict, versions: Sequence[str] = SCHEMA_VERSIONS) -> list[str]:
    """Strict-schema errors for each version; an error found in several versions is listed once.

    Each line reads ``[schema 1.29] spec.containers[0]: unknown field 'foo'``.
    """
    if not isinstance(pod, dict):
        return [f"<pod>: must be a mapping, got {type(pod).__name__}"]
    instance = _with_type_meta(pod)
    found: dict[tuple[str, str], list[str]] = {}
    for version in versions:
        used, validator = _pod_schema_validator(version)
        for error in validator.iter_errors(instance):
            key = (_json_path(error.absolute_path), _schema_error_text(error))
            seen_in = found.setdefault(key, [])
            if used not in seen_in:
                seen_in.append(used)
    return [f"[schema {', '.join(vs)}] {path}: {text}" for (path, text), vs in found.items()]


# --------------------------------------------------------------------------- formats

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_IANA_SVC_NAME = re.compile(r"^[-a-z0-9]+$")
_TOTAL_ANNOTATION_SIZE = 256 * 1024


def _dns1123_label_error(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if len(value) > 63:
        return f"{value!r} is not a valid DNS-1123 label: must be no more than 63 characters"
    if not _DNS1123_LABEL.match(value):
        return (
            f"{value!r} is not a valid DNS-1123 label: lowercase alphanumerics and '-', "
            "starting and ending with an alphanumeric"
        )
    return None


def _dns1123_subdomain_error(value: str) -> str | None:
    if len(value) > 253:
        return f"{value!r} is not a valid DNS-1123 subdomain: must be no more than 253 characters"
    if not _DNS1123_SUBDOMAIN.match(value):
        return (
            f"{value!r} is not a valid DNS-1123 subdomain: lowercase alphanumerics, '-' and '.', "
            "starting and ending with an alphanumeric"
        )
    return None


def _qualified_name_error(key: str) -> str | None:
    parts = key.split("/")
    if len(parts) > 2:
        return f"{key!r} is not a valid qualified name: at most one '/'"
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            return f"{key!r} is not a valid qualified name: prefix part must be non-empty"
        if _dns1123_subdomain_error(prefix):
            return f"{key!r} is not a valid qualified name: prefix {prefix!r} must be a DNS-1123 subdomain"
    if not name:
        return f"{key!r} is not a valid qualified name: name part must be non-empty"
    if len(name) > 63:
        return f"{key!r} is not a valid qualified name: name part must be no more than 63 characters"
    if not _QUALIFIED_NAME.match(name):
        return (
            f"{key!r} is not a valid qualified name: name part must consist of alphanumerics, "
            "'-', '_' or '.', starting and ending with an alphanumeric"
        )
    return None


def _port_name_error(name: str) -> str | None:
    """IANA_SVC_NAME: 1-15 chars of [-a-z0-9], at least one letter, no leading/trailing/double '-'."""
    if len(name) > 15:
        return f"{name!r} is not a valid port name (IANA_SVC_NAME): must be no more than 15 characters"
    if not _IANA_SVC_NAME.match(name):
        return f"{name!r} is not a valid port name (IANA_SVC_NAME): only lowercase alphanumerics and '-'"
    if not re.search(r"[a-z]", name):
        return f"{name!r} is not a valid port name (IANA_SVC_NAME): must contain at least one letter"
    if name.startswith("-") or name.endswith("-") or "--" in name:
        return f"{name!r} is not a valid port name (IANA_SVC_NAME): no leading, trailing or adjacent '-'"
    return None


# --------------------------------------------------------------------------- quantities

_QUANTITY = re.compile(
    r"^(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>[eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|)$"
)
_SUFFIX_MULTIPLIER = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(1024),
    "Mi": Decimal(1024**2),
    "Gi": Decimal(1024**3),
    "Ti": Decimal(1024**4),
    "Pi": Decimal(1024**5),
    "Ei": Decimal(1024**6),
}


def parse_quantity(value: Any) -> Decimal:
    """Parse a Kubernetes ``resource.Quantity`` (``"100m"``, ``"0.5"``, ``"64Mi"``, ``"1e3"``, 2).

    JSON numbers are accepted, as the API server does. Raises ValueError if invalid.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a quantity")
    match = _QUANTITY.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a quantity (e.g. 100m, 0.5, 64Mi, 1G, 1e3)")
    try:
        number = Decimal(match["num"])
    except InvalidOperation as exc:  # pragma: no cover - the regex only lets decimals through
        raise ValueError(f"{value!r} is not a quantity") from exc
    suffix = match["suffix"]
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return number.scaleb(int(suffix[1:]))
    return number * _SUFFIX_MULTIPLIER[suffix]


# --------------------------------------------------------------------------- walking helpers


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


_KINDS = ("containers", "initContainers", "ephemeralContainers")
_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
_PROBE_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")


def _all_containers(spec: dict) -> Iterator[tuple[str, str, dict]]:
    """``(kind, path, container)`` for every container, init container and ephemeral container."""
    for kind in _KINDS:
        for i, container in enumerate(_list(spec.get(kind))):
            if isinstance(container, dict):
                yield kind, f"spec.{kind}[{i}]", container


def _is_native_sidecar(kind: str, container: dict) -> bool:
    return kind == "initContainers" and container.get("restartPolicy") == "Always"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------- API-server rules


def api_rule_problems(pod: dict) -> list[str]:
    """The API server's Pod validation rules that the OpenAPI schema cannot express."""
    if not isinstance(pod, dict):
        return [f"<pod>: must be a mapping, got {type(pod).__name__}"]
    problems: list[str] = []
    _check_metadata(_dict(pod.get("metadata")), problems)
    spec = _dict(pod.get("spec"))
    volume_names = _check_volumes(spec, problems)
    _check_containers(spec, volume_names, problems)
    if "resources" in spec:  # pod-level resources (1.32+)
        _check_resources(spec.get("resources"), "spec.resources", problems)
        _check_pod_resource_consistency(spec, problems)
    return problems


def _check_metadata(meta: dict, problems: list[str]) -> None:
    name, generate_name = meta.get("name"), meta.get("generateName")
    if not name and not generate_name:
        problems.append("metadata: name or generateName is required")
    if isinstance(name, str) and name and (err := _dns1123_subdomain_error(name)):
        problems.append(f"metadata.name: {err}")
    if isinstance(generate_name, str) and generate_name:
        # The API server validates the prefix with a trailing '-' masked (it will be followed
        # by random characters).
        masked = generate_name[:-1] + "a" if generate_name.endswith("-") else generate_name
        if _dns1123_subdomain_error(masked):
            problems.append(f"metadata.generateName: {generate_name!r} is not a valid prefix for a DNS-1123 subdomain")

    annotations = meta.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, dict):
            problems.append("metadata.annotations: must be a mapping of string to string")
        else:
            total = 0
            for key, value in annotations.items():
                if err := _qualified_name_error(str(key)):
                    problems.append(f"metadata.annotations: key {err}")
                if not isinstance(value, str):
                    problems.append(f"metadata.annotations[{key!r}]: value must be a string, got {type(value).__name__}")
                    value = "" if value is None else str(value)
                total += len(str(key).encode()) + len(value.encode())
            if total > _TOTAL_ANNOTATION_SIZE:
                problems.append(
                    f"metadata.annotations: may not have more than {_TOTAL_ANNOTATION_SIZE} bytes in total "
                    f"(keys + values), has {total}"
                )

    labels = meta.get("labels")
    if isinstance(labels, dict):
        for key, value in labels.items():
            if err := _qualified_name_error(str(key)):
                problems.append(f"metadata.labels: key {err}")
            if not isinstance(value, str):
                problems.append(f"metadata.labels[{key!r}]: value must be a string, got {type(value).__name__}")
            elif len(value) > 63 or not _LABEL_VALUE.match(value):
                problems.append(
                    f"metadata.labels[{key!r}]: {value!r} is not a valid label value "
                    "(at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric)"
                )


_NON_SOURCE_VOLUME_FIELDS = {"name"}


def _check_volumes(spec: dict, problems: list[str]) -> set[str]:
    names: dict[str, str] = {}
    for i, volume in enumerate(_list(spec.get("volumes"))):
        path = f"spec.volumes[{i}]"
        if not isinstance(volume, dict):
            continue
        name = volume.get("name")
        if err := _dns1123_label_error(name):
            problems.append(f"{path}.name: volume name {err}")
        if isinstance(name, str) and name:
            if name in names:
                problems.append(f"{path}.name: duplicate volume name {name!r} (also {names[name]})")
            else:
                names[name] = path
        # No source at all is defaulted to emptyDir by the API server; two or more is an error.
        sources = sorted(k for k, v in volume.items() if k not in _NON_SOURCE_VOLUME_FIELDS and v is not None)
        if len(sources) > 1:
            problems.append(f"{path}: may not specify more than 1 volume type, got {', '.join(sources)}")
    return set(names)


def _check_containers(spec: dict, volume_names: set[str], problems: list[str]) -> None:
    if not _list(spec.get("containers")):
        problems.append("spec.containers: at least one container is required")

    seen_names: dict[str, str] = {}
    # (containerPort, protocol) -> (container name, path) among containers + native sidecars,
    # which all run at the same time in the pod's single network namespace.
    listening: dict[tuple[int, str], tuple[Any, str]] = {}

    for kind, path, container in _all_containers(spec):
        sidecar = _is_native_sidecar(kind, container)
        name = container.get("name")
        if err := _dns1123_label_error(name):
            problems.append(f"{path}.name: container name {err}")
        if isinstance(name, str) and name:
            if name in seen_names:
                problems.append(
                    f"{path}.name: duplicate container name {name!r} (also {seen_names[name]}); "
                    "names must be unique across containers, initContainers and ephemeralContainers"
                )
            else:
                seen_names[name] = path

        image = container.get("image")
        if not isinstance(image, str) or not image:
            problems.append(f"{path}.image: image is required (must be a non-empty string)")
        elif image != image.strip():
            problems.append(f"{path}.image: must not have leading or trailing whitespace")

        _check_restart_policy(kind, path, container, problems)
        _check_env(path, container, problems)
        _check_volume_mounts(path, container, volume_names, problems)
        _check_ports(kind, path, container, sidecar, listening, problems)
        _check_probes(kind, path, container, sidecar, problems)
        if kind == "ephemeralContainers" and any(v for v in _dict(container.get("resources")).values()):
            problems.append(f"{path}.resources: not allowed on ephemeral containers")
        elif "resources" in container:
            _check_resources(container.get("resources"), f"{path}.resources", problems)


def _check_restart_policy(kind: str, path: str, container: dict, problems: list[str]) -> None:
    policy = container.get("restartPolicy")
    if policy is None:
        return
    if kind == "initContainers":
        if policy != "Always":
            problems.append(
                f'{path}.restartPolicy: only "Always" is allowed on init containers (native sidecar), got {policy!r}'
            )
    else:
        problems.append(
            f"{path}.restartPolicy: only init containers may set restartPolicy (native sidecars); "
            f"not allowed on {kind}, got {policy!r}"
        )


def _check_env(path: str, container: dict, problems: list[str]) -> None:
    # Duplicate names are allowed (the last one wins), so only the format is checked:
    # any printable ASCII except '=' (RelaxedEnvironmentVariableValidation).
    for j, env in enumerate(_list(container.get("env"))):
        if not isinstance(env, dict):
            continue
        name = env.get("name")
        if not isinstance(name, str) or not name:
            problems.append(f"{path}.env[{j}].name: env var name must be a non-empty string")
        elif "=" in name or any(not (" " <= ch <= "~") for ch in name):
            problems.append(f"{path}.env[{j}].name: invalid env var name {name!r}: must be printable ASCII without '='")


def _bad_local_path(value: str) -> str | None:
    if value.startswith("/"):
        return "must be a relative path (not absolute)"
    if ".." in value.replace("\\", "/").split("/"):
        return "must not contain '..'"
    return None


def _check_volume_mounts(path: str, container: dict, volume_names: set[str], problems: list[str]) -> None:
    mount_paths: dict[str, str] = {}
    for j, mount in enumerate(_list(container.get("volumeMounts"))):
        if not isinstance(mount, dict):
            continue
        mpath = f"{path}.volumeMounts[{j}]"
        name = mount.get("name")
        if isinstance(name, str) and name not in volume_names:
            problems.append(f"{mpath}.name: volumeMount refers to volume {name!r}, which is not in spec.volumes")
        mount_path = mount.get("mountPath")
        if isinstance(mount_path, str):
            if not mount_path:
                problems.append(f"{mpath}.mountPath: must not be empty")
            elif mount_path in mount_paths:
                problems.append(
                    f"{mpath}.mountPath: duplicate mountPath {mount_path!r} in the same container "
                    f"(also {mount_paths[mount_path]})"
                )
            else:
                mount_paths[mount_path] = mpath
        for field in ("subPath", "subPathExpr"):
            sub = mount.get(field)
            if isinstance(sub, str) and sub and (err := _bad_local_path(sub)):
                problems.append(f"{mpath}.{field}: {sub!r} {err}")


_PROTOCOLS = ("TCP", "UDP", "SCTP")


def _check_ports(
    kind: str,
    path: str,
    container: dict,
    sidecar: bool,
    listening: dict[tuple[int, str], tuple[Any, str]],
    problems: list[str],
) -> None:
    ports = _list(container.get("ports"))
    if kind == "ephemeralContainers" and ports:
        problems.append(f"{path}.ports: not allowed on ephemeral containers")
        return
    names: dict[str, str] = {}
    runs_with_app = kind == "containers" or sidecar
    for j, port in enumerate(ports):
        if not isinstance(port, dict):
            continue
        ppath = f"{path}.ports[{j}]"
        number = port.get("containerPort")
        valid_number = _is_int(number) and 1 <= number <= 65535
        if _is_int(number) and not valid_number:
            problems.append(f"{ppath}.containerPort: {number} must be between 1 and 65535, inclusive")
        host_port = port.get("hostPort")
        if _is_int(host_port) and host_port != 0 and not 1 <= host_port <= 65535:
            problems.append(f"{ppath}.hostPort: {host_port} must be between 1 and 65535, inclusive")
        protocol = port.get("protocol") or "TCP"
        if protocol not in _PROTOCOLS:
            problems.append(f"{ppath}.protocol: {protocol!r} is not one of {', '.join(_PROTOCOLS)}")
        port_name = port.get("name")
        if isinstance(port_name, str) and port_name:
            if err := _port_name_error(port_name):
                problems.append(f"{ppath}.name: {err}")
            if port_name in names:
                problems.append(
                    f"{ppath}.name: duplicate port name {port_name!r} in the same container (also {names[port_name]})"
                )
            else:
                names[port_name] = ppath
        if valid_number and runs_with_app:
            key = (number, protocol)
            if key in listening:
                other_name, other_path = listening[key]
                problems.append(
                    f"{ppath}.containerPort: port {number}/{protocol} is already declared by container "
                    f"{other_name!r} ({other_path}); containers in one pod share a network namespace "
                    "and cannot listen on the same port"
                )
            else:
                listening[key] = (container.get("name"), ppath)


def _check_probes(kind: str, path: str, container: dict, sidecar: bool, problems: list[str]) -> None:
    if kind == "ephemeralContainers" or (kind == "initContainers" and not sidecar):
        what = (
            "ephemeral containers"
            if kind == "ephemeralContainers"
            else ('init containers unless they are native sidecars (restartPolicy: "Always")')
        )
        problems.extend(
            f"{path}.{field}: not allowed on {what}" for field in (*_PROBES, "lifecycle") if container.get(field) is not None
        )
        return
    for field in _PROBES:
        probe = container.get(field)
        if not isinstance(probe, dict):
            continue
        handlers = [h for h in _PROBE_HANDLERS if probe.get(h) is not None]
        if len(handlers) != 1:
            problems.append(
                f"{path}.{field}: must specify exactly one handler of {', '.join(_PROBE_HANDLERS)}"
                + (f", got {', '.join(handlers)}" if handlers else ", got none")
            )
        threshold = probe.get("successThreshold")
        if field != "readinessProbe" and _is_int(threshold) and threshold != 1:
            problems.append(f"{path}.{field}.successThreshold: must be 1 for {field}, got {threshold}")
        for numeric in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"):
            value = probe.get(numeric)
            if _is_int(value) and value < 0:
                problems.append(f"{path}.{field}.{numeric}: must be greater than or equal to 0, got {value}")


def _check_resources(resources: Any, path: str, problems: list[str]) -> None:
    resources = _dict(resources)
    parsed: dict[str, dict[str, Decimal]] = {}
    for section in ("requests", "limits"):
        parsed[section] = {}
        for resource, raw in _dict(resources.get(section)).items():
            try:
                quantity = parse_quantity(raw)
            except ValueError as exc:
                problems.append(f"{path}.{section}.{resource}: {exc}")
                continue
            if quantity < 0:
                problems.append(f"{path}.{section}.{resource}: must be greater than or equal to 0, got {raw!r}")
            parsed[section][resource] = quantity
    for resource, request in parsed["requests"].items():
        limit = parsed["limits"].get(resource)
        if limit is not None and request > limit:
            problems.append(
                f"{path}.requests.{resource}: request {resources['requests'][resource]!r} must be less than "
                f"or equal to {resource} limit {resources['limits'][resource]!r}"
            )


def _quantities(values: Any) -> dict[str, Decimal]:
    out = {}
    for resource, raw in _dict(values).items():
        with contextlib.suppress(ValueError):
            out[resource] = parse_quantity(raw)
    return out


def _container_requests(container: dict) -> dict[str, Decimal]:
    resources = _dict(container.get("resources"))
    # the API server defaults a missing request to the container's limit
    return {**_quantities(resources.get("limits")), **_quantities(resources.get("requests"))}


def _check_pod_resource_consistency(spec: dict, problems: list[str]) -> None:
    """validatePodResourceConsistency: pod requests >= aggregate container requests (sidecar
    formula: app containers and restartable init containers add up, a one-shot init container
    counts with the restartable ones started before it); no container limit above the pod's."""
    pod = _dict(spec.get("resources"))
    pod_limits = _quantities(pod.get("limits"))
    pod_requests = {**pod_limits, **_quantities(pod.get("requests"))}
    running: dict[str, Decimal] = {}
    for container in _list(spec.get("containers")):
        for resource, amount in _container_requests(_dict(container)).items():
            running[resource] = running.get(resource, Decimal(0)) + amount
    sidecars: dict[str, Decimal] = {}
    init_peak: dict[str, Decimal] = {}
    for container in _list(spec.get("initContainers")):
        container = _dict(container)
        own = _container_requests(container)
        if container.get("restartPolicy") == "Always":
            for resource, amount in own.items():
                sidecars[resource] = sidecars.get(resource, Decimal(0)) + amount
                running[resource] = running.get(resource, Decimal(0)) + amount
            candidates = sidecars
        else:
            candidates = {r: own.get(r, Decimal(0)) + sidecars.get(r, Decimal(0)) for r in {*own, *sidecars}}
        for resource, amount in candidates.items():
            init_peak[resource] = max(init_peak.get(resource, Decimal(0)), amount)
    for resource, request in pod_requests.items():
        aggregate = max(running.get(resource, Decimal(0)), init_peak.get(resource, Decimal(0)))
        if aggregate > request:
            problems.append(
                f"spec.resources.requests[{resource}]: must be greater than or equal to aggregate container "
                f"requests of {aggregate}"
            )
    for kind in ("containers", "initContainers"):
        for i, container in enumerate(_list(spec.get(kind))):
            for resource, limit in _quantities(_dict(_dict(container).get("resources")).get("limits")).items():
                if resource in pod_limits and limit > pod_limits[resource]:
                    problems.append(
                        f"spec.{kind}[{i}].resources.limits[{resource}]: must be less than or equal to pod limits"
                    )


# --------------------------------------------------------------------------- Pod Security Standards

_ALLOWED_VOLUME_TYPES = (
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
)
_BASELINE_CAPABILITIES = {
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
}
# Pod Security Admission's safe set as of policy version 1.32 (what 1.32-1.36 clusters allow).
_SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
}
_SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
_SECCOMP_TYPES = {"RuntimeDefault", "Localhost"}
_APPARMOR_TYPES = {"RuntimeDefault", "Localhost"}
_APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


class _PssChecker:
    """Pod Security Standards, level "restricted" (baseline + restricted controls)."""

    def __init__(self, pod: dict) -> None:
        pod = pod if isinstance(pod, dict) else {}
        self.meta = _dict(pod.get("metadata"))
        self.spec = _dict(pod.get("spec"))
        self.pod_sc = _dict(self.spec.get("securityContext"))
        self.windows = _dict(self.spec.get("os")).get("name") == "windows"
        self.problems: list[str] = []

    def add(self, path: str, message: str, control: str) -> None:
        self.problems.append(f"{path}: {message} (PSS restricted: {control})")

    def run(self) -> list[str]:
        self._pod_level()
        self._volumes()
        for _kind, path, container in _all_containers(self.spec):
            self._container(path, container)
        return self.problems

    # -- pod level

    def _pod_level(self) -> None:
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            if self.spec.get(field) is True:
                self.add(f"spec.{field}", "must not be true", "host namespaces")
        sc = self.pod_sc
        if _dict(sc.get("windowsOptions")).get("hostProcess") is True:
            self.add("spec.securityContext.windowsOptions.hostProcess", "must not be true", "HostProcess")
        self._selinux(sc, "spec.securityContext")
        self._apparmor_field(sc, "spec.securityContext")
        seccomp_type = _dict(sc.get("seccompProfile")).get("type")
        if seccomp_type is not None and seccomp_type not in _SECCOMP_TYPES:
            self.add(
                "spec.securityContext.seccompProfile.type",
                f"must be RuntimeDefault or Localhost, got {seccomp_type!r}",
                "seccomp",
            )
        if sc.get("runAsNonRoot") is False:
            self.add("spec.securityContext.runAsNonRoot", "must not be false", "runAsNonRoot")
        if sc.get("runAsUser") == 0 and _is_int(sc.get("runAsUser")):
            self.add("spec.securityContext.runAsUser", "must not be 0 (root)", "runAsUser")
        for i, sysctl in enumerate(_list(sc.get("sysctls"))):
            name = _dict(sysctl).get("name")
            if name not in _SAFE_SYSCTLS:
                self.add(f"spec.securityContext.sysctls[{i}].name", f"{name!r} is not a safe sysctl", "sysctls")
        for key, value in _dict(self.meta.get("annotations")).items():
            allowed = value in ("", "runtime/default") or (isinstance(value, str) and value.startswith("localhost/"))
            if isinstance(key, str) and key.startswith(_APPARMOR_ANNOTATION) and not allowed:
                self.add(
                    f"metadata.annotations[{key!r}]",
                    f"AppArmor profile must be runtime/default or localhost/*, got {value!r}",
                    "AppArmor",
                )

    def _volumes(self) -> None:
        for i, volume in enumerate(_list(self.spec.get("volumes"))):
            volume = _dict(volume)
            sources = [k for k, v in volume.items() if k != "name" and v is not None]
            if "hostPath" in volume and volume["hostPath"] is not None:
                self.add(f"spec.volumes[{i}].hostPath", "hostPath volumes are forbidden", "hostPath volumes")
            bad = [s for s in sources if s not in _ALLOWED_VOLUME_TYPES and s != "hostPath"]
            if bad:
                self.add(
                    f"spec.volumes[{i}]",
                    f"volume type {', '.join(bad)} is not allowed (allowed: {', '.join(_ALLOWED_VOLUME_TYPES)})",
                    "volume types",
                )

    # -- containers

    def _container(self, path: str, container: dict) -> None:
        sc = _dict(container.get("securityContext"))
        scp = f"{path}.securityContext"
        if sc.get("privileged") is True:
            self.add(f"{scp}.privileged", "must not be true", "privileged")
        if sc.get("procMount") not in (None, "Default"):
            self.add(f"{scp}.procMount", f"must be Default, got {sc.get('procMount')!r}", "procMount")
        if _dict(sc.get("windowsOptions")).get("hostProcess") is True:
            self.add(f"{scp}.windowsOptions.hostProcess", "must not be true", "HostProcess")
        self._selinux(sc, scp)
        self._apparmor_field(sc, scp)

        if not self.windows and sc.get("allowPrivilegeEscalation") is not False:
            self.add(f"{scp}.allowPrivilegeEscalation", "must be set to false", "allowPrivilegeEscalation")

        caps = _dict(sc.get("capabilities"))
        if not self.windows and "ALL" not in _list(caps.get("drop")):
            self.add(f"{scp}.capabilities.drop", 'must include "ALL"', "capabilities")
        allowed_add = _BASELINE_CAPABILITIES if self.windows else {"NET_BIND_SERVICE"}
        extra = [c for c in _list(caps.get("add")) if c not in allowed_add]
        if extra:
            self.add(
                f"{scp}.capabilities.add", f"may only add NET_BIND_SERVICE, got {', '.join(map(str, extra))}", "capabilities"
            )

        non_root = sc.get("runAsNonRoot")
        if non_root is False:
            self.add(f"{scp}.runAsNonRoot", "must not be false", "runAsNonRoot")
        elif non_root is None and self.pod_sc.get("runAsNonRoot") is not True:
            self.add(f"{scp}.runAsNonRoot", "must be true (here or in spec.securityContext)", "runAsNonRoot")
        if _is_int(sc.get("runAsUser")) and sc.get("runAsUser") == 0:
            self.add(f"{scp}.runAsUser", "must not be 0 (root)", "runAsUser")

        seccomp_type = _dict(sc.get("seccompProfile")).get("type")
        if seccomp_type is not None:
            if seccomp_type not in _SECCOMP_TYPES:
                self.add(
                    f"{scp}.seccompProfile.type", f"must be RuntimeDefault or Localhost, got {seccomp_type!r}", "seccomp"
                )
        elif not self.windows and _dict(self.pod_sc.get("seccompProfile")).get("type") not in _SECCOMP_TYPES:
            self.add(
                f"{scp}.seccompProfile.type",
                "must be RuntimeDefault or Localhost (here or in spec.securityContext)",
                "seccomp",
            )

        for j, port in enumerate(_list(container.get("ports"))):
            host_port = _dict(port).get("hostPort")
            if host_port not in (None, 0):
                self.add(f"{path}.ports[{j}].hostPort", f"must not be set, got {host_port!r}", "host ports")

        for field in _PROBES:
            self._handler_host(_dict(container.get(field)), f"{path}.{field}")
        lifecycle = _dict(container.get("lifecycle"))
        for hook in ("postStart", "preStop"):
            self._handler_host(_dict(lifecycle.get(hook)), f"{path}.lifecycle.{hook}")

    def _handler_host(self, handler: dict, path: str) -> None:
        for kind in ("httpGet", "tcpSocket"):
            host = _dict(handler.get(kind)).get("host")
            if host:
                self.add(f"{path}.{kind}.host", f"must not be set, got {host!r}", "probe/lifecycle host")

    def _selinux(self, sc: dict, path: str) -> None:
        opts = _dict(sc.get("seLinuxOptions"))
        if opts.get("type") not in _SELINUX_TYPES and opts.get("type") is not None:
            self.add(
                f"{path}.seLinuxOptions.type",
                f"{opts.get('type')!r} is not allowed (allowed: {', '.join(sorted(t for t in _SELINUX_TYPES if t))})",
                "SELinux",
            )
        for field in ("user", "role"):
            if opts.get(field):
                self.add(f"{path}.seLinuxOptions.{field}", "must not be set", "SELinux")

    def _apparmor_field(self, sc: dict, path: str) -> None:
        apparmor_type = _dict(sc.get("appArmorProfile")).get("type")
        if apparmor_type is not None and apparmor_type not in _APPARMOR_TYPES:
            self.add(
                f"{path}.appArmorProfile.type", f"must be RuntimeDefault or Localhost, got {apparmor_type!r}", "AppArmor"
            )
