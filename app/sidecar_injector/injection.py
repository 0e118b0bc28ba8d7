"""The injection core: a pure function of (pod, request context, profiles, policy).

``decide`` never does I/O, never reads the environment and never raises on any pod it
is given: whatever the input, the answer is a :class:`Decision` — skip (with a reason),
inject (with a JSON Patch, what was injected and warnings) or deny (strict mode).

The JSON Patch is emitted operation by operation against the pod as received: every
array or map that is absent is created by its first operation, later ones append with
``-``; keys are escaped (``/`` → ``~1``). The original pod is never modified.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from sidecar_injector import annotations as keys
from sidecar_injector.pod_shape import PodResources, controller_reference, meshes, windows_selector
from sidecar_injector.profiles import Profile, RenderedProfile, declared_ports
from sidecar_injector.templating import PodFacts
from sidecar_injector.text import printable
from sidecar_injector.values import Resolution, resolve
from sidecar_injector.values import defaults as default_resolution

Outcome = Literal["injected", "skipped", "denied"]
NativeSidecarMode = Literal["auto", "always", "never"]

#: Namespaces that are never injected into, whatever a request says.
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})

#: Every skip/deny reason the core can give (stable: logs and metrics use them).
REASONS = (
    "operation-not-create",
    "not-a-pod",
    "excluded-namespace",
    "not-requested",
    "opted-out",
    "no-known-profiles",
    "already-injected",
    "invalid-pod",
    "unsupported-os",
    "annotations-too-large",
    "pod-too-large",
    "injected",
    "unknown-profiles",
    "conflicts",
    "namespace-disabled",
    "namespace-unknown",
    "policy-refused",
    "invalid-values",
)

WARNING_PREFIX = "sidecar-injector: "
#: the API server may truncate longer warnings; each of ours is complete within this
MAX_WARNING_LENGTH = 256
_MAX_LISTED = 5
_MAX_AVAILABLE = 12
#: the API server refuses a pod whose annotations (keys + values) exceed 256 KiB
MAX_ANNOTATION_BYTES = 256 * 1024
#: etcd's default request limit (--max-request-bytes): a larger object is never stored
MAX_OBJECT_BYTES = 1536 * 1024


@dataclass(frozen=True)
class NamespaceFacts:
    """What the injector knows about the pod's namespace (from the Kubernetes API)."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


def _string_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def namespace_facts(obj: Any) -> NamespaceFacts | None:
    """The facts the injector keeps about a Namespace object (a raw dict), or None."""
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str) or not metadata["name"]:
        return None
    return NamespaceFacts(metadata["name"], _string_map(metadata.get("labels")), _string_map(metadata.get("annotations")))


@dataclass(frozen=True)
class InjectionPolicy:
    """The cluster-wide rules the core applies: built once from the settings at the edges.

    Plain data, so the core depends on no settings or environment machinery and a test
    builds exactly the policy it means.
    """

    #: deny instead of warn on unknown profiles, conflicts and bad values
    strict: bool = False
    #: auto: run-to-completion pods and on request; always; never
    native_sidecars: NativeSidecarMode = "auto"
    #: profiles for ``sidecar.io/inject: true`` and automatic injection without sidecar.io/profiles
    default_profiles: tuple[str, ...] = ()
    #: never injected into, whatever a request says (system namespaces, the injector's own, exclusions)
    never_inject_namespaces: frozenset[str] = SYSTEM_NAMESPACES
    #: inject the default profiles into every pod of every namespace not excluded or disabled
    cluster_wide: bool = False
    #: never answer with a patch that makes the pod's JSON larger than this (bytes)
    max_object_bytes: int = MAX_OBJECT_BYTES


@dataclass(frozen=True)
class RequestContext:
    """What the AdmissionReview says about the request, beyond the pod itself."""

    operation: str = "CREATE"
    #: kind of the object under admission; only pods are ever mutated
    kind: str = "Pod"
    namespace: str | None = None
    dry_run: bool = False
    #: kind of the pod's (future) owner when the pod has no ownerReferences yet, e.g. "Job"
    #: for a pod template injected offline; None = read ``metadata.ownerReferences``.
    owner_kind: str | None = None
    #: its name, when known (offline: the workload's name where the workload owns its pods)
    owner_name: str | None = None
    #: the namespace's labels/annotations; None = not known (no lookup, or API unreachable)
    namespace_facts: NamespaceFacts | None = None
    #: the lookup was attempted and failed (API unreachable): automatic injection cannot be decided
    namespace_unavailable: bool = False
    #: size of the pod's JSON as received (the edge knows it); None = not known, size not checked
    object_bytes: int | None = None


@dataclass(frozen=True)
class Decision:
    """The core's answer. ``patch`` is empty unless ``outcome == "injected"``.

    The patch's values may share structure with the profiles: treat them as read-only
    (serialize them, or deep-copy before applying in place).
    """

    outcome: Outcome
    reason: str
    message: str
    requested: tuple[str, ...] = ()
    injected: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    patch: list[dict[str, Any]] = field(default_factory=list)
    #: each profile considered: its resolved values and where they came from (for `explain`)
    resolutions: Mapping[str, Resolution] = field(default_factory=dict)
    #: ``patch`` as JSON when the core already encoded it (to measure the patched pod): the
    #: answer reuses it instead of encoding the patch again
    patch_json: bytes | None = field(default=None, compare=False, repr=False)

    def encoded_patch(self) -> bytes:
        """``patch`` as JSON (encoded once)."""
        return self.patch_json if self.patch_json is not None else orjson.dumps(self.patch)

    @property
    def allowed(self) -> bool:
        return self.outcome != "denied"


def _too_large(size: str | None, policy: InjectionPolicy, requested: tuple[str, ...], warnings: list[str]) -> Decision:
    """Skip (deny in strict mode) a pod that would be ``size`` once injected (None: more than the limit)."""
    limit = f"the {policy.max_object_bytes // 1024} KiB the API server stores"
    text = f"the injected pod would be {f'{size}, over {limit}' if size else f'over {limit}'}; nothing injected"
    return _refuse("pod-too-large", text, policy, requested, warnings)


def _refuse(reason: str, text: str, policy: InjectionPolicy, requested: tuple[str, ...], warnings: list[str]) -> Decision:
    """Nothing injected because of ``text``: denied in strict mode, else skipped with it as a warning."""
    if policy.strict:
        return _deny(reason, text, requested, warnings)
    return _skip(reason, text, requested=requested, warnings=[*warnings, _warn(text)])


def _skip(
    reason: str,
    message: str,
    *,
    requested: tuple[str, ...] = (),
    warnings: list[str] | None = None,
    resolutions: Mapping[str, Resolution] | None = None,
) -> Decision:
    return Decision(
        "skipped", reason, message, requested=requested, warnings=tuple(warnings or ()), resolutions=resolutions or {}
    )


def _deny(
    reason: str,
    message: str,
    requested: tuple[str, ...],
    warnings: list[str],
    resolutions: Mapping[str, Resolution] | None = None,
) -> Decision:
    return Decision("denied", reason, message, requested=requested, warnings=tuple(warnings), resolutions=resolutions or {})


def _listing(names: list[str], limit: int = _MAX_LISTED) -> str:
    shown = ", ".join(printable(n) for n in names[:limit])
    more = len(names) - limit
    return shown + (f" and {more} more" if more > 0 else "")


def _listing_of(problems: list[str], budget: int) -> str:
    """Problems joined for one warning: as many whole ones as fit ``budget`` characters, then how many more."""
    shown: list[str] = []
    used = 0
    for i, problem in enumerate(problems):
        tail = len(f"; and {len(problems) - i - 1} more") if i < len(problems) - 1 else 0
        if shown and used + 2 + len(problem) + tail > budget:
            return "; ".join(shown) + f"; and {len(problems) - i} more"
        shown.append(problem)
        used += (2 if used else 0) + len(problem)
    return "; ".join(shown)


def _warn(text: str) -> str:
    """An admission warning: attributed to us and short enough to be shown whole."""
    line = WARNING_PREFIX + text
    return line if len(line) <= MAX_WARNING_LENGTH else line[: MAX_WARNING_LENGTH - 3] + "..."


def parse_inject_value(value: str) -> list[str] | None:
    """Profile names in ``sidecar.io/inject`` (lowercased, order kept, duplicates dropped).

    None means opt-out (``false``).
    """
    if value.strip().lower() == "false":
        return None
    # profile names are lowercase DNS labels; dict.fromkeys dedups in linear time
    names = (part.strip().lower() for part in value.split(","))
    return list(dict.fromkeys(name for name in names if name))


def object_name(obj: Any) -> str:
    """``metadata.name``, else ``generateName`` (pods of a Deployment have only that), else ""."""
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    name = (metadata.get("name") or metadata.get("generateName")) if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else ""


def escape_pointer(token: str) -> str:
    """RFC 6901 escaping of one JSON Pointer token."""
    return token.replace("~", "~0").replace("/", "~1")


# -- the decision ------------------------------------------------------------------------


def decide(
    pod: Any,
    context: RequestContext,
    profiles: Mapping[str, Profile],
    policy: InjectionPolicy,
) -> Decision:
    """Decide what to do with ``pod`` (a raw dict, as decoded from the AdmissionReview)."""
    if context.operation != "CREATE":
        return _skip("operation-not-create", f"{printable(str(context.operation))} requests are never mutated")
    if context.kind != "Pod":
        return _skip("not-a-pod", f"{printable(str(context.kind))} objects are never mutated")

    if not isinstance(pod, dict):
        return _skip("invalid-pod", "the pod is not an object", warnings=[_warn("malformed pod, not injected")])
    metadata = pod.get("metadata") or {}
    annotations = metadata.get("annotations") or {} if isinstance(metadata, dict) else None
    if not isinstance(metadata, dict) or not isinstance(annotations, dict):
        return _skip(
            "invalid-pod",
            "metadata or metadata.annotations is not a map",
            warnings=[_warn("malformed pod metadata, not injected")],
        )

    namespace = context.namespace or metadata.get("namespace")
    if isinstance(namespace, str) and namespace in policy.never_inject_namespaces:
        return _skip("excluded-namespace", f"namespace {printable(namespace)} is never injected into")

    facts = context.namespace_facts
    ns_label = facts.labels.get(keys.NAMESPACE_INJECT) if facts is not None else None
    if ns_label == keys.NAMESPACE_DISABLED:
        return _skip(
            "namespace-disabled",
            f"namespace {printable(str(namespace))} is labelled {keys.NAMESPACE_INJECT}={keys.NAMESPACE_DISABLED}",
        )
    warnings: list[str] = []

    raw = annotations.get(keys.INJECT)
    if raw is not None and not isinstance(raw, str):
        return _skip(
            "invalid-pod",
            f"{keys.INJECT} is not a string",
            warnings=[_warn(f"{keys.INJECT} must be a string; nothing injected")],
        )
    pod_names = parse_inject_value(raw) if raw is not None else []
    if pod_names is None:
        return _skip("opted-out", f"{keys.INJECT}=false")

    automatic = policy.cluster_wide or ns_label == keys.NAMESPACE_ENABLED
    defaults: list[str] = []
    source = keys.INJECT
    if automatic or pod_names == ["true"]:
        defaults, source = _default_profiles(facts, policy)
    if context.namespace_unavailable:
        warnings.append(
            _warn(
                f"namespace {printable(str(namespace))} could not be read from the Kubernetes API: "
                + (
                    "used the cluster default profiles"
                    if policy.cluster_wide
                    else "namespace-level injection and label-based profile policy were not applied"
                )
            )
        )
    if pod_names == ["true"]:
        pod_names = defaults
        if not pod_names:
            return _skip(
                "no-known-profiles",
                "no default profiles are configured",
                warnings=[
                    _warn(
                        f"{keys.INJECT}=true but no default profiles are configured; "
                        f"name profiles instead, e.g. {keys.INJECT}: logging"
                    )
                ],
            )
    names = list(dict.fromkeys([*defaults, *pod_names])) if automatic else pod_names
    requested = tuple(names)
    if not names:
        if raw is not None:
            return _skip(
                "not-requested", f"{keys.INJECT} is empty", warnings=[_warn(f"{keys.INJECT} is empty; nothing injected")]
            )
        if context.namespace_unavailable and not policy.cluster_wide:
            return _skip("namespace-unknown", "the namespace could not be read from the Kubernetes API", warnings=warnings)
        if automatic:
            return _skip(
                "not-requested",
                f"automatic injection, but {source} names no profiles",
                warnings=[_warn(f"automatic injection is on but {source} names no profiles")],
            )
        return _skip("not-requested", f"no {keys.INJECT} annotation")

    raw_spec = pod.get("spec")
    spec: dict[str, Any] = raw_spec if isinstance(raw_spec, dict) else {}
    problem = _pod_shape_problem(spec) if spec is raw_spec else "spec is missing or not an object"
    if problem:
        return _skip("invalid-pod", problem, requested=requested, warnings=[_warn(f"pod not injected: {problem}")])
    windows = windows_selector(spec)
    if windows:
        return _skip(
            "unsupported-os",
            f"windows pods are not injected ({windows})",
            requested=requested,
            warnings=[_warn(f"windows pods are not injected: the sidecar images are Linux ({windows})")],
        )

    unknown = [n for n in names if n not in profiles]
    if unknown:
        where = keys.INJECT if raw is not None and set(unknown) <= set(pod_names) else source
        text = (
            f"unknown sidecar profile(s) {_listing(unknown)} in {where}; "
            f"available: {_listing(sorted(profiles), _MAX_AVAILABLE) or '(none)'}"
        )
        if policy.strict:
            return _deny("unknown-profiles", text, requested, warnings)
        warnings.append(_warn(text))
    known = [n for n in names if n in profiles]
    if not known:
        return _skip("no-known-profiles", "none of the requested profiles exist", requested=requested, warnings=warnings)
    refused = _policy_refusals(known, profiles, namespace, facts)
    if refused:
        text = "; ".join(refused.values())
        if policy.strict:
            return _deny("policy-refused", text, requested, warnings)
        warnings += [_warn(line) for line in refused.values()]
        known = [n for n in known if n not in refused]
        if not known:
            return _skip("policy-refused", text, requested=requested, warnings=warnings)

    status, status_problem = _read_status(annotations.get(keys.STATUS))
    if status_problem:
        warnings.append(_warn(status_problem))
    todo = [n for n in known if n not in status]
    if not todo:
        return _skip(
            "already-injected", "all requested profiles are already injected", requested=requested, warnings=warnings
        )

    native = _native_rule(policy, pod, annotations, context, warnings)
    # Room left for the patch: the pod may not grow past what the API server stores. A pod
    # already over it is refused before any planning, and planning stops as soon as the
    # patch outgrows the room, so that no review (a 3 MiB body can hold 100,000 containers)
    # builds a patch of hundreds of megabytes only to refuse it.
    received = context.object_bytes
    if received is not None and received > policy.max_object_bytes:
        return _too_large(f"over {received // 1024} KiB already", policy, requested, warnings)
    room = None if received is None else policy.max_object_bytes - received
    plan = _Plan(pod, spec, annotations, status, facts, room)
    pod_facts: PodFacts | None = None  # computed for the first profile that reads them
    skipped: dict[str, list[str]] = {}
    bad_values: set[str] = set()
    resolutions: dict[str, Resolution] = {}
    for name in todo:
        profile = profiles[name]
        resolution = resolve(profile, annotations, facts.annotations if facts is not None else {})
        resolutions[name] = resolution
        warnings += [_warn(note) for note in resolution.notes]
        if resolution.problems:
            skipped[name] = resolution.problems
            bad_values.add(name)
            continue
        rendered = profile.default_rendering if resolution is default_resolution(profile) else None
        if rendered is None:
            if pod_facts is None and profile.reads_pod_facts:
                pod_facts = _pod_facts(pod, spec, context, namespace)
            rendered = profile.render(resolution.values, pod_facts or _NO_FACTS, resolution.resources)
        try:
            problems = plan.add_profile(rendered, native(profile))
        except _PatchTooLarge:
            return _too_large(None, policy, requested, warnings)
        if problems:
            skipped[name] = problems
    if skipped:
        lines = [
            (head := f"profile {name} not injected: ")
            + _listing_of(problems, MAX_WARNING_LENGTH - len(WARNING_PREFIX + head))
            for name, problems in skipped.items()
        ]
        reason = "invalid-values" if bad_values else "conflicts"
        if policy.strict:
            return _deny(reason, "; ".join(lines), requested, warnings, resolutions)
        warnings += [_warn(line) for line in lines[:_MAX_LISTED]]
        if len(lines) > _MAX_LISTED:
            warnings.append(_warn(f"and {len(lines) - _MAX_LISTED} more profiles not injected"))
    warnings += [_warn(note) for note in plan.notes]
    injected = [name for name in todo if name not in skipped]
    if not injected:
        reason = "invalid-values" if bad_values == set(skipped) else "conflicts"
        message = "no requested profile fits the pod: " + ", ".join(skipped)
        return _skip(reason, message, requested=requested, warnings=warnings, resolutions=resolutions)
    plan.write_status()
    if not plan.annotations_fit():
        text = (
            f"the pod's annotations would exceed the API server's {MAX_ANNOTATION_BYTES // 1024} KiB "
            f"limit with {keys.STATUS}; nothing injected"
        )
        return _refuse("annotations-too-large", text, policy, requested, warnings)
    ops = plan.ops()
    encoded = None
    if context.object_bytes is not None:
        encoded = orjson.dumps(ops)
        size = context.object_bytes + len(encoded)
        if size > policy.max_object_bytes:
            return _too_large(f"about {size // 1024} KiB", policy, requested, warnings)
    return Decision(
        "injected",
        "injected",
        "injected " + ", ".join(injected),
        requested=requested,
        injected=tuple(injected),
        warnings=tuple(warnings),
        patch=ops,
        resolutions=resolutions,
        patch_json=encoded,
    )


def _default_profiles(facts: NamespaceFacts | None, policy: InjectionPolicy) -> tuple[list[str], str]:
    """The namespace's ``sidecar.io/profiles``, else the cluster default; and where they came from."""
    value = facts.annotations.get(keys.NAMESPACE_PROFILES) if facts is not None else None
    if isinstance(value, str):
        return parse_inject_value(value) or [], f"the namespace annotation {keys.NAMESPACE_PROFILES}"
    return list(policy.default_profiles), "the cluster default profiles"


def _policy_refusals(
    names: list[str], profiles: Mapping[str, Profile], namespace: Any, facts: NamespaceFacts | None
) -> dict[str, str]:
    """The requested profiles whose policy does not allow this namespace, with why."""
    refused: dict[str, str] = {}
    ns = namespace if isinstance(namespace, str) else None
    for name in names:
        policy = profiles[name].allowed_namespaces
        if policy is None:
            continue
        allowed = policy.allows(ns, facts.labels if facts is not None else None)
        if allowed:
            continue
        why = "its labels are unknown" if allowed is None else "it is not among them"
        refused[name] = (
            f"profile {name} is not allowed in namespace {printable(str(ns))}: "
            f"allowed in {printable(policy.describe(), 120)}; {why}"
        )
    return refused


def _pod_shape_problem(spec: dict[str, Any]) -> str | None:
    """Why the pod cannot be injected safely, when its structure is not a pod's."""
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return "spec.containers is missing or empty"
    for field_name in ("containers", "initContainers", "ephemeralContainers"):
        items = spec.get(field_name)
        if items is None:
            continue
        if not isinstance(items, list):
            return f"spec.{field_name} is not a list"
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                return f"spec.{field_name} has an entry without a name"
            for sub in ("volumeMounts", "env", "ports"):
                if item.get(sub) is not None and not isinstance(item[sub], list):
                    return f"spec.{field_name}[{printable(item['name'])}].{sub} is not a list"
    volumes = spec.get("volumes")
    if volumes is not None and (not isinstance(volumes, list) or not all(isinstance(v, dict) for v in volumes)):
        return "spec.volumes is not a list of objects"
    return None


def recorded_profiles(raw: Any) -> dict[str, Any] | None:
    """The ``profiles`` map of a ``sidecar.io/status`` value, entries as found; None if unreadable."""
    try:
        data = orjson.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        data = None
    recorded = data.get("profiles") if isinstance(data, dict) else None
    return recorded if isinstance(recorded, dict) else None


def _read_status(raw: Any) -> tuple[dict[str, Any], str | None]:
    """The profiles recorded in ``sidecar.io/status`` and, if it is unreadable, why."""
    if raw is None:
        return {}, None
    recorded = recorded_profiles(raw)
    if recorded is None:
        return {}, f"{keys.STATUS} is unreadable; treating the pod as not injected yet"
    # Entries are carried over into the status we write: keep only the fields we write, with
    # their types, so a hand-edited annotation cannot smuggle anything (or any depth) through.
    return {name: _status_entry(entry) for name, entry in recorded.items()}, None


def _status_entry(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict):
        return {}
    clean: dict[str, Any] = {}
    for field_name in ("version", "hash", "values"):
        if isinstance(entry.get(field_name), str):
            clean[field_name] = entry[field_name]
    if isinstance(entry.get("native"), bool):
        clean["native"] = entry["native"]
    for field_name in ("containers", "initContainers", "volumes"):
        items = entry.get(field_name)
        if isinstance(items, list):
            clean[field_name] = [item for item in items if isinstance(item, str)]
    return clean


_NO_FACTS = PodFacts()


def _pod_facts(pod: dict[str, Any], spec: dict[str, Any], context: RequestContext, namespace: Any) -> PodFacts:
    """What placeholders may read about the pod, as the API server will have set it."""
    metadata = pod.get("metadata") or {}
    owner_kind, owner_name = context.owner_kind or "", context.owner_name or ""
    owner = controller_reference(metadata.get("ownerReferences"))
    if owner is not None:
        owner_kind, owner_name = str(owner.get("kind") or ""), str(owner.get("name") or "")
    account = spec.get("serviceAccountName") or spec.get("serviceAccount")
    return PodFacts(
        namespace=namespace if isinstance(namespace, str) else "",
        # the ServiceAccount admission plugin sets it before webhooks run; offline: "default" as it would
        service_account_name=account if isinstance(account, str) and account else "default",
        owner_kind=owner_kind,
        owner_name=owner_name,
        labels=_string_map(metadata.get("labels")),
        annotations=_string_map(metadata.get("annotations")),
    )


def _is_run_to_completion(pod: dict[str, Any], spec: dict[str, Any], context: RequestContext) -> bool:
    """Pods that must finish (Jobs): a regular sidecar would keep them running forever."""
    if context.owner_kind == "Job":
        return True
    owners = (pod.get("metadata") or {}).get("ownerReferences")
    if isinstance(owners, list):
        for owner in owners:
            if isinstance(owner, dict) and owner.get("kind") == "Job":
                return True
    return spec.get("restartPolicy") in ("Never", "OnFailure")


def _native_rule(
    policy: InjectionPolicy,
    pod: dict[str, Any],
    annotations: Mapping[str, Any],
    context: RequestContext,
    warnings: list[str],
) -> Callable[[Profile], bool]:
    """Whether a profile's sidecars become native sidecars in this pod."""
    override = annotations.get(keys.NATIVE_SIDECARS)
    choice: bool | None = None
    if override is not None:
        value = override.strip().lower() if isinstance(override, str) else None
        if value in ("true", "false"):
            choice = value == "true"
        else:
            warnings.append(_warn(f'{keys.NATIVE_SIDECARS} must be "true" or "false"; ignored'))
    if policy.native_sidecars == "never":
        if choice:
            warnings.append(_warn("native sidecars are disabled on this cluster; injected regular sidecars"))
        return lambda profile: False
    if choice is not None:
        return lambda profile: choice
    if policy.native_sidecars == "always":
        return lambda profile: True
    finishing = _is_run_to_completion(pod, pod["spec"], context)
    return lambda profile: finishing or profile.native_sidecar


# -- building the patch ------------------------------------------------------------------


class _App:
    """An application container of the pod, and what the plan adds to it."""

    def __init__(self, index: int, container: dict[str, Any]):
        self.index = index
        self.name: str = container["name"]
        self.has_mounts = isinstance(container.get("volumeMounts"), list)
        self.has_env = isinstance(container.get("env"), list)
        self.paths: list[str] = [
            m["mountPath"]
            for m in container.get("volumeMounts") or []
            if isinstance(m, dict) and isinstance(m.get("mountPath"), str)
        ]
        self.envs: set[str] = {
            e["name"] for e in container.get("env") or [] if isinstance(e, dict) and isinstance(e.get("name"), str)
        }
        self.new_mounts: list[dict[str, Any]] = []
        self.new_env: list[dict[str, Any]] = []


def _path_clash(path: str, taken: list[str]) -> str | None:
    """The mount path already in ``taken`` that ``path`` equals, lies inside or contains."""
    new = path.rstrip("/") or "/"
    for old_path in taken:
        old = old_path.rstrip("/") or "/"
        if new == old or new.startswith(old + "/") or old.startswith(new + "/") or "/" in (new, old):
            return old_path
    return None


class _PatchTooLarge(Exception):
    """The patch being planned has outgrown the room the pod has left."""


class _Plan:
    """What the patch adds, profile by profile, and what the pod looks like with it.

    A profile is added whole or not at all: :meth:`add_profile` first checks everything
    it would add against the pod and the profiles added before it, and changes nothing
    when anything conflicts. :meth:`ops` then writes the JSON Patch in an order where every
    operation's path is valid when it is applied.

    With a ``room`` (bytes), :meth:`add_profile` raises :class:`_PatchTooLarge` as soon as
    what it adds to the application containers — one copy per container, the part of a
    patch that grows with the pod — outgrows it (counted from the encoded size of the
    values alone, a lower bound of the patch's), so the work spent on a pod that cannot
    be injected is bounded by the room, not by the number of its containers.
    """

    def __init__(
        self,
        pod: dict[str, Any],
        spec: dict[str, Any],
        annotations: dict[str, Any],
        status: dict[str, Any],
        namespace: NamespaceFacts | None,
        room: int | None = None,
    ):
        self._room = room
        self._size = 0  # a lower bound of the encoded size of what is added to the app containers
        self._spec = spec
        self._metadata_exists = isinstance(pod.get("metadata"), dict)
        self._annotations_exist = isinstance((pod.get("metadata") or {}).get("annotations"), dict)
        self._annotations = dict(annotations)
        self._new_annotations: dict[str, str] = {}
        self._status = dict(status)
        self.notes: list[str] = []
        containers: list[dict[str, Any]] = spec["containers"]
        init: list[dict[str, Any]] = spec.get("initContainers") or []
        ephemeral: list[dict[str, Any]] = spec.get("ephemeralContainers") or []
        self._containers = containers
        self._init = init
        self.names = {c["name"] for c in (*containers, *init, *ephemeral)}
        self.volumes = {v.get("name") for v in spec.get("volumes") or [] if isinstance(v.get("name"), str)}
        #: (port, protocol) -> what binds it, for the messages
        self.ports: dict[tuple[int, str], str] = {}
        for c in (*containers, *(i for i in init if i.get("restartPolicy") == "Always")):
            for port in declared_ports(c):
                self.ports.setdefault(port, f"container {printable(c['name'])}")
        for mesh, mesh_ports in meshes(pod, spec, annotations, namespace).items():
            for number in mesh_ports:
                self.ports.setdefault((number, "TCP"), mesh)
        self.host_network = spec.get("hostNetwork") is True
        self.resources = PodResources.of(spec)
        injected_before = {
            n
            for entry in status.values()
            if isinstance(entry, dict) and isinstance(entry.get("containers"), list)
            for n in entry["containers"]
            if isinstance(n, str)
        }
        # application containers: the pod's own, not sidecars an earlier injection added
        self.apps = [_App(i, c) for i, c in enumerate(containers) if c["name"] not in injected_before]
        self.new_volumes: list[dict[str, Any]] = []
        secrets = spec.get("imagePullSecrets")
        self._pull_secrets_exist = isinstance(secrets, list)
        self.pull_secrets = {s.get("name") for s in secrets or [] if isinstance(s, dict)}
        self.new_pull_secrets: list[dict[str, str]] = []
        self.init_first: list[dict[str, Any]] = []
        self.init_last: list[dict[str, Any]] = []
        self.containers_first: list[dict[str, Any]] = []
        self.containers_last: list[dict[str, Any]] = []

    # -- checking -------------------------------------------------------------------------

    def _conflicts(self, profile: RenderedProfile, native: bool) -> list[str]:
        problems: list[str] = []
        bound = profile.bound_ports
        if self.host_network and bound and profile.profile.host_network != "allowed":
            ports = ", ".join(f"{port}/{printable(proto)}" for port, proto in bound[:_MAX_LISTED])
            return [
                (
                    f"the pod uses the host network, where its ports ({ports}) would bind on the node's address "
                    "(a profile that is safe there says hostNetwork: allowed)"
                )
            ]
        problems += [f"volume {v['name']} already exists" for v in profile.volumes if v["name"] in self.volumes]
        problems += [
            f"container {c['name']} already exists"
            for c in (*profile.init_containers, *profile.containers)
            if c["name"] in self.names
        ]
        for port, proto in bound:
            owner = self.ports.get((port, proto))
            if owner is not None:
                problems.append(f"port {port}/{printable(proto)} is already used by {owner}")
        for app in self.apps:
            for mount in profile.app_volume_mounts:
                path = mount["mountPath"]
                clash = _path_clash(path, app.paths)
                if clash is None:
                    continue
                if clash.rstrip("/") == path.rstrip("/"):
                    problems.append(f"container {printable(app.name)} already mounts {printable(path, 120)}")
                else:  # a mount inside another one (or around it) shadows or writes through it
                    problems.append(
                        f"container {printable(app.name)} already mounts {printable(clash, 120)}, "
                        f"which overlaps {printable(path, 120)}"
                    )
        if not problems and self.resources is not None:
            added = list(profile.native_containers if native else profile.containers)
            problems += self.resources.problems(*self._candidate_lists(profile, native), added)
        return problems

    def _candidate_lists(self, profile: RenderedProfile, native: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The pod's (app containers, init containers in order) if the profile were added."""
        init_new = list(profile.init_containers) + (list(profile.native_containers) if native else [])
        first = profile.profile.placement == "first"
        init = [*self.init_first, *(init_new if first else []), *self._init, *self.init_last, *([] if first else init_new)]
        containers = [*self._containers, *self.containers_first, *self.containers_last]
        if not native:
            containers += profile.containers
        return containers, init

    # -- adding -----------------------------------------------------------------------------

    def add_profile(self, profile: RenderedProfile, native: bool) -> list[str]:
        """Add the whole profile and return [], or add nothing and return every conflict."""
        problems = self._conflicts(profile, native)
        if problems:
            return problems
        first = profile.profile.placement == "first"
        init_list = self.init_first if first else self.init_last
        container_list = self.containers_first if first else self.containers_last
        added: dict[str, list[str]] = {"containers": [], "initContainers": [], "volumes": []}
        for volume in profile.volumes:
            self.new_volumes.append(volume)
            self.volumes.add(volume["name"])
            added["volumes"].append(volume["name"])
        for container in profile.init_containers:
            init_list.append(container)
            added["initContainers"].append(container["name"])
        for container, as_native in zip(profile.containers, profile.native_containers, strict=True):
            if native:
                init_list.append(as_native)
                added["initContainers"].append(container["name"])
            else:
                container_list.append(container)
                added["containers"].append(container["name"])
        if profile.profile.wait_ready and profile.containers and not native:
            self.notes.append(
                f"[{profile.name}] waitReady needs native sidecars, and this pod gets regular ones "
                f'(set {keys.NATIVE_SIDECARS}: "true"): the app may start before the sidecar is ready'
            )
        self.names.update(c["name"] for c in (*profile.init_containers, *profile.containers))
        for container in profile.containers:
            for port in profile.ports[container["name"]]:
                self.ports[port] = f"container {container['name']}"
        for number in profile.profile.local_ports:
            self.ports[(number, "TCP")] = f"profile {profile.name}"
        mounts_size, env_sizes = profile.app_bytes if self._room is not None else (0, (0,) * len(profile.app_env))
        for app in self.apps:
            for mount in profile.app_volume_mounts:
                app.new_mounts.append(mount)
                app.paths.append(mount["mountPath"])
            self._size += mounts_size
            for env, size in zip(profile.app_env, env_sizes, strict=True):
                if env["name"] not in app.envs:  # the pod's own value wins: it is a deliberate override
                    app.new_env.append(env)
                    app.envs.add(env["name"])
                    self._size += size
            if self._room is not None and self._size > self._room:
                raise _PatchTooLarge
        for secret in profile.profile.image_pull_secrets:
            if secret not in self.pull_secrets:
                self.pull_secrets.add(secret)
                self.new_pull_secrets.append({"name": secret})
        kept: dict[str, Any] = {}
        for key, value in profile.pod_annotations.items():
            if key not in self._annotations:
                self._annotate(key, value)
            elif self._annotations[key] != value:
                kept[key] = self._annotations[key]
        if kept:
            self.notes.append(_kept_annotations(profile, kept))
        entry: dict[str, Any] = {"version": profile.profile.version, "hash": profile.profile.hash, "native": native}
        if profile.values_hash is not None:
            entry["values"] = profile.values_hash
        self._status[profile.name] = {**entry, **{k: v for k, v in added.items() if v}}
        return []

    def _annotate(self, key: str, value: str) -> None:
        self._annotations[key] = value
        self._new_annotations[key] = value

    def write_status(self) -> None:
        value = orjson.dumps({"profiles": self._status}, option=orjson.OPT_SORT_KEYS).decode()
        self._annotate(keys.STATUS, value)

    def annotations_fit(self) -> bool:
        """Whether the pod's annotations, once patched, stay within the API server's limit.

        The API server counts UTF-8 bytes. A character takes at most 4 of them, so counting
        characters settles nearly every pod; only large annotations are encoded to be sure.
        """
        pairs = [(k, v) for k, v in self._annotations.items() if isinstance(k, str) and isinstance(v, str)]
        if sum(len(k) + len(v) for k, v in pairs) * 4 <= MAX_ANNOTATION_BYTES:
            return True
        size = sum(len(k.encode("utf-8", "surrogatepass")) + len(v.encode("utf-8", "surrogatepass")) for k, v in pairs)
        return size <= MAX_ANNOTATION_BYTES

    # -- the patch --------------------------------------------------------------------------

    def ops(self) -> list[dict[str, Any]]:
        """The JSON Patch. Edits of the app containers come first (their indexes are the
        pod's own); containers placed first are inserted after them."""
        ops: list[dict[str, Any]] = []
        for app in self.apps:
            _extend(ops, f"/spec/containers/{app.index}/volumeMounts", app.has_mounts, [], app.new_mounts)
            _extend(ops, f"/spec/containers/{app.index}/env", app.has_env, [], app.new_env)
        _extend(ops, "/spec/volumes", isinstance(self._spec.get("volumes"), list), [], self.new_volumes)
        _extend(
            ops, "/spec/initContainers", isinstance(self._spec.get("initContainers"), list), self.init_first, self.init_last
        )
        _extend(ops, "/spec/containers", True, self.containers_first, self.containers_last)
        _extend(ops, "/spec/imagePullSecrets", self._pull_secrets_exist, [], self.new_pull_secrets)
        if self._new_annotations:
            if not self._metadata_exists:
                ops.append({"op": "add", "path": "/metadata", "value": {"annotations": self._new_annotations}})
            elif not self._annotations_exist:
                ops.append({"op": "add", "path": "/metadata/annotations", "value": self._new_annotations})
            else:
                ops += [
                    {"op": "add", "path": "/metadata/annotations/" + escape_pointer(k), "value": v}
                    for k, v in self._new_annotations.items()
                ]
        return ops


def _extend(ops: list[dict[str, Any]], array: str, exists: bool, first: list[Any], last: list[Any]) -> None:
    """Operations putting ``first`` at the start of the array at ``array`` and ``last`` at its end."""
    if not first and not last:
        return
    if not exists:
        ops.append({"op": "add", "path": array, "value": [*first, *last]})
        return
    ops += [{"op": "add", "path": f"{array}/{i}", "value": item} for i, item in enumerate(first)]
    ops += [{"op": "add", "path": f"{array}/-", "value": item} for item in last]


def _kept_annotations(profile: RenderedProfile, kept: dict[str, Any]) -> str:
    """The note for pod annotations the profile would set and the pod already sets otherwise."""
    own = ", ".join(f"{printable(key, 80)}={printable(str(value), 40)}" for key, value in kept.items())
    text = f"[{profile.name}] the pod's own {own} {'is' if len(kept) == 1 else 'are'} kept"
    wanted = profile.pod_annotations.get("prometheus.io/port")
    if any(key.startswith("prometheus.io/") for key in kept):
        port = next(
            (
                p.get("name") or str(p.get("containerPort"))
                for c in profile.containers
                for p in c.get("ports") or []
                if isinstance(p, dict) and str(p.get("containerPort")) == wanted
            ),
            None,
        )
        where = f"port {port}" if port else "the sidecar's metrics port"
        return (
            text + f": annotation-based scraping will not see the {profile.name} sidecar; scrape {where} with a PodMonitor"
        )
    return text + " (the pod's value wins)"
