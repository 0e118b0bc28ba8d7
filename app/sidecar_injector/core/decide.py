"""The injection core: a pure function of (pod, request context, profiles, policy).

``decide`` never does I/O, never reads the environment and never raises on any pod it
is given: whatever the input, the answer is a :class:`~sidecar_injector.core.decision.Decision` —
skip (with a reason), inject (with a JSON Patch, what was injected and warnings) or deny (strict mode).
It is a short chain of gates (:data:`_GATES`), each answering or passing the pod on.

The JSON Patch is emitted operation by operation against the pod as received
(:class:`~sidecar_injector.core.plan.PatchPlan`). The original pod is never modified.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from sidecar_injector.base import keys
from sidecar_injector.base.text import printable
from sidecar_injector.core.decision import (
    MAX_LISTED,
    MAX_WARNING_LENGTH,
    WARNING_PREFIX,
    Decision,
    deny,
    listing,
    listing_of,
    refuse,
    skip,
    too_large,
    warn,
)
from sidecar_injector.core.inputs import InjectionPolicy, NamespaceFacts, RequestContext, string_map
from sidecar_injector.core.plan import MAX_ANNOTATION_BYTES, PatchPlan, PatchTooLarge, read_status, skipped_status_patch
from sidecar_injector.core.pod_shape import controller_reference, windows_selector
from sidecar_injector.core.values import ValueResolution, default_values, resolve_values, stray_value_keys
from sidecar_injector.profiles.model import Profile
from sidecar_injector.profiles.templating import PodFacts

_MAX_AVAILABLE = 12
#: the skipped profiles ``sidecar.io/status`` records (the warnings count the others)
MAX_SKIPPED_RECORDED = 10
#: the characters of the reason recorded for one skipped profile
_SKIP_REASON_BUDGET = 200


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


# -- the decision: a chain of gates ------------------------------------------------------


@dataclass
class _Review:
    """One pod under review, and what the gates have learned about it so far."""

    pod: dict[str, Any]
    context: RequestContext
    profiles: Mapping[str, Profile]
    policy: InjectionPolicy
    annotations: dict[str, Any] = field(default_factory=dict)
    namespace: Any = None
    facts: NamespaceFacts | None = None
    #: the namespace's sidecar.io/inject label, if any
    ns_label: str | None = None
    warnings: list[str] = field(default_factory=list)
    #: the pod's sidecar.io/inject annotation as found (None: absent)
    raw: str | None = None
    #: the profiles the pod names itself
    pod_names: list[str] = field(default_factory=list)
    #: the namespace default profiles (automatic injection or ``sidecar.io/inject: true``) and where they came from
    defaults: list[str] = field(default_factory=list)
    source: str = keys.INJECT
    automatic: bool = False
    names: list[str] = field(default_factory=list)
    requested: tuple[str, ...] = ()
    spec: dict[str, Any] = field(default_factory=dict)
    known: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    todo: list[str] = field(default_factory=list)
    #: each requested profile not injected so far, and why (for ``sidecar.io/status``)
    skipped: dict[str, str] = field(default_factory=dict)

    def skip_profile(self, name: str, why: str) -> None:
        """Record that ``name`` is not injected (at most :data:`MAX_SKIPPED_RECORDED` of them, each why bounded)."""
        if len(self.skipped) < MAX_SKIPPED_RECORDED:
            self.skipped[printable(name)] = printable(why, _SKIP_REASON_BUDGET)


Gate = Callable[[_Review], Decision | None]


def decide(
    pod: Any,
    context: RequestContext,
    profiles: Mapping[str, Profile],
    policy: InjectionPolicy,
) -> Decision:
    """Decide what to do with ``pod`` (a raw dict, as decoded from the AdmissionReview).

    Each gate either answers (skip, deny) or passes the pod on to the next; a pod that
    passes them all is injected (or refused when the patch does not fit).
    """
    if context.operation != "CREATE":
        return skip("operation-not-create", f"{printable(str(context.operation))} requests are never mutated")
    if context.kind != "Pod":
        return skip("not-a-pod", f"{printable(str(context.kind))} objects are never mutated")
    if not isinstance(pod, dict):
        return skip("invalid-pod", "the pod is not an object", warnings=[warn("malformed pod, not injected")])
    review = _Review(pod, context, profiles, policy)
    for gate in _GATES:
        decision = gate(review)
        if decision is not None:
            return decision
    return _inject(review)


def _readable_metadata(review: _Review) -> Decision | None:
    """The pod's metadata and annotations are maps."""
    metadata = review.pod.get("metadata") or {}
    annotations = metadata.get("annotations") or {} if isinstance(metadata, dict) else None
    if not isinstance(metadata, dict) or not isinstance(annotations, dict):
        return skip(
            "invalid-pod",
            "metadata or metadata.annotations is not a map",
            warnings=[warn("malformed pod metadata, not injected")],
        )
    review.annotations = annotations
    review.namespace = review.context.namespace or metadata.get("namespace")
    return None


def _namespace_allows(review: _Review) -> Decision | None:
    """Neither an excluded namespace nor one labelled disabled."""
    namespace, policy = review.namespace, review.policy
    if isinstance(namespace, str) and namespace in policy.never_inject_namespaces:
        return skip("excluded-namespace", f"namespace {printable(namespace)} is never injected into")
    review.facts = facts = review.context.namespace_facts
    review.ns_label = facts.labels.get(keys.NAMESPACE_INJECT) if facts is not None else None
    if review.ns_label == keys.NAMESPACE_DISABLED:
        return skip(
            "namespace-disabled",
            f"namespace {printable(str(namespace))} is labelled {keys.NAMESPACE_INJECT}={keys.NAMESPACE_DISABLED}",
        )
    return None


def _pod_request(review: _Review) -> Decision | None:
    """What the pod's sidecar.io/inject asks for: profiles, opt-out, or the defaults (``true``)."""
    raw = review.annotations.get(keys.INJECT)
    if raw is not None and not isinstance(raw, str):
        return skip(
            "invalid-pod",
            f"{keys.INJECT} is not a string",
            warnings=[warn(f"{keys.INJECT} must be a string; nothing injected")],
        )
    pod_names = parse_inject_value(raw) if raw is not None else []
    if pod_names is None:
        return skip("opted-out", f"{keys.INJECT}=false")
    review.raw, review.pod_names = raw, pod_names
    return None


def _requested_profiles(review: _Review) -> Decision | None:
    """The profiles to inject: the pod's, and the namespace's defaults under automatic injection."""
    policy, context, namespace = review.policy, review.context, review.namespace
    review.automatic = automatic = policy.cluster_wide or review.ns_label == keys.NAMESPACE_ENABLED
    if automatic or review.pod_names == ["true"]:
        review.defaults, review.source = _default_profiles(review.facts, policy)
    if context.namespace_unavailable:
        review.warnings.append(
            warn(
                f"namespace {printable(str(namespace))} could not be read from the Kubernetes API: "
                + (
                    "used the cluster default profiles"
                    if policy.cluster_wide
                    else "namespace-level injection and label-based profile policy were not applied"
                )
            )
        )
    if review.pod_names == ["true"]:
        review.pod_names = review.defaults
        if not review.pod_names:
            return skip(
                "no-known-profiles",
                "no default profiles are configured",
                warnings=[
                    warn(
                        f"{keys.INJECT}=true but no default profiles are configured; "
                        f"name profiles instead, e.g. {keys.INJECT}: logging"
                    )
                ],
            )
    names = list(dict.fromkeys([*review.defaults, *review.pod_names])) if automatic else review.pod_names
    review.names, review.requested = names, tuple(names)
    # values set on the pod for no requested profile: a misspelt prefix, a profile not asked for
    # (the namespace's are defaults for any pod: never judged)
    stray = [warn(note) for note in stray_value_keys(review.annotations, names, review.profiles)]
    review.warnings += stray
    if names:
        return None
    if review.raw is not None:
        empty = warn(f"{keys.INJECT} is empty; nothing injected")
        return skip("not-requested", f"{keys.INJECT} is empty", warnings=[empty, *stray])
    if context.namespace_unavailable and not policy.cluster_wide:
        return skip("namespace-unknown", "the namespace could not be read from the Kubernetes API", warnings=review.warnings)
    if automatic:
        return skip(
            "not-requested",
            f"automatic injection, but {review.source} names no profiles",
            warnings=[warn(f"automatic injection is on but {review.source} names no profiles"), *stray],
        )
    return skip("not-requested", f"no {keys.INJECT} annotation", warnings=stray)


def _injectable_pod(review: _Review) -> Decision | None:
    """The pod's spec has a pod's structure and is not a Windows pod."""
    raw_spec = review.pod.get("spec")
    spec: dict[str, Any] = raw_spec if isinstance(raw_spec, dict) else {}
    problem = _pod_shape_problem(spec) if spec is raw_spec else "spec is missing or not an object"
    if problem:
        review.warnings.append(warn(f"pod not injected: {problem}"))
        return _skip_all(review, "invalid-pod", problem)
    windows = windows_selector(spec)
    if windows:
        review.warnings.append(warn(f"windows pods are not injected: the sidecar images are Linux ({windows})"))
        return _skip_all(review, "unsupported-os", f"windows pods are not injected ({windows})")
    review.spec = spec
    return None


def _known_profiles(review: _Review) -> Decision | None:
    """At least one requested profile exists (the unknown ones are a warning, or a denial in strict mode)."""
    names, profiles, requested, warnings = review.names, review.profiles, review.requested, review.warnings
    unknown = [n for n in names if n not in profiles]
    if unknown:
        where = keys.INJECT if review.raw is not None and set(unknown) <= set(review.pod_names) else review.source
        close = {name: _closest(name, profiles) for name in unknown[:MAX_SKIPPED_RECORDED]}
        hints = [(name, closest) for name, closest in close.items() if closest][:2]
        if len(unknown) == 1 and hints:
            suggestion = f" (did you mean {hints[0][1]}?)"
        else:
            pairs = ", ".join(f"{closest} for {printable(name)}" for name, closest in hints)
            suggestion = f" (did you mean {pairs}?)" if hints else ""
        text = (
            f"unknown sidecar profile(s) {listing(unknown)} in {where}{suggestion}; "
            f"available: {listing(sorted(profiles), _MAX_AVAILABLE) or '(none)'}"
        )
        if review.policy.strict:
            return deny("unknown-profiles", text, requested, warnings)
        warnings.append(warn(text))
        for name, hint in close.items():
            review.skip_profile(name, f"unknown profile; did you mean {hint}?" if hint else "unknown profile")
    review.known = [n for n in names if n in profiles]
    if not review.known:
        return _skip_recorded(review, "no-known-profiles", "none of the requested profiles exist")
    return None


def _closest(name: str, profiles: Mapping[str, Profile]) -> str | None:
    """The profile an unknown name most likely means (None: none is close)."""
    close = difflib.get_close_matches(name, list(profiles), n=1, cutoff=0.75)
    return close[0] if close else None


def _skip_recorded(review: _Review, reason: str, message: str, **extra: Any) -> Decision:
    """A skip that says which requested profiles were skipped and why: in ``Decision.skipped`` (what
    ``explain`` shows) and on the pod, in a patch of its ``sidecar.io/status`` alone (:func:`_status_record`)."""
    patch, encoded = _status_record(review)
    return skip(
        reason,
        message,
        requested=review.requested,
        warnings=review.warnings,
        skipped=dict(review.skipped),
        patch=patch,
        patch_json=encoded,
        **extra,
    )


def _skip_all(review: _Review, reason: str, message: str) -> Decision:
    """Every requested profile skipped for one reason about the pod (its shape, its OS), recorded."""
    for name in review.names:
        review.skip_profile(name, message)
    return _skip_recorded(review, reason, message)


def _refused(review: _Review, decision: Decision, names: list[str]) -> Decision:
    """A pod refused for its size: when skipped (not denied), ``names`` are recorded as skipped for it
    (the record itself is left out when it does not fit either)."""
    if decision.outcome != "skipped":
        return decision
    for name in names:
        review.skip_profile(name, decision.message)
    patch, encoded = _status_record(review)
    return dataclasses.replace(decision, skipped=dict(review.skipped), patch=patch, patch_json=encoded)


def _status_record(review: _Review) -> tuple[list[dict[str, Any]], bytes | None]:
    """The skipped profiles written into ``sidecar.io/status`` (plan.skipped_status_patch), if it fits."""
    received = review.context.object_bytes
    room = None if received is None else review.policy.max_object_bytes - received
    return skipped_status_patch(review.pod, review.annotations, review.skipped, room)


def _allowed_by_profile_policy(review: _Review) -> Decision | None:
    """The profiles whose namespace policy refuses this namespace are dropped (denied in strict mode)."""
    refused = _policy_refusals(review.known, review.profiles, review.namespace, review.facts)
    if not refused:
        return None
    text = "; ".join(refused.values())
    if review.policy.strict:
        return deny("policy-refused", text, review.requested, review.warnings)
    review.warnings += [warn(line) for line in refused.values()]
    for name, line in refused.items():
        review.skip_profile(name, line)
    review.known = [n for n in review.known if n not in refused]
    if not review.known:
        return _skip_recorded(review, "policy-refused", text)
    return None


def _not_yet_injected(review: _Review) -> Decision | None:
    """Some profile is not recorded in the pod's sidecar.io/status yet."""
    status, status_problem = read_status(review.annotations.get(keys.STATUS))
    if status_problem:
        review.warnings.append(warn(status_problem))
    review.status = status
    review.todo = [n for n in review.known if n not in status]
    if not review.todo:
        return skip(
            "already-injected",
            "all requested profiles are already injected",
            requested=review.requested,
            warnings=review.warnings,
        )
    return None


_GATES: tuple[Gate, ...] = (
    _readable_metadata,
    _namespace_allows,
    _pod_request,
    _requested_profiles,
    _injectable_pod,
    _known_profiles,
    _allowed_by_profile_policy,
    _not_yet_injected,
)


def _inject(review: _Review) -> Decision:
    """Plan every profile still to inject into the patch; inject what fits."""
    pod, spec, context, policy = review.pod, review.spec, review.context, review.policy
    requested, warnings = review.requested, review.warnings
    native = _native_rule(policy, pod, review.annotations, context, warnings)
    # Room left for the patch: the pod may not grow past what the API server stores. A pod
    # already over it is refused before any planning, and planning stops as soon as the
    # patch outgrows the room, so that no review (a 3 MiB body can hold 100,000 containers)
    # builds a patch of hundreds of megabytes only to refuse it.
    received = context.object_bytes
    if received is not None and received > policy.max_object_bytes:
        return _refused(review, too_large(f"over {received // 1024} KiB already", policy, requested, warnings), review.todo)
    room = None if received is None else policy.max_object_bytes - received
    plan = PatchPlan(pod, spec, review.annotations, review.status, review.facts, room)
    try:
        skipped, bad_values, resolutions = _add_profiles(review, plan, native)
    except PatchTooLarge:
        return _refused(review, too_large(None, policy, requested, warnings), review.todo)
    if skipped:
        lines = [
            (head := f"profile {name} not injected: ")
            + listing_of(problems, MAX_WARNING_LENGTH - len(WARNING_PREFIX + head))
            for name, problems in skipped.items()
        ]
        reason = "invalid-values" if bad_values else "conflicts"
        if policy.strict:
            return deny(reason, "; ".join(lines), requested, warnings, resolutions)
        warnings += [warn(line) for line in lines[:MAX_LISTED]]
        if len(lines) > MAX_LISTED:
            warnings.append(warn(f"and {len(lines) - MAX_LISTED} more profiles not injected"))
        for name, problems in skipped.items():
            review.skip_profile(name, listing_of(problems, _SKIP_REASON_BUDGET))
    warnings += [warn(note) for note in plan.notes]
    injected = [name for name in review.todo if name not in skipped]
    if not injected:
        reason = "invalid-values" if bad_values == set(skipped) else "conflicts"
        message = "no requested profile fits the pod: " + ", ".join(skipped)
        return _skip_recorded(review, reason, message, resolutions=resolutions)
    return _patched(review, plan, injected, resolutions)


def _add_profiles(
    review: _Review, plan: PatchPlan, native: Callable[[Profile], bool]
) -> tuple[dict[str, list[str]], set[str], dict[str, ValueResolution]]:
    """Resolve, render and add each profile to the plan: the ones skipped (with why), those for bad values, the values."""
    pod_facts: PodFacts | None = None  # computed for the first profile that reads them
    skipped: dict[str, list[str]] = {}
    bad_values: set[str] = set()
    resolutions: dict[str, ValueResolution] = {}
    facts = review.facts
    for name in review.todo:
        profile = review.profiles[name]
        resolution = resolve_values(profile, review.annotations, facts.annotations if facts is not None else {})
        resolutions[name] = resolution
        review.warnings.extend(warn(note) for note in resolution.notes)
        if resolution.problems:
            skipped[name] = resolution.problems
            bad_values.add(name)
            continue
        rendered = profile.default_rendering if resolution is default_values(profile) else None
        if rendered is None:
            if pod_facts is None and profile.reads_pod_facts:
                pod_facts = _pod_facts(review.pod, review.spec, review.context, review.namespace)
            rendered = profile.render(resolution.values, pod_facts or _NO_FACTS, resolution.resources)
        problems = plan.add_profile(rendered, native(profile))
        if problems:
            skipped[name] = problems
    return skipped, bad_values, resolutions


def _patched(review: _Review, plan: PatchPlan, injected: list[str], resolutions: dict[str, ValueResolution]) -> Decision:
    """The injection, unless the status annotation or the patched pod would not fit."""
    policy, requested, warnings, context = review.policy, review.requested, review.warnings, review.context
    plan.write_status(review.skipped)
    if not plan.annotations_fit():
        text = (
            f"the pod's annotations would exceed the API server's {MAX_ANNOTATION_BYTES // 1024} KiB "
            f"limit with {keys.STATUS}; nothing injected"
        )
        return _refused(review, refuse("annotations-too-large", text, policy, requested, warnings), injected)
    ops = plan.ops()
    encoded = None
    if context.object_bytes is not None:
        encoded = orjson.dumps(ops)
        size = context.object_bytes + len(encoded)
        if size > policy.max_object_bytes:
            return _refused(review, too_large(f"about {size // 1024} KiB", policy, requested, warnings), injected)
    return Decision(
        "injected",
        "injected",
        "injected " + ", ".join(injected),
        requested=requested,
        injected=tuple(injected),
        warnings=tuple(warnings),
        patch=ops,
        resolutions=resolutions,
        skipped=dict(review.skipped),
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
    """Why the pod cannot be injected safely, when its structure is not a pod's.

    A field of the wrong JSON type never reaches a webhook from a real API server (it
    decodes the pod into its own types first), so such a pod comes from a broken client,
    a test or a hand-written manifest offline. The answer is total either way: a field
    the patch extends or the planning walks (the container lists, their mounts, env and
    ports, the volumes, the image pull secrets) makes the pod skipped as ``invalid-pod`` —
    admitted unchanged with a warning, as the API server will refuse it on its own, and
    a patch built on a value we cannot read could replace it; a field only read for facts
    (``hostNetwork``, ``resources``, ``os``, labels, owner references...) counts as unset
    when it has the wrong type (the readers of ``pod_shape.py`` leave out what does not
    parse); any other field is not read and passes through untouched.
    """
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
    for field_name in ("volumes", "imagePullSecrets"):
        items = spec.get(field_name)
        if items is not None and (not isinstance(items, list) or not all(isinstance(v, dict) for v in items)):
            return f"spec.{field_name} is not a list of objects"
    return None


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
        labels=string_map(metadata.get("labels")),
        annotations=string_map(metadata.get("annotations")),
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
            warnings.append(warn(f'{keys.NATIVE_SIDECARS} must be "true" or "false"; ignored'))
    if policy.native_sidecars == "never":
        if choice:
            warnings.append(warn("native sidecars are disabled on this cluster; injected regular sidecars"))
        return lambda profile: False
    if choice is not None:
        return lambda profile: choice
    if policy.native_sidecars == "always":
        return lambda profile: True
    finishing = _is_run_to_completion(pod, pod["spec"], context)
    return lambda profile: finishing or profile.native_sidecar
