"""What a pod's spec says about where and beside what its sidecars would run.

Pure readers of the raw pod dict, used by the injection core: the operating system it
selects (:func:`windows_selector`), the service-mesh proxies it runs or will run
(:func:`meshes`), and its pod-level resources with the API server's aggregate rules
(:class:`PodResources`). None of them raises on a malformed pod: what does not parse is
left out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from sidecar_injector.base.quantity import format_quantity, parse_quantity
from sidecar_injector.core.inputs import NamespaceFacts


def windows_selector(spec: dict[str, Any]) -> str | None:
    """How the pod says it runs on Windows nodes, or None.

    ``spec.os.name``, a ``kubernetes.io/os`` node selector, or a required node affinity
    every term of which selects Windows (DaemonSet controllers replace node affinity, so
    real Windows workloads often use the selector alone).
    """
    os_field = spec.get("os")
    if isinstance(os_field, dict) and os_field.get("name") == "windows":
        return "spec.os.name: windows"
    selector = spec.get("nodeSelector")
    if isinstance(selector, dict):
        for key in _OS_LABELS:
            if selector.get(key) == "windows":
                return f"nodeSelector {key}: windows"
    affinity = spec.get("affinity")
    node = affinity.get("nodeAffinity") if isinstance(affinity, dict) else None
    required = node.get("requiredDuringSchedulingIgnoredDuringExecution") if isinstance(node, dict) else None
    terms = required.get("nodeSelectorTerms") if isinstance(required, dict) else None
    if isinstance(terms, list) and terms and all(_term_selects_windows(term) for term in terms):
        return "a required node affinity on kubernetes.io/os"
    return None


_OS_LABELS = ("kubernetes.io/os", "beta.kubernetes.io/os")


def _term_selects_windows(term: Any) -> bool:
    expressions = term.get("matchExpressions") if isinstance(term, dict) else None
    for requirement in expressions if isinstance(expressions, list) else []:
        if not isinstance(requirement, dict) or requirement.get("key") not in _OS_LABELS:
            continue
        values = requirement.get("values")
        if requirement.get("operator") == "In" and isinstance(values, list) and values and set(values) == {"windows"}:
            return True
        if requirement.get("operator") == "NotIn" and isinstance(values, list) and "linux" in values:
            return True
    return False


#: the ports service-mesh proxies bind in the pod's network namespace, declared or not
MESH_PORTS = {
    "the Istio proxy": (15000, 15001, 15004, 15006, 15008, 15009, 15020, 15021, 15053, 15090),
    "the Linkerd proxy": (4140, 4143, 4190, 4191),
}


def meshes(
    pod: dict[str, Any], spec: dict[str, Any], annotations: Mapping[str, Any], namespace: NamespaceFacts | None
) -> dict[str, tuple[int, ...]]:
    """The mesh proxies the pod runs or will run (its containers, the marks their injectors
    leave, or an opt-in they will act on after us), with the ports they bind."""
    names = {c.get("name") for c in (*spec["containers"], *(spec.get("initContainers") or [])) if isinstance(c, dict)}
    labels = (pod.get("metadata") or {}).get("labels")
    labels = labels if isinstance(labels, dict) else {}
    ns_labels = namespace.labels if namespace is not None else {}
    ns_annotations = namespace.annotations if namespace is not None else {}
    istio_opt = annotations.get("sidecar.istio.io/inject", labels.get("sidecar.istio.io/inject"))
    istio = (
        "istio-proxy" in names
        or "sidecar.istio.io/status" in annotations
        or istio_opt == "true"
        or (istio_opt != "false" and (ns_labels.get("istio-injection") == "enabled" or "istio.io/rev" in ns_labels))
    )
    linkerd_opt = annotations.get("linkerd.io/inject")
    linkerd = (
        "linkerd-proxy" in names
        or "linkerd.io/proxy-version" in annotations
        or linkerd_opt == "enabled"
        or (linkerd_opt != "disabled" and ns_annotations.get("linkerd.io/inject") == "enabled")
    )
    found = {"the Istio proxy": istio, "the Linkerd proxy": linkerd}
    return {mesh: ports for mesh, ports in MESH_PORTS.items() if found[mesh]}


class PodResources:
    """Pod-level ``spec.resources`` and the two rules the API server checks against it.

    The containers' aggregate requests (app containers plus native sidecars, and each init
    container with the native sidecars started before it) may not exceed the pod's
    requests; no container's limit may exceed the pod's limit. Requests default to limits.
    """

    def __init__(self, requests: dict[str, Decimal], limits: dict[str, Decimal]):
        self.requests = requests
        self.limits = limits
        #: each container's parsed requests by id, with the container itself (so that no other object
        #: can take its id meanwhile): the pod's own are read once per decision, not once per profile
        self._parsed: dict[int, tuple[dict[str, Any], dict[str, Decimal]]] = {}

    @classmethod
    def of(cls, spec: dict[str, Any]) -> PodResources | None:
        resources = spec.get("resources")
        if not isinstance(resources, dict):
            return None
        limits = _amounts(resources.get("limits"))
        requests = {**limits, **_amounts(resources.get("requests"))}
        return cls(requests, limits) if requests or limits else None

    def problems(
        self, containers: list[dict[str, Any]], init: list[dict[str, Any]], added: list[dict[str, Any]]
    ) -> list[str]:
        problems = []
        total = _aggregate_requests(containers, init, self._requests_of)
        for name, pod_request in self.requests.items():
            if total.get(name, Decimal(0)) > pod_request:
                problems.append(
                    f"the containers would request {format_quantity(total[name], name)} {name} in all, over the pod's "
                    f"spec.resources.requests {format_quantity(pod_request, name)}"
                )
        for container in added:
            for name, limit in _container_amounts(container, "limits").items():
                if name in self.limits and limit > self.limits[name]:
                    problems.append(
                        f"container {container['name']} has a {name} limit of {format_quantity(limit, name)}, over the "
                        f"pod's spec.resources.limits {format_quantity(self.limits[name], name)}"
                    )
        return problems

    def _requests_of(self, container: dict[str, Any]) -> dict[str, Decimal]:
        known = self._parsed.get(id(container))
        if known is None:
            known = self._parsed[id(container)] = (container, _container_amounts(container, "requests"))
        return known[1]


def _amounts(values: Any) -> dict[str, Decimal]:
    """A resource list (name -> quantity) as decimals, leaving out what does not parse."""
    found: dict[str, Decimal] = {}
    for name, value in values.items() if isinstance(values, dict) else ():
        try:
            found[name] = parse_quantity(value)
        except ValueError:
            continue
    return found


def _container_amounts(container: dict[str, Any], which: str) -> dict[str, Decimal]:
    resources = container.get("resources")
    if not isinstance(resources, dict):
        return {}
    limits = _amounts(resources.get("limits"))
    return limits if which == "limits" else {**limits, **_amounts(resources.get("requests"))}


def _aggregate_requests(
    containers: list[dict[str, Any]],
    init: list[dict[str, Any]],
    requests_of: Callable[[dict[str, Any]], dict[str, Decimal]],
) -> dict[str, Decimal]:
    """The pod's effective requests by the API server's formula for init and native sidecar containers."""
    baseline: dict[str, Decimal] = {}
    for container in containers:
        _add(baseline, requests_of(container))
    restartable: dict[str, Decimal] = {}
    peak: dict[str, Decimal] = {}
    for container in init:
        own = requests_of(container)
        if container.get("restartPolicy") == "Always":
            _add(baseline, own)
            _add(restartable, own)
            figure = dict(restartable)
        else:
            figure = dict(own)
            _add(figure, restartable)
        for name, amount in figure.items():
            peak[name] = max(peak.get(name, Decimal(0)), amount)
    return {name: max(baseline.get(name, Decimal(0)), peak.get(name, Decimal(0))) for name in {*baseline, *peak}}


def _add(total: dict[str, Decimal], more: dict[str, Decimal]) -> None:
    for name, amount in more.items():
        total[name] = total.get(name, Decimal(0)) + amount


def controller_reference(references: Any) -> Mapping[str, Any] | None:
    """Of an object's ``ownerReferences``, the controller's (else the first one); None without any."""
    owners = [r for r in references if isinstance(r, Mapping)] if isinstance(references, list) else []
    return next((r for r in owners if r.get("controller") is True), owners[0] if owners else None)
