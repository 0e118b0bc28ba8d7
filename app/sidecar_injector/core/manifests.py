"""Offline injection into manifests: Pods and the pod templates of workload objects.

Uses the same core as the webhook and applies its JSON Patch with ``jsonpatch`` — exactly
what the API server does with the webhook's answer — so the output is what a cluster would
create.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jsonpatch
import orjson

from sidecar_injector.core.decide import decide, object_name
from sidecar_injector.core.decision import Decision
from sidecar_injector.core.inputs import InjectionPolicy, NamespaceFacts, RequestContext
from sidecar_injector.profiles.model import Profile

#: kind -> path of keys from the object to its pod template ("" = the object is the pod)
POD_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
#: the owner the controller of each kind gives the pods it creates: (kind, the workload's name
#: or None when the owner is an intermediate object whose name is generated)
_POD_OWNERS = {
    "Deployment": ("ReplicaSet", False),
    "StatefulSet": ("StatefulSet", True),
    "DaemonSet": ("DaemonSet", True),
    "ReplicaSet": ("ReplicaSet", True),
    "ReplicationController": ("ReplicationController", True),
    "Job": ("Job", True),
    "CronJob": ("Job", False),
}


@dataclass(frozen=True)
class DocumentResult:
    """What happened to one object of the input."""

    kind: str
    name: str
    decision: Decision | None  # None: not an object that holds a pod
    #: the pod (template) as the core saw it, and the namespace it was decided for
    pod: dict[str, Any] | None = None
    namespace: str | None = None


#: the profiles of every namespace, or a function giving each namespace's (SidecarProfiles apply to their own)
Profiles = Mapping[str, Profile] | Callable[[str | None], Mapping[str, Profile]]


def _template_of(obj: dict[str, Any], path: tuple[str, ...]) -> tuple[dict[str, Any] | None, str | None]:
    """The pod (template) dict inside obj, or None with the reason."""
    node: Any = obj
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return None, f"{'.'.join(path)} is missing"
    if not isinstance(node, dict):
        return None, f"{'.'.join(path)} is not an object"
    return node, None


def inject_object(
    obj: Any,
    profiles: Profiles,
    policy: InjectionPolicy,
    namespace: str | None = None,
    namespaces: Mapping[str, NamespaceFacts] | None = None,
    default_facts: NamespaceFacts | None = None,
) -> tuple[Any, list[DocumentResult]]:
    """Return ``obj`` with sidecars injected into its pod (template), and what was done.

    ``profiles`` is one set for every namespace, or a function of the target namespace
    (a resolver's ``profiles_for``, with SidecarProfiles). ``obj`` is not modified.
    Kinds that hold no pod are returned unchanged; a ``List`` is processed item by item.
    ``namespaces`` gives the labels/annotations of namespaces by name (as the server's
    namespace cache would); ``default_facts`` applies to objects whose namespace is not
    among them.
    """
    if not isinstance(obj, dict):
        return obj, []
    kind = obj.get("kind")
    if kind == "List" and isinstance(obj.get("items"), list):
        results: list[DocumentResult] = []
        items = []
        for item in obj["items"]:
            new_item, item_results = inject_object(item, profiles, policy, namespace, namespaces, default_facts)
            items.append(new_item)
            results += item_results
        return {**obj, "items": items}, results
    name = object_name(obj)
    if not isinstance(kind, str) or kind not in POD_TEMPLATE_PATHS:
        return obj, [DocumentResult(str(kind), name, None)]

    path = POD_TEMPLATE_PATHS[kind]
    template, problem = _template_of(obj, path)
    if template is None:
        skipped = Decision("skipped", "invalid-pod", problem or "no pod template")
        return obj, [DocumentResult(kind, name, skipped)]
    metadata = obj.get("metadata")
    target = namespace or (metadata.get("namespace") if isinstance(metadata, dict) else None)
    target = target if isinstance(target, str) and target else None
    facts = (namespaces or {}).get(target) if target is not None else None
    owner_kind, named = _POD_OWNERS.get(kind, (None, False))
    context = RequestContext(
        operation="CREATE",
        kind="Pod",
        namespace=target,
        owner_kind=owner_kind,
        owner_name=name if named and metadata and isinstance(metadata.get("name"), str) else None,
        namespace_facts=facts or default_facts,
        object_bytes=len(orjson.dumps(template)),
    )
    decision = decide(template, context, profiles(target) if callable(profiles) else profiles, policy)
    result = DocumentResult(kind, name, decision, template, target)
    if decision.outcome != "injected":
        return obj, [result]
    patched_template = jsonpatch.apply_patch(template, copy.deepcopy(decision.patch), in_place=False)
    return _replace_at(obj, path, patched_template), [result]


def _replace_at(obj: dict[str, Any], path: tuple[str, ...], value: dict[str, Any]) -> dict[str, Any]:
    """A copy of obj with the value at path replaced (only the dicts on the path are copied)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    return {**obj, head: _replace_at(obj[head], rest, value)}
