"""Policy mode: a profile compiled into admission policies the API server runs in-process.

Per profile, :func:`compile_profile` returns a ``MutatingAdmissionPolicy`` (+ binding) that
injects what the webhook's core (:mod:`sidecar_injector.core.decide`,
:mod:`sidecar_injector.core.plan`) injects, as one JSON Patch written in CEL, and a
``ValidatingAdmissionPolicy`` (+ binding) that warns about (or, strict, denies) what the
webhook would warn about: bad values, unknown value keys, conflicts that keep the profile out.
One policy per profile rather than the profile as a ``paramKind``: each profile's sidecars are
fixed data known at compile time, so the CEL is specialised (no generic interpreter of
profiles in CEL, which the cost limits would not admit), and a cluster admin sees and binds
each profile on its own.

The webhook's rules and how each is expressed (docs/policy-mode.md has the table):

* match: CREATE of pods; the never-inject namespaces and ``sidecar.io/inject=disabled``
  namespaces in ``matchConstraints.namespaceSelector``; ``sidecar.io/inject`` list semantics,
  ``true``, ``false``, the namespace label and ``sidecar.io/profiles`` annotation, cluster-wide
  mode, the profile's ``allowedNamespaces``, Windows pods: ``matchConditions``;
* idempotency: skipped when ``sidecar.io/status`` contains ``"<profile>":{`` (CEL has no JSON
  parser; that text only appears as a key of the status's ``profiles`` map);
* a profile is added whole or not at all: container/volume names, declared and local ports,
  mesh proxies, host network, application mount paths are checked in CEL (``variables.conflicts``);
* values: ``<profile>.sidecar.io/<param>`` on the pod, then the namespace, then the default,
  checked with the declared type/bounds/pattern/enum (a bad value keeps the profile out) and
  rendered into the same fields as the webhook's templating.

Refused at compile time (:class:`PolicyRefused`), naming the rule: a profile named ``true`` or
``false`` (the annotation's own words), and settings the policies cannot honour. What differs
from the webhook by design is listed in docs/policy-mode.md (pod-level resources, the status
annotation's text, size limits, unknown profile names).

Pure: no HTTP, no Kubernetes client, no environment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from sidecar_injector.base import keys
from sidecar_injector.core.inputs import InjectionPolicy
from sidecar_injector.core.plan import escape_pointer
from sidecar_injector.core.policy_cel import (
    ANN,
    fact_cel,
    literal,
    quote,
    resource_value,
    slot_cel,
    string_list,
    unbind,
    value_variables,
)
from sidecar_injector.core.policy_checks import conflict_checks, validating_policy
from sidecar_injector.profiles.model import Profile, RenderedProfile
from sidecar_injector.profiles.rendering import startup_probe

API_VERSION = "admissionregistration.k8s.io/v1"
NAME_PREFIX = "sidecar-injector-"
#: what the objects carry so that they can be listed and pruned together
MANAGED_BY = {"app.kubernetes.io/managed-by": "sidecar-injector", "sidecar.io/policy-mode": "true"}
_STATUS_HEAD = '{"profiles":{'


class PolicyRefused(ValueError):
    """The profile (or setting) needs a rule the policies cannot express."""

    def __init__(self, profile: str, rule: str, why: str):
        super().__init__(f"profile {profile} cannot run as an admission policy: {rule}: {why}")
        self.profile, self.rule, self.why = profile, rule, why


def refusals(profile: Profile, policy: InjectionPolicy) -> list[tuple[str, str]]:
    """(rule, why) for everything that keeps ``profile`` from compiling; [] when it compiles."""
    problems = []
    if profile.name in ("true", "false"):
        problems.append(("profile name", f"{keys.INJECT}: {profile.name} means something else; rename the profile"))
    if policy.native_sidecars not in ("auto", "always", "never"):
        problems.append(("native sidecars", f"unknown mode {policy.native_sidecars}"))
    return problems


def compile_profiles(
    profiles: Iterable[Profile],
    policy: InjectionPolicy,
    *,
    name_prefix: str = NAME_PREFIX,
    binding_selector: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The policies and bindings of every profile, in order; raises :class:`PolicyRefused` for the first refused."""
    objects: list[dict[str, Any]] = []
    for profile in profiles:
        objects += compile_profile(profile, policy, name_prefix=name_prefix, binding_selector=binding_selector)
    return objects


def compile_profile(
    profile: Profile,
    policy: InjectionPolicy,
    *,
    name_prefix: str = NAME_PREFIX,
    binding_selector: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """MutatingAdmissionPolicy, its binding, ValidatingAdmissionPolicy, its binding.

    ``binding_selector`` (a namespaceSelector) narrows the bindings to some namespaces (tests,
    a staged roll-out); the policies themselves already leave out the never-inject namespaces.
    """
    problems = refusals(profile, policy)
    if problems:
        rule, why = problems[0]
        raise PolicyRefused(profile.name, rule, why)
    name = name_prefix + profile.name
    labels = {**MANAGED_BY, "sidecar.io/profile": profile.name}
    annotations = {"sidecar.io/profile-version": profile.version, "sidecar.io/profile-hash": profile.hash}
    metadata = {"name": name, "labels": labels, "annotations": annotations}
    constraints = {
        "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
        "namespaceSelector": namespace_selector(policy),
    }
    variables = common_variables() + applies_variables(profile, policy) + value_variables(profile)
    variables += _render_variables(profile, policy)
    variables += conflict_checks(profile)
    mutating = {
        "apiVersion": API_VERSION,
        "kind": "MutatingAdmissionPolicy",
        "metadata": metadata,
        "spec": {
            "matchConstraints": constraints,
            "failurePolicy": "Fail",
            "reinvocationPolicy": "IfNeeded",
            "matchConditions": match_conditions(profile),
            "variables": variables,
            "mutations": [{"patchType": "JSONPatch", "jsonPatch": {"expression": _patch(profile)}}],
        },
    }
    binding_spec: dict[str, Any] = {"policyName": name}
    if binding_selector is not None:
        binding_spec["matchResources"] = {"namespaceSelector": dict(binding_selector)}
    mutating_binding = {
        "apiVersion": API_VERSION,
        "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": labels},
        "spec": binding_spec,
    }
    validating = validating_policy(profile, policy, metadata, constraints, match_conditions(profile), variables)
    validating_binding = {
        "apiVersion": API_VERSION,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": labels},
        "spec": {**binding_spec, "validationActions": ["Deny"] if policy.strict else ["Warn"]},
    }
    objects = [mutating, mutating_binding, validating, validating_binding]
    return [unbound_objects(o) for o in objects]


def unbound_objects(node: Any) -> Any:
    """Every CEL expression of the objects with ``cel.bind`` rewritten (policy_cel.unbind)."""
    if isinstance(node, dict):
        return {
            k: unbind(v) if k in ("expression", "messageExpression") and isinstance(v, str) else unbound_objects(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [unbound_objects(v) for v in node]
    return node


# -- where: namespaces and the pod's request --------------------------------------------------


def namespace_selector(policy: InjectionPolicy) -> dict[str, Any]:
    """Never the system, own or excluded namespaces, nor those labelled ``sidecar.io/inject=disabled``."""
    return {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": sorted(policy.never_inject_namespaces)},
            {"key": keys.NAMESPACE_INJECT, "operator": "NotIn", "values": [keys.NAMESPACE_DISABLED]},
        ]
    }


def _names_of(value: str) -> str:
    """CEL: parse_inject_value of a string (without the ``false`` case): names lowercased, trimmed, no empties."""
    return f"{value}.split(',').map(s, s.trim().lowerAscii()).filter(s, s != '')"


def requested_names() -> str:
    """CEL: the profile names the pod gets asked for (decide._requested_profiles): the pod's
    ``sidecar.io/inject`` list (``true``: the defaults), plus the defaults under automatic
    injection (``variables.automatic``: cluster-wide or the namespace label); the defaults are
    the namespace's ``sidecar.io/profiles``, else ``variables.defaultProfiles``."""
    pod_annotations = "(has(object.metadata.annotations) ? object.metadata.annotations : {})"
    ns_annotations = "(has(namespaceObject.metadata.annotations) ? namespaceObject.metadata.annotations : {})"
    inject, profiles = quote(keys.INJECT), quote(keys.NAMESPACE_PROFILES)
    defaults = (
        f"({profiles} in nsa ? (nsa[{profiles}].trim().lowerAscii() == 'false' ? [] : {_names_of(f'nsa[{profiles}]')})"
        " : variables.defaultProfiles)"
    )
    raw = f"({inject} in pa ? pa[{inject}] : '')"
    return (
        f"cel.bind(pa, {pod_annotations}, cel.bind(nsa, {ns_annotations}, "
        f"cel.bind(pod, {_names_of(raw)}, cel.bind(defaults, {defaults}, "
        "cel.bind(own, size(pod) > 0 && pod.all(n, n == 'true') ? defaults : pod, "
        "variables.automatic ? defaults + own : own)))))"
    )


def request_condition(profile: Profile) -> str:
    """CEL: the pod asks for the profile (and has not opted out)."""
    inject = quote(keys.INJECT)
    opted_out = (
        f"has(object.metadata.annotations) && {inject} in object.metadata.annotations && "
        f"object.metadata.annotations[{inject}].trim().lowerAscii() == 'false'"
    )
    return f"!({opted_out}) && {quote(profile.name)} in {requested_names()}"


def setting_variables(policy: InjectionPolicy) -> list[dict[str, str]]:
    """The cluster settings the request reads, each a variable of its own (the chart sets them)."""
    inject = quote(keys.NAMESPACE_INJECT)
    automatic = (
        "true"
        if policy.cluster_wide
        else f"has(namespaceObject.metadata.labels) && {inject} in namespaceObject.metadata.labels && "
        f"namespaceObject.metadata.labels[{inject}] == {quote(keys.NAMESPACE_ENABLED)}"
    )
    return [
        {"name": "defaultProfiles", "expression": string_list(policy.default_profiles)},
        {"name": "automatic", "expression": automatic},
    ]


def allowed_namespace_condition(profile: Profile) -> str | None:
    """CEL: the profile's ``allowedNamespaces`` admits the pod's namespace (None: no policy)."""
    allowed = profile.allowed_namespaces
    if allowed is None:
        return None
    parts = []
    if allowed.names:
        parts.append(f"namespaceObject.metadata.name in {string_list(allowed.names)}")
    if allowed.selector is not None:
        labels = "(has(namespaceObject.metadata.labels) ? namespaceObject.metadata.labels : {})"
        checks = [f"{quote(k)} in l && l[{quote(k)}] == {quote(v)}" for k, v in allowed.selector.match_labels.items()]
        for r in allowed.selector.match_expressions:
            key = quote(r.key)
            checks.append(
                {
                    "In": f"{key} in l && l[{key}] in {string_list(r.values)}",
                    "NotIn": f"!({key} in l && l[{key}] in {string_list(r.values)})",
                    "Exists": f"{key} in l",
                    "DoesNotExist": f"!({key} in l)",
                }[r.operator]
            )
        parts.append(f"cel.bind(l, {labels}, {' && '.join(checks) or 'true'})")
    return " || ".join(f"({p})" for p in parts)


WINDOWS = (
    "!((has(object.spec.os) && object.spec.os.name == 'windows') || "
    "(has(object.spec.nodeSelector) && ['kubernetes.io/os', 'beta.kubernetes.io/os'].exists(k, "
    "k in object.spec.nodeSelector && object.spec.nodeSelector[k] == 'windows')) || "
    "(has(object.spec.affinity) && has(object.spec.affinity.nodeAffinity) && "
    "has(object.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution) && "
    "cel.bind(terms, object.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms, "
    "size(terms) > 0 && terms.all(t, has(t.matchExpressions) && t.matchExpressions.exists(r, "
    "r.key in ['kubernetes.io/os', 'beta.kubernetes.io/os'] && ("
    "(r.operator == 'In' && has(r.values) && size(r.values) > 0 && r.values.all(v, v == 'windows')) || "
    "(r.operator == 'NotIn' && has(r.values) && 'linux' in r.values)))))))"
)


def not_injected_condition(profile: Profile) -> str:
    """CEL: ``sidecar.io/status`` does not record the profile: a string test for the key
    ``"<name>":{`` (whitespace allowed), which only a profile's entry in the status has."""
    status = quote(keys.STATUS)
    marker = quote(f'"{profile.name}"\\s*:\\s*\\{{')
    return (
        f"!(has(object.metadata.annotations) && {status} in object.metadata.annotations && "
        f"object.metadata.annotations[{status}].matches({marker}))"
    )


def match_conditions_unscoped() -> list[dict[str, str]]:
    """What every policy decides on the pod alone (matchConditions see no ``namespaceObject``):
    not opted out, not a Windows pod."""
    inject = quote(keys.INJECT)
    return [
        {
            "name": "not-opted-out",
            "expression": f"!(has(object.metadata.annotations) && {inject} in object.metadata.annotations && "
            f"object.metadata.annotations[{inject}].trim().lowerAscii() == 'false')",
        },
        {"name": "not-windows", "expression": WINDOWS},
    ]


def match_conditions(profile: Profile) -> list[dict[str, str]]:
    """A profile's policies: not opted out, not injected yet, not a Windows pod."""
    opted_in, windows = match_conditions_unscoped()
    return [opted_in, {"name": "not-yet-injected", "expression": not_injected_condition(profile)}, windows]


def applies_variables(profile: Profile, policy: InjectionPolicy) -> list[dict[str, str]]:
    """``requested`` (by the pod or its namespace) and ``applies`` (also allowed in this namespace)."""
    allowed = allowed_namespace_condition(profile)
    return [
        *setting_variables(policy),
        {"name": "requested", "expression": request_condition(profile)},
        {"name": "applies", "expression": "variables.requested" + (f" && ({allowed})" if allowed else "")},
    ]


# -- what: the rendered profile ---------------------------------------------------------------


def common_variables() -> list[dict[str, str]]:
    return [
        {"name": "annotations", "expression": "has(object.metadata.annotations) ? object.metadata.annotations : {}"},
        {"name": "labels", "expression": "has(object.metadata.labels) ? object.metadata.labels : {}"},
        {
            "name": "nsAnnotations",
            "expression": "has(namespaceObject.metadata.annotations) ? namespaceObject.metadata.annotations : {}",
        },
        {"name": "nsLabels", "expression": "has(namespaceObject.metadata.labels) ? namespaceObject.metadata.labels : {}"},
        {"name": "status", "expression": f"{quote(keys.STATUS)} in {ANN} ? {ANN}[{quote(keys.STATUS)}] : ''"},
    ]


def _section_cel(profile: Profile, section: str, items: Any, resources: bool = False) -> str:
    """CEL of one section of the profile (a list, or the annotations map), placeholders rendered."""
    slots = {slot.path: slot for slot in profile.templates.slots if slot.section == section}
    integers = frozenset(n for n, p in profile.parameters.items() if p.type == "integer")

    def render(path: tuple[str | int, ...], _text: str) -> str | None:
        slot = slots.get(path)
        return slot_cel(slot, integers, fact_cel) if slot is not None else None

    if not resources:
        return literal(items, render)
    rendered = []
    for i, container in enumerate(items):
        entries = [f"{quote(k)}: dyn({literal(v, render, (i, k))})" for k, v in container.items() if k != "resources"]
        entries.append(f'"resources": dyn({_resources_cel(container, render, i)})')
        rendered.append("{" + ", ".join(entries) + "}")
    return "[" + ", ".join(rendered) + "]"


def _resources_cel(container: Mapping[str, Any], render: Any, index: int) -> str:
    """CEL: the container's resources with the pod's ``cpu-request``... overrides (rendering.with_resources)."""
    old = container.get("resources") if isinstance(container.get("resources"), dict) else {}
    assert isinstance(old, dict)
    entries = [
        f"{quote(k)}: dyn({literal(v, render, (index, 'resources', k))})"
        for k, v in old.items()
        if k not in ("requests", "limits")
    ]
    for section in ("requests", "limits"):
        own = old.get(section) or {}
        items = [
            f"{quote(k)}: {literal(v, render, (index, 'resources', section, k))}"
            for k, v in own.items()
            if k not in ("cpu", "memory")
        ]
        kind = "limit" if section == "limits" else "request"
        items += [f"?{quote(r)}: {resource_value(container, r + '-' + kind)}" for r in ("cpu", "memory")]
        entries.append(
            f"?{quote(section)}: cel.bind(m, {{{', '.join(items)}}}, size(m) > 0 ? optional.of(dyn(m)) : optional.none())"
        )
    return "{" + ", ".join(entries) + "}"


def _native(container: dict[str, Any], profile: Profile) -> dict[str, Any]:
    """RenderedProfile.native_containers for one container (before rendering: the probe has no placeholders)."""
    sidecar = {**container, "restartPolicy": "Always"}
    if profile.wait_ready and "startupProbe" not in container and isinstance(container.get("readinessProbe"), dict):
        sidecar["startupProbe"] = startup_probe(container["readinessProbe"])
    return sidecar


def native_expression(profile: Profile, policy: InjectionPolicy) -> str:
    """CEL: whether this pod gets the profile's sidecars as native ones (decide._native_rule)."""
    if policy.native_sidecars == "never":
        return "false"
    own = (
        "true"
        if policy.native_sidecars == "always"
        else (
            "(has(object.metadata.ownerReferences) && object.metadata.ownerReferences.exists(r, r.kind == 'Job')) || "
            "(has(object.spec.restartPolicy) && object.spec.restartPolicy in ['Never', 'OnFailure'])"
            + (" || true" if profile.native_sidecar else "")
        )
    )
    key = quote(keys.NATIVE_SIDECARS)
    return (
        f"cel.bind(o, {key} in {ANN} ? {ANN}[{key}].trim().lowerAscii() : '', "
        f"o == 'true' ? true : o == 'false' ? false : ({own}))"
    )


def _render_variables(profile: Profile, policy: InjectionPolicy) -> list[dict[str, str]]:
    natives = [_native(c, profile) for c in profile.containers]
    return [
        {"name": "native", "expression": native_expression(profile, policy)},
        {"name": "containers", "expression": _section_cel(profile, "containers", profile.containers, resources=True)},
        {"name": "nativeContainers", "expression": _section_cel(profile, "containers", natives, resources=True)},
        {"name": "initContainers", "expression": _section_cel(profile, "initContainers", profile.init_containers)},
        {"name": "volumes", "expression": _section_cel(profile, "volumes", profile.volumes)},
        {"name": "appMounts", "expression": _section_cel(profile, "appVolumeMounts", profile.app_volume_mounts)},
        {"name": "appEnv", "expression": _section_cel(profile, "appEnv", profile.app_env)},
        {"name": "podAnnotations", "expression": _section_cel(profile, "podAnnotations", profile.pod_annotations)},
        {"name": "newStatus", "expression": status_expression(profile)},
        {"name": "apps", "expression": APPS},
    ]


#: CEL: indexes of the application containers: not recorded as a sidecar (a name in a list of the status)
APPS = (
    "object.spec.containers.transformList(i, c, !(['[', ','].exists(a, [']', ','].exists(b, "
    "variables.status.contains(a + '\"' + c.name + '\"' + b)))), i)"
)


def status_expression(profile: Profile) -> str:
    """CEL: ``sidecar.io/status`` with this profile's entry (plan.PatchPlan.add_profile / write_status).

    The entry is the webhook's, key for key; it goes first into an existing ``profiles`` map
    (the webhook sorts them), and its ``values`` hash is there only when every value is the
    default (CEL has no SHA-256: the hash of defaults is computed here).
    """
    plain = profile.plain
    names = [c["name"] for c in profile.containers]
    inits = [c["name"] for c in profile.init_containers]
    volumes = [v["name"] for v in profile.volumes]
    defaults = {n: p.default_text for n, p in profile.parameters.items() if p.default_text is not None}
    default_hash = profile.values_hash(defaults, {}) if len(defaults) == len(profile.parameters) else None

    def entry(native: bool, values: str | None) -> str:
        added = {
            "containers": [] if native else names,
            "initContainers": inits + (names if native else []),
            "volumes": volumes,
        }
        data: dict[str, Any] = {"version": profile.version, "hash": profile.hash, "native": native}
        if values is not None:
            data["values"] = values
        data.update({k: v for k, v in added.items() if v})
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode()

    assert isinstance(plain, RenderedProfile)
    if default_hash is not None:
        at_defaults = " && ".join(
            [f"variables.text_{n.replace('-', '_')} == {quote(t)}" for n, t in defaults.items()]
            + [f"!variables.raw_{k}.hasValue()" for k in ("cpu_request", "cpu_limit", "memory_request", "memory_limit")]
        )
        regular = f"({at_defaults} ? {quote(entry(False, default_hash))} : {quote(entry(False, None))})"
        native = f"({at_defaults} ? {quote(entry(True, default_hash))} : {quote(entry(True, None))})"
    elif profile.parameters:
        regular, native = quote(entry(False, None)), quote(entry(True, None))
    else:
        # no parameters: the hash is there only when a resource key is set (not computable): dropped then
        regular, native = quote(entry(False, None)), quote(entry(True, None))
    key = quote(orjson.dumps(profile.name).decode() + ":")
    head = quote(_STATUS_HEAD)
    # a status with a profiles map: the entry goes first into it; anything else is replaced (as
    # the webhook replaces a status it cannot read)
    opening = quote('^\\s*\\{\\s*"profiles"\\s*:\\s*\\{')
    return (
        f"cel.bind(e, {key} + (variables.native ? {native} : {regular}), cel.bind(s, variables.status, "
        f"s.matches({opening}) ? cel.bind(at, s.indexOf('{{', s.indexOf('\"profiles\"')) + 1, "
        "s.substring(0, at) + e + (s.substring(at).trim().startsWith('}') ? '' : ',') + s.substring(at)) : "
        f"{head} + e + '}}}}'))"
    )


# -- the JSON Patch ---------------------------------------------------------------------------


def _op(path: str, value: str) -> str:
    return f'JSONPatch{{op: "add", path: {path}, value: {value}}}'


def _extend(array: str, first: bool, items: str) -> str:
    """CEL: ops putting ``items`` (a CEL list) at the start (``first``) or end of the array at
    ``array`` (a JSON pointer), creating it when absent (plan._extend)."""
    exists = "has(object" + array.replace("/", ".") + ")"
    if first:
        each = f"{items}.transformList(i, x, {_op(quote(array + '/') + ' + string(i)', 'x')})"
    else:
        each = f"{items}.map(x, {_op(quote(array + '/-'), 'x')})"
    return f"(size({items}) == 0 ? [] : {exists} ? {each} : [{_op(quote(array), items)}])"


def _patch(profile: Profile) -> str:
    first = profile.placement == "first"
    app_ops = []
    if profile.app_volume_mounts:
        app_ops.append(
            "(has(c.volumeMounts) ? variables.appMounts.map(m, "
            + _op("p + '/volumeMounts/-'", "m")
            + ") : ["
            + _op("p + '/volumeMounts'", "variables.appMounts")
            + "])"
        )
    if profile.app_env:
        app_ops.append(
            "cel.bind(add, variables.appEnv.filter(e, !(has(c.env) && c.env.exists(x, x.name == e.name))), "
            "size(add) == 0 ? [] : has(c.env) ? add.map(e, "
            + _op("p + '/env/-'", "e")
            + ") : ["
            + _op("p + '/env'", "add")
            + "])"
        )
    parts = []
    if app_ops:
        parts.append(
            "variables.apps.map(i, cel.bind(c, object.spec.containers[i], cel.bind(p, '/spec/containers/' + string(i), "
            + " + ".join(app_ops)
            + "))).flatten()"
        )
    parts.append(_extend("/spec/volumes", False, "variables.volumes"))
    parts.append(
        _extend(
            "/spec/initContainers",
            first,
            "(variables.initContainers + (variables.native ? variables.nativeContainers : []))",
        )
    )
    parts.append(_extend("/spec/containers", first, "(variables.native ? [] : variables.containers)"))
    if profile.image_pull_secrets:
        secrets = (
            f"{string_list(profile.image_pull_secrets)}.filter(n, !(has(object.spec.imagePullSecrets) && "
            "object.spec.imagePullSecrets.exists(s, has(s.name) && s.name == n))).map(n, {'name': n})"
        )
        parts.append(_extend("/spec/imagePullSecrets", False, secrets))
    status_key = quote("/metadata/annotations/" + escape_pointer(keys.STATUS))
    added = "variables.podAnnotations.filter(k, !(k in variables.annotations))"
    whole = (
        "{"
        + ", ".join(
            [f"{k}: dyn({v})" for k, v in _map_entries(profile)] + [f"{quote(keys.STATUS)}: dyn(variables.newStatus)"]
        )
        + "}"
    )
    annotation_path = quote("/metadata/annotations/") + " + " + _escape_cel("k")
    parts.append(
        "(has(object.metadata.annotations) ? "
        f"{added}.map(k, {_op(annotation_path, 'variables.podAnnotations[k]')}) + "
        f"[{_op(status_key, 'variables.newStatus')}] : [{_op(quote('/metadata/annotations'), whole)}])"
    )
    return "!variables.applies || !variables.valuesOk || variables.conflicts ? [] : " + " + ".join(parts)


def _map_entries(profile: Profile) -> list[tuple[str, str]]:
    """(CEL key, CEL value) of the profile's pod annotations, placeholders rendered."""
    return [(quote(k), f"variables.podAnnotations[{quote(k)}]") for k in profile.pod_annotations]


def _escape_cel(value: str) -> str:
    """CEL: RFC 6901 escaping of a key held in ``value``."""
    return f"{value}.replace('~', '~0').replace('/', '~1')"
