"""Hypothesis strategies for hostile webhook input (used by tests/test_fuzz.py).

Everything here builds plain JSON-able Python values (dicts, lists, str, int, float, bool,
None — never tuples, never NaN/Infinity) or raw ``bytes`` bodies, so a test can both send a
value and apply the webhook's JSON Patch to exactly what it sent.

Strategies, by the numbers of "issue 5, item 5":

1. ``json_values`` / ``json_bodies`` — arbitrary JSON as the whole request body;
2. ``mutated_reviews`` — a valid review with one or two nodes (at any depth: envelope,
   request, object, metadata, annotations, spec, containers, env, volumes, ports...)
   replaced by an arbitrary JSON value, or deleted;
3. ``inject_values`` / ``annotation_maps`` — hostile values for the ``sidecar.io/*``
   annotations (odd unicode, control characters, very long, many commas, ``true``/``false``,
   unknown names, mixes of the built-in names);
4. ``colliding_pods`` — pods whose own containers, volumes, mounts, ports and env may use
   the built-in sidecars' names;
5. ``raw_bodies`` — bytes: invalid UTF-8, truncated JSON, huge numbers, deep nesting,
   NaN/Infinity literals, duplicate keys, BOMs, random byte flips;
6. ``wrong_typed_pods`` (issue 19, item 2) — a valid pod with one or two fields, anywhere in
   the pod schema (``POD_SCHEMA_FIELDS``: every field of every model reachable from
   ``V1Pod``, derived from ``profiles/kube_types.json``), set to a value of a wrong JSON type.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from importlib import resources
from typing import Any

from hypothesis import strategies as st

from required_values import REQUIRED_VALUES, values_for
from sidecar_injector.profiles.loading import builtin_profiles

API_VERSION = "admission.k8s.io/v1"
INJECT = "sidecar.io/inject"
STATUS = "sidecar.io/status"
NATIVE = "sidecar.io/native-sidecars"
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")

# --------------------------------------------------------------------------- built-in names

_BUILTINS = builtin_profiles()
BUILTIN_PROFILES: tuple[str, ...] = tuple(_BUILTINS.names())


def _collect() -> dict[str, tuple[Any, ...]]:
    containers: set[str] = set()
    volumes: set[str] = set()
    paths: set[str] = set()
    env: set[str] = set()
    ports: set[tuple[int, str]] = set()
    annotations: set[str] = set()
    for name in BUILTIN_PROFILES:
        profile = _BUILTINS[name]
        for c in (*profile.containers, *profile.init_containers):
            containers.add(c["name"])
            paths.update(m["mountPath"] for m in c.get("volumeMounts") or [])
            env.update(e["name"] for e in c.get("env") or [])
            ports.update((p["containerPort"], p.get("protocol") or "TCP") for p in c.get("ports") or [])
        volumes.update(v["name"] for v in profile.volumes)
        paths.update(m["mountPath"] for m in profile.app_volume_mounts)
        env.update(e["name"] for e in profile.app_env)
        annotations.update(profile.pod_annotations)
    return {
        "containers": tuple(sorted(containers)),
        "volumes": tuple(sorted(volumes)),
        "paths": tuple(sorted(paths)),
        "env": tuple(sorted(env)),
        "ports": tuple(sorted(ports)),
        "annotations": tuple(sorted(annotations)),
    }


_NAMES = _collect()
# The names the brief calls out are listed explicitly too, in case a profile changes.
CONTAINER_NAMES = tuple(dict.fromkeys(("sidecar-logging", *_NAMES["containers"], "app", "web", "worker", "migrate")))
VOLUME_NAMES = tuple(dict.fromkeys(("sidecar-logging-logs", *_NAMES["volumes"], "data", "cache", "tmp")))
MOUNT_PATHS = tuple(dict.fromkeys(("/var/log/app", *_NAMES["paths"], "/data", "/cache", "/tmp", "/var/log")))
ENV_NAMES = tuple(dict.fromkeys((*_NAMES["env"], "LOG_DIR", "APP_PORT", "MODE", "PATH")))
PORTS = tuple(
    dict.fromkeys(
        (
            (2020, "TCP"),
            (9102, "TCP"),
            (9125, "UDP"),
            (9125, "TCP"),
            (15001, "TCP"),
            (15000, "TCP"),
            (8443, "TCP"),
            (8080, "TCP"),
            (80, "TCP"),
            (53, "UDP"),
            (2020, "UDP"),
            (9102, "SCTP"),
            *_NAMES["ports"],
        )
    )
)
POD_ANNOTATION_KEYS = tuple(dict.fromkeys((*_NAMES["annotations"], "prometheus.io/scrape", "example.com/team")))

# --------------------------------------------------------------------------- hostile text

_SPECIAL_STRINGS = (
    "",
    " ",
    "\t",
    "\x00",
    "\n",
    "\r\n",
    "\x1b[31mred\x1b[0m",
    "\x7f",
    "\x85",
    "\u2028",
    "\u202e",
    "\ufeff",
    "\u200b",
    "é",
    "ｌｏｇｇｉｎｇ",
    "İ",
    "ß",
    "😀",
    "\U0010ffff",
    "..",
    "../..",
    "~",
    "/",
    "~1",
    "~0",
    "%00",
    "null",
    "NaN",
    "-1",
    "0x10",
    "true",
    "false",
    "logging\x00",
    "log\u0307ging",
    "a" * 63,
    "a" * 64,
    "a" * 257,
)

#: short strings of any (non-surrogate) code point, with extra weight on control characters
hostile_text = st.one_of(
    st.text(max_size=30),
    st.text(st.characters(max_codepoint=0x9F), max_size=30),  # C0/C1 control characters
    st.sampled_from(_SPECIAL_STRINGS),
)

#: hostile text, sometimes repeated up to ~100 kB
long_hostile_text = st.one_of(
    hostile_text,
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=4), st.integers(1, 25_000)),
)

# --------------------------------------------------------------------------- (1) JSON values

FIELD_NAMES = (
    "apiVersion",
    "kind",
    "request",
    "response",
    "uid",
    "operation",
    "object",
    "oldObject",
    "namespace",
    "dryRun",
    "metadata",
    "annotations",
    "labels",
    "name",
    "spec",
    "containers",
    "initContainers",
    "ephemeralContainers",
    "volumes",
    "volumeMounts",
    "mountPath",
    "env",
    "ports",
    "containerPort",
    "protocol",
    "restartPolicy",
    "image",
    INJECT,
    STATUS,
    NATIVE,
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.integers(min_value=-(10**300), max_value=10**300),  # far beyond int64 (and float) range
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
    st.sampled_from([API_VERSION, "AdmissionReview", "CREATE", "Pod", *BUILTIN_PROFILES]),
)

json_keys = st.one_of(hostile_text, st.sampled_from(FIELD_NAMES))

json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(json_keys, children, max_size=5),
    ),
    max_leaves=25,
)

#: values that are wrong for some field, with the usual suspects first (they shrink there);
#: copied, because sampled_from hands out the same (mutable) object every time
wrong_values = st.one_of(
    st.sampled_from(
        [
            None,
            True,
            False,
            0,
            -1,
            1.5,
            "",
            "x",
            [],
            {},
            [None],
            {"": None},
            [[]],
            [{}],
            2**63,
            -(2**63) - 1,
            2**64,
            10**30,
            1e308,
            "CREATE",
            "Pod",
            "false",
            "true",
        ]
    ).map(copy.deepcopy),
    json_values,
)


#: pod-ish objects: JSON objects whose keys are often the ones a pod has, values anything
json_objects = st.dictionaries(json_keys, json_values, max_size=6)

_REQUEST_FIELDS = {
    "uid": st.uuids().map(str) | st.text(min_size=1, max_size=256),
    "operation": st.sampled_from(["CREATE", "CREATE", "UPDATE", "DELETE", "CONNECT"]),
    "object": json_objects,
    "kind": st.fixed_dictionaries(
        {
            "group": st.sampled_from(["", "", "apps"]),
            "version": st.sampled_from(["v1", "v1", "v2", ""]),
            "kind": st.sampled_from(["Pod", "", "Deployment"]),
        }
    )
    | st.fixed_dictionaries({"kind": st.sampled_from(["Pod", "", "Deployment"])}),
    "namespace": st.sampled_from(["default", "kube-system", ""]),
    "dryRun": st.booleans(),
}


@st.composite
def json_bodies(draw: st.DrawFn) -> Any:
    """Any JSON value as the whole body, often shaped like an AdmissionReview envelope
    whose every field is independently right, wrong (any JSON value) or absent."""
    if draw(st.integers(0, 2)) == 0:
        return draw(json_values)

    def fields(spec: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, good in spec.items():
            choice = draw(st.integers(0, 5))
            if choice <= 3:
                out[key] = draw(good)
            elif choice == 4:
                out[key] = draw(wrong_values)
        return out

    request = fields(_REQUEST_FIELDS)
    request.update(draw(st.dictionaries(json_keys, json_values, max_size=2)))  # extra keys: ignored?
    envelope = fields({"apiVersion": st.just(API_VERSION), "kind": st.just("AdmissionReview")})
    envelope["request"] = request if draw(st.integers(0, 4)) else draw(wrong_values)
    return envelope


# --------------------------------------------------------------------------- (3) annotations

_SEPARATORS = (",", ", ", " , ", ",,", "\t,\n", ";", " ", "，")

profile_tokens = st.one_of(
    st.sampled_from(BUILTIN_PROFILES),
    st.sampled_from(BUILTIN_PROFILES).map(str.upper),
    st.sampled_from(BUILTIN_PROFILES).map(lambda s: f"  {s}\t"),
    st.sampled_from(BUILTIN_PROFILES).map(lambda s: s.replace("-", "_")),
    st.sampled_from(
        [
            "true",
            "false",
            "TRUE",
            " False ",
            "",
            "nosuch",
            "logging2",
            "sidecar-logging",
            "default",
            "*",
            "all",
            "none",
            "null",
        ]
    ),
    hostile_text,
)


@st.composite
def _joined_tokens(draw: st.DrawFn) -> str:
    tokens = draw(st.lists(profile_tokens, max_size=12))
    return draw(st.sampled_from(_SEPARATORS)).join(tokens)


@st.composite
def _mostly_builtin(draw: st.DrawFn) -> str:
    """Built-in names (three in four tokens) mixed with hostile ones, odd separators."""
    tokens = draw(
        st.lists(
            st.sampled_from(BUILTIN_PROFILES)
            | st.sampled_from(BUILTIN_PROFILES)
            | st.sampled_from(BUILTIN_PROFILES)
            | profile_tokens,
            min_size=1,
            max_size=10,
        )
    )
    return draw(st.sampled_from(_SEPARATORS[:5])).join(tokens)


#: values for ``sidecar.io/inject``
inject_values = st.one_of(
    _mostly_builtin(),
    _joined_tokens(),
    st.lists(st.sampled_from(BUILTIN_PROFILES), min_size=1, max_size=10).map(",".join),
    st.sampled_from(
        ["true", "false", "True", "FALSE", " false ", "", " ", ",", "false,logging", "logging,false", "true,logging"]
    ),
    st.integers(1, 100_000).map(lambda n: "," * n),
    st.builds(lambda name, n: ",".join([name] * n), st.sampled_from(BUILTIN_PROFILES), st.integers(1, 3000)),
    st.builds(lambda n: ",".join(f"unknown-{i}" for i in range(n)), st.integers(1, 3000)),
    long_hostile_text,
)

#: values for ``sidecar.io/native-sidecars``
native_values = st.one_of(st.sampled_from(["true", "false", "TRUE", " False", "yes", "1", ""]), hostile_text)


def _nested(depth: int, leaf: str = "[]") -> str:
    return "[" * depth + leaf + "]" * depth


@st.composite
def status_values(draw: st.DrawFn, container_names: list[str] | None = None) -> str:
    """Values for ``sidecar.io/status``: plausible records, garbage, and deep nesting."""
    kind = draw(st.integers(0, 5))
    if kind == 0:  # a plausible record of earlier injections
        profiles: dict[str, Any] = {}
        for name in draw(st.lists(st.sampled_from(BUILTIN_PROFILES) | hostile_text, max_size=4, unique=True)):
            entry: dict[str, Any] = {"version": "1.0.0", "hash": "0" * 12, "native": draw(st.booleans())}
            pool = list(container_names or []) + list(CONTAINER_NAMES)
            entry["containers"] = draw(st.lists(st.sampled_from(pool), max_size=3))
            profiles[name] = draw(st.sampled_from([entry, {}, None, "x", []]))
        return json.dumps({"profiles": profiles})
    if kind == 1:  # any JSON, e.g. {"profiles": []}
        return json.dumps(draw(json_values))
    if kind == 2:
        return json.dumps({"profiles": draw(json_values)})
    if kind == 3:  # deep nesting, around the JSON parsers' and encoders' limits
        depth = draw(st.sampled_from([1, 50, 200, 254, 300, 1000, 1023, 1030, 5000]))
        where = draw(st.integers(0, 2))
        if where == 0:
            return _nested(depth)
        if where == 1:
            return '{"profiles": {"logging": ' + _nested(depth) + "}}"
        return "[" * depth  # unterminated
    return draw(long_hostile_text)


@st.composite
def annotation_maps(
    draw: st.DrawFn, container_names: list[str] | None = None, inject: st.SearchStrategy[str] = inject_values
) -> dict[str, str]:
    """A pod's annotations: always an inject value, maybe native/status and other keys."""
    notes: dict[str, str] = {}
    for key in draw(st.lists(st.sampled_from(POD_ANNOTATION_KEYS), max_size=2, unique=True)):
        notes[key] = draw(hostile_text)
    notes[INJECT] = draw(inject)
    if draw(st.integers(0, 3)) == 0:
        notes[NATIVE] = draw(native_values)
    if draw(st.integers(0, 3)) == 0:
        notes[STATUS] = draw(status_values(container_names))
    return notes


# --------------------------------------------------------------------------- (4) colliding pods

IMAGE = "registry.example.com/app:1.4.2"

dns_labels = st.from_regex(r"\A[a-z]([a-z0-9-]{0,10}[a-z0-9])?\Z")

#: built-in profile combinations as sidecar.io/inject values
builtin_mixes = st.one_of(
    st.lists(st.sampled_from(BUILTIN_PROFILES), min_size=1, max_size=8, unique=True).map(",".join),
    st.lists(st.sampled_from(BUILTIN_PROFILES), min_size=1, max_size=8, unique=True).map(", ".join),
    st.just(",".join(BUILTIN_PROFILES)),
    st.just("true"),
)


@st.composite
def colliding_pods(
    draw: st.DrawFn, *, sloppy: bool | None = None, inject: st.SearchStrategy[str] = builtin_mixes
) -> dict[str, Any]:
    """A pod whose own names, paths and ports are drawn from the built-in sidecars' ones.

    Not ``sloppy``: container names, volume names, per-container mount paths and
    listening ports are unique and mounts reference existing volumes, so the pod is
    normally valid (tests/podcheck.py decides). ``sloppy``: duplicates are allowed.
    """
    if sloppy is None:
        sloppy = draw(st.integers(0, 4)) == 0
    n_containers = draw(st.integers(1, 4))
    n_init = draw(st.integers(0, 2))
    n_ephemeral = draw(st.integers(0, 3)) // 3  # mostly none
    total = n_containers + n_init + n_ephemeral
    names = draw(st.lists(st.sampled_from(CONTAINER_NAMES) | dns_labels, min_size=total, max_size=total, unique=not sloppy))
    volume_names = draw(st.lists(st.sampled_from(VOLUME_NAMES) | dns_labels, max_size=4, unique=not sloppy))
    used_ports: set[tuple[int, str]] = set()

    def container(name: str, kind: str) -> dict[str, Any]:
        c: dict[str, Any] = {"name": name, "image": IMAGE}
        if volume_names and draw(st.booleans()):
            mounts = draw(
                st.lists(
                    st.builds(
                        lambda v, p: {"name": v, "mountPath": p}, st.sampled_from(volume_names), st.sampled_from(MOUNT_PATHS)
                    ),
                    max_size=4,
                    unique_by=None if sloppy else (lambda m: m["mountPath"]),
                )
            )
            c["volumeMounts"] = mounts
        elif draw(st.integers(0, 5)) == 0:
            c["volumeMounts"] = draw(st.sampled_from([None, []]).map(copy.deepcopy))
        if draw(st.booleans()):
            c["env"] = draw(
                st.lists(
                    st.builds(lambda n, v: {"name": n, "value": v}, st.sampled_from(ENV_NAMES), st.text(max_size=8)),
                    max_size=4,
                )
            )
        elif draw(st.integers(0, 5)) == 0:
            c["env"] = draw(st.sampled_from([None, []]).map(copy.deepcopy))
        native = kind == "initContainers" and draw(st.booleans())
        if native:
            c["restartPolicy"] = "Always"
        if kind != "ephemeralContainers" and draw(st.booleans()):
            ports = []
            for number, protocol in draw(st.lists(st.sampled_from(PORTS), max_size=3, unique=True)):
                listens = kind == "containers" or native
                if listens and not sloppy and (number, protocol) in used_ports:
                    continue
                if listens:
                    used_ports.add((number, protocol))
                port: dict[str, Any] = {"containerPort": number}
                if protocol != "TCP" or draw(st.booleans()):
                    port["protocol"] = protocol
                ports.append(port)
            c["ports"] = ports
        return c

    spec: dict[str, Any] = {"containers": [container(n, "containers") for n in names[:n_containers]]}
    if n_init:
        spec["initContainers"] = [container(n, "initContainers") for n in names[n_containers : n_containers + n_init]]
    if n_ephemeral:
        spec["ephemeralContainers"] = [{"name": n, "image": IMAGE} for n in names[n_containers + n_init :]]
    if volume_names or draw(st.booleans()):
        spec["volumes"] = [{"name": v, "emptyDir": {}} for v in volume_names]
    restart = draw(st.sampled_from([None, "Always", "Never", "OnFailure"]))
    if restart:
        spec["restartPolicy"] = restart

    metadata: dict[str, Any] = {"name": "web"} if draw(st.booleans()) else {"generateName": "web-7c9f8d-"}
    metadata["labels"] = {"app": "web"}
    if draw(st.integers(0, 3)) == 0:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "batch/v1",
                "kind": draw(st.sampled_from(["Job", "ReplicaSet"])),
                "name": "owner",
                "uid": "5f0c3c4e-6a43-4d1f-9d36-0a9f0a5b7e11",
                "controller": True,
            }
        ]
    metadata["annotations"] = draw(annotation_maps(names, inject=inject))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def simple_pod(annotations: dict[str, Any] | None) -> dict[str, Any]:
    """A minimal valid pod with these annotations."""
    metadata: dict[str, Any] = {"name": "web", "namespace": "default", "labels": {"app": "web"}}
    if annotations is not None:
        inject = annotations.get(INJECT)
        metadata["annotations"] = {**values_for(inject if isinstance(inject, str) else None), **annotations}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": "app", "image": IMAGE}]},
    }


def make_review(
    pod: Any,
    *,
    uid: str = "705ab4f5-6393-11e8-b7cc-42010a800002",
    operation: str = "CREATE",
    namespace: str | None = "default",
    kind: str = "Pod",
    dry_run: bool = False,
) -> dict[str, Any]:
    """An AdmissionReview as the API server sends it for a pod."""
    request: dict[str, Any] = {
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": kind},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": {"group": "", "version": "v1", "kind": kind},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": operation,
        "userInfo": {
            "username": "system:serviceaccount:kube-system:replicaset-controller",
            "groups": ["system:serviceaccounts", "system:authenticated"],
        },
        "object": pod,
        "dryRun": dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
    }
    if namespace is not None:
        request["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": request}


uids = st.one_of(
    st.uuids().map(str),
    st.text(min_size=1, max_size=256),
    st.sampled_from(["x", "a" * 256, "\x00", "\u202e", "😀" * 64]),
)

namespaces = st.one_of(
    st.just("default"),
    st.sampled_from([*SYSTEM_NAMESPACES, "sidecar-injector", "excluded", "", None]),
    dns_labels,
)


@st.composite
def reviews_of(draw: st.DrawFn, pods: st.SearchStrategy[Any]) -> dict[str, Any]:
    """A review around a drawn pod; mostly a pod CREATE in an ordinary namespace."""
    operation = "CREATE" if draw(st.integers(0, 7)) else draw(st.sampled_from(["UPDATE", "DELETE", "CONNECT"]))
    kind = "Pod" if draw(st.integers(0, 7)) else draw(st.sampled_from(["", "Deployment", "pod"]))
    namespace = "default" if draw(st.integers(0, 3)) else draw(namespaces)
    return make_review(
        draw(pods), uid=draw(uids), operation=operation, namespace=namespace, kind=kind, dry_run=draw(st.booleans())
    )


# --------------------------------------------------------------------------- (2) mutated reviews


def node_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (dict keys and list indices) in a JSON value, the root first."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += node_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += node_paths(value, (*prefix, index))
    return found


def _set(root: Any, path: tuple[Any, ...], value: Any, *, delete: bool = False) -> Any:
    if not path:
        return value
    parent = root
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return root


RICH_POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "generateName": "web-7c9f8d-",
        "namespace": "default",
        "labels": {"app": "web"},
        "annotations": {
            INJECT: "logging,metrics,git-sync",
            NATIVE: "false",
            "example.com/owner": "team-a",
            **REQUIRED_VALUES,
        },
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "web-7c9f8d",
                "uid": "5f0c3c4e-6a43-4d1f-9d36-0a9f0a5b7e11",
                "controller": True,
            }
        ],
    },
    "spec": {
        "initContainers": [{"name": "migrate", "image": IMAGE, "command": ["/migrate"]}],
        "containers": [
            {
                "name": "app",
                "image": IMAGE,
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "env": [{"name": "MODE", "value": "production"}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
            },
            {"name": "worker", "image": IMAGE},
        ],
        "volumes": [{"name": "data", "emptyDir": {}}],
        "restartPolicy": "Always",
        "os": {"name": "linux"},
    },
}


@st.composite
def mutated_reviews(draw: st.DrawFn) -> dict[str, Any]:
    """A valid review with one or two nodes replaced by an arbitrary JSON value, or deleted."""
    if draw(st.booleans()):
        pod = json.loads(json.dumps(RICH_POD))
        pod["metadata"]["annotations"][INJECT] = draw(builtin_mixes)
    else:
        pod = draw(colliding_pods(sloppy=False))
    body = json.loads(json.dumps(make_review(pod, uid=draw(st.uuids()).hex)))  # nothing shared
    for _ in range(draw(st.integers(1, 2))):
        paths = node_paths(body)
        path = draw(st.sampled_from(paths))
        if path and draw(st.integers(0, 4)) == 0:
            body = _set(body, path, None, delete=True)
        else:
            body = _set(body, path, copy.deepcopy(draw(wrong_values)))
    return body


# --------------------------------------------------------------------------- (5) raw bytes

JSON_LITERALS = (
    b"NaN",
    b"-NaN",
    b"Infinity",
    b"-Infinity",
    b"inf",
    b"1e999",
    b"-1e999",
    b"1e-999",
    b"1E400",
    b"9" * 400,
    b"-" + b"9" * 5000,
    b"18446744073709551616",
    b"-9223372036854775809",
    b"0." + b"0" * 400 + b"1",
    b"-0",
    b"01",
    b"1.",
    b".5",
    b"+1",
    b"0x10",
    b"1_000",
    b"true",
    b"True",
    b"nul",
    b"undefined",
    b"'single'",
    b'"\\ud800"',
    b'"\\udc00\\ud800"',
    b'"\\u0000"',
    b'"\\x41"',
    b'"unterminated',
    b"[1,]",
    b"{,}",
    b"/* comment */ 1",
)

BAD_UTF8 = (
    b"\xff",
    b"\xfe",
    b"\xc3",
    b"\xc0\xaf",
    b"\xe0\x80\xaf",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xf4\x90\x80\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\x80",
    b"\xc3\x28",
)

BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")

CONTENT_TYPES = (
    "application/json",
    "application/json",
    "application/json",
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    " application/json ;charset=latin-1",
    "application/json;;",
    "text/plain",
    "application/json-patch+json",
    "application/x-www-form-urlencoded",
    "",
    None,
    "application/jsonx",
    "multipart/form-data; boundary=x",
    "application/json\x00",
)


#: mostly the right content type, so that most bodies get as far as the JSON parser
content_types = st.one_of(st.just("application/json"), st.just("application/json"), st.sampled_from(CONTENT_TYPES))


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def _valid_review_bytes() -> list[bytes]:
    return [
        encode(make_review(simple_pod({INJECT: "logging,metrics"}))),
        encode(make_review(RICH_POD)),
        encode(make_review(simple_pod({INJECT: "logging"}), operation="DELETE")),
        json.dumps(make_review(simple_pod({INJECT: "proxy"})), indent=2).encode(),
    ]


VALID_BODIES = _valid_review_bytes()


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    """Broken (and sometimes still valid) request bodies as bytes."""
    base = draw(st.sampled_from(VALID_BODIES))
    kind = draw(st.integers(0, 10))
    # string openings and value positions: where an insertion is most interesting
    if kind == 0:  # truncated
        return base[: draw(st.integers(0, len(base) - 1))]
    if kind == 1:  # invalid UTF-8 somewhere, often inside a string
        quotes = [i + 1 for i, b in enumerate(base) if b == ord('"')]
        at = draw(st.sampled_from(quotes) | st.integers(0, len(base)))
        return base[:at] + draw(st.sampled_from(BAD_UTF8) | st.binary(min_size=1, max_size=4)) + base[at:]
    if kind == 2:  # a strange literal as a value of a new key in the pod, or instead of the uid
        literal = draw(st.sampled_from(JSON_LITERALS))
        if draw(st.booleans()):
            return base.replace(b'"object": {', b'"object": {"x": ' + literal + b", ", 1)
        return base.replace(b'"uid": "', b'"uid": ' + literal + b', "_": "', 1)
    if kind == 3:  # deep nesting, in the pod, as the uid, or as the whole body
        depth = draw(st.sampled_from([10, 128, 255, 256, 512, 1023, 1024, 1025, 2000, 5000, 100_000]))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        nested = opener * depth + b"1" + closer * depth
        where = draw(st.integers(0, 3))
        if where == 0:
            return base.replace(b'"object": {', b'"object": {"deep": ' + nested + b", ", 1)
        if where == 1:
            return base.replace(b'"uid": "', b'"uid": ' + nested + b', "_": "', 1)
        if where == 2:
            return opener * depth  # unterminated
        return nested
    if kind == 4:  # duplicate keys: first or last wins?
        key, value = draw(
            st.sampled_from(
                [
                    (b"apiVersion", b'"admission.k8s.io/v1beta1"'),
                    (b"kind", b'"Foo"'),
                    (b"request", b"null"),
                    (b"request", b"{}"),
                    (b"apiVersion", b'"admission.k8s.io/v1"'),
                ]
            )
        )
        if draw(st.booleans()):
            return b"{" + b'"' + key + b'": ' + value + b", " + base[1:]
        return base[:-1] + b', "' + key + b'": ' + value + b"}"
    if kind == 5:  # byte order marks, and the body in UTF-16/32
        bom = draw(st.sampled_from(BOMS))
        codec = draw(st.sampled_from(["utf-8", "utf-16-le", "utf-16-be", "utf-32-le"]))
        return bom + base.decode().encode(codec)
    if kind == 6:  # random byte flips
        data = bytearray(base)
        for _ in range(draw(st.integers(1, 3))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == 7:  # trailing garbage / concatenated documents / leading whitespace
        suffix = draw(st.sampled_from([b" ", b"\n", b"\x00", b"{}", base, b",", b"]", b"\x1a"]))
        prefix = draw(st.sampled_from([b"", b" \n\t\r", b"\x0c", b"\xc2\xa0"]))
        return prefix + base + suffix
    if kind == 8:  # an escaped lone surrogate or NUL inside a string
        escape = draw(st.sampled_from([b"\\ud800", b"\\udfff", b"\\ud83d", b"\\u0000", b"\\uZZZZ", b"\\"]))
        return base.replace(b'"uid": "', b'"uid": "' + escape, 1)
    if kind == 9:
        return draw(st.binary(max_size=300))
    return encode(draw(json_values)) + draw(st.binary(max_size=3))


# --------------------------------------------------------------------------- (6) wrong-typed pod fields

#: the model the pod schema starts from; its fields, and those of every type below it, come
#: from profiles/kube_types.json (the Container, Volume, ObjectMeta... tables profiles are
#: checked against) and, for the pod-level types that file leaves out (V1Pod, V1PodSpec,
#: affinity, ...), from the same generator run on the installed client's models
POD_ROOT = "V1Pod"
_LIST_TYPE = re.compile(r"^List\[(.+)\]$")
_DICT_TYPE = re.compile(r"^Dict\[str, (.+)\]$")


def _client_model_fields(name: str) -> dict[str, str] | None:
    """The field table of one client model, exactly as scripts/gen_kube_types.py extracts it."""
    import kubernetes.client.models as models  # what kube_types.json is generated from

    cls = getattr(models, name, None)
    if cls is None or not hasattr(cls, "openapi_types"):
        return None
    return {cls.attribute_map[attr]: typ for attr, typ in cls.openapi_types.items()}


_SCALAR_TYPES = frozenset({"str", "int", "float", "bool", "object", "datetime", "date", "bytes"})


def pod_schema() -> dict[str, dict[str, str]]:
    """``{model: {json field: client type}}`` for every model reachable from ``V1Pod``."""
    shipped = json.loads((resources.files("sidecar_injector.profiles") / "kube_types.json").read_text(encoding="utf-8"))
    known: dict[str, dict[str, str]] = shipped["types"]
    schema: dict[str, dict[str, str]] = {}
    todo = [POD_ROOT]
    while todo:
        name = todo.pop()
        while match := _LIST_TYPE.match(name) or _DICT_TYPE.match(name):
            name = match.group(1)
        if name in _SCALAR_TYPES or name in schema:
            continue
        fields = known.get(name) or _client_model_fields(name)
        if fields is None:
            continue
        schema[name] = fields
        todo.extend(fields.values())
    return schema


def _schema_fields() -> list[tuple[tuple[Any, ...], str]]:
    """Every field of every model of the pod schema with its client type, each model at the
    shortest path that reaches it under each top-level pod field (``spec.containers``,
    ``spec.initContainers``, ``metadata``...; list levels as index 0, map levels as key ``k``)."""
    schema = pod_schema()
    found: list[tuple[tuple[Any, ...], str]] = []
    # each model once per top-level pod field it sits under (containers, initContainers, volumes...)
    reached: set[tuple[str, tuple[Any, ...]]] = set()
    queue: list[tuple[str, tuple[Any, ...]]] = [(POD_ROOT, ())]
    while queue:
        model, path = queue.pop(0)
        for field_name, typ in sorted(schema.get(model, {}).items()):
            if field_name == "status" and model == POD_ROOT:
                continue  # the API server drops the status of a pod being created
            found.append(((*path, field_name), typ))
            inner, steps = typ, [field_name]
            while match := _LIST_TYPE.match(inner) or _DICT_TYPE.match(inner):
                steps.append(0 if inner.startswith("List[") else "k")
                inner = match.group(1)
            key = (inner, (*path, *steps)[:2])
            if inner in schema and key not in reached:
                reached.add(key)
                queue.append((inner, (*path, *steps)))
    return found


#: (path from the pod, client type) of every field of the pod schema
POD_SCHEMA_FIELDS: tuple[tuple[tuple[Any, ...], str], ...] = tuple(_schema_fields())

_WRONG_FOR_SCALAR: dict[str, list[Any]] = {
    "str": [True, 7, 1.5, [], {}, ["x"], {"k": "v"}],
    "int": [True, "7", 1.5, [], {}, [1], {"k": 1}],
    "float": [True, "1.5", [], {}],
    "bool": ["true", 1, 0, [], {}, [True]],
    "object": [True, [], {}, [1]],  # int-or-string
    "datetime": [True, 7, [], {}],
    "date": [True, 7, [], {}],
    "bytes": [True, 7, [], {}],
}
_WRONG_FOR_LIST = [True, False, 7, -1, 1.5, "x", "", {}, {"k": "v"}]
_WRONG_FOR_MAP = [True, 7, 1.5, "x", [], ["x"], [{}]]
_WRONG_FOR_OBJECT = [True, False, 7, 1.5, "x", "", [], [{}], ["x"]]


def wrong_values_for(typ: str) -> list[Any]:
    """JSON values of a type the field's schema type is not (null is "unset": never wrong)."""
    if _LIST_TYPE.match(typ):
        inner = _LIST_TYPE.match(typ).group(1)  # type: ignore[union-attr]
        # the whole list wrong, or one item of it
        return [*_WRONG_FOR_LIST, *([v] for v in wrong_values_for(inner)[:4])]
    if _DICT_TYPE.match(typ):
        inner = _DICT_TYPE.match(typ).group(1)  # type: ignore[union-attr]
        return [*_WRONG_FOR_MAP, *({"k": v} for v in wrong_values_for(inner)[:3])]
    if typ in _WRONG_FOR_SCALAR:
        return _WRONG_FOR_SCALAR[typ]
    return _WRONG_FOR_OBJECT


def _place(root: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    """Set ``value`` at ``path``, building (or replacing) the objects and lists on the way."""
    node: Any = root
    for step, following in itertools.pairwise(path):
        empty: Any = [] if isinstance(following, int) else {}
        if isinstance(step, int):
            if not node or not isinstance(node[0], type(empty)):
                node[:1] = [empty]
            node = node[0]
        else:
            if not isinstance(node.get(step), type(empty)):
                node[step] = empty
            node = node[step]
    last = path[-1]
    if isinstance(last, int):
        node[:1] = [value]
    else:
        node[last] = value


@st.composite
def wrong_typed_pods(draw: st.DrawFn, inject: st.SearchStrategy[str] = builtin_mixes) -> dict[str, Any]:
    """A valid pod that requests built-in profiles, with one field anywhere in the pod schema
    (every field of every model reachable from ``V1Pod``) set to a value of a wrong JSON type."""
    pod = json.loads(json.dumps(RICH_POD))
    pod["metadata"]["annotations"][INJECT] = draw(inject)
    for _ in range(draw(st.integers(1, 2))):
        path, typ = draw(st.sampled_from(POD_SCHEMA_FIELDS))
        value = copy.deepcopy(draw(st.sampled_from(wrong_values_for(typ))))
        _place(pod, path, value)
    return pod
