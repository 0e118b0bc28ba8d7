"""Hostile input for ``POST /mutate``: property-based (hypothesis) and deterministic edges.

Issue 5, item 5. The property every answer must have, whatever the body:

* HTTP 200 with a well-formed AdmissionReview — ``apiVersion: admission.k8s.io/v1``,
  ``kind: AdmissionReview``, ``response.uid`` equal to the request's, ``allowed`` a bool,
  ``patchType`` present exactly when ``patch`` is, the patch a base64 JSON list of
  operations that applies (jsonpatch) to the request's object and never touches the pod's
  identity, ``warnings`` a list of strings of at most 256 characters (printable ASCII: user
  values are echoed through ``sidecar_injector.base.text.printable``), a denial with ``status.code`` >= 400
  and a message;
* or an HTTP 4xx with a JSON ``{"error": str, "details": [str, ...]}``;
* never a 500, never an exception out of the app (TestClient re-raises them).

When the pod sent was valid by the API server's rules (tests/podcheck.py
``api_rule_problems``), the patched pod must be valid too (unique container and volume
names, unique mount paths per container, no port clash, ...), and sending the patched pod
again (reinvocation) must not patch it again.

Settings profiles (hypothesis), chosen with the environment variable ``HYPOTHESIS_PROFILE``:

* ``ci`` (default): ~100 examples per test, derandomized and without the example
  database, so every CI run tests the same inputs; the whole file runs in well under 60 s;
* ``long``: 20,000 examples per test, random, failures saved in ``.hypothesis/`` — for
  on-demand runs: ``HYPOTHESIS_PROFILE=long pytest tests/test_fuzz.py``.

Bugs this suite found are pinned by regression tests at the end of the file. A new one
gets an ``xfail(strict=True, raises=AssertionError)`` test with its minimal input until it
is fixed; the property tests then tolerate exactly its symptom, for exactly the inputs that
trigger it, so that they keep hunting for others (the xfail XPASSes once it is fixed:
remove the marker and the tolerance together).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jsonpatch
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, note, settings
from hypothesis import event as _hypothesis_event
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from podcheck import api_rule_problems
from sidecar_injector.base.text import printable
from sidecar_injector.cli import main as cli_main
from sidecar_injector.core.decide import decide, parse_inject_value
from sidecar_injector.core.inputs import InjectionPolicy, RequestContext
from sidecar_injector.profiles.loading import builtin_profiles
from sidecar_injector.runtime.settings import Settings
from sidecar_injector.webhook.app import create_app
from skip_record import assert_skipped_answer, record_cannot_fit
from strategies import (
    API_VERSION,
    BUILTIN_PROFILES,
    INJECT,
    STATUS,
    SYSTEM_NAMESPACES,
    VALID_BODIES,
    annotation_maps,
    colliding_pods,
    content_types,
    inject_values,
    json_bodies,
    make_review,
    mutated_reviews,
    raw_bodies,
    reviews_of,
    simple_pod,
    wrong_typed_pods,
)

# --------------------------------------------------------------------------- hypothesis profiles

_COMMON: dict[str, Any] = {
    "deadline": None,  # a request can take a while on a loaded 2-core CI machine; we test answers, not speed
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    "print_blob": True,
}
settings.register_profile("ci", max_examples=100, derandomize=True, database=None, **_COMMON)
settings.register_profile("long", max_examples=20_000, **_COMMON)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
#: the settings every property test here runs with (explicit, so other test files are unaffected)
FUZZ = settings.get_profile(PROFILE)

# --------------------------------------------------------------------------- the webhook under test

#: the configurations every property test is run against (drawn per example)
#: the configurations every property test is run against (drawn per example); built into
#: Settings inside the fixture, once the shell's SIDECAR_INJECTOR_* variables are cleared
SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "strict": {"strict": True, "default_profiles": ["logging", "metrics"]},
    "native-always": {"native_sidecars": "always", "default_profiles": list(BUILTIN_PROFILES)},
    "native-never": {
        "native_sidecars": "never",
        "namespace": "sidecar-injector",
        "excluded_namespaces": ["excluded"],
        "default_profiles": ["proxy"],
    },
}
CLIENT_NAMES = tuple(SETTINGS)
#: namespaces each configuration must never patch in (README: system, own and excluded ones)
NEVER_INJECT: dict[str, frozenset[str]] = {
    name: frozenset({*SYSTEM_NAMESPACES, *([s["namespace"]] if "namespace" in s else []), *s.get("excluded_namespaces", [])})
    for name, s in SETTINGS.items()
}
SMALL_CAP = 4096


@pytest.fixture(scope="module")
def clients() -> Iterator[dict[str, TestClient]]:
    profiles = builtin_profiles()
    with contextlib.ExitStack() as stack:
        yield {name: stack.enter_context(TestClient(create_app(Settings(**s), profiles))) for name, s in SETTINGS.items()}


@pytest.fixture(scope="module")
def client(clients: dict[str, TestClient]) -> TestClient:
    return clients["default"]


@pytest.fixture(scope="module")
def small_client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(max_body_bytes=SMALL_CAP), builtin_profiles())) as c:
        yield c


client_names = st.sampled_from(CLIENT_NAMES)

# --------------------------------------------------------------------------- helpers

_ANNOTATION_BYTES = 256 * 1024  # the API server's limit on all of a pod's annotations (keys + values)
_UNKNOWN = object()


def event(text: str) -> None:
    """hypothesis.event (statistics: --hypothesis-show-statistics), a no-op in plain tests."""
    with contextlib.suppress(InvalidArgument):
        _hypothesis_event(text)


def _dig(value: Any, *path: Any) -> Any:
    for step in path:
        if isinstance(value, dict) and isinstance(step, str):
            value = value.get(step)
        elif isinstance(value, list) and isinstance(step, int) and 0 <= step < len(value):
            value = value[step]
        else:
            return None
    return value


def _is_printable_ascii(text: str) -> bool:
    return all(" " <= ch <= "~" for ch in text)


# --------------------------------------------------------------------------- the answer checker

_PROTECTED = ("/metadata/name", "/metadata/namespace", "/metadata/uid", "/kind", "/apiVersion")
_PATCH_OPS = {"add", "remove", "replace", "move", "copy", "test"}


@dataclass
class Answer:
    status: int
    response: dict[str, Any] | None = None  # the AdmissionReview's response, for a 200
    patched: Any = None  # the request's object with the patch applied, when there was a patch


def _json_copy(value: Any) -> Any:
    """A deep copy of a JSON value without recursion (pods may nest ~1,000 levels deep)."""
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(value, root, 0)]
    while stack:
        node, parent, key = stack.pop()
        if isinstance(node, dict):
            parent[key] = copied = {}
            stack.extend((v, copied, k) for k, v in node.items())
        elif isinstance(node, list):
            parent[key] = copied = [None] * len(node)
            stack.extend((v, copied, i) for i, v in enumerate(node))
        else:
            parent[key] = node
    return root[0]


def _strict_json(content: bytes) -> Any:
    def no_constants(name: str) -> Any:
        raise AssertionError(f"answer is not RFC 8259 JSON: it contains {name}")

    return json.loads(content.decode("utf-8"), parse_constant=no_constants)


def check_answer(resp: Any, body: Any = _UNKNOWN, *, settings_name: str = "default") -> Answer:
    """Assert ``resp`` is a well-formed answer to ``body`` (the JSON value sent, if known)."""
    assert resp.status_code == 200 or 400 <= resp.status_code < 500, (resp.status_code, resp.text[:2000])
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    data = _strict_json(resp.content)

    if resp.status_code != 200:
        event(f"HTTP {resp.status_code}")
        assert isinstance(data, dict) and set(data) == {"error", "details"}, data
        assert isinstance(data["error"], str) and data["error"], data
        assert isinstance(data["details"], list) and all(isinstance(d, str) for d in data["details"]), data
        return Answer(resp.status_code)

    assert isinstance(data, dict), data
    assert data.get("apiVersion") == API_VERSION, data
    assert data.get("kind") == "AdmissionReview", data
    response = data.get("response")
    assert isinstance(response, dict), data
    request = body.get("request") if isinstance(body, dict) else None
    if body is not _UNKNOWN:
        assert isinstance(request, dict), "a 200 answer to a body without a request object"
        assert response.get("uid") == request.get("uid"), (response.get("uid"), request.get("uid"))
    assert isinstance(response.get("uid"), str) and response["uid"], response
    assert isinstance(response.get("allowed"), bool), response
    assert ("patch" in response) == ("patchType" in response), response

    warnings = response.get("warnings", [])
    assert isinstance(warnings, list), response
    for warning in warnings:
        assert isinstance(warning, str) and warning, warnings
        assert len(warning) <= 256, (len(warning), warning)
        assert _is_printable_ascii(warning), f"warning with non-printable characters: {warning!r}"

    if response["allowed"]:
        assert "status" not in response or response["status"].get("code", 200) < 400, response
        event("allowed, patched" if "patch" in response else "allowed, unchanged")
    else:
        event("denied")
        assert "patch" not in response, response
        status = response.get("status")
        assert isinstance(status, dict), response
        assert isinstance(status.get("code"), int) and not isinstance(status["code"], bool), status
        assert status["code"] >= 400, status
        assert isinstance(status.get("message"), str) and status["message"], status

    answer = Answer(200, response)
    if "patch" not in response:
        return answer
    assert response["patchType"] == "JSONPatch", response
    assert isinstance(response["patch"], str), response
    ops = json.loads(base64.b64decode(response["patch"], validate=True))
    assert isinstance(ops, list) and ops, ops
    for op in ops:
        assert isinstance(op, dict) and op.get("op") in _PATCH_OPS and isinstance(op.get("path"), str), op
        assert op["path"].startswith("/"), op
        assert not any(op["path"] == p or op["path"].startswith(p + "/") for p in _PROTECTED), op
    if request is not None:
        assert request.get("operation") == "CREATE", ("a patch for a non-CREATE request", request.get("operation"))
        kind = request.get("kind")
        assert isinstance(kind, dict) and (kind.get("group", ""), kind.get("version"), kind.get("kind")) == (
            "",
            "v1",
            "Pod",
        ), ("a patch for a non-pod", kind)
        namespace = request.get("namespace") or _dig(request, "object", "metadata", "namespace")
        if isinstance(namespace, str):
            assert namespace not in NEVER_INJECT[settings_name], ("patched in", namespace)
        try:
            answer.patched = jsonpatch.apply_patch(_json_copy(request["object"]), ops, in_place=True)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise AssertionError(f"the patch does not apply to the request's object: {exc}\n{ops}") from exc
    return answer


def check_still_valid(original: Any, answer: Answer) -> None:
    """A valid pod stays valid once patched (the API server's rules, tests/podcheck.py)."""
    if answer.patched is None:
        return
    try:
        before = api_rule_problems(original)
    except Exception:
        event("podcheck could not judge the original pod")
        return
    if before:
        event("original pod invalid")
        return
    event("original pod valid")
    after = api_rule_problems(answer.patched)
    assert not after, "the patch made a valid pod invalid:\n" + "\n".join(after)


def post_json(client: TestClient, body: Any, content_type: str | None = "application/json") -> Any:
    headers = {"content-type": content_type} if content_type is not None else {}
    return client.post("/mutate", content=json.dumps(body).encode(), headers=headers)


def post_bytes(client: TestClient, content: bytes, content_type: str | None = "application/json") -> Any:
    headers = {"content-type": content_type} if content_type is not None else {}
    return client.post("/mutate", content=content, headers=headers)


def assert_still_works(client: TestClient) -> None:
    """After whatever came before, an ordinary pod is still injected on the same client."""
    body = make_review(simple_pod({INJECT: "logging,metrics"}))
    answer = check_answer(post_json(client, body), body)
    assert answer.status == 200 and answer.response is not None and answer.response["allowed"], answer
    assert answer.patched is not None, answer.response
    spec = answer.patched["spec"]
    names = [c["name"] for c in spec.get("initContainers", []) + spec["containers"]]  # native or not
    assert sorted(names) == ["app", "sidecar-logging", "sidecar-metrics"], names
    assert not api_rule_problems(answer.patched)


# --------------------------------------------------------------------------- properties


@FUZZ
@given(body=json_bodies(), name=client_names)
def test_any_json_body_gets_a_well_formed_answer(clients: dict[str, TestClient], body: Any, name: str) -> None:
    """(1) Any JSON value as the whole body: a 4xx error or a well-formed review, never a 500."""
    check_answer(post_json(clients[name], body), body, settings_name=name)


@FUZZ
@given(body=mutated_reviews(), name=client_names)
def test_review_with_a_node_replaced_gets_a_well_formed_answer(
    clients: dict[str, TestClient], body: dict[str, Any], name: str
) -> None:
    """(2) Wrong types at every level of a valid review: envelope, request, pod, containers..."""
    answer = check_answer(post_json(clients[name], body), body, settings_name=name)
    check_still_valid(_dig(body, "request", "object"), answer)


@FUZZ
@given(notes=annotation_maps(), name=client_names, data=st.data())
def test_hostile_annotation_values_get_a_well_formed_answer(
    clients: dict[str, TestClient], notes: dict[str, str], name: str, data: st.DataObject
) -> None:
    """(3) Odd unicode, control characters, long values, many commas, true/false, unknown names."""
    pod = simple_pod(notes)
    body = data.draw(reviews_of(st.just(pod)), label="review")
    answer = check_answer(post_json(clients[name], body), body, settings_name=name)
    check_still_valid(pod, answer)


@FUZZ
@given(pod=colliding_pods(), name=client_names, data=st.data())
def test_pods_colliding_with_builtin_sidecars_stay_valid(
    clients: dict[str, TestClient], pod: dict[str, Any], name: str, data: st.DataObject
) -> None:
    """(4) Existing containers, volumes, mounts, ports named like the built-ins' ones."""
    body = make_review(pod, namespace=data.draw(st.sampled_from(["default", "default", "team-a", "kube-system"])))
    client = clients[name]
    answer = check_answer(post_json(client, body), body, settings_name=name)
    check_still_valid(pod, answer)
    if answer.patched is not None:
        # reinvocation (reinvocationPolicy: IfNeeded): the patched pod is not patched again
        again = make_review(answer.patched, namespace=body["request"]["namespace"], uid="reinvocation")
        second = check_answer(post_json(client, again), again, settings_name=name)
        assert second.response is not None, second
        note(f"second answer: {second.response}")
        assert "patch" not in second.response, "reinvocation patched the pod again"


@FUZZ
@given(content=raw_bodies(), content_type=content_types, name=client_names)
def test_raw_bytes_get_a_well_formed_answer(
    clients: dict[str, TestClient], content: bytes, content_type: str | None, name: str
) -> None:
    """(5) Invalid UTF-8, truncated JSON, huge numbers, deep nesting, NaN, duplicate keys, BOMs."""
    note(f"content[:300] = {content[:300]!r}")
    resp = post_bytes(clients[name], content, content_type)
    try:  # what a strict JSON parser makes of it (duplicate keys: the last wins)
        body: Any = json.loads(content.decode("utf-8"), parse_constant=lambda c: 1 / 0)
    except RecursionError:  # deeper than the stdlib parser goes, not necessarily invalid
        body = _UNKNOWN
    except (ValueError, ZeroDivisionError):
        body = _UNKNOWN
        assert resp.status_code != 200, f"accepted a body that is not strict JSON: {resp.text[:500]}"
    check_answer(resp, body, settings_name=name)


@FUZZ
@given(value=inject_values, name=client_names)
def test_known_profiles_are_injected_and_unknown_ones_warned(clients: dict[str, TestClient], value: str, name: str) -> None:
    """(3) The inject annotation keeps its meaning under hostile values: exact built-in names
    are injected, names that are no built-in in any spelling are warned about (or denied)."""
    pod = simple_pod({INJECT: value})
    body = make_review(pod)
    answer = check_answer(post_json(clients[name], body), body, settings_name=name)
    check_still_valid(pod, answer)
    assert answer.response is not None
    tokens = list(dict.fromkeys(t.strip() for t in value.split(",") if t.strip()))
    if value.strip().lower() == "false" or {t.lower() for t in tokens} == {"true"}:
        return  # opt-out, or the configured defaults
    exact = {t.strip(" \t") for t in value.split(",")} & set(BUILTIN_PROFILES)
    unknown = [t for t in tokens if t.lower() not in (*BUILTIN_PROFILES, "true", "false")]
    event(f"exact built-in names: {bool(exact)}, unknown names: {bool(unknown)}")
    if unknown:
        assert response_mentions_unknown(answer.response), answer.response
    if not any(t.lower() in BUILTIN_PROFILES for t in tokens):  # not even in the most lenient reading
        names = {printable(n) for n in (parse_inject_value(value) or [])[:10]}
        if names and answer.response["allowed"] and not record_cannot_fit(pod, names):
            assert_skipped_answer(answer.response, pod, names)  # only the record of the (first 10) unknown names
        else:  # nothing asked for, denied, or an annotation so large that not even the record fits
            assert "patch" not in answer.response, answer.response
    if exact and answer.response["allowed"]:
        assert answer.patched is not None, answer.response
        status = json.loads(answer.patched["metadata"]["annotations"][STATUS])
        assert exact <= set(status["profiles"]), status


def response_mentions_unknown(response: dict[str, Any]) -> bool:
    """An unknown profile is never silently ignored: a warning (or, strict, a denial)."""
    return bool(response.get("warnings")) or not response["allowed"]


# --------------------------------------------------------------------------- (6) wrong-typed fields
# Issue 19, item 2: one or two fields anywhere in the pod schema (every field of every model
# reachable from V1Pod: kube_types.json, completed by the same client models for the pod-level
# types it leaves out) set to a value of a wrong JSON type.

_PROFILES = builtin_profiles()
_POLICIES = (
    InjectionPolicy(),
    InjectionPolicy(strict=True, default_profiles=("logging", "metrics")),
    InjectionPolicy(native_sidecars="always"),
    InjectionPolicy(native_sidecars="never", cluster_wide=True, default_profiles=("proxy",)),
)


@FUZZ
@given(pod=wrong_typed_pods(), policy=st.sampled_from(_POLICIES))
def test_decide_answers_any_wrong_typed_field(pod: dict[str, Any], policy: InjectionPolicy) -> None:
    """decide() is total: a skip, an injection or a denial with a reason, never an exception."""
    size = len(json.dumps(pod).encode())
    decision = decide(pod, RequestContext(namespace="default", object_bytes=size), _PROFILES, policy)
    event(f"decision: {decision.outcome}")
    assert decision.outcome in ("injected", "skipped", "denied"), decision
    assert isinstance(decision.reason, str) and decision.reason, decision
    if decision.outcome == "injected":
        patched = jsonpatch.apply_patch(_json_copy(pod), list(decision.patch), in_place=True)
        assert patched["metadata"]["annotations"][STATUS], decision


@FUZZ
@given(pod=wrong_typed_pods(), name=client_names)
def test_wrong_typed_field_gets_a_well_formed_answer(clients: dict[str, TestClient], pod: dict[str, Any], name: str) -> None:
    """The webhook answers a review of such a pod with a well-formed AdmissionReview (never a 500)."""
    body = make_review(pod)
    answer = check_answer(post_json(clients[name], body), body, settings_name=name)
    assert answer.status == 200, answer


def _run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        code = cli_main(list(argv), out, err)
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


@FUZZ
@given(pod=wrong_typed_pods(), command=st.sampled_from(["inject", "explain"]))
def test_inject_and_explain_answer_any_wrong_typed_field(pod: dict[str, Any], command: str) -> None:
    """``inject``/``explain`` exit 0, 1 or 2 with output or a message, never with a traceback
    (an exception out of ``main`` fails this test with it)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "pod.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(pod, handle)
        code, out, err = _run_cli(command, "-f", path)
    event(f"{command} exit {code}")
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err, err
    assert out.strip() or err.strip(), "no output and no message"
    if code == 2:
        assert err.strip(), "exit 2 without a message"


@pytest.mark.parametrize("value", [True, 7, "x", {"name": "regcred"}, [7], [{"name": []}]], ids=repr)
def test_image_pull_secrets_of_the_wrong_type_skip_the_pod_with_a_warning(value: Any) -> None:
    """Was a TypeError out of decide() (an HTTP 500, a traceback in ``inject``) for
    ``spec.imagePullSecrets: true`` or ``7``: found by the wrong-type properties above."""
    pod = simple_pod({INJECT: "logging"})
    pod["spec"]["imagePullSecrets"] = value
    decision = decide(pod, RequestContext(namespace="default"), _PROFILES, InjectionPolicy())
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        assert decision.outcome == "injected", decision  # a name of the wrong type matches no secret
    else:
        assert (decision.outcome, decision.reason) == ("skipped", "invalid-pod"), decision
        assert any("imagePullSecrets" in w for w in decision.warnings), decision.warnings


# --------------------------------------------------------------------------- deterministic edges


def _padded_review(size: int) -> bytes:
    """A valid review serialized to exactly ``size`` bytes (padding in an annotation)."""
    body = make_review(simple_pod({INJECT: "logging", "example.com/padding": ""}))
    bare = len(json.dumps(body).encode())
    assert size >= bare, (size, bare)
    body["request"]["object"]["metadata"]["annotations"]["example.com/padding"] = "x" * (size - bare)
    content = json.dumps(body).encode()
    assert len(content) == size
    return content


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("size", [SMALL_CAP - 1, SMALL_CAP], ids=["one-byte-under", "exactly-at"])
def test_body_up_to_the_cap_is_answered(small_client: TestClient, size: int, chunked: bool) -> None:
    content = _padded_review(size)
    sent: Any = (content[i : i + 1000] for i in range(0, len(content), 1000)) if chunked else content
    resp = small_client.post("/mutate", content=sent, headers={"content-type": "application/json"})
    answer = check_answer(resp, json.loads(content))
    assert answer.status == 200 and answer.patched is not None, resp.text
    assert_still_works(small_client)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_one_byte_over_the_cap_is_413(small_client: TestClient, chunked: bool) -> None:
    content = _padded_review(SMALL_CAP + 1)
    sent: Any = (content[i : i + 1000] for i in range(0, len(content), 1000)) if chunked else content
    resp = small_client.post("/mutate", content=sent, headers={"content-type": "application/json"})
    answer = check_answer(resp, json.loads(content))
    assert answer.status == 413, resp.text
    assert str(SMALL_CAP) in resp.json()["error"]
    assert_still_works(small_client)


def test_pod_with_1000_containers(client: TestClient) -> None:
    pod = simple_pod({INJECT: ",".join(BUILTIN_PROFILES)})
    pod["spec"]["containers"] = [{"name": f"app-{i}", "image": "registry.example.com/app:1.4.2"} for i in range(1000)]
    body = make_review(pod)
    started = time.perf_counter()
    resp = post_json(client, body)
    elapsed = time.perf_counter() - started
    answer = check_answer(resp, body)
    assert answer.patched is not None, resp.text[:500]
    assert elapsed < 30, f"1,000 containers took {elapsed:.1f}s"
    containers = answer.patched["spec"]["containers"]
    assert len(containers) > 1000 and len({c["name"] for c in containers}) == len(containers)
    assert all(any(m["mountPath"] == "/var/log/app" for m in c.get("volumeMounts", [])) for c in containers[:1000])
    assert not api_rule_problems(answer.patched)
    assert_still_works(client)


def test_pod_with_5000_containers_gets_no_patch_the_api_server_could_not_store(client: TestClient) -> None:
    pod = simple_pod({INJECT: ",".join(BUILTIN_PROFILES)})
    pod["spec"]["containers"] = [{"name": f"app-{i}", "image": "registry.example.com/app:1.4.2"} for i in range(5000)]
    body = make_review(pod)
    resp = post_json(client, body)
    answer = check_answer(resp, body)
    # no sidecar; at most the record of why
    assert_skipped_answer(answer.response, pod, BUILTIN_PROFILES)
    assert any("the API server stores" in w for w in answer.response["warnings"])
    assert_still_works(client)


def test_container_with_10000_env_vars(client: TestClient) -> None:
    pod = simple_pod({INJECT: "logging,metrics"})
    pod["spec"]["containers"][0]["env"] = [{"name": f"VAR_{i}", "value": str(i)} for i in range(10_000)]
    pod["spec"]["containers"][0]["env"].append({"name": "LOG_DIR", "value": "/mine"})  # the app's own wins
    body = make_review(pod)
    answer = check_answer(post_json(client, body), body)
    assert answer.patched is not None
    env = answer.patched["spec"]["containers"][0]["env"]
    assert env[:10_001] == pod["spec"]["containers"][0]["env"]
    assert [e["value"] for e in env if e["name"] == "LOG_DIR"] == ["/mine"]
    assert {"STATSD_HOST", "STATSD_PORT"} <= {e["name"] for e in env[10_001:]}
    assert not api_rule_problems(answer.patched)
    assert_still_works(client)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("logging," + "x" * (1 << 20), id="long-unknown-name"),
        pytest.param("logging" + "," * (1 << 20), id="commas"),
        pytest.param(",".join(["logging"] * ((1 << 17) + 1)), id="repeated-name"),
        # 8 bytes of UTF-8 each, a 2 MiB body once JSON-escaped: under the API server's 3 MiB
        pytest.param("\x1b[31m\u202e" * (1 << 17), id="control-characters"),
    ],
)
def test_annotation_value_of_1mb(client: TestClient, value: str) -> None:
    assert len(value.encode()) >= 1 << 20
    for notes in ({INJECT: value}, {INJECT: "logging", "example.com/big": value}):
        body = make_review(simple_pod(notes))
        started = time.perf_counter()
        answer = check_answer(post_json(client, body), body)
        assert time.perf_counter() - started < 10
        assert answer.status == 200, answer
        assert len(json.dumps(answer.response)) < 64 * 1024  # the value is not echoed back whole
    assert_still_works(client)


@pytest.mark.parametrize("where", ["whole-body", "in-the-pod", "unterminated"])
def test_100000_deep_nesting_is_a_clear_400(client: TestClient, where: str) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    if where == "whole-body":
        content = deep
    elif where == "in-the-pod":
        content = VALID_BODIES[0].replace(b'"object": {', b'"object": {"x": ' + deep + b", ", 1)
    else:
        content = b"[" * 100_000
    started = time.perf_counter()
    resp = post_bytes(client, content)
    assert time.perf_counter() - started < 10
    answer = check_answer(resp)
    assert answer.status == 400, resp.text
    error = resp.json()
    assert error["error"] == "request body is not valid JSON", error
    assert error["details"] and len(" ".join(error["details"])) < 1000, error
    assert_still_works(client)


def test_nesting_under_the_parser_limit_is_answered(client: TestClient) -> None:
    """Deep but acceptable JSON in the pod is carried along: the answer is still well-formed."""
    for depth in (100, 250, 255, 256, 500, 1000, 1022):
        nested = b"[" * depth + b"]" * depth
        content = VALID_BODIES[0].replace(b'"spec": {', b'"spec": {"x-deep": ' + nested + b", ", 1)
        assert content != VALID_BODIES[0]
        resp = post_bytes(client, content)
        assert resp.status_code in (200, 400), (depth, resp.status_code, resp.text[:300])
        try:
            body: Any = json.loads(content)
        except RecursionError:  # the stdlib parser stops earlier than the webhook's
            body = _UNKNOWN
        check_answer(resp, body)
    assert_still_works(client)


def test_every_hostile_edge_then_a_valid_request_on_the_same_client(client: TestClient) -> None:
    """A burst of the worst inputs in a row, then an ordinary request on the same client."""
    for content in (
        b"",
        b"\xff" * 1000,
        b"[" * 100_000,
        b"{" * 50_000,
        b"9" * 100_000,
        b"\x00" * 1000,
        b'{"apiVersion": NaN}',
        VALID_BODIES[0][:-1],
        b"\xef\xbb\xbf" + VALID_BODIES[0],
    ):
        check_answer(post_bytes(client, content))
    assert_still_works(client)


# --------------------------------------------------------------------------- regressions: bugs found here
# Each was found by this suite (first as a strict xfail with its minimal input) and fixed in
# app/sidecar_injector/core/decide.py while the suite was being written.


def _status_nested(depth: int) -> str:
    return '{"profiles":{"logging2":' + "[" * depth + "]" * depth + "}}"


@pytest.mark.parametrize("depth", [252, 253, 1000, 1022])
def test_deeply_nested_status_annotation_is_not_a_500(client: TestClient, depth: int) -> None:
    """Was an HTTP 500 from depth 253: the recorded profiles of sidecar.io/status were re-encoded
    as they were, and orjson's encoder refuses more than 255 levels (TypeError, uncaught)."""
    body = make_review(simple_pod({INJECT: "logging", STATUS: _status_nested(depth)}))
    resp = post_json(client, body)
    assert resp.status_code != 500, (depth, resp.text)
    answer = check_answer(resp, body)
    assert answer.status == 200 and answer.patched is not None, resp.text
    assert len(answer.patched["metadata"]["annotations"][STATUS]) < 4096  # the nesting is not carried over
    assert_still_works(client)


def test_conflict_warning_echoes_the_container_name_safely(client: TestClient) -> None:
    """Was ``skipped [logging] container a\\x1b already mounts /var/log/app``: the app container's
    name went into the conflict warning without ``printable()``."""
    pod = simple_pod({INJECT: "logging"})
    pod["spec"]["containers"][0]["name"] = "app\n\x1b[31m\u202e"
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "logs", "mountPath": "/var/log/app"}]
    pod["spec"]["volumes"] = [{"name": "logs", "emptyDir": {}}]
    body = make_review(pod)
    answer = check_answer(post_json(client, body), body)  # warnings: printable ASCII, <= 256 characters
    assert answer.response is not None
    warnings = answer.response.get("warnings", [])
    assert any("already mounts /var/log/app" in w for w in warnings), warnings


@pytest.mark.parametrize("name", list(SETTINGS))
def test_injection_never_pushes_annotations_over_the_size_limit(clients: dict[str, TestClient], name: str) -> None:
    """Was a patch making a valid pod invalid: with annotations within 190 bytes of the API
    server's 256 KiB limit, adding sidecar.io/status (190 bytes for logging) went over it."""
    pod = simple_pod({INJECT: "logging", "example.com/big": ""})
    notes = pod["metadata"]["annotations"]
    used = sum(len(k.encode()) + len(v.encode()) for k, v in notes.items())
    notes["example.com/big"] = "x" * (_ANNOTATION_BYTES - used)  # exactly at the limit: valid
    assert not api_rule_problems(pod)
    body = make_review(pod)
    answer = check_answer(post_json(clients[name], body), body, settings_name=name)
    assert answer.response is not None
    if answer.patched is not None:
        assert not api_rule_problems(answer.patched)
    else:  # not injected: never silently
        assert answer.response.get("warnings") or not answer.response["allowed"], answer.response
    assert_still_works(clients[name])
