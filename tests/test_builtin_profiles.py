"""The eight built-in profiles: self-contained, pinned, bounded, restricted-PSS, composable."""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

import jsonpatch
import pytest

from podcheck import assert_pss_restricted, assert_valid_pod, parse_quantity
from required_values import values_for
from sidecar_injector.core.decide import decide
from sidecar_injector.core.inputs import InjectionPolicy, RequestContext
from sidecar_injector.profiles.checks import image_tag_problem
from sidecar_injector.profiles.loading import builtin_profiles

CLASSIC = ["logging", "proxy", "git-sync", "metrics", "tls", "backup", "cert-renewal", "config-reload"]
BUILTINS = builtin_profiles()
CREATE = RequestContext(namespace="shop")


def restricted_app_pod(inject: str, **spec: Any) -> dict[str, Any]:
    """A Deployment's pod that itself passes the restricted Pod Security Standard."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "shop-5f7b9c8d4-",
            "namespace": "shop",
            "labels": {"app": "shop", "pod-template-hash": "5f7b9c8d4"},
            "annotations": {"sidecar.io/inject": inject, **values_for(inject)},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "shop-5f7b9c8d4",
                    "uid": "6a1f",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "shop",
                    "image": "ghcr.io/example/shop:2.3.1",
                    "ports": [{"containerPort": 8080, "name": "http"}],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "runAsUser": 10001,
                    },
                    "volumeMounts": [
                        {
                            "name": "kube-api-access-abcde",
                            "readOnly": True,
                            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                        }
                    ],
                }
            ],
            "volumes": [
                {
                    "name": "kube-api-access-abcde",
                    "projected": {
                        "sources": [
                            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        ]
                    },
                }
            ],
            **spec,
        },
    }


DEFAULT_POLICY = InjectionPolicy()


def inject(inject_value: str, policy: InjectionPolicy = DEFAULT_POLICY, **spec: Any) -> dict[str, Any]:
    pod = restricted_app_pod(inject_value, **spec)
    decision = decide(pod, CREATE, BUILTINS, policy)
    assert decision.outcome == "injected", decision
    assert decision.warnings == (), decision.warnings
    return jsonpatch.apply_patch(pod, copy.deepcopy(decision.patch), in_place=False)


def all_containers(profile) -> list[dict[str, Any]]:
    return [*profile.containers, *profile.init_containers]


def test_all_eight_classic_sidecars_are_built_in():
    assert sorted(BUILTINS) == sorted(CLASSIC)


@pytest.mark.parametrize("name", CLASSIC)
def test_each_builtin_is_documented_versioned_and_pinned(name):
    profile = BUILTINS[name]
    assert profile.description.strip(), "a built-in explains itself"
    assert profile.version
    for container in all_containers(profile):
        assert image_tag_problem(container["image"]) is None


@pytest.mark.parametrize("name", CLASSIC)
def test_each_builtin_sets_requests_and_limits_within_them(name):
    for container in all_containers(BUILTINS[name]):
        resources = container.get("resources") or {}
        for resource in ("cpu", "memory"):
            request = resources.get("requests", {}).get(resource)
            limit = resources.get("limits", {}).get(resource)
            assert request is not None and limit is not None, f"{container['name']}: {resource}"
            assert parse_quantity(request) <= parse_quantity(limit)


def _references(node: Any, path: str = ""):
    """Every configMap/secret reference in a structure, with where it is."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("configMap", "secret", "configMapRef", "secretRef", "configMapKeyRef", "secretKeyRef"):
                yield f"{path}.{key}", value
            yield from _references(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _references(value, f"{path}[{i}]")


@pytest.mark.parametrize("name", CLASSIC)
def test_each_builtin_is_self_contained(name):
    """No reference to a ConfigMap or Secret that might not exist, unless it is optional."""
    profile = BUILTINS[name]
    dump = profile.model_dump(by_alias=True)
    for where, ref in _references(dump):
        assert isinstance(ref, dict) and ref.get("optional") is True, f"{name}{where} is a required reference"
    for volume in profile.volumes:
        assert set(volume) - {"name"} <= {"emptyDir", "projected", "downwardAPI", "secret", "configMap"}


@pytest.mark.parametrize("name", CLASSIC)
def test_each_builtin_alone_makes_a_valid_restricted_pod(name):
    result = inject(name)
    assert_valid_pod(result)
    assert_pss_restricted(result)
    profile = BUILTINS[name]
    added = {c["name"] for c in all_containers(profile)}
    present = {c["name"] for c in result["spec"]["containers"] + result["spec"].get("initContainers", [])}
    assert added <= present


@pytest.mark.parametrize("name", CLASSIC)
def test_each_builtin_as_native_sidecars_in_a_job_pod(name):
    job = {"apiVersion": "batch/v1", "kind": "Job", "name": "nightly", "uid": "7c1e", "controller": True}
    pod = restricted_app_pod(name, restartPolicy="Never")
    pod["metadata"]["ownerReferences"] = [job]
    decision = decide(pod, CREATE, BUILTINS, DEFAULT_POLICY)
    result = jsonpatch.apply_patch(pod, copy.deepcopy(decision.patch), in_place=False)
    assert_valid_pod(result)
    assert_pss_restricted(result)
    assert [c["name"] for c in result["spec"]["containers"]] == ["shop"], "sidecars must not block Job completion"


def test_all_eight_together_make_a_valid_restricted_pod():
    result = inject(",".join(CLASSIC))
    assert_valid_pod(result)
    assert_pss_restricted(result)
    assert set(json.loads(result["metadata"]["annotations"]["sidecar.io/status"])["profiles"]) == set(CLASSIC)
    app = result["spec"]["containers"][0]
    paths = [m["mountPath"] for m in app["volumeMounts"]]
    assert len(paths) == len(set(paths))
    envs = [e["name"] for e in app.get("env", [])]
    assert len(envs) == len(set(envs))


def test_every_combination_of_builtins_injects_cleanly():
    """255 combinations: no conflict warning, and a pod the API server accepts."""
    for size in range(1, len(CLASSIC) + 1):
        for combo in itertools.combinations(CLASSIC, size):
            result = inject(",".join(combo))  # asserts no warnings (= no conflicts)
            assert_valid_pod(result, versions=("1.37.0",))


def test_builtin_ports_avoid_the_common_application_ports():
    common = {80, 443, 3000, 5000, 8000, 8080, 9090}
    for profile in BUILTINS.values():
        for container in all_containers(profile):
            for port in container.get("ports") or []:
                assert port["containerPort"] not in common, f"{profile.name}: {port}"


def test_the_docs_list_every_builtin_parameter_as_the_profiles_declare_them():
    """docs/builtin-profiles.md's parameter table is generated from the profiles (`make docs`)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "gen_profile_docs.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", CLASSIC)
def test_each_builtin_parameter_default_renders_a_valid_restricted_pod(name):
    """Every value the docs promise works: each enum value, and each bound of each parameter."""
    from podcheck import assert_pss_restricted, assert_valid_pod

    profile = BUILTINS[name]
    for key, parameter in profile.parameters.items():
        candidates = list(parameter.enum) or [v for v in (parameter.minimum, parameter.maximum) if v is not None]
        for value in candidates:
            pod = restricted_app_pod(name)
            pod["metadata"]["annotations"][f"{name}.sidecar.io/{key}"] = value
            decision = decide(pod, CREATE, BUILTINS, DEFAULT_POLICY)
            assert decision.outcome == "injected", (key, value, decision.warnings)
            result = jsonpatch.apply_patch(pod, copy.deepcopy(decision.patch), in_place=False)
            assert_valid_pod(result)
            assert_pss_restricted(result)
