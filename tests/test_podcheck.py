"""The pod checker used by the other tests must itself catch every rule it claims to."""

from __future__ import annotations

import copy
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import kubernetes_validate
import pytest

from podcheck import (
    SCHEMA_VERSIONS,
    _pod_schema_validator,
    api_rule_problems,
    assert_pss_restricted,
    assert_valid_pod,
    parse_quantity,
    pod_problems,
    pss_restricted_problems,
    schema_problems,
)

RESTRICTED_CONTAINER_SC = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def baseline_pod() -> dict:
    """A pod the API server accepts and PSS "restricted" allows."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-7d9f",
            "namespace": "default",
            "labels": {"app": "web", "app.kubernetes.io/part-of": "shop"},
            "annotations": {"example.com/owner": "team-a", "note": "hello"},
        },
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
                "sysctls": [{"name": "net.ipv4.tcp_keepalive_time", "value": "60"}],
            },
            "containers": [
                {
                    "name": "app",
                    "image": "registry.example.com/web:1.2.3",
                    "env": [
                        {"name": "MODE", "value": "a"},
                        {"name": "MODE", "value": "b"},  # duplicates are fine, last wins
                        {"name": "my.dotted-name", "value": "c"},
                    ],
                    "ports": [
                        {"name": "http", "containerPort": 8080},
                        {"name": "dns", "containerPort": 8053, "protocol": "UDP"},
                        {"name": "dns-tcp", "containerPort": 8053, "protocol": "TCP"},
                    ],
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "64Mi"},
                        "limits": {"cpu": "0.5", "memory": "128Mi"},
                    },
                    "volumeMounts": [
                        {"name": "data", "mountPath": "/data"},
                        {"name": "config", "mountPath": "/etc/app", "subPath": "app", "readOnly": True},
                    ],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5},
                    "livenessProbe": {"tcpSocket": {"port": 8080}, "successThreshold": 1},
                    "securityContext": copy.deepcopy(RESTRICTED_CONTAINER_SC),
                }
            ],
            "volumes": [
                {"name": "data", "emptyDir": {}},
                {"name": "config", "configMap": {"name": "web-config"}},
            ],
        },
    }


def sidecar_pod() -> dict:
    """The baseline pod plus a regular init container and two native sidecars."""
    pod = baseline_pod()
    pod["metadata"].pop("name")
    pod["metadata"]["generateName"] = "web-7d9f-"
    pod["spec"]["initContainers"] = [
        {
            "name": "migrate",
            "image": "registry.example.com/migrate:1",
            "command": ["migrate", "up"],
            "securityContext": copy.deepcopy(RESTRICTED_CONTAINER_SC),
        },
        {
            "name": "proxy",
            "image": "registry.example.com/proxy:2",
            "restartPolicy": "Always",
            "ports": [{"name": "proxy", "containerPort": 15001}],
            "startupProbe": {"tcpSocket": {"port": 15001}, "failureThreshold": 30},
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 15001}},
            "livenessProbe": {"grpc": {"port": 15002}},
            "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
            "volumeMounts": [{"name": "proxy-certs", "mountPath": "/certs", "readOnly": True}],
            "securityContext": {**copy.deepcopy(RESTRICTED_CONTAINER_SC), "runAsUser": 1337},
        },
        {
            "name": "log-shipper",
            "image": "registry.example.com/shipper:3",
            "restartPolicy": "Always",
            "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True}],
            "securityContext": copy.deepcopy(RESTRICTED_CONTAINER_SC),
        },
    ]
    pod["spec"]["volumes"].append({"name": "proxy-certs", "projected": {"sources": [{"secret": {"name": "proxy-certs"}}]}})
    return pod


# --------------------------------------------------------------------------- mutation helpers


def _walk(pod: dict, path: str) -> tuple[Any, Any]:
    """Parent container and final key for a dotted path with integer list indexes."""
    parts: list[Any] = [int(p) if p.isdigit() else p for p in path.split(".")]
    node: Any = pod
    for part in parts[:-1]:
        node = node[part]
    return node, parts[-1]


def setting(path: str, value: Any) -> Callable[[dict], None]:
    def mutate(pod: dict) -> None:
        parent, key = _walk(pod, path)
        parent[key] = copy.deepcopy(value)

    return mutate


def deleting(path: str) -> Callable[[dict], None]:
    def mutate(pod: dict) -> None:
        parent, key = _walk(pod, path)
        del parent[key]

    return mutate


def appending(path: str, value: Any) -> Callable[[dict], None]:
    def mutate(pod: dict) -> None:
        parent, key = _walk(pod, path)
        parent.setdefault(key, []).append(copy.deepcopy(value))

    return mutate


def all_of(*mutations: Callable[[dict], None]) -> Callable[[dict], None]:
    def mutate(pod: dict) -> None:
        for m in mutations:
            m(pod)

    return mutate


def container(name: str, **fields: Any) -> dict:
    return {"name": name, "image": f"registry.example.com/{name}:1", **fields}


def native_sidecar(name: str, **fields: Any) -> dict:
    return container(name, restartPolicy="Always", **fields)


C0 = "spec.containers.0"


def _has(problems: list[str], *needles: str) -> bool:
    return any(all(n in p for n in needles) for p in problems)


# --------------------------------------------------------------------------- valid pods


def test_baseline_pod_passes_schema_api_rules_and_restricted_pss():
    pod = baseline_pod()
    assert pod_problems(pod) == []
    assert_valid_pod(pod)
    assert pss_restricted_problems(pod) == []
    assert_pss_restricted(pod)


def test_pod_with_native_sidecars_passes_both_checks():
    pod = sidecar_pod()
    assert_valid_pod(pod)
    assert_pss_restricted(pod)


def test_real_kubernetes_validate_agrees_the_valid_pods_are_valid():
    for pod in (baseline_pod(), sidecar_pod()):
        for version in SCHEMA_VERSIONS:
            kubernetes_validate.validate(pod, version, strict=True)


def test_pod_template_without_apiversion_and_kind_is_checked_as_a_pod_and_left_untouched():
    template = baseline_pod()
    del template["apiVersion"], template["kind"]
    before = copy.deepcopy(template)
    assert_valid_pod(template)
    assert template == before

    template["spec"]["containers"][0]["imagePulPolicy"] = "Always"
    assert _has(pod_problems(template), "spec.containers[0]", "unknown field 'imagePulPolicy'")


def test_checkers_do_not_mutate_the_pod():
    pod = sidecar_pod()
    pod["spec"]["containers"][0]["bogus"] = True
    before = copy.deepcopy(pod)
    pod_problems(pod)
    pss_restricted_problems(pod)
    assert pod == before


# --------------------------------------------------------------------------- schema layer


def test_unknown_field_is_rejected_in_strict_mode_with_its_path():
    pod = baseline_pod()
    pod["spec"]["containers"][0]["securityContext"]["runAsNonroot"] = True
    problems = schema_problems(pod)
    assert problems == ["[schema 1.29, 1.37] spec.containers[0].securityContext: unknown field 'runAsNonroot'"]


def test_wrong_field_type_is_rejected_with_its_path():
    pod = baseline_pod()
    pod["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    assert _has(schema_problems(pod), "spec.containers[0].ports[0].containerPort", "not of type 'integer'")


def test_missing_required_field_is_rejected():
    pod = baseline_pod()
    del pod["spec"]["containers"][0]["volumeMounts"][0]["mountPath"]
    assert _has(schema_problems(pod), "spec.containers[0].volumeMounts[0]", "'mountPath' is a required property")


def test_all_schema_errors_are_listed_not_just_the_first():
    pod = baseline_pod()
    pod["spec"]["containers"][0]["foo"] = 1
    pod["spec"]["volumes"][0]["bar"] = 2
    pod["metadata"]["baz"] = 3
    problems = schema_problems(pod)
    assert len(problems) == 3
    assert _has(problems, "spec.containers[0]", "'foo'")
    assert _has(problems, "spec.volumes[0]", "'bar'")
    assert _has(problems, "metadata", "'baz'")


def test_field_newer_than_the_oldest_schema_is_flagged_for_that_version_only():
    pod = baseline_pod()
    pod["spec"]["containers"][0]["securityContext"]["appArmorProfile"] = {"type": "RuntimeDefault"}  # 1.30+
    problems = pod_problems(pod)
    assert problems == ["[schema 1.29] spec.containers[0].securityContext: unknown field 'appArmorProfile'"]
    assert_valid_pod(pod, versions=("1.37.0",))
    assert_pss_restricted(pod)


def test_schema_errors_match_what_kubernetes_validate_reports():
    pod = baseline_pod()
    pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] = {"amount": 1}
    for version in SCHEMA_VERSIONS:
        with pytest.raises(kubernetes_validate.ValidationError) as excinfo:
            kubernetes_validate.validate(pod, version, strict=True)
        path = ".".join(str(p) for p in excinfo.value.path)
        assert path == "spec.containers.0.resources.requests.cpu"
        assert _has(
            schema_problems(pod, (version,)), "spec.containers[0].resources.requests.cpu", excinfo.value.message[:40]
        )


def test_pod_with_wrong_kind_fails_the_pod_schema():
    pod = baseline_pod()
    pod["kind"] = "Deployment"
    assert _has(schema_problems(pod), "kind", "'Pod'")


def test_unsupported_schema_version_is_an_error():
    with pytest.raises(kubernetes_validate.utils.VersionNotSupportedError):
        pod_problems(baseline_pod(), versions=("9.99.0",))


def test_schema_validator_is_built_once_per_version():
    pod_problems(baseline_pod())
    misses = _pod_schema_validator.cache_info().misses
    for _ in range(50):
        pod_problems(sidecar_pod())
    assert _pod_schema_validator.cache_info().misses == misses


def test_assert_valid_pod_lists_every_problem():
    pod = baseline_pod()
    pod["spec"]["containers"][0]["image"] = ""
    pod["spec"]["containers"][0]["foo"] = 1
    pod["spec"]["volumes"][0]["name"] = "Data"
    with pytest.raises(AssertionError) as excinfo:
        assert_valid_pod(pod)
    message = str(excinfo.value)
    assert "image is required" in message
    assert "unknown field 'foo'" in message
    assert "'Data' is not a valid DNS-1123 label" in message
    assert "refers to volume 'data'" in message


# --------------------------------------------------------------------------- API-server rules

API_RULE_CASES = [
    # metadata
    pytest.param(deleting("metadata.name"), "name or generateName is required", id="pod-without-name-or-generateName"),
    pytest.param(
        setting("metadata.name", "Web_1"),
        "metadata.name: 'Web_1' is not a valid DNS-1123 subdomain",
        id="pod-name-not-dns-subdomain",
    ),
    pytest.param(
        all_of(deleting("metadata.name"), setting("metadata.generateName", "Web-")),
        "metadata.generateName",
        id="generateName-not-dns-prefix",
    ),
    # container names
    pytest.param(
        setting(f"{C0}.name", "App"), "container name 'App' is not a valid DNS-1123 label", id="container-name-not-dns-label"
    ),
    pytest.param(setting(f"{C0}.name", "a" * 64), "must be no more than 63 characters", id="container-name-too-long"),
    pytest.param(
        appending("spec.containers", container("app")), "duplicate container name 'app'", id="duplicate-container-name"
    ),
    pytest.param(
        appending("spec.initContainers", container("app")),
        "duplicate container name 'app'",
        id="init-container-name-clashes-with-container",
    ),
    pytest.param(
        appending("spec.ephemeralContainers", container("app")),
        "duplicate container name 'app'",
        id="ephemeral-container-name-clashes-with-container",
    ),
    pytest.param(
        appending("spec.initContainers", container("init_1")),
        "'init_1' is not a valid DNS-1123 label",
        id="init-container-name-not-dns-label",
    ),
    # containers and images
    pytest.param(setting("spec.containers", []), "at least one container is required", id="no-containers"),
    pytest.param(setting(f"{C0}.image", ""), "spec.containers[0].image: image is required", id="empty-image"),
    pytest.param(deleting(f"{C0}.image"), "spec.containers[0].image: image is required", id="missing-image"),
    pytest.param(
        appending("spec.initContainers", {"name": "init"}),
        "spec.initContainers[0].image: image is required",
        id="init-container-without-image",
    ),
    pytest.param(setting(f"{C0}.image", " nginx"), "leading or trailing whitespace", id="image-with-whitespace"),
    # volumes
    pytest.param(setting("spec.volumes.1.name", "data"), "duplicate volume name 'data'", id="duplicate-volume-name"),
    pytest.param(
        setting("spec.volumes.1.name", "Config"),
        "volume name 'Config' is not a valid DNS-1123 label",
        id="volume-name-not-dns-label",
    ),
    pytest.param(
        setting("spec.volumes.0.secret", {"secretName": "s"}),
        "may not specify more than 1 volume type",
        id="volume-with-two-sources",
    ),
    pytest.param(
        setting(f"{C0}.volumeMounts.0.name", "missing"),
        "volumeMount refers to volume 'missing', which is not in spec.volumes",
        id="mount-of-unknown-volume",
    ),
    pytest.param(deleting("spec.volumes"), "refers to volume 'data'", id="mounts-without-any-volumes"),
    pytest.param(
        setting(f"{C0}.volumeMounts.1.mountPath", "/data"),
        "duplicate mountPath '/data'",
        id="duplicate-mount-path-in-container",
    ),
    pytest.param(
        setting(f"{C0}.volumeMounts.1.subPath", "/etc/app"),
        "subPath: '/etc/app' must be a relative path",
        id="absolute-subpath",
    ),
    pytest.param(
        setting(f"{C0}.volumeMounts.1.subPath", "../secrets"), "must not contain '..'", id="subpath-escaping-volume"
    ),
    pytest.param(setting(f"{C0}.volumeMounts.1.mountPath", ""), "mountPath: must not be empty", id="empty-mount-path"),
    # env
    pytest.param(
        appending(f"{C0}.env", {"name": "A=B", "value": "x"}), "invalid env var name 'A=B'", id="env-name-with-equals"
    ),
    pytest.param(
        appending(f"{C0}.env", {"name": "", "value": "x"}), "env var name must be a non-empty string", id="empty-env-name"
    ),
    pytest.param(appending(f"{C0}.env", {"name": "TAB\tNAME"}), "must be printable ASCII", id="env-name-non-printable"),
    # restartPolicy / native sidecars
    pytest.param(
        setting(f"{C0}.restartPolicy", "Always"),
        "spec.containers[0].restartPolicy: only init containers may set restartPolicy",
        id="restart-policy-on-regular-container",
    ),
    pytest.param(
        appending("spec.initContainers", container("init", restartPolicy="OnFailure")),
        'spec.initContainers[0].restartPolicy: only "Always" is allowed',
        id="init-restart-policy-not-always",
    ),
    pytest.param(
        appending("spec.ephemeralContainers", container("debug", restartPolicy="Always")),
        "spec.ephemeralContainers[0].restartPolicy: only init containers may set restartPolicy",
        id="restart-policy-on-ephemeral-container",
    ),
    # ports
    pytest.param(
        setting(f"{C0}.ports.0.containerPort", 0), "containerPort: 0 must be between 1 and 65535", id="container-port-zero"
    ),
    pytest.param(
        setting(f"{C0}.ports.0.containerPort", 65536),
        "containerPort: 65536 must be between 1 and 65535",
        id="container-port-too-large",
    ),
    pytest.param(
        setting(f"{C0}.ports.0.name", "http-metrics-port"), "must be no more than 15 characters", id="port-name-too-long"
    ),
    pytest.param(setting(f"{C0}.ports.0.name", "HTTP"), "'HTTP' is not a valid port name", id="port-name-uppercase"),
    pytest.param(setting(f"{C0}.ports.0.name", "8080"), "must contain at least one letter", id="port-name-all-digits"),
    pytest.param(
        setting(f"{C0}.ports.0.name", "web--ui"), "no leading, trailing or adjacent '-'", id="port-name-double-dash"
    ),
    pytest.param(
        setting(f"{C0}.ports.1.name", "http"),
        "duplicate port name 'http' in the same container",
        id="duplicate-port-name-in-container",
    ),
    pytest.param(
        setting(f"{C0}.ports.0.protocol", "HTTP"), "'HTTP' is not one of TCP, UDP, SCTP", id="unknown-port-protocol"
    ),
    pytest.param(
        appending("spec.containers", container("metrics", ports=[{"containerPort": 8080}])),
        "port 8080/TCP is already declared by container 'app'",
        id="two-containers-same-port",
    ),
    pytest.param(
        appending("spec.containers", container("dns", ports=[{"containerPort": 8053, "protocol": "UDP"}])),
        "port 8053/UDP is already declared by container 'app'",
        id="two-containers-same-udp-port",
    ),
    pytest.param(
        appending("spec.initContainers", native_sidecar("proxy", ports=[{"containerPort": 8080, "protocol": "TCP"}])),
        "port 8080/TCP is already declared by container 'app'",
        id="native-sidecar-port-clashes-with-app",
    ),
    pytest.param(
        appending(f"{C0}.ports", {"containerPort": 8080}),
        "port 8080/TCP is already declared",
        id="same-port-twice-in-one-container",
    ),
    pytest.param(
        appending("spec.ephemeralContainers", container("debug", ports=[{"containerPort": 9999}])),
        "ports: not allowed on ephemeral containers",
        id="ports-on-ephemeral-container",
    ),
    # probes
    pytest.param(
        appending("spec.initContainers", container("init", readinessProbe={"exec": {"command": ["true"]}})),
        "spec.initContainers[0].readinessProbe: not allowed on init containers unless they are native sidecars",
        id="readiness-probe-on-plain-init-container",
    ),
    pytest.param(
        appending("spec.initContainers", container("init", livenessProbe={"exec": {"command": ["true"]}})),
        "spec.initContainers[0].livenessProbe: not allowed",
        id="liveness-probe-on-plain-init-container",
    ),
    pytest.param(
        appending("spec.initContainers", container("init", startupProbe={"exec": {"command": ["true"]}})),
        "spec.initContainers[0].startupProbe: not allowed",
        id="startup-probe-on-plain-init-container",
    ),
    pytest.param(
        appending("spec.initContainers", container("init", lifecycle={"preStop": {"exec": {"command": ["true"]}}})),
        "spec.initContainers[0].lifecycle: not allowed",
        id="lifecycle-on-plain-init-container",
    ),
    pytest.param(
        appending("spec.ephemeralContainers", container("debug", livenessProbe={"grpc": {"port": 1}})),
        "livenessProbe: not allowed on ephemeral containers",
        id="probe-on-ephemeral-container",
    ),
    pytest.param(
        appending("spec.ephemeralContainers", container("debug", resources={"limits": {"cpu": "1"}})),
        "spec.ephemeralContainers[0].resources: not allowed on ephemeral containers",
        id="resources-on-ephemeral-container",
    ),
    pytest.param(
        setting(f"{C0}.readinessProbe", {"periodSeconds": 5}), "must specify exactly one handler", id="probe-without-handler"
    ),
    pytest.param(
        setting(f"{C0}.livenessProbe.exec", {"command": ["true"]}), "got exec, tcpSocket", id="probe-with-two-handlers"
    ),
    pytest.param(
        setting(f"{C0}.livenessProbe.successThreshold", 2),
        "successThreshold: must be 1 for livenessProbe",
        id="liveness-success-threshold-not-one",
    ),
    pytest.param(
        setting(f"{C0}.readinessProbe.periodSeconds", -1),
        "periodSeconds: must be greater than or equal to 0",
        id="negative-probe-period",
    ),
    # resources
    pytest.param(
        setting(f"{C0}.resources.requests.cpu", "1"),
        "requests.cpu: request '1' must be less than or equal to cpu limit '0.5'",
        id="cpu-request-above-limit",
    ),
    pytest.param(
        setting(f"{C0}.resources.requests.memory", "1Gi"),
        "requests.memory: request '1Gi' must be less than or equal to memory limit '128Mi'",
        id="memory-request-above-limit",
    ),
    pytest.param(
        all_of(setting(f"{C0}.resources.requests.memory", "135M"), setting(f"{C0}.resources.limits.memory", "128Mi")),
        "request '135M' must be less than or equal to memory limit '128Mi'",
        id="decimal-request-above-binary-limit",
    ),
    pytest.param(setting(f"{C0}.resources.requests.cpu", "100 m"), "'100 m' is not a quantity", id="invalid-quantity"),
    pytest.param(
        setting(f"{C0}.resources.requests.cpu", "-1"), "must be greater than or equal to 0", id="negative-quantity"
    ),
    pytest.param(
        appending(
            "spec.initContainers",
            native_sidecar("proxy", resources={"requests": {"memory": "256Mi"}, "limits": {"memory": "128Mi"}}),
        ),
        "spec.initContainers[0].resources.requests.memory",
        id="sidecar-request-above-limit",
    ),
    # annotations
    pytest.param(
        setting("metadata.annotations.replicas", 3), "value must be a string, got int", id="annotation-value-not-string"
    ),
    pytest.param(
        setting("metadata.annotations.enabled", True), "value must be a string, got bool", id="annotation-value-bool"
    ),
    pytest.param(
        setting("metadata.annotations.broken", None), "value must be a string, got NoneType", id="annotation-value-null"
    ),
    pytest.param(
        setting("metadata.annotations", {"Example.com/x": "1"}),
        "prefix 'Example.com' must be a DNS-1123",
        id="annotation-key-prefix-not-dns",
    ),
    pytest.param(
        setting("metadata.annotations", {"example.com/-x": "1"}),
        "starting and ending with an alphanumeric",
        id="annotation-key-name-bad-start",
    ),
    pytest.param(setting("metadata.annotations", {"a/b/c": "1"}), "at most one '/'", id="annotation-key-two-slashes"),
    pytest.param(
        setting("metadata.annotations", {"example.com/" + "n" * 64: "1"}),
        "name part must be no more than 63 characters",
        id="annotation-key-name-too-long",
    ),
    pytest.param(
        setting("metadata.annotations", {"big": "x" * (256 * 1024)}),
        "may not have more than 262144 bytes in total",
        id="annotations-too-large",
    ),
    # labels
    pytest.param(
        setting("metadata.labels.app", "web app"), "'web app' is not a valid label value", id="label-value-invalid"
    ),
]


@pytest.mark.parametrize("mutate, expected", API_RULE_CASES)
def test_api_server_rule_violation_is_reported(mutate: Callable[[dict], None], expected: str):
    pod = baseline_pod()
    mutate(pod)
    problems = pod_problems(pod)
    assert _has(problems, expected), "\n".join(problems) or "no problems reported"
    with pytest.raises(AssertionError, match="pod is not valid"):
        assert_valid_pod(pod)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(appending(f"{C0}.env", {"name": "MODE", "value": "c"}), id="duplicate-env-names"),
        pytest.param(appending(f"{C0}.env", {"name": "1-strange.but.ok", "value": "c"}), id="relaxed-env-name"),
        pytest.param(setting("spec.volumes.0", {"name": "data"}), id="volume-without-source-defaults-to-emptyDir"),
        pytest.param(
            setting(f"{C0}.resources", {"requests": {"cpu": "250m"}, "limits": {"cpu": "250m"}}), id="request-equal-to-limit"
        ),
        pytest.param(setting(f"{C0}.resources", {"requests": {"cpu": 1}, "limits": {"cpu": 2.5}}), id="numeric-quantities"),
        pytest.param(setting(f"{C0}.resources", {"requests": {"memory": "1Gi"}}), id="request-without-limit"),
        pytest.param(
            setting(f"{C0}.resources", {"requests": {"memory": "130M"}, "limits": {"memory": "128Mi"}}),
            id="decimal-request-below-binary-limit",
        ),
        pytest.param(
            appending("spec.initContainers", container("init", ports=[{"containerPort": 8080}])),
            id="plain-init-container-may-reuse-app-port",
        ),
        pytest.param(
            appending("spec.containers", container("other", volumeMounts=[{"name": "data", "mountPath": "/data"}])),
            id="same-mount-path-in-different-containers",
        ),
        pytest.param(
            appending(f"{C0}.volumeMounts", {"name": "data", "mountPath": "/data2", "subPath": "a/b..c"}),
            id="subpath-with-dots-in-a-name",
        ),
        pytest.param(setting(f"{C0}.ports.0.name", "h2c-9"), id="port-name-with-digits"),
        pytest.param(all_of(deleting("metadata.name"), setting("metadata.generateName", "web-")), id="generateName-only"),
        pytest.param(
            appending(
                "spec.ephemeralContainers",
                {"name": "debug", "image": "busybox", "targetContainerName": "app", "resources": {}},
            ),
            id="ephemeral-container",
        ),
    ],
)
def test_api_server_accepts_what_the_rules_allow(mutate: Callable[[dict], None]):
    pod = baseline_pod()
    mutate(pod)
    assert pod_problems(pod) == []


def test_problem_messages_name_the_field_path():
    pod = sidecar_pod()
    pod["spec"]["initContainers"][1]["ports"][0]["containerPort"] = 8080
    assert api_rule_problems(pod) == [
        (
            "spec.initContainers[1].ports[0].containerPort: port 8080/TCP is already declared by container 'app' "
            "(spec.containers[0].ports[0]); containers in one pod share a network namespace and cannot listen "
            "on the same port"
        )
    ]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("10m", Decimal("0.01")),
        ("0.5", Decimal("0.5")),
        ("1", Decimal(1)),
        (".5", Decimal("0.5")),
        ("64Mi", Decimal(64 * 1024**2)),
        ("1Gi", Decimal(1024**3)),
        ("100M", Decimal(100 * 10**6)),
        ("1k", Decimal(1000)),
        ("1Ki", Decimal(1024)),
        ("1e3", Decimal(1000)),
        ("1E", Decimal(10**18)),
        ("500u", Decimal("0.0005")),
        ("+2", Decimal(2)),
        (2, Decimal(2)),
        (0.25, Decimal("0.25")),
    ],
)
def test_quantity_parser_understands_kubernetes_suffixes(text: Any, expected: Decimal):
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["", "m", "1.2.3", "10 m", "1mi", "1KiB", "1e", "abc", None, True, [1]])
def test_quantity_parser_rejects_garbage(text: Any):
    with pytest.raises(ValueError):
        parse_quantity(text)


# --------------------------------------------------------------------------- Pod Security Standards

PSS_CASES = [
    pytest.param(
        setting(f"{C0}.securityContext.allowPrivilegeEscalation", True),
        "spec.containers[0].securityContext.allowPrivilegeEscalation: must be set to false",
        id="privilege-escalation-allowed",
    ),
    pytest.param(
        deleting(f"{C0}.securityContext.allowPrivilegeEscalation"),
        "allowPrivilegeEscalation: must be set to false",
        id="privilege-escalation-unset",
    ),
    pytest.param(
        deleting(f"{C0}.securityContext.capabilities"),
        'capabilities.drop: must include "ALL"',
        id="capabilities-not-dropped",
    ),
    pytest.param(
        setting(f"{C0}.securityContext.capabilities.drop", ["NET_RAW"]),
        'must include "ALL"',
        id="capabilities-drop-without-all",
    ),
    pytest.param(
        setting(f"{C0}.securityContext.capabilities.add", ["SYS_ADMIN"]),
        "may only add NET_BIND_SERVICE, got SYS_ADMIN",
        id="capability-added",
    ),
    pytest.param(
        setting(f"{C0}.securityContext.capabilities.add", ["CHOWN"]),
        "may only add NET_BIND_SERVICE, got CHOWN",
        id="baseline-capability-added",
    ),
    pytest.param(
        setting(f"{C0}.securityContext.runAsNonRoot", False),
        "spec.containers[0].securityContext.runAsNonRoot: must not be false",
        id="container-run-as-root-overrides-pod",
    ),
    pytest.param(
        all_of(deleting("spec.securityContext.runAsNonRoot"), deleting(f"{C0}.securityContext.runAsNonRoot")),
        "runAsNonRoot: must be true",
        id="run-as-non-root-unset",
    ),
    pytest.param(
        setting("spec.securityContext.runAsNonRoot", False),
        "spec.securityContext.runAsNonRoot: must not be false",
        id="pod-run-as-non-root-false",
    ),
    pytest.param(
        setting("spec.securityContext.runAsUser", 0), "spec.securityContext.runAsUser: must not be 0", id="pod-run-as-uid-0"
    ),
    pytest.param(
        setting(f"{C0}.securityContext.runAsUser", 0),
        "spec.containers[0].securityContext.runAsUser: must not be 0",
        id="container-run-as-uid-0",
    ),
    pytest.param(
        all_of(deleting("spec.securityContext.seccompProfile"), deleting(f"{C0}.securityContext.seccompProfile")),
        "seccompProfile.type: must be RuntimeDefault or Localhost",
        id="seccomp-unset",
    ),
    pytest.param(
        setting(f"{C0}.securityContext.seccompProfile", {"type": "Unconfined"}),
        "must be RuntimeDefault or Localhost, got 'Unconfined'",
        id="container-seccomp-unconfined",
    ),
    pytest.param(
        setting("spec.securityContext.seccompProfile", {"type": "Unconfined"}),
        "spec.securityContext.seccompProfile.type: must be RuntimeDefault or Localhost",
        id="pod-seccomp-unconfined",
    ),
    pytest.param(setting(f"{C0}.securityContext.privileged", True), "privileged: must not be true", id="privileged"),
    pytest.param(setting("spec.hostNetwork", True), "spec.hostNetwork: must not be true", id="host-network"),
    pytest.param(setting("spec.hostPID", True), "spec.hostPID: must not be true", id="host-pid"),
    pytest.param(setting("spec.hostIPC", True), "spec.hostIPC: must not be true", id="host-ipc"),
    pytest.param(setting(f"{C0}.ports.0.hostPort", 8080), "ports[0].hostPort: must not be set", id="host-port"),
    pytest.param(
        appending("spec.volumes", {"name": "host", "hostPath": {"path": "/var/run"}}),
        "spec.volumes[2].hostPath: hostPath volumes are forbidden",
        id="host-path-volume",
    ),
    pytest.param(
        appending("spec.volumes", {"name": "nfs", "nfs": {"server": "nfs", "path": "/"}}),
        "volume type nfs is not allowed",
        id="nfs-volume",
    ),
    pytest.param(
        appending("spec.volumes", {"name": "repo", "gitRepo": {"repository": "https://x"}}),
        "volume type gitRepo is not allowed",
        id="git-repo-volume",
    ),
    pytest.param(setting(f"{C0}.securityContext.procMount", "Unmasked"), "procMount: must be Default", id="proc-mount"),
    pytest.param(
        setting(f"{C0}.securityContext.windowsOptions", {"hostProcess": True}),
        "windowsOptions.hostProcess: must not be true",
        id="container-host-process",
    ),
    pytest.param(
        setting("spec.securityContext.windowsOptions", {"hostProcess": True}),
        "spec.securityContext.windowsOptions.hostProcess: must not be true",
        id="pod-host-process",
    ),
    pytest.param(
        appending("spec.securityContext.sysctls", {"name": "kernel.msgmax", "value": "1"}),
        "'kernel.msgmax' is not a safe sysctl",
        id="unsafe-sysctl",
    ),
    pytest.param(
        setting("metadata.annotations", {"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}),
        "AppArmor profile must be runtime/default or localhost/*",
        id="apparmor-annotation-unconfined",
    ),
    pytest.param(
        setting(f"{C0}.securityContext.appArmorProfile", {"type": "Unconfined"}),
        "appArmorProfile.type: must be RuntimeDefault or Localhost",
        id="apparmor-field-unconfined",
    ),
    pytest.param(
        setting(f"{C0}.securityContext.seLinuxOptions", {"type": "spc_t"}), "'spc_t' is not allowed", id="selinux-type"
    ),
    pytest.param(
        setting("spec.securityContext.seLinuxOptions", {"user": "system_u"}),
        "spec.securityContext.seLinuxOptions.user: must not be set",
        id="selinux-user",
    ),
    pytest.param(
        setting(f"{C0}.securityContext.seLinuxOptions", {"role": "sysadm_r"}),
        "seLinuxOptions.role: must not be set",
        id="selinux-role",
    ),
    pytest.param(
        setting(f"{C0}.readinessProbe.httpGet.host", "10.0.0.1"),
        "readinessProbe.httpGet.host: must not be set",
        id="probe-host",
    ),
    pytest.param(
        appending("spec.initContainers", native_sidecar("proxy")),
        "spec.initContainers[0].securityContext.allowPrivilegeEscalation",
        id="sidecar-without-security-context",
    ),
    pytest.param(
        appending("spec.initContainers", container("init")),
        "spec.initContainers[0].securityContext.capabilities.drop",
        id="init-container-without-security-context",
    ),
    pytest.param(
        appending("spec.ephemeralContainers", container("debug")),
        "spec.ephemeralContainers[0].securityContext.allowPrivilegeEscalation",
        id="ephemeral-container-without-security-context",
    ),
]


@pytest.mark.parametrize("mutate, expected", PSS_CASES)
def test_restricted_pod_security_violation_is_reported(mutate: Callable[[dict], None], expected: str):
    pod = baseline_pod()
    mutate(pod)
    problems = pss_restricted_problems(pod)
    assert _has(problems, expected), "\n".join(problems) or "no problems reported"
    with pytest.raises(AssertionError, match="restricted"):
        assert_pss_restricted(pod)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(
            all_of(
                deleting("spec.securityContext.runAsNonRoot"),
                deleting("spec.securityContext.seccompProfile"),
                setting(f"{C0}.securityContext.seccompProfile", {"type": "Localhost", "localhostProfile": "p.json"}),
            ),
            id="container-level-settings-without-pod-level",
        ),
        pytest.param(
            all_of(deleting(f"{C0}.securityContext.runAsNonRoot"), deleting(f"{C0}.securityContext.seccompProfile")),
            id="pod-level-settings-inherited",
        ),
        pytest.param(setting(f"{C0}.securityContext.capabilities.add", ["NET_BIND_SERVICE"]), id="net-bind-service-added"),
        pytest.param(setting(f"{C0}.ports.0.hostPort", 0), id="host-port-zero"),
        pytest.param(setting(f"{C0}.securityContext.procMount", "Default"), id="proc-mount-default"),
        pytest.param(
            setting(f"{C0}.securityContext.seLinuxOptions", {"type": "container_t", "level": "s0:c1"}),
            id="selinux-container-type-and-level",
        ),
        pytest.param(
            setting("metadata.annotations", {"container.apparmor.security.beta.kubernetes.io/app": "localhost/my-profile"}),
            id="apparmor-localhost-annotation",
        ),
        pytest.param(
            appending(
                "spec.volumes",
                {
                    "name": "eph",
                    "ephemeral": {
                        "volumeClaimTemplate": {
                            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
                        }
                    },
                },
            ),
            id="ephemeral-volume",
        ),
        pytest.param(
            appending("spec.volumes", {"name": "claim", "persistentVolumeClaim": {"claimName": "c"}}), id="pvc-volume"
        ),
        pytest.param(
            appending("spec.securityContext.sysctls", {"name": "net.ipv4.ip_local_port_range", "value": "1024 65535"}),
            id="safe-sysctl",
        ),
    ],
)
def test_restricted_pod_security_allows_compliant_variations(mutate: Callable[[dict], None]):
    pod = baseline_pod()
    mutate(pod)
    assert pss_restricted_problems(pod) == []
    assert pod_problems(pod) == []


def test_windows_pods_are_exempt_from_linux_only_restricted_controls():
    pod = baseline_pod()
    pod["spec"]["os"] = {"name": "windows"}
    pod["spec"]["securityContext"] = {"runAsNonRoot": True}
    pod["spec"]["containers"][0]["securityContext"] = {}
    assert pss_restricted_problems(pod) == []


def test_pss_lists_every_violation_of_every_container():
    pod = sidecar_pod()
    for c in pod["spec"]["initContainers"]:
        del c["securityContext"]
    pod["spec"]["securityContext"] = {}
    problems = pss_restricted_problems(pod)
    for i in range(3):
        for control in ("allowPrivilegeEscalation", "capabilities", "runAsNonRoot", "seccomp"):
            assert _has(problems, f"spec.initContainers[{i}]", f"PSS restricted: {control}"), control
    # The app container sets everything itself, so losing the pod-level settings doesn't affect it.
    assert not _has(problems, "spec.containers[0]")


def _pod_level(containers, init=(), requests=None, limits=None):
    spec = {"containers": containers, "resources": {}}
    if init:
        spec["initContainers"] = list(init)
    if requests:
        spec["resources"]["requests"] = requests
    if limits:
        spec["resources"]["limits"] = limits
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}


def _c(name, cpu=None, limit=None, always=False):
    resources = {}
    if cpu:
        resources["requests"] = {"cpu": cpu}
    if limit:
        resources["limits"] = {"cpu": limit}
    container = {"name": name, "image": "busybox:1.37.0", "resources": resources}
    if always:
        container["restartPolicy"] = "Always"
    return container


def test_pod_level_requests_must_cover_the_aggregate_of_the_containers():
    assert not api_rule_problems(_pod_level([_c("a", "100m"), _c("b", "100m")], requests={"cpu": "200m"}))
    [problem] = api_rule_problems(_pod_level([_c("a", "100m"), _c("b", "101m")], requests={"cpu": "200m"}))
    assert problem.startswith("spec.resources.requests[cpu]: must be greater than or equal to aggregate")


def test_pod_level_aggregate_follows_the_init_and_native_sidecar_formula():
    # a native sidecar started before a one-shot init container counts with it
    before = _pod_level(
        [_c("app", "100m")], init=[_c("side", "100m", always=True), _c("init", "150m")], requests={"cpu": "240m"}
    )
    assert api_rule_problems(before)  # init figure 150m + 100m = 250m > 240m
    after = _pod_level(
        [_c("app", "100m")], init=[_c("init", "150m"), _c("side", "100m", always=True)], requests={"cpu": "240m"}
    )
    assert not api_rule_problems(after)  # max(150m, 100m + 100m) = 200m


def test_no_container_limit_may_exceed_the_pod_level_limit_and_requests_default_to_limits():
    problems = api_rule_problems(_pod_level([_c("a", limit="600m")], limits={"cpu": "500m"}))
    assert any("limits[cpu]: must be less than or equal to pod limits" in p for p in problems)
    # no pod-level request: it defaults to the limit, and the container's request to its own limit
    assert api_rule_problems(_pod_level([_c("a", limit="400m"), _c("b", limit="400m")], limits={"cpu": "500m"}))
