"""Policy mode: the webhook's whole-profile conflict checks in CEL, and the validating policy.

:func:`conflict_checks` is :meth:`sidecar_injector.core.plan.PatchPlan._conflicts` written
as CEL variables: ``conflictList`` (one message per conflict, the webhook's wording) and
``conflicts``. The mutating policy injects nothing when it is true; the validating policy
(:func:`validating_policy`) matches the pods the profile was asked for and not injected into,
and says why — bad values, conflicts — as a warning (``validationActions: [Warn]``) or, in
strict mode, a denial, as the webhook does.

One rule is stricter than the webhook's: a pod with pod-level resources (``spec.resources``)
gets no profile that adds containers, because the API server's aggregate formula (native
sidecars counted with the init containers after them) is not written in CEL here; the
warning says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecar_injector.base.keys import value_key_prefix
from sidecar_injector.core.inputs import InjectionPolicy
from sidecar_injector.core.pod_shape import MESH_PORTS
from sidecar_injector.core.policy_cel import expected, identifier, quote
from sidecar_injector.profiles.model import Profile
from sidecar_injector.profiles.parameters import RESOURCE_KEYS

_ISTIO = (
    "cel.bind(opt, 'sidecar.istio.io/inject' in variables.annotations ? variables.annotations['sidecar.istio.io/inject'] : "
    "'sidecar.istio.io/inject' in variables.labels ? variables.labels['sidecar.istio.io/inject'] : '', "
    "variables.podNames.exists(n, n == 'istio-proxy') || 'sidecar.istio.io/status' in variables.annotations || "
    "opt == 'true' || (opt != 'false' && (('istio-injection' in variables.nsLabels && "
    "variables.nsLabels['istio-injection'] == 'enabled') || 'istio.io/rev' in variables.nsLabels)))"
)
_LINKERD = (
    "cel.bind(opt, 'linkerd.io/inject' in variables.annotations ? variables.annotations['linkerd.io/inject'] : '', "
    "variables.podNames.exists(n, n == 'linkerd-proxy') || 'linkerd.io/proxy-version' in variables.annotations || "
    "opt == 'enabled' || (opt != 'disabled' && 'linkerd.io/inject' in variables.nsAnnotations && "
    "variables.nsAnnotations['linkerd.io/inject'] == 'enabled'))"
)
_PORTS = (
    "{list}.map(c, 'ports' in c ? c.ports.map(p, string(p.containerPort) + '/' + "
    "('protocol' in p ? p.protocol : 'TCP')) : [])"
    ".flatten()"
)
_POD_PORTS = (
    "(object.spec.containers + (has(object.spec.initContainers) ? object.spec.initContainers.filter(c, "
    "has(c.restartPolicy) && c.restartPolicy == 'Always') : [])).map(c, has(c.ports) ? c.ports.map(p, "
    "[string(p.containerPort) + '/' + (has(p.protocol) ? p.protocol : 'TCP'), 'container ' + c.name]) : []).flatten()"
)
_NORMAL = "(x.endsWith('/') && x != '/' ? x.substring(0, size(x) - 1) : x)"


def _normal(expr: str) -> str:
    return f"cel.bind(x, {expr}, {_NORMAL})"


def conflict_checks(profile: Profile) -> list[dict[str, str]]:
    """CEL variables: the pod's names and ports, the profile's bound ports, ``conflictList``, ``conflicts``."""
    adds_containers = bool(profile.containers or profile.init_containers)
    names = [c["name"] for c in (*profile.init_containers, *profile.containers)]
    volumes = [v["name"] for v in profile.volumes]
    local = [f"{p}/TCP" for p in profile.local_ports]
    mesh_lists = {"the Istio proxy": _ISTIO, "the Linkerd proxy": _LINKERD}
    meshes = " + ".join(
        f"({expr} ? {quote_list([f'{p}/TCP' for p in MESH_PORTS[mesh]])}.map(p, [p, {quote(mesh)}]) : [])"
        for mesh, expr in mesh_lists.items()
    )
    checks: list[str] = []
    if profile.host_network != "allowed":
        checks.append(
            "(has(object.spec.hostNetwork) && object.spec.hostNetwork && size(variables.boundPorts) > 0 ? "
            "['the pod uses the host network, where its ports (' + variables.boundPorts.join(', ') + ') would bind on "
            "the node\\'s address (a profile that is safe there says hostNetwork: allowed)'] : [])"
        )
    if volumes:
        checks.append(
            f"(has(object.spec.volumes) ? {quote_list(volumes)}.filter(n, object.spec.volumes.exists(v, v.name == n))"
            ".map(n, 'volume ' + n + ' already exists') : [])"
        )
    if names:
        checks.append(f"{quote_list(names)}.filter(n, n in variables.podNames).map(n, 'container ' + n + ' already exists')")
    checks.append(
        "variables.boundPorts.filter(b, variables.podPorts.exists(q, q[0] == b))"
        ".map(b, 'port ' + b + ' is already used by ' + variables.podPorts.filter(q, q[0] == b)[0][1])"
    )
    if profile.app_volume_mounts:
        checks.append(
            "variables.apps.map(i, cel.bind(c, object.spec.containers[i], has(c.volumeMounts) ? "
            f"variables.appMounts.map(m, {_normal('m.mountPath')}).map(n, c.volumeMounts.map(o, {_normal('o.mountPath')})"
            ".filter(o, n == o || n.startsWith(o + '/') || o.startsWith(n + '/') || n == '/' || o == '/')"
            ".map(o, n == o ? 'container ' + c.name + ' already mounts ' + n : "
            "'container ' + c.name + ' already mounts ' + o + ', which overlaps ' + n)).flatten() : [])).flatten()"
        )
    if adds_containers:
        checks.append(
            "(has(object.spec.resources) && ((has(object.spec.resources.requests) && "
            "size(object.spec.resources.requests) > 0)"
            " || (has(object.spec.resources.limits) && size(object.spec.resources.limits) > 0)) ? "
            "['the pod sets pod-level resources (spec.resources), which policy mode does not add sidecars to "
            "(the webhook checks the aggregate; policy mode does not)'] : [])"
        )
    return [
        {
            "name": "podNames",
            "expression": "(object.spec.containers + (has(object.spec.initContainers) ? object.spec.initContainers : []) + "
            "(has(object.spec.ephemeralContainers) ? object.spec.ephemeralContainers : [])).map(c, c.name)",
        },
        {
            "name": "boundPorts",
            "expression": _PORTS.format(list="variables.containers") + (f" + {quote_list(local)}" if local else ""),
        },
        {"name": "podPorts", "expression": f"{_POD_PORTS} + {meshes}"},
        {"name": "conflictList", "expression": " + ".join(checks)},
        {"name": "conflicts", "expression": "size(variables.conflictList) > 0"},
    ]


def quote_list(items: list[str]) -> str:
    return "[" + ", ".join(quote(i) for i in items) + "]"


def validating_policy(
    profile: Profile,
    policy: InjectionPolicy,
    metadata: Mapping[str, Any],
    constraints: Mapping[str, Any],
    conditions: list[dict[str, str]],
    variables: list[dict[str, str]],
) -> dict[str, Any]:
    """The ValidatingAdmissionPolicy: why a pod that asked for the profile did not get it."""
    name = profile.name
    prefix = value_key_prefix(name)
    validations = []
    for parameter_name, parameter in profile.parameters.items():
        ident = identifier(parameter_name)
        raw = f"variables.raw_{ident}"
        if parameter.default is None:
            summary = parameter.description.strip()
            what = summary.splitlines()[0] if summary else parameter.describe()
            missing = quote(f"profile {name} not injected: {prefix}{parameter_name} is required ({what[:80]})")
        else:
            missing = "''"
        validations.append(
            {
                "expression": f"variables.ok_{ident}",
                "messageExpression": f"{raw}.hasValue() ? {quote(f'profile {name} not injected: {prefix}{parameter_name}=')}"
                f" + {raw}.value() + {_where(prefix + parameter_name)} + "
                f"{quote(': expected ' + expected(parameter))} : {missing}",
                "reason": "Invalid",
            }
        )
    for key in RESOURCE_KEYS:
        ident = identifier(key)
        raw = f"variables.raw_{ident}"
        cap = profile.max_resources
        resource = RESOURCE_KEYS[key][1]
        bound = f" at most {cap.value(resource)} (maxResources)" if cap is not None and getattr(cap, resource) else ""
        validations.append(
            {
                "expression": f"variables.ok_{ident}",
                "messageExpression": f"{quote(f'profile {name} not injected: {prefix}{key}=')} + {raw}.value() + "
                f"{_where(prefix + key)} + {quote(': expected a Kubernetes quantity of at least 0' + bound)}",
                "reason": "Invalid",
            }
        )
    validations.append(
        {
            "expression": "variables.resourcesOk",
            "message": f"profile {name} not injected: a resource request would be above its limit; "
            f"set {prefix}cpu-limit / memory-limit too",
            "reason": "Invalid",
        }
    )
    validations.append(
        {
            "expression": "!variables.valuesOk || !variables.conflicts",
            "messageExpression": f"{quote(f'profile {name} not injected: ')} + variables.conflictList.join('; ')",
            "reason": "Forbidden",
        }
    )
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": dict(metadata),
        "spec": {
            "matchConstraints": dict(constraints),
            "failurePolicy": "Fail",
            "matchConditions": conditions,
            "variables": [v for v in variables if v["name"] != "newStatus"],
            "validations": [{**v, "expression": f"!variables.applies || ({v['expression']})"} for v in validations],
        },
    }


def _where(key: str) -> str:
    k = quote(key)
    return f"({k} in variables.annotations ? ' (on the pod)' : ' (on the namespace)')"
