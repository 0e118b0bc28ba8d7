"""``sidecar-injector explain``: why a pod gets what it gets, in words.

For each pod or pod template: the decision and its reason, every warning, each profile
considered with its resolved values and where each came from (pod / namespace / default),
and what the patch adds. It reuses the offline injection (``manifests.inject_object``),
which calls the same core as the webhook; this module only reads its answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sidecar_injector.core.decision import Decision
from sidecar_injector.core.manifests import DocumentResult


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


@dataclass
class Additions:
    """What a JSON Patch adds to a pod, by kind of thing."""

    containers: list[str] = field(default_factory=list)
    init_containers: list[str] = field(default_factory=list)
    native_sidecars: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    #: app container -> mount paths (with their volume)
    mounts: dict[str, list[str]] = field(default_factory=dict)
    #: app container -> env var names
    env: dict[str, list[str]] = field(default_factory=dict)
    annotations: list[str] = field(default_factory=list)
    image_pull_secrets: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "containers": self.containers,
            "initContainers": self.init_containers,
            "nativeSidecars": self.native_sidecars,
            "volumes": self.volumes,
            "mounts": self.mounts,
            "env": self.env,
            "annotations": self.annotations,
            "imagePullSecrets": self.image_pull_secrets,
        }


def additions(pod: dict[str, Any], patch: list[dict[str, Any]]) -> Additions:
    """Read the core's patch back as what it adds (the patch's operations are all ``add``)."""
    found = Additions()
    containers = (pod.get("spec") or {}).get("containers") or []
    for op in patch:
        parts = [_unescape(p) for p in op["path"].split("/")[1:]]
        value = op["value"]
        items = value if len(parts) in (2, 4) or (len(parts) == 1 and parts[0] == "metadata") else [value]
        if parts[:2] == ["spec", "containers"] and len(parts) <= 3:
            found.containers += [c["name"] for c in items]
        elif parts[:2] == ["spec", "initContainers"]:
            for c in items:
                (found.native_sidecars if c.get("restartPolicy") == "Always" else found.init_containers).append(c["name"])
        elif parts[:2] == ["spec", "volumes"]:
            found.volumes += [v["name"] for v in items]
        elif parts[:2] == ["spec", "imagePullSecrets"]:
            found.image_pull_secrets += [s["name"] for s in items]
        elif parts[:2] == ["spec", "containers"] and parts[3] in ("volumeMounts", "env"):
            app = containers[int(parts[2])]["name"]
            if parts[3] == "volumeMounts":
                found.mounts.setdefault(app, []).extend(f"{m['mountPath']} ({m['name']})" for m in items)
            else:
                found.env.setdefault(app, []).extend(e["name"] for e in items)
        elif parts[0] == "metadata":
            annotations = value.get("annotations", value) if len(parts) == 1 else value
            found.annotations += list(annotations) if len(parts) <= 2 else [parts[2]]
    return found


def report(result: DocumentResult, available: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The explanation of one object as data (None for objects that hold no pod).

    ``available`` is the profiles the pod could ask for (a ProfileSet: each profile's version,
    and in ``sources`` where it came from).
    """
    decision: Decision | None = result.decision
    if decision is None:
        return None
    sources: Mapping[str, str] = getattr(available, "sources", {}) if available is not None else {}
    profiles = {}
    for name in dict.fromkeys([*decision.requested, *decision.resolutions]):
        resolution = decision.resolutions.get(name)
        profile = available.get(name) if available is not None else None
        if resolution is None and profile is None:
            continue
        profiles[name] = {
            "injected": name in decision.injected,
            "version": getattr(profile, "version", None),
            "source": sources.get(name),
        }
        if resolution is None:
            profiles[name] |= {"values": {}, "resources": {}, "problems": []}
            continue
        profiles[name] |= {
            "values": {key: {"value": value, "from": resolution.sources[key]} for key, value in resolution.values.items()},
            "resources": {
                key: {"value": value, "from": resolution.sources[key]} for key, value in resolution.resources.items()
            },
            "problems": list(resolution.problems),
        }
    body: dict[str, Any] = {
        "object": f"{result.kind}/{result.name or '?'}",
        "namespace": result.namespace,
        "decision": decision.outcome,
        "reason": decision.reason,
        "message": decision.message,
        "requested": list(decision.requested),
        "injected": list(decision.injected),
        "skipped": [name for name in dict.fromkeys(decision.requested) if name not in decision.injected],
        # why, as sidecar.io/status records it
        "skippedReasons": dict(decision.skipped),
        "warnings": list(decision.warnings),
        "profiles": profiles,
    }
    if decision.outcome == "injected" and result.pod is not None:
        body["adds"] = additions(result.pod, decision.patch).as_dict()
    return body


def render_text(body: dict[str, Any]) -> str:
    """A report for people, one block per object."""
    lines = [f"{body['object']}" + (f" (namespace {body['namespace']})" if body["namespace"] else "")]
    if body["decision"] == "injected":
        lines.append(f"  injected: {', '.join(body['injected'])}")
        if body["skipped"]:
            lines.append(f"  not injected: {', '.join(body['skipped'])}")
    elif body["decision"] == "denied":
        lines.append(f"  denied ({body['reason']}): {body['message']}")
    else:
        lines.append(f"  not injected ({body['reason']}): {body['message']}")
    if body["requested"]:
        lines.append(f"  requested: {', '.join(body['requested'])}")
    lines += [f"  skipped {name}: {why}" for name, why in body["skippedReasons"].items()]
    lines += [f"  warning: {warning}" for warning in body["warnings"]]
    for name, profile in body["profiles"].items():
        state = "injected" if profile["injected"] else "not injected"
        origin = [f"version {profile['version']}"] if profile.get("version") else []
        origin += [f"from {profile['source']}"] if profile.get("source") else []
        lines.append(f"  profile {name}: {state}" + (f"  ({', '.join(origin)})" if origin else ""))
        entries = [*profile["values"].items(), *profile["resources"].items()]
        lines += [f"    {key} = {entry['value']}  (from the {entry['from']})" for key, entry in entries]
        lines += [f"    problem: {problem}" for problem in profile["problems"]]
    adds = body.get("adds")
    if adds:
        lines.append("  the patch adds:")
        for label, key in (
            ("containers", "containers"),
            ("native sidecars", "nativeSidecars"),
            ("init containers", "initContainers"),
            ("volumes", "volumes"),
            ("image pull secrets", "imagePullSecrets"),
            ("annotations", "annotations"),
        ):
            if adds[key]:
                lines.append(f"    {label}: {', '.join(adds[key])}")
        for app, mounts in adds["mounts"].items():
            lines.append(f"    mounts in {app}: {', '.join(mounts)}")
        for app, names in adds["env"].items():
            lines.append(f"    env in {app}: {', '.join(names)}")
    return "\n".join(lines) + "\n"
