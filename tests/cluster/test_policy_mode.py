"""Policy mode on the real API server: the pod it stores through the compiled admission policies
equals the pod it stores through the webhook (issue 21).

Every scenario creates the same pod in two namespaces with the same labels and annotations:
one served by the webhook (the chart, as the other tests run it), one where only the policies
of `sidecar-injector profiles export --as-policy` are bound (a label of this module's own on
the namespace; the webhook is told to leave those namespaces alone with
webhook.excludedNamespaces). The policies are compiled with the settings the chart gives the
webhook. What docs/policy-mode.md lists as differing is normalised before comparing: the
ServiceAccount token volume's random suffix, the status annotation's ``values`` hash when a
value is not the default (CEL has no SHA-256), and, for pods with several profiles, the order
of the sidecars and status entries (the API server runs policies in its own order).
"""

from __future__ import annotations

import copy
import json
import os
import re
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from cluster_support import CLI, Injector, unique
from controlplane import ControlPlane, wait_for, write_profiles

PROFILES = ("backup", "cert-renewal", "config-reload", "git-sync", "logging", "metrics", "proxy", "tls")
#: the values a pod must set (git-sync has no default repo)
REQUIRED = {"git-sync": {"git-sync.sidecar.io/repo": "https://github.com/acme/site"}}
#: a non-default value of each profile's parameters (and one resource override)
VALUES = {
    "backup": {"backup.sidecar.io/interval-seconds": "600", "backup.sidecar.io/destination": "s3:bucket/app"},
    "cert-renewal": {"cert-renewal.sidecar.io/common-name": "web.example", "cert-renewal.sidecar.io/validity-days": "+07"},
    "config-reload": {"config-reload.sidecar.io/file-name": "app.yaml", "config-reload.sidecar.io/url": "https://c/x"},
    "git-sync": {"git-sync.sidecar.io/ref": "v1.2.3", "git-sync.sidecar.io/period": "5m"},
    "logging": {"logging.sidecar.io/path": "/data/logs", "logging.sidecar.io/memory-limit": "256Mi"},
    "metrics": {"metrics.sidecar.io/log-level": "debug"},
    "proxy": {"proxy.sidecar.io/app-port": "9090", "proxy.sidecar.io/cpu-limit": "200m"},
    "tls": {"tls.sidecar.io/upstream-port": "3000"},
}
#: a value each profile refuses
BAD_VALUES = {
    "backup": {"backup.sidecar.io/interval-seconds": "5"},
    "cert-renewal": {"cert-renewal.sidecar.io/validity-days": "1000"},
    "config-reload": {"config-reload.sidecar.io/url": "ftp://nope"},
    "git-sync": {"git-sync.sidecar.io/period": "1s"},
    "logging": {"logging.sidecar.io/path": "relative/path"},
    "metrics": {"metrics.sidecar.io/log-level": "loud"},
    "proxy": {"proxy.sidecar.io/app-port": "70000"},
    "tls": {"tls.sidecar.io/upstream-port": "http"},
}
TEST_LABEL = "sidecar-injector.test/policy-mode"
SA_VOLUME = re.compile(r"kube-api-access-[a-z0-9]{5}")


@dataclass
class Pair:
    """Two namespaces set up alike: one for the webhook, one for the policies."""

    webhook: str
    policy: str


@dataclass
class Outcome:
    pod: dict[str, Any] | None
    warnings: str
    error: str


class PolicyMode:
    def __init__(self, plane: ControlPlane, injector: Injector, run: str):
        self.plane, self.injector, self.run = plane, injector, run
        self.pairs: dict[str, Pair] = {}
        #: the chart values the module runs the webhook with
        self.values: dict[str, Any] = {}

    # -- setup

    def namespace_pair(self, kind: str, labels: dict[str, str], annotations: dict[str, str]) -> Pair:
        pair = Pair(f"w-{kind}-{self.run}", f"p-{kind}-{self.run}")
        for name, extra in ((pair.webhook, {}), (pair.policy, {TEST_LABEL: self.run})):
            self.plane.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": name, "labels": {**labels, **extra}, "annotations": annotations},
                }
            )
        for name in (pair.webhook, pair.policy):
            wait_for(
                "default SA",
                lambda n=name: self.plane.kubectl("get", "sa", "default", "-n", n, check=False).returncode == 0,
                60,
            )
        self.pairs[kind] = pair
        return pair

    def compiled(self, values: dict[str, Any]) -> list[dict[str, Any]]:
        """`profiles export --as-policy` with the environment the chart gives the webhook."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_INJECTOR_")}
        chart_env = self.injector.container_env(values)
        chart_env.pop("SIDECAR_INJECTOR_EXCLUDED_NAMESPACES", None)  # the test's exclusions are the webhook's alone
        env.update(chart_env)
        config_map = next(d for d in self.injector.render(values) if d["kind"] == "ConfigMap")
        env["SIDECAR_INJECTOR_PROFILES_DIR"] = str(write_profiles(config_map, self.injector.workdir / "profiles-policy"))
        result = subprocess.run(
            [*CLI, "profiles", "export", "--as-policy", *PROFILES, "--policy-namespace-label", f"{TEST_LABEL}={self.run}"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return [d for d in yaml.safe_load_all(result.stdout) if d]

    # -- pods

    def create(self, namespace: str, manifest: dict[str, Any]) -> Outcome:
        result = self.plane.create(manifest, "-n", namespace, check=False)
        pod = json.loads(result.stdout) if result.returncode == 0 else None
        return Outcome(pod, result.stderr if result.returncode == 0 else "", result.stderr if result.returncode else "")

    def both(self, kind: str, manifest: dict[str, Any]) -> tuple[Outcome, Outcome]:
        pair = self.pairs[kind]
        return self.create(pair.webhook, copy.deepcopy(manifest)), self.create(pair.policy, copy.deepcopy(manifest))


def pod(name: str, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}, "annotations": dict(annotations or {})},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.0"}], **spec},
    }


def status_of(obj: dict[str, Any]) -> dict[str, Any]:
    text = (obj["metadata"].get("annotations") or {}).get("sidecar.io/status")
    return json.loads(text)["profiles"] if text else {}


def normalised(obj: dict[str, Any], *, ordered: bool, drop_values: set[str]) -> dict[str, Any]:
    """What is compared: the spec and annotations, minus what docs/policy-mode.md lists as differing."""
    spec = json.loads(SA_VOLUME.sub("kube-api-access", json.dumps(obj["spec"])))
    annotations = dict(obj["metadata"].get("annotations") or {})
    status = status_of(obj)
    annotations.pop("sidecar.io/status", None)
    for name in drop_values:
        status.get(name, {}).pop("values", None)
    if not ordered:
        for field in ("containers", "initContainers", "volumes"):
            if field in spec:
                spec[field] = sorted(spec[field], key=lambda item: item["name"])
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            for field, key in (("env", "name"), ("volumeMounts", "mountPath")):
                if field in container:
                    container[field] = sorted(container[field], key=lambda item: item[key])
    return {"spec": spec, "annotations": annotations, "status": status, "labels": obj["metadata"].get("labels")}


def assert_same(webhook: Outcome, policy: Outcome, *, ordered: bool = True) -> dict[str, Any]:
    """The two stored pods are equal but for the documented differences; the webhook's pod is returned."""
    assert webhook.pod is not None, webhook.error
    assert policy.pod is not None, policy.error
    policy_status = status_of(policy.pod)
    # the values hash is written in policy mode only when every value is the default
    drop = {name for name, entry in policy_status.items() if "values" not in entry}
    expected = normalised(webhook.pod, ordered=ordered, drop_values=drop)
    got = normalised(policy.pod, ordered=ordered, drop_values=drop)
    assert got == expected, json.dumps({"webhook": expected, "policy": got}, indent=1)[:6000]
    texts = [(o.pod["metadata"].get("annotations") or {}).get("sidecar.io/status") for o in (policy, webhook)]
    # the webhook alone records the requested profiles it skipped (policy mode warns instead)
    skipped = json.loads(texts[1]).get("skipped") if texts[1] else None
    if ordered and not drop and not skipped:  # one profile at its defaults: the status annotation is the very same text
        assert texts[0] == texts[1]
    return webhook.pod


def injected(outcome: Outcome) -> set[str]:
    assert outcome.pod is not None, outcome.error
    return set(status_of(outcome.pod))


# --------------------------------------------------------------------------- the setup


@pytest.fixture(scope="module")
def policy_mode(control_plane: ControlPlane, injector: Injector) -> Iterator[PolicyMode]:
    run = unique("pm").replace("pm-", "")
    mode = PolicyMode(control_plane, injector, run)
    kinds = {
        "plain": ({}, {}),
        "enabled": ({"sidecar.io/inject": "enabled"}, {"sidecar.io/profiles": "metrics, Proxy"}),
        "defaults": ({"sidecar.io/inject": "enabled"}, {}),
        "values": ({}, {k: v for p in PROFILES for k, v in VALUES[p].items() if p != "logging"}),
        "istio": ({"istio-injection": "enabled"}, {}),
        "reinvoke": ({}, {}),  # where another mutating policy is bound, for one test
    }
    excluded = [f"p-{kind}-{run}" for kind in kinds]
    values = {"webhook": {"excludedNamespaces": excluded}}
    mode.values = values
    injector.restart(values)
    for kind, (labels, ns_annotations) in kinds.items():
        mode.namespace_pair(kind, labels, ns_annotations)
    objects = mode.compiled(values)
    control_plane.apply(objects)
    created = [(o["kind"].lower(), o["metadata"]["name"]) for o in objects]

    # the API server picks policies and bindings up asynchronously: wait until each profile injects
    # and its validating policy warns
    def active(profile: str) -> bool:
        annotations = {"sidecar.io/inject": profile, **REQUIRED.get(profile, {})}
        outcome = mode.create(mode.pairs["plain"].policy, pod(unique("probe"), annotations))
        bad = mode.create(mode.pairs["plain"].policy, pod(unique("probe"), {**annotations, **BAD_VALUES[profile]}))
        return profile in injected(outcome) and profile in bad.warnings

    for profile in PROFILES:
        wait_for(f"the {profile} policies in effect", lambda p=profile: active(p), 60, interval=0.5)
    try:
        yield mode
    finally:
        for kind, name in created:
            control_plane.kubectl("delete", kind, name, "--wait=false", check=False)
        for pair in mode.pairs.values():
            for name in (pair.webhook, pair.policy):
                control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)
        injector.restart({})


# --------------------------------------------------------------------------- equivalence


def shapes(profile: str) -> list[tuple[str, dict[str, Any]]]:
    """The pod shapes the core handles, asking for one profile."""
    asks = {"sidecar.io/inject": profile, **REQUIRED.get(profile, {})}
    app = {"name": "app", "image": "registry.example/app:1.0"}
    return [
        ("one container", pod("one", asks)),
        (
            "several containers, init containers, own volumes, mounts and env",
            pod(
                "many",
                asks,
                containers=[
                    {
                        **app,
                        "env": [{"name": "LOG_DIR", "value": "mine"}, {"name": "OWN", "value": "x"}],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        "ports": [{"containerPort": 8080}],
                    },
                    {
                        "name": "helper",
                        "image": "registry.example/helper:1.0",
                        "env": [{"name": "STATSD_PORT", "value": "1"}],
                    },
                ],
                initContainers=[{"name": "setup", "image": "registry.example/setup:1.0"}],
                volumes=[{"name": "data", "emptyDir": {}}],
            ),
        ),
        ("native sidecars asked for", pod("native", {**asks, "sidecar.io/native-sidecars": "true"})),
        (
            "native sidecars refused by a pod that runs to completion",
            pod("not-native", {**asks, "sidecar.io/native-sidecars": " FALSE "}, restartPolicy="Never"),
        ),
        ("a pod that runs to completion", pod("completion", asks, restartPolicy="OnFailure")),
        ("values on the pod", pod("values", {**asks, **VALUES[profile]})),
        (
            "spaces and case in the list",
            pod("listed", {"sidecar.io/inject": f" nothing-else , {profile.upper()} ,", **REQUIRED.get(profile, {})}),
        ),
        (
            "already injected",
            pod("again", {**asks, "sidecar.io/status": json.dumps({"profiles": {profile: {"version": "0"}}})}),
        ),
        ("opted out", pod("out", {"sidecar.io/inject": "false", **REQUIRED.get(profile, {})})),
        ("not asking", pod("quiet")),
        ("a bad value", pod("bad", {**asks, **BAD_VALUES[profile]})),
        (
            "a conflicting container name",
            pod("clash", asks, containers=[app, {"name": f"sidecar-{profile}", "image": "registry.example/x:1"}]),
        ),
        ("a windows pod", pod("windows", asks, nodeSelector={"kubernetes.io/os": "windows"})),
        ("the host network", pod("host", asks, hostNetwork=True)),
    ]


@pytest.mark.parametrize("profile", PROFILES)
def test_every_pod_shape_is_stored_the_same_in_both_modes(policy_mode: PolicyMode, profile: str) -> None:
    for what, manifest in shapes(profile):
        manifest["metadata"]["name"] = unique(manifest["metadata"]["name"])
        webhook, policy = policy_mode.both("plain", manifest)
        try:
            assert_same(webhook, policy)
        except AssertionError as exc:
            raise AssertionError(f"{profile}, {what}: {exc}") from None
        assert injected(webhook) == injected(policy), what


def test_the_shapes_inject_what_they_should(policy_mode: PolicyMode) -> None:
    """The equivalence above is not two empty results: the webhook injects where it should (and so the policies)."""
    for what, manifest in shapes("proxy"):
        manifest["metadata"]["name"] = unique(manifest["metadata"]["name"])
        _, policy = policy_mode.both("plain", manifest)
        expected = what not in {
            "already injected",
            "opted out",
            "not asking",
            "a bad value",
            "a windows pod",
            "the host network",
        }
        expected = expected and what != "a conflicting container name"
        assert policy.pod is not None, policy.error
        names = [c["name"] for c in policy.pod["spec"]["containers"] + policy.pod["spec"].get("initContainers", [])]
        if what == "already injected":  # recorded in the status the pod came with: nothing added
            assert "sidecar-proxy" not in names
        else:
            assert ("proxy" in injected(policy)) == expected, what


def test_values_on_the_namespace_render_the_same(policy_mode: PolicyMode) -> None:
    for profile in PROFILES:
        manifest = pod(unique("ns-values"), {"sidecar.io/inject": profile, **REQUIRED.get(profile, {})})
        webhook, policy = policy_mode.both("values", manifest)
        assert_same(webhook, policy)
        assert profile in injected(policy)


def test_a_pod_value_wins_over_the_namespace_value(policy_mode: PolicyMode) -> None:
    manifest = pod(unique("override"), {"sidecar.io/inject": "proxy", "proxy.sidecar.io/app-port": "7000"})
    webhook, policy = policy_mode.both("values", manifest)
    stored = assert_same(webhook, policy)
    proxy = next(c for c in stored["spec"]["containers"] if c["name"] == "sidecar-proxy")
    assert {"name": "APP_PORT", "value": "7000"} in proxy["env"]


def test_namespace_opt_in_and_its_profiles_annotation(policy_mode: PolicyMode) -> None:
    # sidecar.io/profiles "metrics, Proxy" with the label enabled: both, and the pod's own adds to them
    cases = [
        ({}, {"metrics", "proxy"}),
        ({"sidecar.io/inject": "tls"}, {"metrics", "proxy", "tls"}),
        ({"sidecar.io/inject": "true"}, {"metrics", "proxy"}),
        ({"sidecar.io/inject": "false"}, set()),
    ]
    for asked, profiles in cases:
        webhook, policy = policy_mode.both("enabled", pod(unique("auto"), asked))
        assert_same(webhook, policy, ordered=False)
        assert injected(policy) == profiles, asked


def test_the_cluster_default_profiles(policy_mode: PolicyMode) -> None:
    # labelled enabled, no sidecar.io/profiles: the chart's defaultProfiles (logging); true means them too
    for kind, asked in (
        ("defaults", {}),
        ("plain", {"sidecar.io/inject": "true"}),
        ("defaults", {"sidecar.io/inject": "true"}),
    ):
        webhook, policy = policy_mode.both(kind, pod(unique("dflt"), asked))
        assert_same(webhook, policy)
        assert injected(policy) == {"logging"}, (kind, asked)


def test_several_profiles_in_one_pod(policy_mode: PolicyMode) -> None:
    annotations = {"sidecar.io/inject": ",".join(PROFILES), **REQUIRED["git-sync"], **VALUES["proxy"]}
    webhook, policy = policy_mode.both("plain", pod(unique("all"), annotations))
    assert_same(webhook, policy, ordered=False)
    assert injected(policy) == set(PROFILES)


def test_a_mesh_neighbour_keeps_the_proxy_out(policy_mode: PolicyMode) -> None:
    for asked in (
        {"sidecar.io/inject": "proxy,logging"},
        {"sidecar.io/inject": "proxy", "sidecar.istio.io/inject": "false"},
    ):
        webhook, policy = policy_mode.both("istio", pod(unique("mesh"), asked))
        assert_same(webhook, policy, ordered=False)
    assert injected(policy) == {"proxy"}


def test_a_jobs_pod(policy_mode: PolicyMode, control_plane: ControlPlane) -> None:
    """The Job controller creates the pod (owner reference Job): native sidecars by default, in both modes."""
    pair = policy_mode.pairs["plain"]
    name = unique("job")
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "metadata": {"annotations": {"sidecar.io/inject": "logging,cert-renewal"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "app", "image": "registry.example/app:1.0"}]},
            }
        },
    }
    stored: dict[str, dict[str, Any]] = {}
    for namespace in (pair.webhook, pair.policy):
        control_plane.apply(job, "-n", namespace)

        def created(ns: str = namespace) -> bool:
            items = control_plane.get("pods", "-n", ns, "-l", f"job-name={name}")["items"]
            if items:
                stored[ns] = items[0]
            return bool(items)

        wait_for(f"the Job's pod in {namespace}", created, 60)
    webhook, policy = stored[pair.webhook], stored[pair.policy]
    for obj in (webhook, policy):  # the controller's labels carry the Job's uid
        obj["metadata"]["labels"] = {k: v for k, v in obj["metadata"]["labels"].items() if "uid" not in k}
    assert_same(Outcome(webhook, "", ""), Outcome(policy, "", ""), ordered=False)
    assert all(entry["native"] for entry in status_of(policy).values())
    assert set(status_of(policy)) == {"logging", "cert-renewal"}


def test_bad_values_are_warned_about_in_both_modes(policy_mode: PolicyMode) -> None:
    for profile in PROFILES:
        asks = {"sidecar.io/inject": profile, **REQUIRED.get(profile, {}), **BAD_VALUES[profile]}
        webhook, policy = policy_mode.both("plain", pod(unique("warned"), asks))
        key = next(iter(BAD_VALUES[profile]))
        for outcome in (webhook, policy):
            assert key in outcome.warnings and profile in outcome.warnings, (profile, outcome.warnings)
        assert not injected(policy) and not injected(webhook)


def test_a_missing_required_value_and_a_conflict_are_warned_about(policy_mode: PolicyMode) -> None:
    webhook, policy = policy_mode.both("plain", pod(unique("no-repo"), {"sidecar.io/inject": "git-sync"}))
    for outcome in (webhook, policy):
        assert "git-sync.sidecar.io/repo is required" in outcome.warnings, outcome.warnings
    clash = pod(
        unique("clash"),
        {"sidecar.io/inject": "proxy"},
        containers=[{"name": "app", "image": "a:1", "ports": [{"containerPort": 15001}]}],
    )
    webhook, policy = policy_mode.both("plain", clash)
    assert_same(webhook, policy)
    for outcome in (webhook, policy):
        assert "port 15001/TCP is already used by container app" in outcome.warnings, outcome.warnings


# --------------------------------------------------------------------------- latency


def test_pod_creation_latency_webhook_and_policy(policy_mode: PolicyMode, control_plane: ControlPlane) -> None:
    """N pods through the real API server in each mode, one run (numbers for docs/operations.md)."""
    count = int(os.environ.get("POLICY_LATENCY_PODS", "40"))
    asking = {"sidecar.io/inject": "logging,metrics"}
    timings: dict[str, list[float]] = {"webhook": [], "policy": [], "none": []}
    pair = policy_mode.pairs["plain"]
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(str(control_plane.admin_kubeconfig)))
    for i in range(count):
        for mode, namespace, asks in (
            ("webhook", pair.webhook, asking),
            ("policy", pair.policy, asking),
            ("none", pair.webhook, {}),
        ):
            body = pod(f"lat-{mode}-{i}", asks)
            start = time.perf_counter()
            created = api.create_namespaced_pod(namespace, body)
            timings[mode].append((time.perf_counter() - start) * 1000)
            if asks:
                assert created.metadata.annotations.get("sidecar.io/status"), mode
    lines = []
    for mode, values in timings.items():
        values.sort()
        p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
        lines.append(f"{mode}: n={len(values)} median={statistics.median(values):.1f} ms p95={p95:.1f} ms")
    print("\npod creation latency (logging+metrics):\n" + "\n".join(lines))
    assert len(timings["policy"]) == count


def test_reinvocation_by_another_mutation_injects_once(policy_mode: PolicyMode, control_plane: ControlPlane) -> None:
    """Another MutatingAdmissionPolicy rewrites an annotation from the container count, so the
    API server re-runs the profiles' policies (reinvocationPolicy: IfNeeded) on the injected pod:
    nothing is added twice, and the other mutation saw the injected pod."""
    from test_admission import REINVOKER

    name = unique("recount")
    namespace = policy_mode.pairs["reinvoke"].policy
    control_plane.apply(REINVOKER.replace("NAMESPACE", namespace).replace("NAME", name))
    try:
        stored: dict[str, Any] = {}

        def active() -> bool:
            outcome = policy_mode.create(namespace, pod(unique("twice"), {"sidecar.io/inject": "logging,metrics,proxy"}))
            assert outcome.pod is not None, outcome.error
            stored.update(outcome.pod)
            return "test.sidecar.io/containers" in outcome.pod["metadata"]["annotations"]

        wait_for("the other MutatingAdmissionPolicy in effect", active, 30, interval=1)
        names = [c["name"] for c in stored["spec"]["containers"] + stored["spec"].get("initContainers", [])]
        assert len(names) == len(set(names)), names
        assert set(status_of(stored)) == {"logging", "metrics", "proxy"}
        assert stored["metadata"]["annotations"]["test.sidecar.io/containers"] == str(len(stored["spec"]["containers"]))
        volumes = [v["name"] for v in stored["spec"]["volumes"]]
        assert len(volumes) == len(set(volumes)), volumes
        app = stored["spec"]["containers"][0]
        assert len({m["mountPath"] for m in app["volumeMounts"]}) == len(app["volumeMounts"])
    finally:
        control_plane.kubectl("delete", "mutatingadmissionpolicybinding,mutatingadmissionpolicy", name, check=False)


def test_an_unknown_profile_name_is_warned_about_in_both_modes(policy_mode: PolicyMode) -> None:
    webhook, policy = policy_mode.both("plain", pod(unique("unknown"), {"sidecar.io/inject": "logging, no-such-profile"}))
    assert_same(webhook, policy)
    assert injected(policy) == {"logging"}
    for outcome in (webhook, policy):
        assert "unknown sidecar profile(s) no-such-profile" in outcome.warnings, outcome.warnings
        assert "available: backup, cert-renewal" in outcome.warnings, outcome.warnings


def test_strict_mode_refuses_the_same_pods_in_both_modes(
    policy_mode: PolicyMode, control_plane: ControlPlane, injector: Injector
) -> None:
    """injection.strict: the webhook denies bad values, unknown names and conflicts; in policy mode
    the validating policies' bindings say Deny (the only objects strict changes)."""
    strict = {**policy_mode.values, "injection": {"strict": True}}

    def bindings(values: dict[str, Any]) -> list[dict[str, Any]]:
        return [o for o in policy_mode.compiled(values) if o["kind"] == "ValidatingAdmissionPolicyBinding"]

    namespace = policy_mode.pairs["plain"].policy
    bad = {"sidecar.io/inject": "metrics", **BAD_VALUES["metrics"]}
    injector.restart(strict)
    control_plane.apply(bindings(strict))
    try:
        wait_for(
            "Deny in effect",
            lambda: policy_mode.create(namespace, pod(unique("deny"), bad)).pod is None,
            60,
            interval=0.5,
        )
        cases = [
            ({"sidecar.io/inject": p, **REQUIRED.get(p, {}), **BAD_VALUES[p]}, next(iter(BAD_VALUES[p]))) for p in PROFILES
        ]
        cases += [
            ({"sidecar.io/inject": "logging,no-such-profile"}, "no-such-profile"),
            ({"sidecar.io/inject": "git-sync"}, "git-sync.sidecar.io/repo is required"),
        ]
        for asked, said in cases:
            webhook, policy = policy_mode.both("plain", pod(unique("strict"), asked))
            assert webhook.pod is None and policy.pod is None, (asked, webhook.warnings, policy.warnings)
            for outcome in (webhook, policy):
                assert "denied" in outcome.error.lower() or "forbidden" in outcome.error.lower(), outcome.error
                assert said in outcome.error, outcome.error
        clash = pod(
            unique("clash"),
            {"sidecar.io/inject": "proxy"},
            containers=[{"name": "app", "image": "a:1", "ports": [{"containerPort": 15001}]}],
        )
        webhook, policy = policy_mode.both("plain", clash)
        for outcome in (webhook, policy):
            assert outcome.pod is None and "port 15001/TCP is already used by container app" in outcome.error
        # a pod that is fine is injected the same in strict mode
        webhook, policy = policy_mode.both("plain", pod(unique("fine"), {"sidecar.io/inject": "metrics"}))
        assert_same(webhook, policy)
    finally:
        injector.restart(policy_mode.values)
        control_plane.apply(bindings(policy_mode.values))
        wait_for(
            "Warn in effect again",
            lambda: policy_mode.create(namespace, pod(unique("warn"), bad)).pod is not None,
            60,
            interval=0.5,
        )


def test_the_charts_policy_mode_objects_are_accepted_by_the_api_server(
    policy_mode: PolicyMode, control_plane: ControlPlane, injector: Injector
) -> None:
    """helm template with injection.mode=policy: only policies and bindings, and the API server
    (server-side dry run, so nothing is bound) accepts every one of them, CEL compiled."""
    docs = injector.render({"injection": {"mode": "policy", "strict": True, "clusterWide": True}}, in_cluster=True)
    assert {d["kind"] for d in docs} == {
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    result = control_plane.apply(docs, "--dry-run=server", check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("(server dry run)") == len(docs), result.stdout
