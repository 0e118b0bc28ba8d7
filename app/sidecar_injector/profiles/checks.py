"""The checks of a profile's Kubernetes objects beyond their schema: names, images, ports, mounts.

The schema itself (which fields each object type has) is :mod:`sidecar_injector.profiles.object_schema`.
"""

from __future__ import annotations

import re
from typing import Any

from sidecar_injector.profiles.object_schema import check_object

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUALIFIED_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
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


def dns_label(value: str, what: str) -> str:
    if len(value) > 63 or not DNS_LABEL.match(value):
        raise ValueError(
            f"{what} {value!r} must be a DNS-1123 label "
            "(lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63)"
        )
    return value


def object_problems(sections: dict[str, Any], local_ports: list[int]) -> list[str]:
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
                    dns_label(name, f"{what} name")
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
