"""The chart in policy mode (injection.mode=policy, issue 21): admission policies and nothing else.

What the chart renders for each configured built-in profile must be exactly what the compiler
(core/policy.py) writes for the same settings: the chart only sets names, labels and the
values-dependent parts of the pre-compiled files (files/policies, `make policies`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from sidecar_injector.core.inputs import SYSTEM_NAMESPACES, InjectionPolicy
from sidecar_injector.core.policy import compile_profile
from sidecar_injector.core.policy_unknown import compile_unknown_profiles
from sidecar_injector.profiles.loading import builtin_profiles
from test_chart import NAMESPACE, RELEASE, _fetch_helm, render, render_error

ROOT = Path(__file__).resolve().parents[1]
NEW = ("--kube-version", "1.37.0")
POLICY_KINDS = {
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
BUILTINS = builtin_profiles()
CHART_DEFAULT_PROFILES = ("logging",)


@pytest.fixture(scope="module")
def chart_helm() -> Path:
    """Helm 4, without the webhook-mode renderings test_chart's fixture starts."""
    return _fetch_helm("4")


def policy(helm: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    return render(helm, {"injection": {"mode": "policy"}, **values}, args=NEW)


def expected(names: list[str], settings: InjectionPolicy) -> list[dict[str, Any]]:
    objects = []
    for name in names:
        objects += compile_profile(BUILTINS[name], settings, name_prefix=f"{RELEASE}-")
    return objects + compile_unknown_profiles(names, settings, name_prefix=f"{RELEASE}-")


def _specs(objects: list[dict[str, Any]]) -> dict[tuple[str, str], Any]:
    return {(o["kind"], o["metadata"]["name"]): o["spec"] for o in objects}


def test_policy_mode_renders_only_policies_and_bindings_equal_to_the_compilers(chart_helm: Path) -> None:
    docs = policy(chart_helm, {})
    assert {d["kind"] for d in docs} == POLICY_KINDS
    never = SYSTEM_NAMESPACES | {NAMESPACE}
    want = expected(
        sorted(BUILTINS), InjectionPolicy(default_profiles=CHART_DEFAULT_PROFILES, never_inject_namespaces=never)
    )
    assert _specs(docs) == _specs(want)
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm" and labels["app.kubernetes.io/component"] == "webhook"
        assert labels.get("sidecar.io/profile", "") in BUILTINS or doc["metadata"]["name"] == f"{RELEASE}.unknown-profiles"
        assert "namespace" not in doc["metadata"]  # cluster-scoped


@pytest.mark.parametrize(
    ("values", "settings"),
    [
        (
            {
                "injection": {
                    "mode": "policy",
                    "strict": True,
                    "nativeSidecars": "never",
                    "defaultProfiles": ["metrics", "tls"],
                    "clusterWide": True,
                },
                "webhook": {"excludedNamespaces": ["legacy", "batch"]},
            },
            InjectionPolicy(
                strict=True,
                native_sidecars="never",
                default_profiles=("metrics", "tls"),
                cluster_wide=True,
                never_inject_namespaces=SYSTEM_NAMESPACES | {NAMESPACE, "legacy", "batch"},
            ),
        ),
        (
            {"injection": {"mode": "policy", "nativeSidecars": "always", "defaultProfiles": []}},
            InjectionPolicy(native_sidecars="always", never_inject_namespaces=SYSTEM_NAMESPACES | {NAMESPACE}),
        ),
    ],
)
def test_the_values_reach_the_policies_as_the_compiler_writes_them(
    chart_helm: Path, values: dict[str, Any], settings: InjectionPolicy
) -> None:
    docs = render(chart_helm, values, args=NEW)
    assert _specs(docs) == _specs(expected(sorted(BUILTINS), settings))
    bindings = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert {tuple(b["spec"]["validationActions"]) for b in bindings} == ({("Deny",)} if settings.strict else {("Warn",)})


def test_excluded_and_disabled_builtins_get_no_policy(chart_helm: Path) -> None:
    docs = policy(chart_helm, {"profiles": {"builtin": {"exclude": ["backup", "git-sync"]}}})
    profiles = {d["metadata"]["labels"].get("sidecar.io/profile") for d in docs} - {None}
    assert profiles == set(BUILTINS) - {"backup", "git-sync"}
    unknown = next(
        d for d in docs if d["kind"] == "ValidatingAdmissionPolicy" and "sidecar.io/profile" not in d["metadata"]["labels"]
    )
    known = next(v["expression"] for v in unknown["spec"]["variables"] if v["name"] == "knownProfiles")
    assert known == json.dumps(sorted(set(BUILTINS) - {"backup", "git-sync"}), separators=(",", ":"))
    assert policy(chart_helm, {"profiles": {"builtin": {"enabled": False}}}) == []


def test_policy_mode_renders_no_webhook_deployment_certificates_or_rbac_whatever_else_is_on(chart_helm: Path) -> None:
    docs = policy(
        chart_helm,
        {
            "tls": {"mode": "certManager"},
            "staleRestart": {"enabled": True},
            "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
            "networkPolicy": {"enabled": True},
            "replicaCount": 3,
        },
    )
    assert {d["kind"] for d in docs} == POLICY_KINDS


def test_every_policy_object_is_valid_for_kubernetes_1_37(chart_helm: Path) -> None:
    for doc in policy(chart_helm, {}):
        kubernetes_validate.validate(doc, "1.37.0", strict=True)


def test_policy_mode_needs_kubernetes_1_36(chart_helm: Path) -> None:
    error = render_error(chart_helm, {"injection": {"mode": "policy"}}, "--kube-version", "1.35.3")
    assert "injection.mode=policy needs Kubernetes >= 1.36" in error
    assert {
        d["kind"] for d in render(chart_helm, {"injection": {"mode": "policy"}}, args=("--kube-version", "1.36.0"))
    } == POLICY_KINDS


def test_custom_profiles_are_refused_in_policy_mode_with_the_way_out(chart_helm: Path) -> None:
    custom = {"audit": {"version": "1", "containers": [{"name": "a", "image": "i:1"}]}}
    error = render_error(chart_helm, {"injection": {"mode": "policy"}, "profiles": {"custom": custom}}, *NEW)
    assert "profiles.custom (audit)" in error and "profiles export --as-policy" in error


def test_an_unknown_mode_is_refused_by_the_schema(chart_helm: Path) -> None:
    error = render_error(chart_helm, {"injection": {"mode": "sidecarless"}}, *NEW)
    assert "mode" in error


def test_webhook_mode_is_unchanged_by_the_policy_files(chart_helm: Path) -> None:
    kinds = {d["kind"] for d in render(chart_helm, {}, args=NEW)}
    assert not kinds & POLICY_KINDS
    assert {"Deployment", "MutatingWebhookConfiguration", "Service"} <= kinds


def test_the_precompiled_policy_files_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_policies.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
