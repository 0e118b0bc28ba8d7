"""The injection core: every rule of the annotation contract, and patches that apply.

Each injected answer is applied with ``jsonpatch`` (as the API server does) and the
resulting pod is checked with ``podcheck`` (Kubernetes schema + API-server pod rules).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import orjson
import pytest

from mutations import paths, replaced
from podcheck import assert_valid_pod
from sidecar_injector.base.text import printable
from sidecar_injector.core.decide import decide, parse_inject_value
from sidecar_injector.core.decision import MAX_WARNING_LENGTH, REASONS, Decision
from sidecar_injector.core.inputs import SYSTEM_NAMESPACES, InjectionPolicy, RequestContext
from sidecar_injector.core.plan import escape_pointer
from sidecar_injector.profiles.loading import ProfileSet, parse_profiles
from skip_record import assert_skip_recorded

PROFILES_YAML = """
name: logs
version: "1.0.0"
containers:
  - name: log-shipper
    image: busybox:1.37.0
    args: [sh, -c, "tail -F /logs/app.log"]
    ports: [{containerPort: 2020, name: shipper}]
    volumeMounts: [{name: sc-logs, mountPath: /logs, readOnly: true}]
volumes:
  - {name: sc-logs, emptyDir: {}}
appVolumeMounts:
  - {name: sc-logs, mountPath: /var/log/app}
appEnv:
  - {name: LOG_DIR, value: /var/log/app}
podAnnotations:
  example.com/logs: "shipped"
---
name: proxy
version: "2.1"
initContainers:
  - name: proxy-init
    image: busybox:1.37.0
    command: [sh, -c, "echo config > /config/envoy.yaml"]
    volumeMounts: [{name: sc-proxy-config, mountPath: /config}]
containers:
  - name: proxy
    image: envoyproxy/envoy:v1.31.2
    ports: [{containerPort: 15001, name: proxy}]
    volumeMounts: [{name: sc-proxy-config, mountPath: /config}]
volumes:
  - {name: sc-proxy-config, emptyDir: {}}
---
name: agent
version: "1"
nativeSidecar: true
containers:
  - name: agent
    image: busybox:1.37.0
    args: [sleep, infinity]
---
name: envonly
version: "1"
appEnv:
  - {name: FEATURE, value: "on"}
---
name: tilde
version: "1"
containers:
  - {name: tilde, image: "busybox:1.37.0"}
podAnnotations:
  tilde.example.com/key: "escaped"
"""
PROFILES = ProfileSet.of(parse_profiles(PROFILES_YAML, "test"))
POLICY = InjectionPolicy()
CREATE = RequestContext(operation="CREATE", namespace="default")


def make_pod(
    inject: str | None = "logs",
    *,
    annotations: dict[str, str] | None = None,
    volumes: list[dict[str, Any]] | None = None,
    init_containers: list[dict[str, Any]] | None = None,
    app: dict[str, Any] | None = None,
    extra_containers: list[dict[str, Any]] | None = None,
    metadata: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A pod as the API server sends it; optional arrays are left out unless given."""
    meta: dict[str, Any] = {"generateName": "web-7d9f8c-", "namespace": "default", "labels": {"app": "web"}}
    if metadata is not None:
        meta = metadata
    notes = dict(annotations or {})
    if inject is not None:
        notes["sidecar.io/inject"] = inject
    if notes:
        meta["annotations"] = notes
    pod_spec: dict[str, Any] = {"containers": [app or {"name": "app", "image": "nginx:1.27"}] + (extra_containers or [])}
    if volumes is not None:
        pod_spec["volumes"] = volumes
    if init_containers is not None:
        pod_spec["initContainers"] = init_containers
    pod_spec.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}


def run(
    pod: dict[str, Any], context: RequestContext = CREATE, policy: InjectionPolicy = POLICY, profiles=PROFILES
) -> Decision:
    before = copy.deepcopy(pod)
    decision = decide(pod, context, profiles, policy)
    assert pod == before, "the core must never modify the pod it is given"
    assert decision.reason in REASONS
    if decision.outcome == "denied" or (decision.outcome == "skipped" and not decision.skipped):
        assert decision.patch == []
    elif decision.outcome == "skipped" and decision.patch:
        # a pod whose requested profiles were all skipped: its status records them, and nothing else changes
        assert_skip_recorded(before, decision.patch, decision.skipped)
    return decision


def patched(pod: dict[str, Any], decision: Decision) -> dict[str, Any]:
    assert decision.outcome == "injected", decision
    result = jsonpatch.apply_patch(pod, copy.deepcopy(decision.patch), in_place=False)
    assert_valid_pod(result)
    return result


def names(containers: list[dict[str, Any]] | None) -> list[str]:
    return [c["name"] for c in containers or []]


def status_of(pod: dict[str, Any]) -> dict[str, Any]:
    return json.loads(pod["metadata"]["annotations"]["sidecar.io/status"])["profiles"]


# -- the annotation value -------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,expected",
    [
        ("logging", ["logging"]),
        ("logging,metrics", ["logging", "metrics"]),
        (" logging , metrics ", ["logging", "metrics"]),
        ("logging,,metrics,", ["logging", "metrics"]),
        ("logging,logging", ["logging"]),
        ("false", None),
        (" FALSE ", None),
        ("", []),
        (" , ", []),
    ],
)
def test_the_inject_annotation_is_a_comma_list_or_false(value, expected):
    assert parse_inject_value(value) == expected


# -- when nothing is injected ------------------------------------------------------------


@pytest.mark.parametrize(
    "pod,context,reason",
    [
        (make_pod(inject=None), CREATE, "not-requested"),
        (make_pod(inject=None, annotations={"other": "x"}), CREATE, "not-requested"),
        (make_pod("false"), CREATE, "opted-out"),
        (make_pod("False"), CREATE, "opted-out"),
        (make_pod("logs"), RequestContext(operation="UPDATE", namespace="default"), "operation-not-create"),
        (make_pod("logs"), RequestContext(operation="DELETE", namespace="default"), "operation-not-create"),
        (make_pod("logs"), RequestContext(operation="CONNECT", namespace="default"), "operation-not-create"),
        (make_pod("logs"), RequestContext(kind="Deployment", namespace="default"), "not-a-pod"),
        (make_pod("logs"), RequestContext(namespace="kube-system"), "excluded-namespace"),
        (make_pod("logs"), RequestContext(namespace="kube-public"), "excluded-namespace"),
        (make_pod("logs"), RequestContext(namespace="kube-node-lease"), "excluded-namespace"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_pods_that_must_not_be_injected_are_admitted_unchanged(pod, context, reason):
    decision = run(pod, context)
    assert decision.outcome == "skipped"
    assert decision.allowed
    assert decision.reason == reason


def test_the_namespace_comes_from_the_pod_when_the_request_has_none():
    pod = make_pod("logs")
    pod["metadata"]["namespace"] = "kube-system"
    assert run(pod, RequestContext(namespace=None)).reason == "excluded-namespace"


def test_the_injectors_own_and_configured_namespaces_are_never_injected():
    policy = InjectionPolicy(never_inject_namespaces=SYSTEM_NAMESPACES | {"sidecar-injector", "legacy"})
    for namespace in ("sidecar-injector", "legacy"):
        assert run(make_pod("logs"), RequestContext(namespace=namespace), policy).reason == "excluded-namespace"
    assert run(make_pod("logs"), RequestContext(namespace="default"), policy).outcome == "injected"


def test_an_empty_annotation_injects_nothing_and_says_so():
    decision = run(make_pod(" , "))
    assert decision.reason == "not-requested"
    assert any("empty" in w for w in decision.warnings)


def test_true_means_the_configured_default_profiles():
    decision = run(make_pod("true"), policy=InjectionPolicy(default_profiles=("logs", "proxy")))
    assert decision.injected == ("logs", "proxy")
    without = run(make_pod("true"))
    assert without.outcome == "skipped" and "no default profiles" in without.warnings[0]


def test_dry_run_gets_exactly_the_same_patch():
    pod = make_pod("logs,proxy")
    assert run(pod, RequestContext(namespace="default", dry_run=True)).patch == run(pod).patch


# -- unknown profiles ---------------------------------------------------------------------


def test_unknown_profiles_warn_and_the_known_ones_are_still_injected():
    decision = run(make_pod("logs,nope,also-nope"))
    assert decision.outcome == "injected"
    assert decision.injected == ("logs",)
    (warning,) = decision.warnings
    assert "nope, also-nope" in warning
    assert "available: agent, envonly, logs, proxy, tilde" in warning


def test_only_unknown_profiles_admit_the_pod_with_a_warning_and_the_record_alone():
    decision = run(make_pod("nope"))
    assert decision.outcome == "skipped" and decision.reason == "no-known-profiles"
    assert "nope" in decision.warnings[0]
    assert_skip_recorded(make_pod("nope"), decision.patch, {"nope": "unknown profile"})


def test_strict_mode_denies_unknown_profiles_with_an_actionable_message():
    decision = run(make_pod("logs,nope"), policy=InjectionPolicy(strict=True))
    assert decision.outcome == "denied" and not decision.allowed
    assert decision.reason == "unknown-profiles"
    assert "nope" in decision.message and "available: " in decision.message


def test_odd_profile_names_are_echoed_safely_and_bounded():
    hostile = "x" * 500 + "\x1b[31m\u202e" + ",".join(f"n{i}" for i in range(100))
    decision = run(make_pod(hostile + ",logs"))
    (warning,) = decision.warnings
    assert len(warning) < 600
    assert all(" " <= ch <= "~" for ch in warning)
    assert "more" in warning
    assert printable("a\nb") == "a?b"


# -- what gets injected --------------------------------------------------------------------


def test_a_profile_adds_its_sidecar_volume_mounts_env_annotations_and_status():
    pod = make_pod("logs")
    result = patched(pod, run(pod))
    spec = result["spec"]
    assert names(spec["containers"]) == ["app", "log-shipper"]
    assert spec["volumes"] == [{"name": "sc-logs", "emptyDir": {}}]
    assert spec["containers"][0]["volumeMounts"] == [{"name": "sc-logs", "mountPath": "/var/log/app"}]
    assert spec["containers"][0]["env"] == [{"name": "LOG_DIR", "value": "/var/log/app"}]
    notes = result["metadata"]["annotations"]
    assert notes["example.com/logs"] == "shipped"
    assert status_of(result) == {
        "logs": {
            "version": "1.0.0",
            "hash": PROFILES["logs"].hash,
            "native": False,
            "containers": ["log-shipper"],
            "volumes": ["sc-logs"],
        }
    }


def test_several_profiles_are_injected_in_the_order_asked():
    pod = make_pod("proxy, logs")
    decision = run(pod)
    assert decision.injected == ("proxy", "logs")
    result = patched(pod, decision)
    assert names(result["spec"]["containers"]) == ["app", "proxy", "log-shipper"]
    assert names(result["spec"]["initContainers"]) == ["proxy-init"]
    assert set(status_of(result)) == {"proxy", "logs"}


def _pod_variants() -> list[tuple[str, dict[str, Any]]]:
    token_volume = {"name": "kube-api-access-x", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}
    mount = {"name": "kube-api-access-x", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True}
    init = {"name": "migrate", "image": "busybox:1.37.0"}
    return [
        ("bare", make_pod("X")),
        (
            "empty-arrays",
            make_pod(
                "X",
                volumes=[],
                init_containers=[],
                app={"name": "app", "image": "nginx:1.27", "volumeMounts": [], "env": []},
            ),
        ),
        (
            "deployment-pod",
            make_pod(
                "X",
                volumes=[token_volume],
                app={"name": "app", "image": "nginx:1.27", "volumeMounts": [mount], "env": [{"name": "A", "value": "1"}]},
            ),
        ),
        ("named-pod-no-annotations-map", make_pod(None, metadata={"name": "solo", "namespace": "default"})),
        ("with-init-containers", make_pod("X", init_containers=[init])),
        (
            "with-native-sidecar",
            make_pod(
                "X",
                init_containers=[
                    {
                        "name": "native-agent",
                        "image": "istio/proxyv2:1.24.0",
                        "restartPolicy": "Always",
                        "ports": [{"containerPort": 15090}],
                    }
                ],
            ),
        ),
        ("two-app-containers", make_pod("X", extra_containers=[{"name": "worker", "image": "busybox:1.37.0"}])),
        ("unknown-fields", make_pod("X", someFutureField={"keep": True})),
    ]


@pytest.mark.parametrize("request_value", ["logs", "proxy", "agent", "envonly", "tilde", "logs,proxy,agent,envonly,tilde"])
@pytest.mark.parametrize("variant,template", _pod_variants(), ids=[v[0] for v in _pod_variants()])
def test_the_patch_applies_to_every_pod_shape(variant, template, request_value):
    pod = copy.deepcopy(template)
    pod["metadata"].setdefault("annotations", {})["sidecar.io/inject"] = request_value
    if variant == "named-pod-no-annotations-map":  # only the inject key: exercises creating keys next to it
        pod["metadata"]["annotations"] = {"sidecar.io/inject": request_value}
    if variant == "unknown-fields":
        pod = make_pod(request_value, someFutureField={"keep": True})
    decision = run(pod)
    if variant == "unknown-fields":
        # the schema does not know the field, so only check the patch applies and keeps it
        result = jsonpatch.apply_patch(pod, copy.deepcopy(decision.patch), in_place=False)
        assert result["spec"]["someFutureField"] == {"keep": True}
        return
    result = patched(pod, decision)
    assert set(status_of(result)) == set(request_value.split(","))
    for field in ("name", "generateName", "namespace", "uid", "labels"):
        assert result["metadata"].get(field) == pod["metadata"].get(field)
    assert result["apiVersion"] == "v1" and result["kind"] == "Pod"
    # the pod's own containers and volumes keep their place and content
    for key in ("containers", "initContainers", "volumes"):
        original = pod["spec"].get(key) or []
        for i, item in enumerate(original):
            kept = result["spec"][key][i]
            for field, value in item.items():
                if field not in ("volumeMounts", "env"):
                    assert kept[field] == value
    # a second round changes nothing
    again = run(result)
    assert again.outcome == "skipped" and again.reason == "already-injected"


def test_no_operation_touches_identity_fields():
    pod = make_pod("logs,proxy,agent,tilde", metadata={"name": "p", "namespace": "default", "uid": "u-1"})
    for op in run(pod).patch:
        assert op["op"] == "add"
        assert op["path"] not in ("/metadata/name", "/metadata/namespace", "/metadata/uid", "/kind", "/apiVersion")
        assert not op["path"].startswith("/metadata/name")


def test_annotation_keys_are_escaped_in_json_pointers():
    pod = make_pod("tilde")
    ops = run(pod).patch
    paths = [op["path"] for op in ops]
    assert "/metadata/annotations/tilde.example.com~1key" in paths
    assert "/metadata/annotations/sidecar.io~1status" in paths
    assert patched(pod, run(pod))["metadata"]["annotations"]["tilde.example.com/key"] == "escaped"
    assert escape_pointer("a~b/c") == "a~0b~1c"


def test_missing_arrays_are_created_once_then_appended_to():
    pod = make_pod("logs,proxy", app={"name": "app", "image": "nginx:1.27"})
    ops = run(pod).patch
    creators = [op["path"] for op in ops if not op["path"].endswith("/-") and isinstance(op["value"], list)]
    # each absent array is created exactly once, however many profiles add to it
    assert sorted(creators) == sorted(
        ["/spec/volumes", "/spec/initContainers", "/spec/containers/0/volumeMounts", "/spec/containers/0/env"]
    )


def test_a_pod_without_annotations_gets_an_annotations_map():
    pod = make_pod("logs")
    pod["metadata"]["annotations"] = {"sidecar.io/inject": "logs"}
    result = patched(pod, run(pod))
    assert result["metadata"]["annotations"]["sidecar.io/inject"] == "logs"


def test_app_env_never_overrides_the_pods_own_value():
    pod = make_pod("logs", app={"name": "app", "image": "nginx:1.27", "env": [{"name": "LOG_DIR", "value": "/mine"}]})
    decision = run(pod)
    result = patched(pod, decision)
    assert result["spec"]["containers"][0]["env"] == [{"name": "LOG_DIR", "value": "/mine"}]
    assert decision.warnings == ()


def test_profile_pod_annotations_never_override_the_pods_own():
    pod = make_pod("logs", annotations={"example.com/logs": "mine"})
    result = patched(pod, run(pod))
    assert result["metadata"]["annotations"]["example.com/logs"] == "mine"


def test_every_application_container_gets_the_mounts_and_env():
    pod = make_pod("logs", extra_containers=[{"name": "worker", "image": "busybox:1.37.0"}])
    result = patched(pod, run(pod))
    for container in result["spec"]["containers"][:2]:
        assert {"name": "sc-logs", "mountPath": "/var/log/app"} in container["volumeMounts"]
        assert {"name": "LOG_DIR", "value": "/var/log/app"} in container["env"]
    assert "env" not in result["spec"]["containers"][2]  # the sidecar itself is not an app


# -- idempotency and reinvocation -----------------------------------------------------------


def test_reinvocation_with_the_patched_pod_adds_nothing():
    pod = make_pod("logs,proxy,agent")
    result = patched(pod, run(pod))
    second = run(result)
    assert second.outcome == "skipped" and second.reason == "already-injected" and second.patch == []


def test_a_profile_requested_later_is_added_without_touching_the_earlier_ones():
    pod = make_pod("logs")
    first = patched(pod, run(pod))
    first["metadata"]["annotations"]["sidecar.io/inject"] = "logs,envonly"
    decision = run(first)
    assert decision.injected == ("envonly",)
    second = patched(first, decision)
    assert set(status_of(second)) == {"logs", "envonly"}
    shipper = second["spec"]["containers"][1]
    assert shipper["name"] == "log-shipper" and "env" not in shipper  # not treated as an app container
    assert {"name": "FEATURE", "value": "on"} in second["spec"]["containers"][0]["env"]


def test_an_unreadable_status_annotation_is_reported_and_conflicts_prevent_duplicates():
    pod = make_pod("logs")
    result = patched(pod, run(pod))
    result["metadata"]["annotations"]["sidecar.io/status"] = "{not json"
    decision = run(result)
    assert any("unreadable" in w for w in decision.warnings)
    # the profile's sidecar is already there: the whole profile conflicts, nothing is duplicated;
    # the status (unreadable, so replaced as an injection replaces it) records why
    assert decision.outcome == "skipped" and decision.reason == "conflicts"
    assert any("container log-shipper already exists" in w for w in decision.warnings)
    status = assert_skip_recorded(result, decision.patch, ["logs"])
    assert "container log-shipper already exists" in status["skipped"]["logs"]


# -- conflicts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pod,phrase,kept",
    [
        (
            make_pod("logs", extra_containers=[{"name": "log-shipper", "image": "mine:1"}]),
            "container log-shipper already exists",
            "log-shipper",
        ),
        (
            make_pod("logs", init_containers=[{"name": "log-shipper", "image": "mine:1"}]),
            "container log-shipper already exists",
            None,
        ),
        (
            make_pod("logs", volumes=[{"name": "sc-logs", "emptyDir": {"medium": "Memory"}}]),
            "volume sc-logs already exists",
            None,
        ),
        (
            make_pod(
                "logs",
                volumes=[{"name": "mine", "emptyDir": {}}],
                app={"name": "app", "image": "nginx:1.27", "volumeMounts": [{"name": "mine", "mountPath": "/var/log/app"}]},
            ),
            "already mounts /var/log/app",
            None,
        ),
        (
            make_pod("logs", app={"name": "app", "image": "nginx:1.27", "ports": [{"containerPort": 2020}]}),
            "port 2020/TCP is already used",
            None,
        ),
        (
            make_pod(
                "logs",
                init_containers=[
                    {"name": "native", "image": "x:1", "restartPolicy": "Always", "ports": [{"containerPort": 2020}]}
                ],
            ),
            "port 2020/TCP is already used",
            None,
        ),
    ],
    ids=["container-name", "init-container-name", "volume-name", "mount-path", "port", "native-sidecar-port"],
)
def test_a_conflicting_profile_is_skipped_whole_with_one_warning(pod, phrase, kept):
    decision = run(pod)
    assert decision.outcome == "skipped" and decision.reason == "conflicts"
    # nothing of it: no volume, no init container, no status entry; only the record of why
    status = assert_skip_recorded(pod, decision.patch, ["logs"])
    assert phrase in status["skipped"]["logs"]
    [warning] = decision.warnings
    assert warning.startswith("sidecar-injector: profile logs not injected: ") and phrase in warning, warning


@pytest.mark.parametrize("conflicting", ["container", "volume", "mount", "port"])
def test_a_skipped_profile_leaves_no_trace_while_the_others_are_injected(conflicting):
    pod = {
        "container": lambda: make_pod("logs,proxy", extra_containers=[{"name": "log-shipper", "image": "mine:1"}]),
        "volume": lambda: make_pod("logs,proxy", volumes=[{"name": "sc-logs", "emptyDir": {}}]),
        "mount": lambda: make_pod(
            "logs,proxy",
            volumes=[{"name": "host-logs", "hostPath": {"path": "/var/log"}}],
            app={"name": "app", "image": "nginx:1.27", "volumeMounts": [{"name": "host-logs", "mountPath": "/var/log"}]},
        ),
        "port": lambda: make_pod(
            "logs,proxy", app={"name": "app", "image": "nginx:1.27", "ports": [{"containerPort": 2020}]}
        ),
    }[conflicting]()
    decision = run(pod)
    assert decision.outcome == "injected" and decision.injected == ("proxy",)
    result = patched(pod, decision)
    assert set(status_of(result)) == {"proxy"}
    spec = result["spec"]
    added = {c["name"] for c in [*spec["containers"], *(spec.get("initContainers") or [])]} - {
        c["name"] for c in [*pod["spec"]["containers"], *(pod["spec"].get("initContainers") or [])]
    }
    assert added == {"proxy", "proxy-init"}
    assert "sc-logs" not in {v["name"] for v in spec.get("volumes") or []} - {
        v["name"] for v in pod["spec"].get("volumes") or []
    }
    assert all(
        m.get("mountPath") != "/var/log/app"
        for c in spec["containers"]
        for m in c.get("volumeMounts") or []
        if c["name"] == "app"
    )
    assert "example.com/logs" not in result["metadata"]["annotations"]
    assert len([w for w in decision.warnings if "profile logs not injected" in w]) == 1


def test_a_run_to_completion_init_container_port_is_not_a_conflict():
    pod = make_pod("logs", init_containers=[{"name": "setup", "image": "x:1", "ports": [{"containerPort": 2020}]}])
    decision = run(pod)
    assert decision.warnings == ()


def test_strict_mode_denies_conflicts_naming_them():
    pod = make_pod("logs", extra_containers=[{"name": "log-shipper", "image": "mine:1"}])
    decision = run(pod, policy=InjectionPolicy(strict=True))
    assert decision.outcome == "denied" and decision.reason == "conflicts"
    assert "log-shipper" in decision.message


def test_two_profiles_that_collide_with_each_other_do_not_break_the_pod():
    clash = ProfileSet.of(
        parse_profiles(
            PROFILES_YAML
            + """
---
name: logs2
version: "1"
containers:
  - {name: log-shipper, image: "busybox:1.37.0"}
volumes:
  - {name: sc-logs, emptyDir: {}}
appVolumeMounts:
  - {name: sc-logs, mountPath: /var/log/app}
""",
            "test",
        )
    )
    pod = make_pod("logs,logs2")
    decision = run(pod, profiles=clash)
    assert decision.injected == ("logs",)
    assert decision.warnings == (
        (
            "sidecar-injector: profile logs2 not injected: volume sc-logs already exists; "
            "container log-shipper already exists; container app already mounts /var/log/app"
        ),
    )
    patched(pod, decision)


def test_warnings_stay_short_enough_to_be_shown_whole_however_much_is_wrong():
    many = ProfileSet.of(
        parse_profiles(
            "\n---\n".join(
                f"name: profile-with-a-long-name-{i:03d}\nversion: '1'\nappEnv: [{{name: V{i}, value: x}}]"
                for i in range(60)
            ),
            "many",
        )
    )
    unknown = ",".join(f"unknown-profile-with-a-long-name-{i}" for i in range(40))
    decision = run(make_pod(unknown + ",profile-with-a-long-name-001"), profiles=many)
    assert decision.warnings and all(len(w) <= MAX_WARNING_LENGTH for w in decision.warnings)
    assert "and 35 more" in decision.warnings[0]

    taken = [
        {"name": f"app{i}", "image": "nginx:1.27", "volumeMounts": [{"name": "mine", "mountPath": "/var/log/app"}]}
        for i in range(12)
    ]
    pod = make_pod("logs", volumes=[{"name": "mine", "emptyDir": {}}], app=taken[0], extra_containers=taken[1:])
    decision = run(pod)
    [warning] = decision.warnings  # one per profile, listing the first conflicts and how many more
    assert warning.startswith("sidecar-injector: profile logs not injected: container app0 already mounts")
    assert warning.endswith("; and 8 more") and len(warning) <= MAX_WARNING_LENGTH
    status = assert_skip_recorded(pod, decision.patch, ["logs"])
    assert status["skipped"]["logs"].endswith("; and 8 more") and len(status["skipped"]["logs"]) <= 200


def test_profile_names_in_the_annotation_are_case_insensitive():
    assert run(make_pod("Logs, PROXY")).injected == ("logs", "proxy")


# -- native sidecars --------------------------------------------------------------------------

JOB_OWNER = {"apiVersion": "batch/v1", "kind": "Job", "name": "report", "uid": "j-1", "controller": True}


def _where(result: dict[str, Any], name: str) -> str:
    spec = result["spec"]
    if name in names(spec["containers"]):
        return "container"
    (init,) = [c for c in spec.get("initContainers") or [] if c["name"] == name]
    assert init.get("restartPolicy") == "Always"
    return "native"


@pytest.mark.parametrize(
    "pod,policy,expected",
    [
        (make_pod("logs"), POLICY, "container"),
        (make_pod("logs", metadata={"generateName": "report-", "ownerReferences": [JOB_OWNER]}), POLICY, "native"),
        (make_pod("logs", restartPolicy="Never"), POLICY, "native"),
        (make_pod("logs", restartPolicy="OnFailure"), POLICY, "native"),
        (make_pod("logs", restartPolicy="Always"), POLICY, "container"),
        (make_pod("logs", annotations={"sidecar.io/native-sidecars": "true"}), POLICY, "native"),
        (
            make_pod("logs", restartPolicy="Never", annotations={"sidecar.io/native-sidecars": "false"}),
            POLICY,
            "container",
        ),
        (make_pod("logs"), InjectionPolicy(native_sidecars="always"), "native"),
        (
            make_pod("logs", annotations={"sidecar.io/native-sidecars": "false"}),
            InjectionPolicy(native_sidecars="always"),
            "container",
        ),
        (make_pod("logs", restartPolicy="Never"), InjectionPolicy(native_sidecars="never"), "container"),
        (
            make_pod("logs", annotations={"sidecar.io/native-sidecars": "true"}),
            InjectionPolicy(native_sidecars="never"),
            "container",
        ),
    ],
    ids=[
        "default",
        "job-owned",
        "restart-never",
        "restart-onfailure",
        "restart-always",
        "pod-asks",
        "pod-refuses-despite-never",
        "setting-always",
        "pod-refuses-always",
        "setting-never",
        "setting-never-beats-pod",
    ],
)
def test_native_sidecars_follow_jobs_requests_and_settings(pod, policy, expected):
    result = patched(pod, run(pod, policy=policy))
    assert _where(result, "log-shipper") == expected
    assert status_of(result)["logs"]["native"] is (expected == "native")


def test_a_profile_can_ask_for_native_sidecars():
    pod = make_pod("agent")
    result = patched(pod, run(pod))
    assert _where(result, "agent") == "native"
    assert "restartPolicy" not in PROFILES["agent"].containers[0]  # the profile itself is untouched


def test_native_sidecars_come_after_the_pods_init_containers_and_the_profiles_own():
    pod = make_pod(
        "proxy",
        init_containers=[{"name": "migrate", "image": "busybox:1.37.0"}],
        annotations={"sidecar.io/native-sidecars": "true"},
    )
    result = patched(pod, run(pod))
    assert names(result["spec"]["initContainers"]) == ["migrate", "proxy-init", "proxy"]


def test_an_invalid_native_override_is_ignored_with_a_warning():
    decision = run(make_pod("logs", annotations={"sidecar.io/native-sidecars": "maybe"}))
    assert decision.outcome == "injected"
    assert any("native-sidecars" in w for w in decision.warnings)


def test_the_owner_kind_of_the_context_makes_templates_run_to_completion():
    decision = run(make_pod("logs"), RequestContext(namespace="default", owner_kind="Job"))
    assert _where(patched(make_pod("logs"), decision), "log-shipper") == "native"


# -- malformed pods never crash the core ---------------------------------------------------


@pytest.mark.parametrize(
    "pod",
    [
        None,
        [],
        "pod",
        {"metadata": "x"},
        {"metadata": {"annotations": ["x"]}},
        {"metadata": {"annotations": {"sidecar.io/inject": 5}}},
        {"metadata": {"annotations": {"sidecar.io/inject": "logs"}}},
        {"metadata": {"annotations": {"sidecar.io/inject": "logs"}}, "spec": []},
        {"metadata": {"annotations": {"sidecar.io/inject": "logs"}}, "spec": {"containers": []}},
        {"metadata": {"annotations": {"sidecar.io/inject": "logs"}}, "spec": {"containers": "app"}},
        {"metadata": {"annotations": {"sidecar.io/inject": "logs"}}, "spec": {"containers": [{"image": "x"}]}},
        {"metadata": {"annotations": {"sidecar.io/inject": "logs"}}, "spec": {"containers": [{"name": "a"}], "volumes": {}}},
        {"metadata": {"annotations": {"sidecar.io/inject": "logs"}}, "spec": {"containers": [{"name": "a", "env": "x"}]}},
        {
            "metadata": {"annotations": {"sidecar.io/inject": "logs"}},
            "spec": {"containers": [{"name": "a"}], "initContainers": [None]},
        },
    ],
)
def test_a_malformed_pod_is_admitted_never_crashes_and_at_most_records_why(pod):
    decision = decide(pod, CREATE, PROFILES, POLICY)
    assert decision.allowed
    assert decision.reason in ("invalid-pod", "not-requested")
    if decision.reason == "invalid-pod" and decision.requested:
        # its metadata and request are readable, its spec is not: the pod records why, nothing more
        status = assert_skip_recorded(pod, decision.patch, ["logs"])
        assert status["skipped"]["logs"] == decision.message
    else:
        assert decision.patch == []


def test_windows_pods_are_not_injected_and_record_why():
    decision = run(make_pod("logs", os={"name": "windows"}))
    assert decision.reason == "unsupported-os" and decision.warnings
    status = assert_skip_recorded(make_pod("logs", os={"name": "windows"}), decision.patch, ["logs"])
    assert status["skipped"]["logs"] == "windows pods are not injected (spec.os.name: windows)"


def test_a_large_pod_gets_a_patch_proportional_to_what_is_added():
    apps = [
        {"name": f"c{i}", "image": "nginx:1.27", "env": [{"name": f"E{j}", "value": "v"} for j in range(50)]}
        for i in range(40)
    ]
    pod = make_pod("logs,proxy", app=apps[0], extra_containers=apps[1:])
    decision = run(pod)
    result = patched(pod, decision)
    assert len(result["spec"]["containers"]) == 42
    # per app container: one mount op and one env op; then one op creating the volumes array
    # with both volumes, one per sidecar, one creating initContainers, one per new annotation
    assert len(decision.patch) == 40 * 2 + 1 + 2 + 1 + 2


def test_a_huge_annotation_value_is_handled_in_linear_time():
    value = ",".join(f"p{i}" for i in range(30_000)) + ",logs"  # ~200 KB: under the annotation limit
    decision = run(make_pod(value))  # quadratic de-duplication would take many seconds here
    assert decision.injected == ("logs",)
    assert "and 29995 more" in decision.warnings[0]


def test_any_value_of_the_wrong_type_anywhere_in_the_pod_never_crashes_the_core():
    """Type-confusion sweep over every node of a rich pod: the core always decides, and
    whatever patch it returns applies to the pod it was given."""
    rich = make_pod(
        "logs,proxy,agent",
        annotations={
            "sidecar.io/native-sidecars": "true",
            "sidecar.io/status": '{"profiles": {"envonly": {"containers": ["x"]}}}',
        },
        volumes=[{"name": "data", "emptyDir": {}}],
        init_containers=[
            {
                "name": "init",
                "image": "busybox:1.37.0",
                "restartPolicy": "Always",
                "ports": [{"containerPort": 7000, "protocol": "UDP"}],
            }
        ],
        app={
            "name": "app",
            "image": "nginx:1.27",
            "ports": [{"containerPort": 8080}],
            "env": [{"name": "A", "value": "1"}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        },
        metadata={"generateName": "web-", "ownerReferences": [JOB_OWNER]},
        restartPolicy="Always",
    )
    oddities = [None, "", "x", 0, True, [], [None], {}, {"name": 1}, [[1]]]
    outcomes: dict[str, int] = {}
    for path in paths(rich):
        for odd in oddities:
            pod = replaced(rich, path, odd)
            decision = decide(pod, CREATE, PROFILES, POLICY)
            outcomes[decision.outcome] = outcomes.get(decision.outcome, 0) + 1
            if decision.patch:
                jsonpatch.apply_patch(pod, copy.deepcopy(decision.patch), in_place=False)
    assert outcomes.get("injected", 0) > 100 and outcomes.get("skipped", 0) > 10


def test_a_pod_whose_annotations_would_outgrow_the_api_server_limit_is_not_injected():
    big = "x" * (256 * 1024 - 200)
    pod = make_pod("logs", annotations={"example.com/big": big})
    decision = run(pod)
    assert decision.outcome == "skipped" and decision.reason == "annotations-too-large"
    assert any("256 KiB" in w for w in decision.warnings)
    # the status with the profile's entry does not fit; the shorter record of why still does
    assert_skip_recorded(pod, decision.patch, {"logs": decision.message})
    # ... unless even that would not fit: then nothing at all
    full = make_pod("logs", annotations={"example.com/big": "x" * (256 * 1024 - 100)})
    nothing = run(full)
    assert nothing.reason == "annotations-too-large" and nothing.skipped == {"logs": decision.message}
    assert nothing.patch == []
    strict = run(pod, policy=InjectionPolicy(strict=True))
    assert strict.outcome == "denied" and strict.reason == "annotations-too-large"
    roomy = make_pod("logs", annotations={"example.com/big": "x" * (200 * 1024)})
    patched(roomy, run(roomy))  # well under the limit: injected, and valid


def test_a_hand_edited_status_is_carried_over_only_in_the_shape_we_write():
    deep = "[" * 500 + "]" * 500  # parses, but deeper than a JSON encoder will write back
    envonly = f'{{"version": "1", "hash": "abc", "extra": {deep}, "containers": ["x", 1]}}'
    status = f'{{"profiles": {{"envonly": {envonly}, "proxy": 7}}}}'
    pod = make_pod("logs,envonly,proxy", annotations={"sidecar.io/status": status})
    decision = run(pod)
    assert decision.injected == ("logs",)
    result = patched(pod, decision)
    assert status_of(result)["envonly"] == {"version": "1", "hash": "abc", "containers": ["x"]}
    assert status_of(result)["proxy"] == {}


def test_conflict_warnings_echo_the_pods_names_safely():
    pod = make_pod(
        "logs",
        volumes=[{"name": "mine", "emptyDir": {}}],
        app={
            "name": "app\n\x1b[31m",
            "image": "nginx:1.27",
            "volumeMounts": [{"name": "mine", "mountPath": "/var/log/app"}],
        },
    )
    decision = run(pod)
    assert decision.warnings
    assert all(" " <= ch <= "~" for w in decision.warnings for ch in w)


# -- the size the API server stores ----------------------------------------------------------


def _sized(pod: dict[str, Any]) -> int:
    return len(orjson.dumps(pod))


def test_a_pod_that_injection_would_push_over_the_object_size_limit_is_not_injected():
    pod = make_pod("logs")
    size = _sized(pod)
    small = InjectionPolicy(max_object_bytes=size + 50)  # the logs profile adds more than 50 bytes
    decision = run(pod, RequestContext(namespace="default", object_bytes=size), small)
    assert decision.outcome == "skipped" and decision.reason == "pod-too-large"
    assert decision.patch == []
    assert any("KiB" in w and "nothing injected" in w for w in decision.warnings)


def test_a_pod_too_large_after_injection_is_denied_in_strict_mode():
    pod = make_pod("logs")
    size = _sized(pod)
    decision = run(
        pod, RequestContext(namespace="default", object_bytes=size), InjectionPolicy(strict=True, max_object_bytes=size)
    )
    assert decision.outcome == "denied" and decision.reason == "pod-too-large"


def test_a_pod_with_room_to_spare_is_injected_and_an_unknown_size_is_not_checked():
    pod = make_pod("logs")
    roomy = run(pod, RequestContext(namespace="default", object_bytes=_sized(pod)))
    assert roomy.outcome == "injected"
    unknown = run(pod, RequestContext(namespace="default"), InjectionPolicy(max_object_bytes=1))
    assert unknown.outcome == "injected"
