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
from sidecar_injector.profiles import Profile, declared_ports

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

    @property
    def allowed(self) -> bool:
        return self.outcome != "denied"


def _skip(reason: str, message: str, *, requested: tuple[str, ...] = (), warnings: list[str] | None = None) -> Decision:
    return Decision("skipped", reason, message, requested=requested, warnings=tuple(warnings or ()))


def _deny(reason: str, message: str, requested: tuple[str, ...], warnings: list[str]) -> Decision:
    return Decision("denied", reason, message, requested=requested, warnings=tuple(warnings))


def printable(value: str, limit: int = 63) -> str:
    """A user-supplied value made safe to echo in a warning: printable ASCII, bounded."""
    cleaned = "".join(ch if " " <= ch <= "~" else "?" for ch in value[: limit + 1])
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."


def _listing(names: list[str], limit: int = _MAX_LISTED) -> str:
    shown = ", ".join(printable(n) for n in names[:limit])
    more = len(names) - limit
    return shown + (f" and {more} more" if more > 0 else "")


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
    if isinstance(spec.get("os"), dict) and spec["os"].get("name") == "windows":
        return _skip(
            "unsupported-os",
            "windows pods are not injected",
            requested=requested,
            warnings=[_warn("windows pods are not injected (sidecar images are Linux)")],
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
    plan = _Plan(pod, spec, metadata, annotations, status)
    conflicts: list[str] = []
    for name in todo:
        conflicts += plan.add_profile(profiles[name], native(profiles[name]))
    if conflicts:
        if policy.strict:
            return _deny("conflicts", "conflicts with the pod: " + "; ".join(conflicts), requested, warnings)
        warnings += [_warn(f"skipped {conflict}") for conflict in conflicts[:_MAX_LISTED]]
        if len(conflicts) > _MAX_LISTED:
            warnings.append(_warn(f"and {len(conflicts) - _MAX_LISTED} more conflicts with the pod"))
    plan.write_status()
    if not plan.annotations_fit():
        text = (
            f"the pod's annotations would exceed the API server's {MAX_ANNOTATION_BYTES // 1024} KiB "
            f"limit with {keys.STATUS}; nothing injected"
        )
        if policy.strict:
            return _deny("annotations-too-large", text, requested, warnings)
        return _skip("annotations-too-large", text, requested=requested, warnings=[*warnings, _warn(text)])
    if context.object_bytes is not None:
        size = context.object_bytes + len(orjson.dumps(plan.ops))
        if size > policy.max_object_bytes:
            text = (
                f"the injected pod would be about {size // 1024} KiB, over the "
                f"{policy.max_object_bytes // 1024} KiB the API server stores; nothing injected"
            )
            if policy.strict:
                return _deny("pod-too-large", text, requested, warnings)
            return _skip("pod-too-large", text, requested=requested, warnings=[*warnings, _warn(text)])
    return Decision(
        "injected",
        "injected",
        "injected " + ", ".join(todo),
        requested=requested,
        injected=tuple(todo),
        warnings=tuple(warnings),
        patch=plan.ops,
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
    for field_name in ("version", "hash"):
        if isinstance(entry.get(field_name), str):
            clean[field_name] = entry[field_name]
    if isinstance(entry.get("native"), bool):
        clean["native"] = entry["native"]
    for field_name in ("containers", "initContainers", "volumes"):
        items = entry.get(field_name)
        if isinstance(items, list):
            clean[field_name] = [item for item in items if isinstance(item, str)]
    return clean


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


class _Plan:
    """Accumulates JSON Patch operations and what the pod will look like after them."""

    def __init__(
        self,
        pod: dict[str, Any],
        spec: dict[str, Any],
        metadata: dict[str, Any],
        annotations: dict[str, Any],
        status: dict[str, Any],
    ):
        self.ops: list[dict[str, Any]] = []
        self._metadata_exists = isinstance(pod.get("metadata"), dict)
        self._annotations_exist = isinstance(metadata.get("annotations"), dict)
        self._annotations = dict(annotations)
        self._status = dict(status)
        self._arrays: dict[str, bool] = {}  # JSON pointer -> the array exists by now
        containers = spec["containers"]
        init = spec.get("initContainers") or []
        ephemeral = spec.get("ephemeralContainers") or []
        self._arrays["/spec/containers"] = True  # checked by _pod_shape_problem
        self._arrays["/spec/initContainers"] = isinstance(spec.get("initContainers"), list)
        self._arrays["/spec/volumes"] = isinstance(spec.get("volumes"), list)
        self.names = {c["name"] for c in (*containers, *init, *ephemeral)}
        self.volumes = {v.get("name") for v in spec.get("volumes") or [] if isinstance(v.get("name"), str)}
        self.ports = {
            port
            for c in (*containers, *(i for i in init if i.get("restartPolicy") == "Always"))
            for port in declared_ports(c)
        }
        injected_before = {
            n
            for entry in status.values()
            if isinstance(entry, dict) and isinstance(entry.get("containers"), list)
            for n in entry["containers"]
            if isinstance(n, str)
        }
        # application containers: the pod's own, not sidecars an earlier injection added
        self.apps: list[tuple[int, dict[str, Any], set[str], set[str]]] = []
        for index, container in enumerate(containers):
            if container["name"] in injected_before:
                continue
            paths: set[str] = {
                m["mountPath"]
                for m in container.get("volumeMounts") or []
                if isinstance(m, dict) and isinstance(m.get("mountPath"), str)
            }
            envs: set[str] = {
                e["name"] for e in container.get("env") or [] if isinstance(e, dict) and isinstance(e.get("name"), str)
            }
            self.apps.append((index, container, paths, envs))
            self._arrays[f"/spec/containers/{index}/volumeMounts"] = isinstance(container.get("volumeMounts"), list)
            self._arrays[f"/spec/containers/{index}/env"] = isinstance(container.get("env"), list)

    def _append(self, array: str, value: Any) -> None:
        if self._arrays[array]:
            self.ops.append({"op": "add", "path": array + "/-", "value": value})
        else:
            self.ops.append({"op": "add", "path": array, "value": [value]})
            self._arrays[array] = True

    def _annotate(self, key: str, value: str) -> None:
        self._annotations[key] = value
        if not self._metadata_exists:
            self.ops.append({"op": "add", "path": "/metadata", "value": {"annotations": {key: value}}})
            self._metadata_exists = self._annotations_exist = True
        elif not self._annotations_exist:
            self.ops.append({"op": "add", "path": "/metadata/annotations", "value": {key: value}})
            self._annotations_exist = True
        else:
            self.ops.append({"op": "add", "path": "/metadata/annotations/" + escape_pointer(key), "value": value})

    def add_profile(self, profile: Profile, native: bool) -> list[str]:
        """Add one profile; return the conflicts (things skipped), each a short phrase."""
        conflicts: list[str] = []
        added: dict[str, list[str]] = {"containers": [], "initContainers": [], "volumes": []}
        tag = f"[{profile.name}]"

        for volume in profile.volumes:
            if volume["name"] in self.volumes:
                conflicts.append(f"{tag} volume {volume['name']} already exists")
                continue
            self._append("/spec/volumes", volume)
            self.volumes.add(volume["name"])
            added["volumes"].append(volume["name"])

        def fits(container: dict[str, Any]) -> bool:
            name = container["name"]
            if name in self.names:
                conflicts.append(f"{tag} container {name} already exists")
                return False
            clash = [p for p in profile.ports[name] if p in self.ports]
            if clash:
                port, proto = clash[0]
                conflicts.append(f"{tag} container {name}: port {port}/{printable(proto)} is already used")
                return False
            return True

        for container in profile.init_containers:
            if fits(container):
                self._append("/spec/initContainers", container)
                self.names.add(container["name"])
                added["initContainers"].append(container["name"])
        for container, as_native in zip(profile.containers, profile.native_containers, strict=True):
            if not fits(container):
                continue
            if native:
                self._append("/spec/initContainers", as_native)
                added["initContainers"].append(container["name"])
            else:
                self._append("/spec/containers", container)
                added["containers"].append(container["name"])
            self.names.add(container["name"])
            self.ports.update(profile.ports[container["name"]])

        for index, app, paths, envs in self.apps:
            for mount in profile.app_volume_mounts:
                if mount["mountPath"] in paths:
                    conflicts.append(f"{tag} container {printable(app['name'])} already mounts {mount['mountPath']}")
                    continue
                self._append(f"/spec/containers/{index}/volumeMounts", mount)
                paths.add(mount["mountPath"])
            for env in profile.app_env:
                if env["name"] in envs:
                    continue  # the pod's own value wins: it is a deliberate override
                self._append(f"/spec/containers/{index}/env", env)
                envs.add(env["name"])

        for key, value in profile.pod_annotations.items():
            if key not in self._annotations:
                self._annotate(key, value)

        self._status[profile.name] = {
            "version": profile.version,
            "hash": profile.hash,
            "native": native,
            **{k: v for k, v in added.items() if v},
        }
        return conflicts

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

    def write_status(self) -> None:
        value = orjson.dumps({"profiles": self._status}, option=orjson.OPT_SORT_KEYS).decode()
        self._annotate(keys.STATUS, value)
