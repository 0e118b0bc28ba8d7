"""The policy compiler (core/policy.py): profiles compiled into admission policies.

The real proof is tests/cluster/test_policy_mode.py (the API server runs the policies and
stores the same pods as through the webhook). Here: the objects' shape, what is refused,
the CLI's output against the 1.37 schema, and the CEL of the rules evaluated with cel-python
against the webhook's own core on tables of pods. cel-python lacks the Kubernetes strings
extension: the few functions the expressions use (``trim``, ``lowerAscii``, ``split``...) are
given to it below with the extension's documented behaviour.
"""

from __future__ import annotations

import io
import json
from typing import Any

import kubernetes_validate
import pytest
import yaml

from sidecar_injector.cli import main
from sidecar_injector.core.decide import decide
from sidecar_injector.core.inputs import SYSTEM_NAMESPACES, InjectionPolicy, NamespaceFacts, RequestContext
from sidecar_injector.core.pod_shape import windows_selector
from sidecar_injector.core.policy import (
    WINDOWS,
    PolicyRefused,
    compile_profile,
    compile_profiles,
    match_conditions,
    not_injected_condition,
    request_condition,
    setting_variables,
    status_expression,
)
from sidecar_injector.core.policy_cel import quote, unbind, value_check, value_text
from sidecar_injector.core.policy_unknown import compile_unknown_profiles
from sidecar_injector.profiles.loading import builtin_profiles
from sidecar_injector.profiles.model import Profile

celpy = pytest.importorskip("celpy", reason="cel-python (a test dependency) evaluates the compiled CEL")
celtypes = celpy.celtypes

BUILTINS = builtin_profiles()
POLICY = InjectionPolicy(default_profiles=("logging",), never_inject_namespaces=SYSTEM_NAMESPACES | {"sidecar-injector"})


# --------------------------------------------------------------------------- cel-python with the strings extension


def _s(value: Any) -> Any:
    return celtypes.StringType(value)


FUNCTIONS = {
    "trim": lambda s: _s(str(s).strip()),
    "lowerAscii": lambda s: _s("".join(c.lower() if c.isascii() else c for c in str(s))),
    "split": lambda s, sep: celtypes.ListType([_s(x) for x in str(s).split(str(sep))]),
    "replace": lambda s, a, b: _s(str(s).replace(str(a), str(b))),
    "indexOf": lambda s, sub, start=0: celtypes.IntType(str(s).find(str(sub), int(start))),
    "substring": lambda s, start, end=None: _s(str(s)[int(start) : None if end is None else int(end)]),
    "join": lambda items, sep="": _s(str(sep).join(str(i) for i in items)),
}


def evaluate(expression: str, **activation: Any) -> Any:
    env = celpy.Environment()
    program = env.program(env.compile(unbind(expression)), functions=FUNCTIONS)
    result = program.evaluate({k: celpy.json_to_cel(v) for k, v in activation.items()})
    assert not isinstance(result, celpy.CELEvalError), f"{expression[:200]}: {result}"
    return result


def _plain(value: Any) -> Any:
    """A CEL result as JSON data again (json_to_cel reads a BoolType, an int subclass, as an int)."""
    if isinstance(value, celtypes.BoolType):
        return bool(value)
    if isinstance(value, celtypes.ListType):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, celtypes.StringType) else value


# --------------------------------------------------------------------------- the objects


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_each_builtin_compiles_to_a_mutating_and_a_validating_policy_with_bindings(name: str) -> None:
    objects = compile_profile(BUILTINS[name], POLICY)
    kinds = [o["kind"] for o in objects]
    assert kinds == [
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    assert {o["metadata"]["name"] for o in objects} == {f"sidecar-injector-{name}"}
    mutating, binding, validating, vbinding = objects
    assert binding["spec"]["policyName"] == vbinding["spec"]["policyName"] == f"sidecar-injector-{name}"
    assert vbinding["spec"]["validationActions"] == ["Warn"]
    assert mutating["spec"]["reinvocationPolicy"] == "IfNeeded"
    assert mutating["spec"]["matchConstraints"]["resourceRules"][0]["operations"] == ["CREATE"]
    excluded = mutating["spec"]["matchConstraints"]["namespaceSelector"]["matchExpressions"]
    assert {
        "key": "kubernetes.io/metadata.name",
        "operator": "NotIn",
        "values": sorted(POLICY.never_inject_namespaces),
    } in excluded
    assert {"key": "sidecar.io/inject", "operator": "NotIn", "values": ["disabled"]} in excluded
    assert validating["spec"]["validations"], "every profile has at least the resource keys to check"
    # the admission policies' CEL environment has no cel.bind: none may be left
    assert "cel.bind(" not in json.dumps(objects)


def test_strict_mode_denies_instead_of_warning_and_a_binding_can_be_narrowed() -> None:
    strict = InjectionPolicy(strict=True)
    objects = compile_profile(BUILTINS["logging"], strict, binding_selector={"matchLabels": {"team": "a"}})
    assert objects[3]["spec"]["validationActions"] == ["Deny"]
    assert objects[1]["spec"]["matchResources"] == {"namespaceSelector": {"matchLabels": {"team": "a"}}}


def test_a_profile_named_like_the_annotations_own_words_is_refused_naming_the_rule() -> None:
    profile = Profile.model_validate({"name": "true", "version": "1", "containers": [{"name": "s", "image": "i:1"}]})
    with pytest.raises(PolicyRefused) as refused:
        compile_profiles([BUILTINS["logging"], profile], POLICY)
    assert refused.value.rule == "profile name" and "true" in str(refused.value)


def test_the_cli_output_validates_against_the_1_37_schema() -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main(["profiles", "export", "--as-policy", *sorted(BUILTINS), "--policy-namespace-label", "a=b"], out, err)
    assert code == 0, err.getvalue()
    documents = [d for d in yaml.safe_load_all(out.getvalue()) if d]
    assert len(documents) == 4 * len(BUILTINS) + 2  # and the policy that warns about unknown names
    for document in documents:
        kubernetes_validate.validate(document, "1.37.0", strict=True)
    bindings = [d for d in documents if d["kind"].endswith("Binding")]
    assert all(b["spec"]["matchResources"] == {"namespaceSelector": {"matchLabels": {"a": "b"}}} for b in bindings)


def test_the_cli_refuses_a_bad_namespace_label() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["profiles", "export", "--as-policy", "logging", "--policy-namespace-label", "novalue"], out, err) != 0
    assert "KEY=VALUE" in err.getvalue()


# --------------------------------------------------------------------------- unbind


def test_unbind_rewrites_nested_binds_and_leaves_strings_alone() -> None:
    text = "cel.bind(a, 1, cel.bind(b, a + 1, [a, b, 'cel.bind(x, y, z)'])) == [1, 2, 'cel.bind(x, y, z)']"
    rewritten = unbind(text)
    assert rewritten.count("cel.bind(") == 2  # the two inside the string literals
    assert evaluate(text) == celtypes.BoolType(True)


# --------------------------------------------------------------------------- the rules, against the core

NAMESPACES = [
    ("plain", {}, {}),
    ("enabled", {"sidecar.io/inject": "enabled"}, {}),
    ("profiles", {"sidecar.io/inject": "enabled"}, {"sidecar.io/profiles": " Metrics,proxy ,"}),
    ("profiles-false", {"sidecar.io/inject": "enabled"}, {"sidecar.io/profiles": "false"}),
    ("annotated-only", {}, {"sidecar.io/profiles": "tls"}),
]
ASKS = [None, "logging", " Logging , metrics,,", "true", "TRUE", "false", " False ", "", "true,proxy", "tls", "nothing"]


@pytest.mark.parametrize("cluster_wide", [False, True])
def test_who_is_injected_agrees_with_the_webhook(cluster_wide: bool) -> None:
    policy = InjectionPolicy(default_profiles=("logging", "tls"), cluster_wide=cluster_wide)
    profiles = {name: BUILTINS[name] for name in ("logging", "metrics", "proxy", "tls")}
    conditions = {name: request_condition(profiles[name]) for name in profiles}
    settings = {v["name"]: v["expression"] for v in setting_variables(policy)}
    opted_in = match_conditions(profiles["logging"])[0]["expression"]
    for ns, labels, ns_annotations in NAMESPACES:
        namespace = {"metadata": {"name": ns, "labels": labels, "annotations": ns_annotations}}
        for ask in ASKS:
            pod_annotations = {} if ask is None else {"sidecar.io/inject": ask}
            pod = {"metadata": {"annotations": pod_annotations}, "spec": {"containers": [{"name": "app", "image": "a"}]}}
            context = RequestContext(namespace=ns, namespace_facts=NamespaceFacts(ns, labels, ns_annotations))
            decision = decide(pod, context, profiles, policy)
            for name, condition in conditions.items():
                variables = {k: _plain(evaluate(v, namespaceObject=namespace)) for k, v in settings.items()}
                got = bool(evaluate(opted_in, object=pod)) and bool(
                    evaluate(condition, object=pod, namespaceObject=namespace, variables=variables)
                )
                assert got == (name in decision.requested), (ns, ask, name, decision.reason)


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"os": {"name": "windows"}},
        {"os": {"name": "linux"}},
        {"nodeSelector": {"kubernetes.io/os": "windows"}},
        {"nodeSelector": {"beta.kubernetes.io/os": "windows", "x": "y"}},
        {"nodeSelector": {"kubernetes.io/os": "linux"}},
        {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["windows"]}]}]}}}},
        {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["windows"]}]},
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}},
        {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "NotIn", "values": ["linux"]}]}]}}}},
        {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["windows", "linux"]}]}]}}}},
    ],
)  # fmt: skip
def test_windows_pods_are_recognised_as_the_webhook_recognises_them(spec: dict[str, Any]) -> None:
    pod = {"metadata": {}, "spec": {"containers": [{"name": "app"}], **spec}}
    assert bool(evaluate(WINDOWS, object=pod)) == (windows_selector(pod["spec"]) is None)


@pytest.mark.parametrize(
    ("status", "recorded"),
    [
        (None, False),
        ('{"profiles":{"logging":{"hash":"x"}}}', True),
        ('{"profiles": {"logging": {"hash": "x"}}}', True),
        ('{"profiles":{"metrics":{"hash":"x","containers":["logging"]}}}', False),
        ('{"profiles":{"logging-extra":{}}}', False),
    ],
)
def test_idempotency_reads_the_status_annotation(status: str | None, recorded: bool) -> None:
    annotations = {} if status is None else {"sidecar.io/status": status}
    pod = {"metadata": {"annotations": annotations}}
    assert bool(evaluate(not_injected_condition(BUILTINS["logging"]), object=pod)) is not recorded


VALUES = {
    "string": ["", "x", "https://github.com/acme/site", "ftp://x", " https://x", "a" * 3000],
    "integer": ["8080", "+07", "-1", "0", "1", "65535", "65536", "8.0", "eight", " 80 ", "0x10", "9" * 19],
    "enum": ["info", "debug", "INFO", "loud", ""],
}


@pytest.mark.parametrize("profile_name", sorted(BUILTINS))
def test_value_checks_and_renderings_agree_with_the_webhook(profile_name: str) -> None:
    profile = BUILTINS[profile_name]
    for name, parameter in profile.parameters.items():
        if parameter.type == "duration":
            continue  # cel-python's duration() is not Go's: the control-plane tier checks these
        for value in [*VALUES.get(parameter.type, []), parameter.default or ""]:
            text, _problem = parameter.check(value)
            ok = bool(evaluate(value_check(parameter, "v"), v=value))
            assert ok == (text is not None), (profile_name, name, value)
            if ok:
                assert str(evaluate(value_text(parameter, "v"), v=value)) == text, (profile_name, name, value)


def _webhook_status(profile: Profile, pod: dict[str, Any]) -> dict[str, Any]:
    decision = decide(pod, RequestContext(namespace="ns"), {profile.name: profile}, POLICY)
    assert decision.patch is not None, decision.reason
    op = next(o for o in decision.patch if "status" in o["path"] or o["path"] == "/metadata/annotations")
    value = op["value"] if op["path"].endswith("status") else op["value"]["sidecar.io/status"]
    return dict(json.loads(value))


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("profile_name", sorted(BUILTINS))
def test_the_status_entry_is_the_webhooks(profile_name: str, native: bool) -> None:
    """At the defaults the status text is the webhook's, byte for byte; into an existing status the
    entry is added and the other entries kept."""
    profile = BUILTINS[profile_name]
    asks = {"sidecar.io/inject": profile_name, "sidecar.io/native-sidecars": "true" if native else "false"}
    required = {f"{profile_name}.sidecar.io/{n}": "https://x/y" for n, p in profile.parameters.items() if p.required}
    pod = {"metadata": {"annotations": {**asks, **required}}, "spec": {"containers": [{"name": "app", "image": "a"}]}}
    webhook = _webhook_status(profile, pod)
    defaults = {n: p.default_text for n, p in profile.parameters.items() if p.default_text is not None}
    defaults.update({n: "https://x/y" for n in profile.parameters if n not in defaults})
    variables = {
        "native": native,
        "status": "",
        **{f"text_{n.replace('-', '_')}": t for n, t in defaults.items()},
    }
    expression = status_expression(profile)
    # optionals are beyond cel-python: every resource key unset is the literal false
    for key in ("cpu_request", "cpu_limit", "memory_request", "memory_limit"):
        expression = expression.replace(f"!variables.raw_{key}.hasValue()", "true")
    text = str(evaluate(expression, variables=variables))
    entry = json.loads(text)["profiles"][profile_name]
    expected = webhook["profiles"][profile_name]
    if any(p.required for p in profile.parameters.values()):
        expected.pop("values", None)  # a required value is never the default: no hash in policy mode
    assert entry == expected
    if not any(p.required for p in profile.parameters.values()):
        assert text == json.dumps(webhook, separators=(",", ":"), sort_keys=True)
    # into a status that records another profile
    other = '{"profiles":{"zzz":{"hash":"h","version":"1"}}}'
    merged = json.loads(str(evaluate(expression, variables={**variables, "status": other})))
    assert merged["profiles"]["zzz"] == {"hash": "h", "version": "1"}
    assert merged["profiles"][profile_name] == entry
    # an unreadable status is replaced, as the webhook replaces it
    replaced = json.loads(str(evaluate(expression, variables={**variables, "status": "not json"})))
    assert set(replaced["profiles"]) == {profile_name}


def test_quote_is_a_cel_string_literal() -> None:
    for text in ["plain", 'with "quotes"', "back\\slash", "new\nline", "tab\t", "ünïcode", "$(VAR)"]:
        assert str(evaluate(quote(text))) == text


@pytest.mark.parametrize("cluster_wide", [False, True])
def test_the_names_the_unknown_profiles_policy_checks_are_the_webhooks(cluster_wide: bool) -> None:
    """The policy that warns about unknown names reads the same names as the webhook (and so
    warns about the same unknown ones)."""
    policy = InjectionPolicy(default_profiles=("logging", "tls"), cluster_wide=cluster_wide)
    profiles = {name: BUILTINS[name] for name in ("logging", "metrics", "proxy", "tls")}
    validating, binding = compile_unknown_profiles(sorted(profiles), policy)
    assert binding["spec"]["validationActions"] == ["Warn"]
    variables = {v["name"]: v["expression"] for v in validating["spec"]["variables"]}
    for ns, labels, ns_annotations in NAMESPACES:
        namespace = {"metadata": {"name": ns, "labels": labels, "annotations": ns_annotations}}
        for ask in [*ASKS, "logging,nope", "nope", "true,nope"]:
            pod = {"metadata": {"annotations": {} if ask is None else {"sidecar.io/inject": ask}}, "spec": {}}
            pod["spec"] = {"containers": [{"name": "app", "image": "a"}]}
            if not evaluate(validating["spec"]["matchConditions"][0]["expression"], object=pod):
                continue  # opted out: no policy looks at it
            context = RequestContext(namespace=ns, namespace_facts=NamespaceFacts(ns, labels, ns_annotations))
            decision = decide(pod, context, profiles, policy)
            seen = {k: _plain(evaluate(variables[k], namespaceObject=namespace)) for k in ("defaultProfiles", "automatic")}
            names = _plain(evaluate(variables["requestedNames"], object=pod, namespaceObject=namespace, variables=seen))
            assert set(names) == set(decision.requested), (ns, ask, decision.reason)
            unknown = [n for n in names if n not in profiles]
            warned = any("unknown sidecar profile" in w for w in decision.warnings)
            assert bool(unknown) == warned, (ns, ask, decision.warnings)
