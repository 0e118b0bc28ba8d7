"""Per-workload sidecars: typed parameters, placeholders, resource overrides, ordering, pull secrets.

The profile author declares what a pod may set; the pod (or its namespace) sets it with
``<profile>.sidecar.io/<parameter>`` annotations; every value is checked before it touches
the pod. Each injected pod is applied with jsonpatch and checked with podcheck (schema, the
API server's pod rules, and the restricted Pod Security Standard).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podcheck import assert_pss_restricted, assert_valid_pod
from sidecar_injector.core.decide import decide
from sidecar_injector.core.decision import Decision
from sidecar_injector.core.inputs import InjectionPolicy, NamespaceFacts, RequestContext
from sidecar_injector.profiles.loading import ProfileError, ProfileSet, parse_profiles
from skip_record import assert_skip_recorded

SECURE = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 65533,
    "seccompProfile": {"type": "RuntimeDefault"},
}

PROFILES_YAML = f"""
name: git-sync
version: "2.0.0"
parameters:
  repo:
    description: Git repository to sync (https:// or ssh://)
    type: string
    pattern: '^(https|ssh)://\\S+$'
    maxLength: 2048
  period:
    type: duration
    default: 60s
    minimum: 5s
    maximum: 1h
  port:
    type: integer
    default: 8080
    minimum: 1
    maximum: 65535
  verbose:
    type: boolean
    default: false
  depth:
    type: enum
    enum: [shallow, full]
    default: shallow
  cache:
    type: quantity
    default: 64Mi
    maximum: 1Gi
containers:
  - name: sidecar-git-sync
    image: registry.k8s.io/git-sync/git-sync:v4.4.0
    args: ["--repo=$(GITSYNC_REPO)", "--verbose={{{{ params.verbose }}}}"]
    env:
      - {{name: GITSYNC_REPO, value: "{{{{ params.repo }}}}"}}
      - {{name: GITSYNC_PERIOD, value: "{{{{ params.period }}}}"}}
      - {{name: GITSYNC_DEPTH, value: "{{{{ params.depth }}}}"}}
      - {{name: TEAM, value: "{{{{ pod.labels['team'] }}}}"}}
      - {{name: WHERE, value: "{{{{ pod.namespace }}}}/{{{{ pod.serviceAccountName }}}}"}}
      - {{name: OWNER, value: "{{{{ pod.ownerKind }}}}/{{{{ pod.ownerName }}}}"}}
      - {{name: NOTE, value: "{{{{ pod.annotations['example.com/note'] }}}}"}}
      - {{name: HOME, value: /tmp}}
    ports:
      - {{name: gs-http, containerPort: "{{{{ params.port }}}}"}}
    readinessProbe:
      httpGet: {{path: /, port: "{{{{ params.port }}}}"}}
    volumeMounts: [{{name: content, mountPath: /git}}]
    securityContext: {json.dumps(SECURE)}
    resources:
      requests: {{cpu: 10m, memory: 32Mi}}
      limits: {{cpu: 100m, memory: "{{{{ params.cache }}}}"}}
volumes:
  - {{name: content, emptyDir: {{}}}}
appVolumeMounts:
  - {{name: content, mountPath: /srv/content, readOnly: true}}
podAnnotations:
  example.com/synced-from: "{{{{ params.repo }}}}"
---
name: mesh
version: "1"
placement: first
nativeSidecar: true
waitReady: true
imagePullSecrets: [registry-creds]
maxResources: {{cpu: 500m, memory: 256Mi}}
containers:
  - name: mesh-proxy
    image: envoyproxy/envoy:v1.31.2
    ports: [{{name: mesh, containerPort: 15001}}]
    readinessProbe:
      tcpSocket: {{port: 15001}}
      timeoutSeconds: 2
    securityContext: {json.dumps(SECURE)}
    resources:
      requests: {{cpu: 50m, memory: 64Mi}}
      limits: {{cpu: 200m, memory: 128Mi}}
initContainers:
  - name: mesh-init
    image: busybox:1.37.0
    args: [sh, -c, "true"]
    securityContext: {json.dumps(SECURE)}
"""
PROFILES = ProfileSet.of(parse_profiles(PROFILES_YAML, "test"))
POLICY = InjectionPolicy()
PREFIX = "sidecar-injector: "
REPO = "https://github.com/acme/site"


def pod(inject: str = "git-sync", annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "site-7d9f8c-",
            "namespace": "web",
            "labels": {"app": "site", "team": "blue"},
            "annotations": {"sidecar.io/inject": inject, **(annotations or {})},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "site-7d9f8c", "uid": "r1", "controller": True}
            ],
        },
        "spec": {
            "serviceAccountName": "site",
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "site", "image": "nginx:1.27.3", "securityContext": SECURE}],
            **spec,
        },
    }


def run(the_pod: dict[str, Any], policy: InjectionPolicy = POLICY, namespace: NamespaceFacts | None = None) -> Decision:
    before = copy.deepcopy(the_pod)
    decision = decide(the_pod, RequestContext(namespace="web", namespace_facts=namespace), PROFILES, policy)
    assert the_pod == before
    return decision


def patched(the_pod: dict[str, Any], decision: Decision) -> dict[str, Any]:
    assert decision.outcome == "injected", decision
    result = jsonpatch.apply_patch(the_pod, copy.deepcopy(decision.patch), in_place=False)
    assert_valid_pod(result)
    assert_pss_restricted(result)
    return result


def sidecar(result: dict[str, Any], name: str = "sidecar-git-sync") -> dict[str, Any]:
    spec = result["spec"]
    return next(c for c in [*spec["containers"], *(spec.get("initContainers") or [])] if c["name"] == name)


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def gs(key: str) -> str:
    return f"git-sync.sidecar.io/{key}"


# -- values reach the sidecar -----------------------------------------------------------------


def test_pod_values_and_defaults_and_pod_facts_render_into_the_sidecar():
    decision = run(pod(annotations={gs("repo"): REPO, "example.com/note": "hello"}))
    result = patched(pod(annotations={gs("repo"): REPO, "example.com/note": "hello"}), decision)
    container = sidecar(result)
    assert env(container) == {
        "GITSYNC_REPO": REPO,
        "GITSYNC_PERIOD": "60s",
        "GITSYNC_DEPTH": "shallow",
        "TEAM": "blue",
        "WHERE": "web/site",
        "OWNER": "ReplicaSet/site-7d9f8c",
        "NOTE": "hello",
        "HOME": "/tmp",
    }
    assert container["args"] == ["--repo=$(GITSYNC_REPO)", "--verbose=false"]  # literal $(VAR) kept
    assert result["metadata"]["annotations"]["example.com/synced-from"] == REPO
    resolution = decision.resolutions["git-sync"]
    assert resolution.sources == {
        "repo": "pod",
        "period": "default",
        "port": "default",
        "verbose": "default",
        "depth": "default",
        "cache": "default",
    }


def test_an_integer_parameter_renders_as_an_integer_in_integer_fields_and_as_text_elsewhere():
    annotations = {gs("repo"): REPO, gs("port"): "9000"}
    result = patched(pod(annotations=annotations), run(pod(annotations=annotations)))
    container = sidecar(result)
    assert container["ports"][0]["containerPort"] == 9000  # int field
    assert container["readinessProbe"]["httpGet"]["port"] == 9000  # int-or-string field
    assert container["resources"]["limits"]["memory"] == "64Mi"


def test_a_missing_label_renders_as_the_empty_string():
    the_pod = pod(annotations={gs("repo"): REPO})
    del the_pod["metadata"]["labels"]["team"]
    assert env(sidecar(patched(the_pod, run(the_pod))))["TEAM"] == ""


def test_pod_beats_namespace_beats_default():
    namespace = NamespaceFacts("web", annotations={gs("repo"): "https://ns.example/repo", gs("period"): "5m"})
    from_ns = run(pod(), namespace=namespace)
    assert env(sidecar(patched(pod(), from_ns)))["GITSYNC_REPO"] == "https://ns.example/repo"
    assert from_ns.resolutions["git-sync"].sources["repo"] == "namespace"
    own = pod(annotations={gs("repo"): REPO})
    from_pod = run(own, namespace=namespace)
    values = env(sidecar(patched(own, from_pod)))
    assert values["GITSYNC_REPO"] == REPO and values["GITSYNC_PERIOD"] == "5m"
    assert from_pod.resolutions["git-sync"].sources == {
        **from_pod.resolutions["git-sync"].sources,
        "repo": "pod",
        "period": "namespace",
    }


# -- a value is data, never a reference ------------------------------------------------------


def test_a_value_cannot_make_the_kubelet_expand_another_variable():
    sneaky = "https://x.example/$(KUBERNETES_SERVICE_HOST)/$(SECRET)"
    annotations = {gs("repo"): sneaky}
    result = patched(pod(annotations=annotations), run(pod(annotations=annotations)))
    assert env(sidecar(result))["GITSYNC_REPO"] == "https://x.example/$$(KUBERNETES_SERVICE_HOST)/$$(SECRET)"
    # a field the kubelet never expands keeps the value exactly
    assert result["metadata"]["annotations"]["example.com/synced-from"] == sneaky


def test_substituted_text_is_not_scanned_for_placeholders_again():
    annotations = {gs("repo"): "https://x.example/{{params.period}}", "example.com/note": "{{ pod.namespace }}"}
    result = patched(pod(annotations=annotations), run(pod(annotations=annotations)))
    values = env(sidecar(result))
    assert values["GITSYNC_REPO"] == "https://x.example/{{params.period}}"
    assert values["NOTE"] == "{{ pod.namespace }}"


def test_a_value_cannot_add_structure():
    hostile = "https://x.example/\n  - name: EVIL\n    value: 1"
    annotations = {gs("repo"): hostile}
    decision = run(pod(annotations=annotations))
    assert decision.outcome == "skipped"  # \s is not allowed by the pattern: refused, not rendered
    lenient = pod("git-sync", {gs("repo"): REPO, "example.com/note": 'x", "evil": "y'})
    result = patched(lenient, run(lenient))
    assert env(sidecar(result))["NOTE"] == 'x", "evil": "y' and len(sidecar(result)["env"]) == 8


# -- every type: valid, invalid, boundary, missing -------------------------------------------

VALID_AND_INVALID = [
    # key, valid values (rendered as), invalid values
    ("repo", {REPO: REPO, "ssh://git@host/x": "ssh://git@host/x"}, ["file:///etc", "/srv/repo", "https://a b", "x" * 3000]),
    ("period", {"5s": "5s", "1h": "1h", "1h0m0s": "1h0m0s", "90m": None, "500ms": None}, ["4s", "2h", "soon", "-5s", ""]),
    ("port", {"1": "1", "65535": "65535", "+80": "80", "080": "80"}, ["0", "65536", "http", "8.5", ""]),
    ("verbose", {"true": "true", "FALSE": "false", "True": "true"}, ["yes", "1", ""]),
    ("depth", {"full": "full", "shallow": "shallow"}, ["Full", "deep", ""]),
    ("cache", {"1Gi": "1Gi", "512Mi": "512Mi", "100M": "100M"}, ["2Gi", "lots", "1.5.5", ""]),
]


@pytest.mark.parametrize("key,valid,invalid", VALID_AND_INVALID, ids=[v[0] for v in VALID_AND_INVALID])
def test_each_parameter_type_accepts_its_values_at_the_bounds_and_refuses_the_rest(key, valid, invalid):
    for value, rendered in valid.items():
        annotations = {gs("repo"): REPO, gs(key): value}
        decision = run(pod(annotations=annotations))
        if rendered is None:  # out of bounds for this parameter: 90m > 1h, 500ms < 5s
            assert decision.outcome == "skipped", (key, value)
            continue
        assert decision.outcome == "injected", (key, value, decision.warnings)
        assert decision.resolutions["git-sync"].values[key] == rendered
        patched(pod(annotations=annotations), decision)
    for value in invalid:
        annotations = {gs("repo"): REPO, gs(key): value}
        decision = run(pod(annotations=annotations))
        assert decision.outcome == "skipped" and decision.reason == "invalid-values", (key, value)
        [warning] = decision.warnings
        assert warning.startswith(f"{PREFIX}profile git-sync not injected: {gs(key)}="), warning
        assert "(on the pod): expected " in warning


def test_a_bad_value_names_the_key_the_printable_value_and_what_was_expected():
    decision = run(pod(annotations={gs("repo"): "file:///etc/\x1b[31mshadow"}))
    assert decision.warnings == (
        (
            f"{PREFIX}profile git-sync not injected: {gs('repo')}=file:///etc/?[31mshadow (on the pod): "
            "expected a string matching ^(https|ssh)://\\S+$"
        ),
    )


def test_a_missing_required_parameter_skips_only_that_profile():
    decision = run(pod("git-sync,mesh"))
    assert decision.injected == ("mesh",)
    assert decision.warnings[0] == (
        f"{PREFIX}profile git-sync not injected: {gs('repo')} is required (Git repository to sync (https:// or ssh://))"
    )
    result = patched(pod("git-sync,mesh"), decision)
    assert set(json.loads(result["metadata"]["annotations"]["sidecar.io/status"])["profiles"]) == {"mesh"}


def test_strict_mode_denies_bad_values_naming_them():
    decision = run(pod(annotations={gs("repo"): REPO, gs("port"): "99999"}), InjectionPolicy(strict=True))
    assert decision.outcome == "denied" and decision.reason == "invalid-values"
    assert gs("port") in decision.message and "at most 65535" in decision.message


def test_an_unknown_key_for_a_requested_profile_warns_with_the_closest_name():
    decision = run(pod(annotations={gs("repo"): REPO, gs("perod"): "30s", gs("colour"): "red"}))
    assert decision.outcome == "injected"
    assert (
        f"{PREFIX}{gs('perod')} on the pod is not a parameter of profile git-sync; did you mean period?" in decision.warnings
    )
    colour = next(w for w in decision.warnings if "colour" in w)
    assert "it has repo, period, port, verbose, depth, cache, cpu-request" in colour


def test_a_flood_of_unknown_keys_gets_a_few_warnings_and_a_count_of_the_rest():
    typos = {gs(f"typo-{i}"): "x" for i in range(3000)}
    decision = run(pod(annotations={gs("repo"): REPO, **typos}))
    assert decision.outcome == "injected"
    unknown = [w for w in decision.warnings if ("git-sync" in w and "typo-" in w) or "more git-sync" in w]
    assert len(unknown) == 6, unknown
    assert unknown[-1].endswith("and 2995 more git-sync.sidecar.io/* keys that are not parameters of profile git-sync")


def test_keys_of_profiles_not_requested_are_ignored_with_a_warning():
    decision = run(pod("mesh", {gs("nonsense"): "x"}))
    assert decision.injected == ("mesh",)
    assert decision.warnings == (
        f"{PREFIX}git-sync.sidecar.io/nonsense on the pod: profile git-sync is not requested by sidecar.io/inject; ignored",
    )


# -- resource overrides ----------------------------------------------------------------------


def test_resource_keys_override_the_long_running_sidecars_only():
    annotations = {
        "mesh.sidecar.io/cpu-request": "100m",
        "mesh.sidecar.io/cpu-limit": "500m",
        "mesh.sidecar.io/memory-limit": "256Mi",
    }
    result = patched(pod("mesh", annotations), run(pod("mesh", annotations)))
    proxy = sidecar(result, "mesh-proxy")
    assert proxy["resources"] == {
        "requests": {"cpu": "100m", "memory": "64Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }
    assert "resources" not in sidecar(result, "mesh-init")  # the init container keeps its own


@pytest.mark.parametrize(
    "annotations,expected",
    [
        (
            {"mesh.sidecar.io/cpu-limit": "lots"},
            "mesh.sidecar.io/cpu-limit=lots (on the pod): expected a Kubernetes quantity",
        ),
        ({"mesh.sidecar.io/memory-request": "-1Mi"}, "expected a quantity of at least 0"),
        ({"mesh.sidecar.io/cpu-limit": "600m"}, "mesh.sidecar.io/cpu-limit=600m: above the profile's maxResources cpu 500m"),
        (
            {"mesh.sidecar.io/cpu-request": "300m"},
            (
                "mesh.sidecar.io/cpu-request=300m: above the limit 200m of container mesh-proxy; set "
                "mesh.sidecar.io/cpu-limit too"
            ),
        ),
        (
            {"mesh.sidecar.io/cpu-limit": "1m"},
            "mesh.sidecar.io/cpu-limit=1m: below the request",
        ),
        (
            {"mesh.sidecar.io/memory-request": "200Mi", "mesh.sidecar.io/memory-limit": "100Mi"},
            "mesh.sidecar.io/memory-request=200Mi is above mesh.sidecar.io/memory-limit=100Mi (container mesh-proxy)",
        ),
    ],
    ids=["not-a-quantity", "negative", "over-the-cap", "request-over-limit", "limit-under-request", "both"],
)
def test_bad_resource_overrides_skip_the_profile_with_the_reason(annotations, expected):
    decision = run(pod("mesh", annotations))
    assert decision.outcome == "skipped" and decision.reason == "invalid-values"
    assert expected in decision.warnings[0], decision.warnings


# -- start-up ordering, readiness and pull secrets -----------------------------------------------


def test_placement_first_puts_native_sidecars_before_the_pods_own_init_containers():
    own_init = {"name": "migrate", "image": "busybox:1.37.0", "args": ["true"], "securityContext": SECURE}
    for existing in ([], [own_init]):
        the_pod = pod("mesh,git-sync", {gs("repo"): REPO}, **({"initContainers": [own_init]} if existing else {}))
        result = patched(the_pod, run(the_pod))
        names = [c["name"] for c in result["spec"]["initContainers"]]
        assert names == ["mesh-init", "mesh-proxy", *(["migrate"] if existing else [])], names
        assert [c["name"] for c in result["spec"]["containers"]] == ["site", "sidecar-git-sync"]


def test_placement_first_puts_regular_sidecars_before_the_app_and_still_mounts_into_the_app():
    the_pod = pod("mesh,git-sync", {gs("repo"): REPO, "sidecar.io/native-sidecars": "false"})
    decision = run(the_pod)
    result = patched(the_pod, decision)
    assert [c["name"] for c in result["spec"]["containers"]] == ["mesh-proxy", "site", "sidecar-git-sync"]
    app = next(c for c in result["spec"]["containers"] if c["name"] == "site")
    assert app["volumeMounts"] == [{"name": "content", "mountPath": "/srv/content", "readOnly": True}]
    # waitReady cannot hold the app without native sidecars: the pod is told
    assert any("[mesh] waitReady needs native sidecars" in w for w in decision.warnings)


def test_wait_ready_gives_a_native_sidecar_a_startup_probe_from_its_readiness_probe():
    result = patched(pod("mesh"), run(pod("mesh")))
    proxy = sidecar(result, "mesh-proxy")
    assert proxy["restartPolicy"] == "Always"
    assert proxy["startupProbe"] == {
        "tcpSocket": {"port": 15001},
        "timeoutSeconds": 2,
        "periodSeconds": 1,
        "failureThreshold": 120,
        "successThreshold": 1,
    }


def test_pull_secrets_are_added_when_absent_and_never_duplicated():
    fresh = patched(pod("mesh"), run(pod("mesh")))
    assert fresh["spec"]["imagePullSecrets"] == [{"name": "registry-creds"}]
    has_other = pod("mesh", imagePullSecrets=[{"name": "mine"}])
    assert patched(has_other, run(has_other))["spec"]["imagePullSecrets"] == [{"name": "mine"}, {"name": "registry-creds"}]
    has_it = pod("mesh", imagePullSecrets=[{"name": "registry-creds"}])
    assert patched(has_it, run(has_it))["spec"]["imagePullSecrets"] == [{"name": "registry-creds"}]


# -- idempotency and the status record -----------------------------------------------------------


def test_reinvocation_with_the_same_values_adds_nothing_and_the_status_records_a_values_hash():
    annotations = {gs("repo"): REPO, gs("period"): "30s"}
    first = patched(pod(annotations=annotations), run(pod(annotations=annotations)))
    again = run(first)
    assert again.outcome == "skipped" and again.reason == "already-injected" and again.patch == []
    status = json.loads(first["metadata"]["annotations"]["sidecar.io/status"])["profiles"]["git-sync"]
    other = patched(pod(annotations={gs("repo"): REPO}), run(pod(annotations={gs("repo"): REPO})))
    other_status = json.loads(other["metadata"]["annotations"]["sidecar.io/status"])["profiles"]["git-sync"]
    assert status["hash"] == other_status["hash"]  # the same profile
    assert status["values"] != other_status["values"]  # with other values
    plain = patched(pod("mesh"), run(pod("mesh")))
    assert "values" not in json.loads(plain["metadata"]["annotations"]["sidecar.io/status"])["profiles"]["mesh"]


def test_rendering_is_shared_by_pods_with_the_same_values():
    profile = PROFILES["git-sync"]
    profile.render_cache.entries.clear()
    for suffix in ("a", "b", "c"):
        the_pod = pod(annotations={gs("repo"): REPO})
        the_pod["metadata"]["labels"]["pod-template-hash"] = suffix  # not read by the templates
        run(the_pod)
    assert len(profile.render_cache.entries) == 1


# -- what the profile author gets told at load ---------------------------------------------------


@pytest.mark.parametrize(
    "extra,message",
    [
        (
            'env: [{name: A, value: "{{ params.nope }}"}]',
            (
                "containers[0].env[0].value: placeholder params.nope: no parameter nope is declared; the declared "
                "ones are count, level"
            ),
        ),
        (
            'env: [{name: A, value: "{{ params.levl }}"}]',
            "containers[0].env[0].value: placeholder params.levl: no parameter levl is declared; did you mean params.level?",
        ),
        ('env: [{name: A, value: "{{ pod.name }}"}]', "unknown placeholder {{ pod.name }}"),
        ('env: [{name: A, value: "{{ pod.labels[app] }}"}]', "unknown placeholder {{ pod.labels[app] }}"),
        ("env: [{name: A, value: x}]", "parameters.level: declared but never used in a placeholder"),
        (
            'ports: [{containerPort: "{{ params.level }}"}]',
            "takes an integer: make it exactly one placeholder of an integer",
        ),
        ('ports: [{containerPort: "{{ params.count }}0"}]', "takes an integer: make it exactly one placeholder"),
    ],
    ids=["undeclared", "misspelt", "unknown-fact", "unquoted-key", "unused", "text-in-int-field", "mixed-int-field"],
)
def test_a_profile_with_a_bad_placeholder_is_refused_at_load_naming_the_field(extra, message):
    text = f"""
name: bad
version: "1"
parameters:
  level: {{type: string, default: info}}
  count: {{type: integer, default: 1}}
containers:
  - name: c
    image: busybox:1.37.0
    args: ["{{{{ params.level }}}}{{{{ params.count }}}}"]
    {extra}
"""
    if "never used" in message:
        text = text.replace('args: ["{{ params.level }}{{ params.count }}"]', 'args: ["{{ params.count }}"]')
    with pytest.raises(ProfileError) as error:
        parse_profiles(text, "bad.yaml")
    assert any(message in problem and problem.startswith("bad.yaml profile 'bad': ") for problem in error.value.problems), (
        error.value.problems
    )


@pytest.mark.parametrize(
    "parameter,message",
    [
        (
            "{type: integer, default: 70000, maximum: 65535}",
            "default: '70000' fails its own rules: expected an integer of at most 65535",
        ),
        ("{type: duration, default: soon}", "default: 'soon' fails its own rules: expected a duration"),
        ("{type: enum, enum: [a, b], default: c}", "default: 'c' fails its own rules: expected one of a, b"),
        ("{type: string, default: x, minimum: 1}", "minimum: only integer, duration and quantity parameters take it"),
        ("{type: integer, pattern: '^1$'}", "pattern: only string parameters take it"),
        ("{type: string, pattern: '(a)\\1'}", "pattern: not a valid (RE2) regular expression"),
        ("{type: enum}", "enum: an enum parameter lists its values"),
        ("{type: integer, minimum: 5, maximum: 1}", "minimum is greater than maximum"),
        ("{type: colour}", "parameters.p.type"),
        ("{type: enum, enum: [on, off], default: 'on'}", "read as a boolean"),
        ("{type: string, default: off}", "read as a boolean"),
    ],
    ids=[
        "default-out-of-bounds",
        "bad-duration",
        "not-in-enum",
        "bound-on-string",
        "pattern-on-int",
        "backref",
        "empty-enum",
        "inverted-bounds",
        "unknown-type",
        "yaml-boolean-enum",
        "yaml-boolean-default",
    ],
)
def test_a_parameter_declaration_that_contradicts_itself_is_refused(parameter, message):
    text = f"""
name: bad
version: "1"
parameters:
  p: {parameter}
appEnv: [{{name: A, value: "{{{{ params.p }}}}"}}]
"""
    with pytest.raises(ProfileError) as error:
        parse_profiles(text, "bad.yaml")
    assert any(message in problem for problem in error.value.problems), error.value.problems


def test_reserved_and_malformed_parameter_names_are_refused():
    text = (
        'name: bad\nversion: "1"\n'
        'parameters: {cpu-limit: {default: "1"}, Bad_Name: {default: x}}\n'
        "appEnv: [{name: A, value: x}]"
    )
    with pytest.raises(ProfileError) as error:
        parse_profiles(text, "bad.yaml")
    joined = "\n".join(error.value.problems)
    assert "parameters.cpu-limit: reserved" in joined and "parameters.Bad_Name: a parameter name is lowercase" in joined


def test_a_go_template_that_is_not_a_placeholder_is_left_alone():
    text = 'name: tpl\nversion: "1"\nappEnv: [{name: FORMAT, value: "{{ .Values.x }} {{range .}}"}]'
    [profile] = parse_profiles(text, "tpl.yaml")
    the_pod = pod("tpl")
    decision = decide(the_pod, RequestContext(namespace="web"), ProfileSet.of([profile]), POLICY)
    result = jsonpatch.apply_patch(the_pod, decision.patch, in_place=False)
    assert result["spec"]["containers"][0]["env"] == [{"name": "FORMAT", "value": "{{ .Values.x }} {{range .}}"}]


def test_names_cannot_be_templated():
    text = """
name: bad
version: "1"
parameters: {n: {default: x}}
containers: [{name: "c-{{ params.n }}", image: "busybox:1.37.0"}]
"""
    with pytest.raises(ProfileError, match="names cannot hold placeholders"):
        parse_profiles(text, "bad.yaml")


# -- whatever a pod sends --------------------------------------------------------------------


_KEYS = [gs(k) for k in ("repo", "period", "port", "verbose", "depth", "cache", "cpu-limit", "memory-request", "perod")]
_VALUES = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["", "0", "-1", "1e3", "65536", "true", "1h", "5s", "64Mi", "2Gi", "$(X)", "{{ params.repo }}", REPO]),
)


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=6), in_namespace=st.booleans())
def test_any_values_give_a_valid_pod_or_a_reasoned_skip(values, in_namespace):
    if in_namespace:
        the_pod, namespace = pod(), NamespaceFacts("web", annotations=values)
    else:
        the_pod, namespace = pod(annotations=values), None
    decision = run(the_pod, namespace=namespace)
    if decision.outcome == "injected":
        result = patched(the_pod, decision)
        rendered = env(sidecar(result))
        assert "$(" not in rendered["GITSYNC_REPO"].replace("$$(", "")
    else:
        assert decision.outcome == "skipped" and decision.reason == "invalid-values"
        assert decision.warnings and all(w.startswith(PREFIX) for w in decision.warnings)
        # nothing injected; the pod's status records why
        status = assert_skip_recorded(the_pod, decision.patch, ["git-sync"])
        assert status["skipped"]["git-sync"] == decision.skipped["git-sync"]
