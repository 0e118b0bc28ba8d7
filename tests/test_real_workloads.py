"""The built-in profiles on the kinds of real workloads where naive injection breaks a pod.

Each class of pod here was found by injecting into real manifests from public projects:
the API server accepted the patched pod, which then broke in the cluster (or the profile
was half applied). Each test asserts the exact outcome and warning, and every patched pod
passes the schema, the API server's pod rules (pod-level resources included) and, where
the pod itself does, the restricted Pod Security Standard.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import jsonpatch
import pytest

from podcheck import SCHEMA_VERSIONS, assert_pss_restricted, assert_valid_pod, parse_quantity
from sidecar_injector.core.decide import decide
from sidecar_injector.core.decision import Decision
from sidecar_injector.core.inputs import InjectionPolicy, NamespaceFacts, RequestContext
from sidecar_injector.profiles.loading import builtin_profiles
from skip_record import assert_skip_recorded
from test_builtin_profiles import restricted_app_pod

BUILTINS = builtin_profiles()
POLICY = InjectionPolicy()
STRICT = InjectionPolicy(strict=True)
PREFIX = "sidecar-injector: "


def run(pod: dict[str, Any], policy: InjectionPolicy = POLICY, namespace: NamespaceFacts | None = None) -> Decision:
    before = copy.deepcopy(pod)
    decision = decide(pod, RequestContext(namespace="shop", namespace_facts=namespace), BUILTINS, policy)
    assert pod == before, "decide() must not modify its input"
    return decision


def patched(pod: dict[str, Any], decision: Decision) -> dict[str, Any]:
    assert decision.outcome == "injected", decision
    result = jsonpatch.apply_patch(pod, copy.deepcopy(decision.patch), in_place=False)
    # pod-level resources (spec.resources) exist in the schema from Kubernetes 1.32
    assert_valid_pod(result, SCHEMA_VERSIONS[-1:] if "resources" in result["spec"] else SCHEMA_VERSIONS)
    return result


def status_profiles(pod: dict[str, Any]) -> set[str]:
    import json

    return set(json.loads(pod["metadata"]["annotations"]["sidecar.io/status"])["profiles"])


# -- 1. Windows pods selected by node selector or affinity ------------------------------------


def windows_daemonset_pod(**spec: Any) -> dict[str, Any]:
    """A DaemonSet's pod as the controller creates it for Windows nodes (log agent style)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "fluent-bit-windows-",
            "namespace": "shop",
            "labels": {"app": "fluent-bit-windows", "controller-revision-hash": "7c9d8f6b5"},
            "annotations": {"sidecar.io/inject": "logging"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "DaemonSet",
                    "name": "fluent-bit-windows",
                    "uid": "d-1",
                    "controller": True,
                }
            ],
        },
        "spec": {
            "tolerations": [{"key": "os", "operator": "Equal", "value": "windows", "effect": "NoSchedule"}],
            "containers": [{"name": "fluent-bit", "image": "fluent/fluent-bit:windows-2022-3.1.9"}],
            **spec,
        },
    }


@pytest.mark.parametrize(
    "spec,how",
    [
        ({"nodeSelector": {"kubernetes.io/os": "windows"}}, "nodeSelector kubernetes.io/os: windows"),
        ({"nodeSelector": {"beta.kubernetes.io/os": "windows"}}, "nodeSelector beta.kubernetes.io/os: windows"),
        (
            {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["windows"]}]}
                            ]
                        }
                    }
                }
            },
            "a required node affinity on kubernetes.io/os",
        ),
        ({"os": {"name": "windows"}}, "spec.os.name: windows"),
    ],
    ids=["node-selector", "beta-node-selector", "node-affinity", "os-field"],
)
def test_windows_pods_are_recognised_however_they_select_windows_nodes(spec, how):
    decision = run(windows_daemonset_pod(**spec))
    assert decision.outcome == "skipped" and decision.reason == "unsupported-os"
    assert decision.warnings == (f"{PREFIX}windows pods are not injected: the sidecar images are Linux ({how})",)
    # no sidecar; the pod's status says why
    assert_skip_recorded(windows_daemonset_pod(**spec), decision.patch, {"logging": decision.message})


def test_a_pod_that_may_land_on_linux_nodes_is_still_injected():
    # one affinity term allows Linux: the pod is not Windows-only
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["windows"]}]},
                    {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]},
                ]
            }
        }
    }
    pod = windows_daemonset_pod(affinity=affinity, nodeSelector={"kubernetes.io/os": "linux"})
    assert run(pod).outcome == "injected"


# -- 2. host-network pods ----------------------------------------------------------------------


def node_agent_pod(inject: str) -> dict[str, Any]:
    """A node-exporter-style DaemonSet pod on the host network."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "node-exporter-",
            "namespace": "shop",
            "labels": {"app.kubernetes.io/name": "node-exporter"},
            "annotations": {"sidecar.io/inject": inject},
        },
        "spec": {
            "hostNetwork": True,
            "hostPID": True,
            "dnsPolicy": "ClusterFirstWithHostNet",
            "containers": [
                {
                    "name": "node-exporter",
                    "image": "quay.io/prometheus/node-exporter:v1.8.2",
                    "args": ["--path.rootfs=/host", "--web.listen-address=0.0.0.0:9100"],
                    "ports": [{"name": "metrics", "containerPort": 9100, "hostPort": 9100, "protocol": "TCP"}],
                    "volumeMounts": [{"name": "root", "mountPath": "/host", "readOnly": True}],
                }
            ],
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
        },
    }


@pytest.mark.parametrize("profile", ["logging", "proxy", "metrics", "tls"])
def test_a_host_network_pod_gets_no_profile_that_binds_ports(profile):
    decision = run(node_agent_pod(f"{profile},cert-renewal"))
    assert decision.injected == ("cert-renewal",)  # binds no port: safe on the host network
    [warning] = decision.warnings
    assert warning.startswith(f"{PREFIX}profile {profile} not injected: the pod uses the host network, where its ports (")
    assert "would bind on the node's address (a profile that is safe there says hostNetwork: allowed)" in warning
    result = patched(node_agent_pod(f"{profile},cert-renewal"), decision)
    assert status_profiles(result) == {"cert-renewal"}


def test_a_profile_can_declare_itself_safe_on_the_host_network():
    from sidecar_injector.profiles.loading import ProfileSet
    from sidecar_injector.profiles.model import Profile

    allowed = Profile.model_validate({**BUILTINS["logging"].model_dump(by_alias=True), "hostNetwork": "allowed"})
    profiles = ProfileSet({**BUILTINS.profiles, "logging": allowed}, dict(BUILTINS.sources))
    pod = node_agent_pod("logging")
    decision = decide(pod, RequestContext(namespace="shop"), profiles, POLICY)
    assert decision.injected == ("logging",) and decision.warnings == ()


def test_strict_mode_denies_a_host_network_pod_asking_for_a_port_binding_profile():
    decision = run(node_agent_pod("proxy"), STRICT)
    assert decision.outcome == "denied" and "host network" in decision.message


# -- 3. pod-level resources --------------------------------------------------------------------


def _requests(profile: str) -> dict[str, Decimal]:
    total: dict[str, Decimal] = {}
    for container in BUILTINS[profile].containers:
        for name, value in container["resources"]["requests"].items():
            total[name] = total.get(name, Decimal(0)) + parse_quantity(value)
    return total


def _milli(value: Decimal) -> str:
    return f"{int(value * 1000)}m"


def _mi(value: Decimal) -> str:
    return f"{int(value / 2**20)}Mi"


def pod_level_pod(inject: str, cpu: Decimal, memory: Decimal) -> dict[str, Any]:
    app = {"cpu": Decimal("0.25"), "memory": Decimal(256 * 2**20)}
    pod = restricted_app_pod(inject)
    pod["spec"]["containers"][0]["resources"] = {"requests": {"cpu": _milli(app["cpu"]), "memory": _mi(app["memory"])}}
    pod["spec"]["resources"] = {
        "requests": {"cpu": _milli(app["cpu"] + cpu), "memory": _mi(app["memory"] + memory)},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }
    return pod


def test_a_sidecar_that_fits_the_pod_level_budget_is_injected():
    logging = _requests("logging")
    pod = pod_level_pod("logging", logging["cpu"], logging["memory"])  # exactly enough room
    result = patched(pod, run(pod))
    assert_pss_restricted(result)


def test_a_sidecar_that_would_exceed_the_pod_level_requests_is_skipped_naming_the_numbers():
    logging, proxy = _requests("logging"), _requests("proxy")
    pod = pod_level_pod("logging,proxy", logging["cpu"], logging["memory"])  # room for logging only
    decision = run(pod)
    assert decision.injected == ("logging",)
    total_cpu = Decimal("0.25") + logging["cpu"] + proxy["cpu"]
    total_mem = Decimal(256 * 2**20) + logging["memory"] + proxy["memory"]
    assert decision.warnings == (
        (
            f"{PREFIX}profile proxy not injected: the containers would request {_milli(total_cpu)} cpu in all, over the "
            f"pod's spec.resources.requests {_milli(total_cpu - proxy['cpu'])}; the containers would request "
            f"{_mi(total_mem)} memory in all, over the pod's spec.resources.requests {_mi(total_mem - proxy['memory'])}"
        ),
    )
    patched(pod, decision)  # podcheck applies the API server's aggregate rule


def test_a_sidecar_limit_above_the_pod_level_limit_is_skipped():
    logging = _requests("logging")
    pod = pod_level_pod("logging", logging["cpu"], logging["memory"])
    pod["spec"]["resources"]["limits"] = {"cpu": "50m"}  # below the shipper's own limit
    pod["spec"]["resources"]["requests"]["cpu"] = "50m"
    pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "20m"
    decision = run(pod)
    assert decision.outcome == "skipped"
    assert (
        "container sidecar-logging has a cpu limit of 100m, over the pod's spec.resources.limits 50m" in decision.warnings[0]
    )


def test_native_sidecars_count_by_the_init_container_rule():
    # a Job's pod: native sidecars start after the pod's own init containers, so the
    # one-shot migration counts alone, while the sidecar adds to the app's baseline
    logging = _requests("logging")
    pod = pod_level_pod("logging", logging["cpu"], logging["memory"])
    pod["spec"]["restartPolicy"] = "Never"
    pod["spec"]["initContainers"] = [
        {
            "name": "migrate",
            "image": "ghcr.io/example/shop:2.3.1",
            "resources": {"requests": {"cpu": pod["spec"]["resources"]["requests"]["cpu"]}},
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsUser": 10001},
        }
    ]
    result = patched(pod, run(pod))
    assert [c["name"] for c in result["spec"]["initContainers"]] == ["migrate", "sidecar-logging"]


def test_strict_mode_denies_a_sidecar_over_the_pod_level_budget():
    pod = pod_level_pod("logging", Decimal(0), Decimal(0))
    decision = run(pod, STRICT)
    assert decision.outcome == "denied" and "spec.resources.requests" in decision.message


# -- 4. and 5. ports already taken, declared or bound by a mesh proxy ----------------------------


def _bound_ports(name: str) -> list[tuple[int, str]]:
    return BUILTINS[name].plain.bound_ports


PORT_PROFILES = [name for name in sorted(BUILTINS) if _bound_ports(name)]


def test_the_port_binding_builtins_are_the_expected_ones():
    assert PORT_PROFILES == ["logging", "metrics", "proxy", "tls"]


@pytest.mark.parametrize("name", PORT_PROFILES)
@pytest.mark.parametrize("index", [0, -1])
def test_a_pod_already_listening_on_a_builtin_profiles_port_does_not_get_it(name, index):
    port, protocol = _bound_ports(name)[index]
    pod = restricted_app_pod(name)
    pod["spec"]["containers"][0]["ports"] = [{"containerPort": port, "protocol": protocol}]
    decision = run(pod)
    assert decision.outcome == "skipped" and decision.reason == "conflicts"
    status = assert_skip_recorded(pod, decision.patch, [name])
    assert f"port {port}/{protocol} is already used by container shop" in status["skipped"][name]
    [warning] = decision.warnings
    assert warning.startswith(f"{PREFIX}profile {name} not injected: ")
    assert f"port {port}/{protocol} is already used by container shop" in warning


def istio_injected_pod(inject: str) -> dict[str, Any]:
    """A pod as Istio's injector leaves it: istio-init, istio-proxy (native) and its status."""
    pod = restricted_app_pod(inject)
    pod["metadata"]["annotations"]["sidecar.istio.io/status"] = (
        '{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["istio-envoy"]}'
    )
    pod["spec"]["initContainers"] = [
        {"name": "istio-init", "image": "docker.io/istio/proxyv2:1.24.2", "args": ["istio-iptables", "-p", "15001"]},
        {
            "name": "istio-proxy",
            "image": "docker.io/istio/proxyv2:1.24.2",
            "restartPolicy": "Always",
            "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
        },
    ]
    return pod


def test_an_istio_injected_pod_does_not_get_a_second_proxy():
    decision = run(istio_injected_pod("proxy"))
    assert decision.outcome == "skipped" and decision.reason == "conflicts"
    assert decision.warnings == (
        (
            f"{PREFIX}profile proxy not injected: port 15001/TCP is already used by the Istio proxy; "
            "port 15000/TCP is already used by the Istio proxy"
        ),
    )


def test_istio_about_to_inject_is_seen_from_the_namespace_label_unless_the_pod_opts_out():
    istio_ns = NamespaceFacts("shop", labels={"istio-injection": "enabled"})
    decision = run(restricted_app_pod("proxy,logging"), namespace=istio_ns)
    assert decision.injected == ("logging",) and "already used by the Istio proxy" in decision.warnings[0]
    opted_out = restricted_app_pod("proxy")
    opted_out["metadata"]["annotations"]["sidecar.istio.io/inject"] = "false"
    assert run(opted_out, namespace=istio_ns).injected == ("proxy",)


@pytest.mark.parametrize(
    "mark",
    ["container", "annotation", "namespace"],
)
def test_a_linkerd_pod_keeps_the_ports_its_proxy_binds(mark):
    from sidecar_injector.profiles.loading import ProfileSet, parse_profiles

    agent = parse_profiles(
        "name: agent\nversion: '1'\nlocalPorts: [4191]\n"
        "containers: [{name: agent, image: 'busybox:1.37.0', args: [sleep, infinity]}]",
        "test",
    )
    pod = restricted_app_pod("agent")
    namespace = None
    if mark == "container":
        pod["spec"]["containers"].append({"name": "linkerd-proxy", "image": "cr.l5d.io/linkerd/proxy:edge-24.11.8"})
    elif mark == "annotation":
        pod["metadata"]["annotations"]["linkerd.io/proxy-version"] = "edge-24.11.8"
    else:
        namespace = NamespaceFacts("shop", annotations={"linkerd.io/inject": "enabled"})
    decision = decide(pod, RequestContext(namespace="shop", namespace_facts=namespace), ProfileSet.of(agent), POLICY)
    assert decision.warnings == (f"{PREFIX}profile agent not injected: port 4191/TCP is already used by the Linkerd proxy",)


# -- 6. mounts inside other mounts -------------------------------------------------------------


@pytest.mark.parametrize(
    "mount,volume,existing",
    [
        ({"name": "varlog", "mountPath": "/var/log"}, {"name": "varlog", "hostPath": {"path": "/var/log"}}, "/var/log"),
        (
            {"name": "config", "mountPath": "/var/log/app/conf", "readOnly": True},
            {"name": "config", "configMap": {"name": "shop-logging"}},
            "/var/log/app/conf",
        ),
    ],
    ids=["inside-a-hostpath-mount", "around-a-read-only-configmap"],
)
def test_a_profile_mount_overlapping_a_mount_of_the_app_is_a_conflict(mount, volume, existing):
    pod = restricted_app_pod("logging")
    pod["spec"]["containers"][0]["volumeMounts"].append(mount)
    pod["spec"]["volumes"].append(volume)
    decision = run(pod)
    assert decision.outcome == "skipped"
    why = f"container shop already mounts {existing}, which overlaps /var/log/app"
    assert decision.warnings == (f"{PREFIX}profile logging not injected: {why}",)
    assert_skip_recorded(pod, decision.patch, {"logging": why})


def test_a_sibling_path_is_not_an_overlap():
    pod = restricted_app_pod("logging")
    pod["spec"]["containers"][0]["volumeMounts"].append({"name": "cache", "mountPath": "/var/log/application"})
    pod["spec"]["volumes"].append({"name": "cache", "emptyDir": {}})
    assert run(pod).injected == ("logging",)


# -- 7. the pod's own prometheus.io annotations ------------------------------------------------


def test_metrics_keeps_the_pods_own_scrape_annotations_and_says_how_to_scrape_the_exporter():
    pod = restricted_app_pod("metrics")
    pod["metadata"]["annotations"].update({"prometheus.io/scrape": "true", "prometheus.io/port": "8080"})
    decision = run(pod)
    assert decision.injected == ("metrics",)
    assert decision.warnings == (
        (
            f"{PREFIX}[metrics] the pod's own prometheus.io/port=8080 is kept: annotation-based scraping will not see "
            "the metrics sidecar; scrape port statsd-metrics with a PodMonitor"
        ),
    )
    result = patched(pod, decision)
    assert result["metadata"]["annotations"]["prometheus.io/port"] == "8080"
    assert result["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"  # absent before: added
    assert_pss_restricted(result)
