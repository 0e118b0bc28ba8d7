"""Namespace opt-in, cluster-wide mode and profile policy: every decision of the core.

The matrix is namespace (enabled / disabled / unlabelled / facts unknown / API unreachable)
× pod annotation (absent / names / ``true`` / ``false``) × cluster-wide mode, and each
profile policy (by name, by label selector, unknown labels) × strict mode.
"""

from __future__ import annotations

import json
from typing import Any

import jsonpatch
import pytest

from podcheck import assert_valid_pod
from sidecar_injector.base import keys
from sidecar_injector.core.decide import decide
from sidecar_injector.core.inputs import InjectionPolicy, NamespaceFacts, RequestContext
from sidecar_injector.profiles.loading import ProfileError, ProfileSet, parse_profiles
from skip_record import assert_skip_recorded

PROFILES_YAML = """
name: logging
version: "1"
containers: [{name: log-shipper, image: "busybox:1.37.0", args: [sleep, infinity]}]
---
name: metrics
version: "1"
containers: [{name: statsd, image: "busybox:1.37.0", args: [sleep, infinity]}]
---
name: debug
version: "1"
containers: [{name: debugger, image: "busybox:1.37.0", args: [sleep, infinity]}]
allowedNamespaces:
  names: [sandbox]
---
name: privileged
version: "1"
containers: [{name: node-agent, image: "busybox:1.37.0", args: [sleep, infinity]}]
allowedNamespaces:
  selector:
    matchLabels: {team: platform}
    matchExpressions:
      - {key: tier, operator: NotIn, values: [untrusted]}
"""

PROFILES = ProfileSet.of(parse_profiles(PROFILES_YAML, "test.yaml"))
DEFAULTS = InjectionPolicy(default_profiles=("logging",))
CLUSTER_WIDE = InjectionPolicy(default_profiles=("logging",), cluster_wide=True)


def pod(inject: str | None = None, namespace: str = "apps") -> dict[str, Any]:
    annotations = {} if inject is None else {keys.INJECT: inject}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": namespace, "annotations": annotations},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
    }


def facts(name: str = "apps", *, label: str | None = None, profiles: str | None = None, **labels: str) -> NamespaceFacts:
    all_labels = dict(labels)
    if label is not None:
        all_labels[keys.NAMESPACE_INJECT] = label
    annotations = {} if profiles is None else {keys.NAMESPACE_PROFILES: profiles}
    return NamespaceFacts(name, all_labels, annotations)


def run(the_pod, namespace_facts=None, policy=DEFAULTS, *, unavailable=False, namespace=None):
    ns = namespace or the_pod["metadata"]["namespace"]
    context = RequestContext(namespace=ns, namespace_facts=namespace_facts, namespace_unavailable=unavailable)
    decision = decide(the_pod, context, PROFILES, policy)
    if decision.outcome == "injected":
        patched = jsonpatch.apply_patch(the_pod, list(decision.patch))
        assert_valid_pod(patched)
        status = json.loads(patched["metadata"]["annotations"][keys.STATUS])
        assert set(decision.injected) <= set(status["profiles"])
    return decision


# -- the matrix: namespace × pod annotation × mode ----------------------------------------

ENABLED = facts(label="enabled")
ENABLED_WITH_PROFILES = facts(label="enabled", profiles="metrics")
DISABLED = facts(label="disabled")
UNLABELLED = facts()

MATRIX = [
    # namespace facts,        pod annotation,     policy,       outcome,    injected / reason
    (ENABLED, None, DEFAULTS, "injected", ("logging",)),
    (ENABLED, "metrics", DEFAULTS, "injected", ("logging", "metrics")),
    (ENABLED, "logging", DEFAULTS, "injected", ("logging",)),
    (ENABLED, "true", DEFAULTS, "injected", ("logging",)),
    (ENABLED, "false", DEFAULTS, "skipped", "opted-out"),
    (ENABLED, "FALSE ", DEFAULTS, "skipped", "opted-out"),
    (ENABLED_WITH_PROFILES, None, DEFAULTS, "injected", ("metrics",)),
    (ENABLED_WITH_PROFILES, "logging", DEFAULTS, "injected", ("metrics", "logging")),
    (ENABLED_WITH_PROFILES, "true", DEFAULTS, "injected", ("metrics",)),
    (ENABLED_WITH_PROFILES, "false", DEFAULTS, "skipped", "opted-out"),
    (DISABLED, None, DEFAULTS, "skipped", "namespace-disabled"),
    (DISABLED, "logging", DEFAULTS, "skipped", "namespace-disabled"),
    (DISABLED, None, CLUSTER_WIDE, "skipped", "namespace-disabled"),
    (DISABLED, "metrics", CLUSTER_WIDE, "skipped", "namespace-disabled"),
    (UNLABELLED, None, DEFAULTS, "skipped", "not-requested"),
    (UNLABELLED, "metrics", DEFAULTS, "injected", ("metrics",)),
    (UNLABELLED, "true", DEFAULTS, "injected", ("logging",)),
    (UNLABELLED, "false", DEFAULTS, "skipped", "opted-out"),
    (UNLABELLED, None, CLUSTER_WIDE, "injected", ("logging",)),
    (UNLABELLED, "metrics", CLUSTER_WIDE, "injected", ("logging", "metrics")),
    (UNLABELLED, "false", CLUSTER_WIDE, "skipped", "opted-out"),
    (facts(profiles="metrics"), None, CLUSTER_WIDE, "injected", ("metrics",)),
    (None, None, DEFAULTS, "skipped", "not-requested"),
    (None, "metrics", DEFAULTS, "injected", ("metrics",)),
    (None, None, CLUSTER_WIDE, "injected", ("logging",)),
    (None, "false", CLUSTER_WIDE, "skipped", "opted-out"),
]


@pytest.mark.parametrize("namespace_facts, inject, policy, outcome, expected", MATRIX)
def test_namespace_label_and_pod_annotation_decide_what_is_injected(namespace_facts, inject, policy, outcome, expected):
    decision = run(pod(inject), namespace_facts, policy)
    assert decision.outcome == outcome, decision
    if outcome == "injected":
        assert decision.injected == expected
    else:
        assert decision.reason == expected


def test_enabled_namespace_with_an_empty_profiles_annotation_injects_nothing_and_says_why():
    decision = run(pod(), facts(label="enabled", profiles=" "))
    assert (decision.outcome, decision.reason) == ("skipped", "not-requested")
    assert any(keys.NAMESPACE_PROFILES in w for w in decision.warnings)


def test_enabled_namespace_without_any_default_profiles_warns():
    decision = run(pod(), ENABLED, InjectionPolicy())
    assert (decision.outcome, decision.reason) == ("skipped", "not-requested")
    assert any("cluster default profiles" in w for w in decision.warnings)


def test_unknown_profile_in_the_namespace_annotation_is_named_with_its_source():
    decision = run(pod(), facts(label="enabled", profiles="metrics,nope"))
    assert decision.injected == ("metrics",)
    assert any("nope" in w and keys.NAMESPACE_PROFILES in w for w in decision.warnings)


def test_automatic_injection_is_idempotent_on_reinvocation():
    first = run(pod(), ENABLED)
    patched = jsonpatch.apply_patch(pod(), list(first.patch))
    again = run(patched, ENABLED)
    assert (again.outcome, again.reason) == ("skipped", "already-injected")


def test_profile_added_to_the_namespace_later_is_added_alone_to_a_reinvoked_pod():
    patched = jsonpatch.apply_patch(pod(), list(run(pod(), ENABLED).patch))
    decision = run(patched, facts(label="enabled", profiles="logging,metrics"))
    assert decision.injected == ("metrics",)


def test_system_namespaces_are_never_injected_even_in_cluster_wide_mode():
    decision = run(pod(namespace="kube-system"), facts("kube-system", label="enabled"), CLUSTER_WIDE)
    assert decision.reason == "excluded-namespace"


# -- API unreachable -----------------------------------------------------------------


def test_unreachable_api_still_honours_the_pod_annotation_and_warns():
    decision = run(pod("metrics"), None, unavailable=True)
    assert decision.injected == ("metrics",)
    assert any("could not be read" in w for w in decision.warnings)


def test_unreachable_api_without_pod_annotation_admits_unchanged_with_a_warning():
    decision = run(pod(), None, unavailable=True)
    assert (decision.outcome, decision.reason) == ("skipped", "namespace-unknown")
    assert not decision.patch and any("could not be read" in w for w in decision.warnings)


def test_unreachable_api_in_cluster_wide_mode_uses_the_cluster_defaults():
    decision = run(pod(), None, CLUSTER_WIDE, unavailable=True)
    assert decision.injected == ("logging",)
    assert any("cluster default" in w for w in decision.warnings)


# -- profile policy ------------------------------------------------------------------

POLICY = [
    # profile,    namespace,  facts,                                             allowed?
    ("debug", "sandbox", facts("sandbox"), True),
    ("debug", "sandbox", None, True),  # names need no lookup
    ("debug", "apps", facts("apps"), False),
    ("privileged", "infra", facts("infra", team="platform"), True),
    ("privileged", "infra", facts("infra", team="platform", tier="trusted"), True),
    ("privileged", "infra", facts("infra", team="platform", tier="untrusted"), False),
    ("privileged", "apps", facts("apps", team="payments"), False),
    ("privileged", "apps", facts("apps"), False),
    ("privileged", "infra", None, False),  # unknown labels: refused
]


@pytest.mark.parametrize("profile, namespace, namespace_facts, allowed", POLICY)
@pytest.mark.parametrize("strict", [False, True])
def test_profile_policy_limits_where_a_profile_may_be_used(profile, namespace, namespace_facts, allowed, strict):
    decision = run(pod(profile, namespace), namespace_facts, InjectionPolicy(strict=strict))
    if allowed:
        assert decision.injected == (profile,)
        return
    if strict:
        assert (decision.outcome, decision.reason) == ("denied", "policy-refused")
        assert f"profile {profile} is not allowed in namespace {namespace}" in decision.message
    else:
        assert (decision.outcome, decision.reason) == ("skipped", "policy-refused")
        assert_skip_recorded(pod(profile, namespace), decision.patch, {profile: decision.message})
        [warning] = [w for w in decision.warnings if "not allowed" in w]
        assert profile in warning and namespace in warning


def test_refused_profile_is_dropped_and_the_allowed_ones_are_still_injected():
    decision = run(pod("logging,privileged"), facts("apps"))
    assert decision.injected == ("logging",)
    assert any("privileged is not allowed" in w and "team=platform" in w for w in decision.warnings)


def test_policy_applies_to_profiles_from_the_namespace_annotation_too():
    decision = run(pod(), facts("apps", label="enabled", profiles="logging,debug"))
    assert decision.injected == ("logging",)
    assert any("debug is not allowed" in w for w in decision.warnings)


def test_policy_warning_says_when_the_labels_were_unknown():
    decision = run(pod("privileged", "infra"), None)
    assert any("labels are unknown" in w for w in decision.warnings)


def test_policy_change_does_not_change_the_profile_hash():
    base = parse_profiles(PROFILES_YAML, "a.yaml")[3]
    changed = parse_profiles(PROFILES_YAML.replace("team: platform", "team: infra"), "b.yaml")[3]
    assert base.allowed_namespaces != changed.allowed_namespaces
    assert base.hash == changed.hash


@pytest.mark.parametrize(
    "policy, problem",
    [
        ("{}", "needs names, a selector or both"),
        ("{names: [Not_A_Namespace]}", "DNS-1123"),
        ("{selector: {matchExpressions: [{key: a, operator: In}]}}", "needs values"),
        ("{selector: {matchExpressions: [{key: a, operator: Exists, values: [x]}]}}", "takes no values"),
        ("{selector: {matchExpressions: [{key: a, operator: Near}]}}", "operator"),
        ("{selector: {matchLabel: {a: b}}}", "matchLabel: unknown field"),
        ("{namespaces: [a]}", "namespaces: unknown field"),
    ],
)
def test_a_broken_policy_is_an_error_naming_file_and_field(policy, problem):
    text = f"name: p\nversion: '1'\ncontainers: [{{name: c, image: 'busybox:1.37.0'}}]\nallowedNamespaces: {policy}\n"
    with pytest.raises(ProfileError) as err:
        parse_profiles(text, "policy.yaml")
    assert "policy.yaml" in str(err.value) and "allowedNamespaces" in str(err.value)
    assert problem in str(err.value)
