"""A small, real HTTP server that speaks the parts of the Kubernetes API the injector uses.

Not a mock of the client: the official ``kubernetes`` client talks to it over a socket,
so URL building, query parameters, chunked watch streams, Status bodies, timeouts and
reconnects are all exercised for real. What it serves:

- ``GET /api/v1/namespaces`` — a NamespaceList with ``metadata.resourceVersion``, paged
  with ``limit``/``continue`` (a consistent snapshot per paged list);
- ``GET /api/v1/namespaces?watch=true&resourceVersion=N`` — a chunked stream of JSON
  lines (ADDED/MODIFIED/DELETED/BOOKMARK) of the changes after N, ended after
  ``timeoutSeconds``; N older than the compacted history gets an ERROR event carrying a
  410 ``Expired`` Status, as the real API server sends;
- ``GET /api/v1/namespaces/{name}`` — 200, a 404 Status, or a forced status / delay;
- ``POST /apis/events.k8s.io/v1/namespaces/{ns}/events`` — validated like the API server
  validates events.k8s.io/v1 Events (required fields, lengths, MicroTime) and recorded;
- ``GET /api/v1/pods`` and ``GET /api/v1/namespaces/{ns}/pods`` — PodLists, paged;
- ``GET /api/v1/namespaces/{ns}/configmaps/{name}`` — a ConfigMap from ``configmaps`` or 404;
- ``/apis/{group}/{version}/[namespaces/{ns}/]{plural}[/{name}[/status]]`` of the resources in
  ``RESOURCES`` (the sidecar.io profiles, Leases, Deployments, ReplicaSets, StatefulSets,
  DaemonSets, Jobs): list (paged) and watch (all namespaces or one) like namespaces, GET,
  POST (409 if it exists), PUT (409 on a stale resourceVersion: optimistic concurrency, as
  leader election needs), PATCH (merge / strategic merge of maps, or a JSON Patch) of the
  object or of its ``status`` subresource. ``metadata.generation`` moves when ``spec``
  changes, as the API server does for resources with a status subresource; with
  ``auto_rollout`` the workloads' status follows their new generation at once, as if their
  controller finished the rollout. ``crds_installed = False`` answers 404 for sidecar.io.

The test drives the state (``add_namespace``, ``modify_namespace``, ``delete_namespace``,
``bookmark``, ``force_gone``, ``close_watches``, ``drop_connections``, ``hang_watches``,
``go_down``/``come_up``) and reads what the server received (``requests``, ``events``).
"""

from __future__ import annotations

import contextlib
import itertools
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonpatch
import orjson
from kubernetes import client

#: what the API server accepts for a MicroTime (metav1.RFC3339Micro: exactly 6 digits)
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict, compare=False)
    body: Any = field(default=None, compare=False)


#: group/version/plural -> namespaced? The resources served generically (besides namespaces, pods...)
RESOURCES: dict[str, bool] = {
    "sidecar.io/v1alpha1/sidecarprofiles": True,
    "sidecar.io/v1alpha1/clustersidecarprofiles": False,
    "coordination.k8s.io/v1/leases": True,
    "apps/v1/deployments": True,
    "apps/v1/replicasets": True,
    "apps/v1/statefulsets": True,
    "apps/v1/daemonsets": True,
    "batch/v1/jobs": True,
}
_KINDS = {
    "sidecarprofiles": "SidecarProfile",
    "clustersidecarprofiles": "ClusterSidecarProfile",
    "leases": "Lease",
    "deployments": "Deployment",
    "replicasets": "ReplicaSet",
    "statefulsets": "StatefulSet",
    "daemonsets": "DaemonSet",
    "jobs": "Job",
}
_API_PATH = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)"
    r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>status))?$"
)


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], api: FakeKubeApi):
        self.api = api
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def drop_all(self) -> None:
        """Cut every open connection, as a crashed server or a broken network would."""
        with self.sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        body: Any = None
        try:
            if method in ("PUT", "PATCH") or (
                method == "POST" and parts.path.startswith("/apis/") and "events" not in parts.path
            ):
                length = int(self.headers.get("Content-Length") or 0)
                body = orjson.loads(self.rfile.read(length)) if length else None
            self.server.api._handle(self, Request(method, parts.path, query, headers, body))
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError, OSError):
            self.close_connection = True

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    # -- writing ---------------------------------------------------------------------

    def send_json(self, code: int, body: Any) -> None:
        data = orjson.dumps(body)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def start_chunked(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class FakeKubeApi:
    """The fake API server and its state. Use as a context manager or start()/stop()."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.rv = 100
        #: compacted history: watches from an older resourceVersion get 410 Expired
        self.oldest_rv = 100
        self.namespaces: dict[str, dict[str, Any]] = {}
        self.history: list[tuple[int, str, dict[str, Any], str | None]] = []
        self.pods: list[dict[str, Any]] = []
        #: (namespace, name) -> ConfigMap, for GET /api/v1/namespaces/{ns}/configmaps/{name}
        self.configmaps: dict[tuple[str, str], dict[str, Any]] = {}
        #: (namespace, body) of every Event accepted
        self.events: list[tuple[str, dict[str, Any]]] = []
        #: (namespace, name, merge patch) of every PATCH of an Event, in order
        self.event_patches: list[tuple[str, str, Any]] = []
        self.requests: list[Request] = []
        #: GET /api/v1/namespaces/{name}: seconds to wait before answering
        self.namespace_get_delay = 0.0
        #: GET /api/v1/namespaces/{name}: answer this status instead (e.g. 500)
        self.namespace_get_status: int | None = None
        #: POST events: answer this status instead (e.g. 500, 403)
        self.event_post_status: int | None = None
        #: the generic resources: group/version/plural -> (namespace or None, name) -> object
        self.objects: dict[str, dict[tuple[str | None, str], dict[str, Any]]] = {key: {} for key in RESOURCES}
        #: False: the sidecar.io CRDs are not installed (404, as the API server answers)
        self.crds_installed = True
        #: workloads' status follows a new generation at once (their controller "finished the rollout")
        self.auto_rollout = True
        #: PATCH of a status subresource: answer this status instead (e.g. 500)
        self.status_patch_status: int | None = None
        #: new watch streams send their headers and then nothing, ever
        self.hang_watches = False
        self._close_generation = 0
        self._gone_generation = 0
        self._open_watches = 0
        self._continues: dict[str, tuple[list[dict[str, Any]], int, int]] = {}
        self._tokens = itertools.count(1)
        self._down = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> FakeKubeApi:
        self._down.clear()
        self._server = _Server(("127.0.0.1", self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-kube-api", daemon=True
        )
        self._thread.start()
        return self

    def go_down(self) -> None:
        """Stop listening and cut every connection (the next connect is refused)."""
        server = self._server
        if server is None:
            return
        self._down.set()
        with self._cond:
            self._cond.notify_all()
        server.shutdown()
        server.server_close()
        server.drop_all()
        self._server = None

    def come_up(self) -> None:
        """Listen again on the same port."""
        self.start()

    stop = go_down

    def __enter__(self) -> FakeKubeApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.go_down()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def configuration(self) -> client.Configuration:
        return client.Configuration(host=self.url)

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig whose current context is this server, for processes and the CLI."""
        path.write_text(
            orjson.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                    "users": [{"name": "fake", "user": {"token": "test"}}],
                }
            ).decode()
        )  # JSON is YAML
        return path

    # -- state the tests drive ------------------------------------------------------------

    def _bump(self) -> int:
        self.rv += 1
        return self.rv

    def _record(self, kind: str, obj: dict[str, Any], resource: str | None = "namespaces") -> None:
        """An event for the watches of ``resource`` (None: every watch, e.g. a BOOKMARK)."""
        self.history.append((self.rv, kind, obj, resource))
        self._cond.notify_all()

    def add_namespace(
        self,
        name: str,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        *,
        silent: bool = False,
    ) -> dict[str, Any]:
        """Create a namespace; ``silent``: no watch event (a change the watch missed)."""
        with self._cond:
            obj = {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": name,
                    "uid": str(uuid.uuid4()),
                    "resourceVersion": str(self._bump()),
                    "creationTimestamp": "2025-01-01T00:00:00Z",
                    "labels": {"kubernetes.io/metadata.name": name, **(labels or {})},
                },
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            }
            if annotations:
                obj["metadata"]["annotations"] = dict(annotations)
            self.namespaces[name] = obj
            if not silent:
                self._record("ADDED", obj)
            return obj

    def modify_namespace(
        self,
        name: str,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        *,
        silent: bool = False,
    ) -> None:
        with self._cond:
            old = self.namespaces[name]
            meta = dict(old["metadata"], resourceVersion=str(self._bump()))
            if labels is not None:
                meta["labels"] = {"kubernetes.io/metadata.name": name, **labels}
            if annotations is not None:
                meta["annotations"] = dict(annotations)
            obj = dict(old, metadata=meta)
            self.namespaces[name] = obj
            if not silent:
                self._record("MODIFIED", obj)

    def delete_namespace(self, name: str, *, silent: bool = False) -> None:
        with self._cond:
            obj = self.namespaces.pop(name)
            obj = dict(obj, metadata=dict(obj["metadata"], resourceVersion=str(self._bump())))
            if not silent:
                self._record("DELETED", obj)

    def other_changes(self, count: int = 5) -> int:
        """Changes to other kinds: the resourceVersion moves, no namespace event."""
        with self._cond:
            self.rv += count
            return self.rv

    def bookmark(self) -> int:
        """A BOOKMARK with the current resourceVersion to every open and later watch."""
        with self._cond:
            self._record("BOOKMARK", {"metadata": {"resourceVersion": str(self.rv)}}, None)
            return self.rv

    def compact(self) -> None:
        """Forget the history: a watch from any resourceVersion seen so far gets 410."""
        with self._cond:
            self.oldest_rv = self._bump()
            self.history.clear()

    def force_gone(self) -> None:
        """Compact, and end open watches with an ERROR event carrying 410 Expired."""
        with self._cond:
            self.compact()
            self._gone_generation += 1
            self._cond.notify_all()

    def close_watches(self) -> None:
        """End every open watch stream cleanly (as the server does at timeoutSeconds)."""
        with self._cond:
            self._close_generation += 1
            self._cond.notify_all()

    def drop_connections(self) -> None:
        """Cut every open connection without a clean end."""
        if self._server is not None:
            self._server.drop_all()

    def set_pods(self, pods: Iterable[dict[str, Any]]) -> None:
        with self._cond:
            self.pods = list(pods)

    # -- the generic resources ---------------------------------------------------------------

    def put_object(self, resource: str, obj: dict[str, Any], *, silent: bool = False) -> dict[str, Any]:
        """Create or replace an object of ``resource`` (group/version/plural) as a client's write would.

        uid and creationTimestamp are kept from the stored object (or made up), the
        resourceVersion moves, and ``generation`` moves when ``spec`` changed. ``silent``:
        no watch event (a change the watch missed).
        """
        with self._cond:
            return self._store(resource, obj, silent=silent)

    def _store(self, resource: str, obj: dict[str, Any], *, silent: bool = False, status: bool = False) -> dict[str, Any]:
        namespaced = RESOURCES[resource]
        meta = dict(obj.get("metadata") or {})
        key = (meta.get("namespace") if namespaced else None, meta["name"])
        old = self.objects[resource].get(key)
        old_meta = old["metadata"] if old else {}
        if not namespaced:
            meta.pop("namespace", None)
        generation = old_meta.get("generation", 0)
        if old is None or (not status and old.get("spec") != obj.get("spec")):
            generation += 1
        meta.update(
            uid=old_meta.get("uid") or meta.get("uid") or str(uuid.uuid4()),
            creationTimestamp=old_meta.get("creationTimestamp") or "2025-01-01T00:00:00Z",
            resourceVersion=str(self._bump()),
            generation=generation,
        )
        group_version, plural = resource.rsplit("/", 1)
        stored = {"apiVersion": group_version, "kind": _KINDS[plural], **obj, "metadata": meta}
        if old is not None and not status and "status" in old:
            stored["status"] = old["status"]  # a write of the object never changes its status
        if self.auto_rollout and plural in ("deployments", "statefulsets", "daemonsets") and not status:
            stored["status"] = _rolled_out(plural, stored)
        self.objects[resource][key] = stored
        if not silent:
            self._record("ADDED" if old is None else "MODIFIED", stored, resource)
        return stored

    def set_status(self, resource: str, namespace: str | None, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Replace an object's status (as its controller would)."""
        with self._cond:
            obj = self.objects[resource][(namespace, name)]
            return self._store(resource, {**obj, "status": status}, status=True)

    def delete_object(self, resource: str, namespace: str | None, name: str, *, silent: bool = False) -> None:
        with self._cond:
            obj = self.objects[resource].pop((namespace, name))
            obj = dict(obj, metadata=dict(obj["metadata"], resourceVersion=str(self._bump())))
            if not silent:
                self._record("DELETED", obj, resource)

    def get_object(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        with self._cond:
            return self.objects[resource].get((namespace, name))

    # -- what the server received ------------------------------------------------------------

    def received(self, predicate: Callable[[Request], bool] = lambda r: True) -> list[Request]:
        with self._cond:
            return [r for r in self.requests if predicate(r)]

    def watches(self, path: str = "/api/v1/namespaces") -> list[Request]:
        return self.received(lambda r: r.path == path and r.query.get("watch") in ("true", "1"))

    def lists(self, path: str = "/api/v1/namespaces") -> list[Request]:
        return self.received(lambda r: r.method == "GET" and r.path == path and r.query.get("watch") not in ("true", "1"))

    def gets(self, name: str) -> list[Request]:
        return self.received(lambda r: r.method == "GET" and r.path == f"/api/v1/namespaces/{name}")

    def open_watches(self) -> int:
        with self._cond:
            return self._open_watches

    # -- serving ---------------------------------------------------------------------------

    def _handle(self, h: _Handler, req: Request) -> None:
        with self._cond:
            self.requests.append(req)
        path = req.path.rstrip("/")
        if req.method == "GET" and path == "/api/v1/namespaces":
            if req.query.get("watch") in ("true", "1"):
                return self._watch(h, req)
            with self._cond:
                items = sorted(self.namespaces.values(), key=lambda o: o["metadata"]["name"])
            return h.send_json(200, self._page("NamespaceList", items, req))
        if req.method == "GET" and path == "/api/v1/pods":
            with self._cond:
                pods = list(self.pods)
            return h.send_json(200, self._page("PodList", pods, req))
        match = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods", path)
        if req.method == "GET" and match:
            with self._cond:
                pods = [p for p in self.pods if p.get("metadata", {}).get("namespace") == match[1]]
            return h.send_json(200, self._page("PodList", pods, req))
        match = re.fullmatch(r"/api/v1/namespaces/([^/]+)/configmaps/([^/]+)", path)
        if req.method == "GET" and match:
            found = self.configmaps.get((match[1], match[2]))
            if found is None:
                return h.send_json(404, status(404, "NotFound", f'configmaps "{match[2]}" not found'))
            return h.send_json(200, found)
        match = re.fullmatch(r"/api/v1/namespaces/([^/]+)", path)
        if req.method == "GET" and match:
            return self._get_namespace(h, match[1])
        match = re.fullmatch(r"/apis/events\.k8s\.io/v1/namespaces/([^/]+)/events", path)
        if req.method == "POST" and match:
            return self._create_event(h, match[1])
        match = re.fullmatch(r"/apis/events\.k8s\.io/v1/namespaces/([^/]+)/events/([^/]+)", path)
        if req.method == "PATCH" and match:
            return self._patch_event(h, req, match[1], match[2])
        match = _API_PATH.match(path)
        resource = f"{match['group']}/{match['version']}/{match['plural']}" if match else ""
        if match and resource in self.objects and (self.crds_installed or match["group"] != "sidecar.io"):
            return self._generic(h, req, resource, match["ns"], match["name"], match["sub"])
        h.send_json(404, status(404, "NotFound", f"the server could not find the requested resource ({path})"))
        return None

    def _generic(
        self, h: _Handler, req: Request, resource: str, namespace: str | None, name: str | None, sub: str | None
    ) -> None:
        namespaced = RESOURCES[resource]
        plural = resource.rsplit("/", 1)[1]
        if name is None:
            if req.method == "GET" and req.query.get("watch") in ("true", "1"):
                return self._watch(h, req, resource, namespace)
            if req.method == "GET":
                with self._cond:
                    items = sorted(
                        (o for (ns, _), o in self.objects[resource].items() if namespace is None or ns == namespace),
                        key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]),
                    )
                return h.send_json(200, self._page(_KINDS[plural] + "List", items, req))
            if req.method == "POST" and isinstance(req.body, dict):
                body = req.body
                meta = dict(body.get("metadata") or {})
                if namespaced:
                    meta["namespace"] = namespace
                with self._cond:
                    if (namespace if namespaced else None, meta.get("name")) in self.objects[resource]:
                        return h.send_json(
                            409, status(409, "AlreadyExists", f'{plural} "{meta.get("name")}" already exists')
                        )
                    meta.pop("resourceVersion", None)
                    created = self._store(resource, {**body, "metadata": meta})
                return h.send_json(201, created)
            return h.send_json(405, status(405, "MethodNotAllowed", f"{req.method} is not supported here"))
        key = (namespace if namespaced else None, name)
        with self._cond:
            current = self.objects[resource].get(key)
            if current is None:
                return h.send_json(404, status(404, "NotFound", f'{plural} "{name}" not found'))
            if req.method == "GET":
                return h.send_json(200, current)
            if sub == "status" and req.method == "PATCH" and self.status_patch_status is not None:
                code = self.status_patch_status
                return h.send_json(code, status(code, "InternalError", "forced failure"))
            if req.method == "PUT" and isinstance(req.body, dict):
                sent_version = (req.body.get("metadata") or {}).get("resourceVersion")
                if sent_version and sent_version != current["metadata"]["resourceVersion"]:
                    return h.send_json(
                        409,
                        status(
                            409,
                            "Conflict",
                            f'Operation cannot be fulfilled on {plural} "{name}": the object has been modified',
                        ),
                    )
                body = {**req.body, "metadata": {**(req.body.get("metadata") or {}), "namespace": namespace}}
                if sub == "status":
                    return h.send_json(200, self._store(resource, {**current, "status": body.get("status")}, status=True))
                return h.send_json(200, self._store(resource, body))
            if req.method == "PATCH":
                content_type = h.headers.get("Content-Type", "")
                if "json-patch" in content_type:
                    patched = jsonpatch.apply_patch(current, req.body)
                else:  # merge-patch and (for the maps we patch) strategic-merge-patch
                    patched = _merge(current, req.body)
                if sub == "status":
                    return h.send_json(200, self._store(resource, {**current, "status": patched.get("status")}, status=True))
                patched.pop("status", None)
                return h.send_json(200, self._store(resource, patched))
        return h.send_json(405, status(405, "MethodNotAllowed", f"{req.method} is not supported here"))

    def _page(self, kind: str, items: list[dict[str, Any]], req: Request) -> dict[str, Any]:
        token = req.query.get("continue")
        with self._cond:
            if token:
                snapshot, offset, rv = self._continues.pop(token)
            else:
                snapshot, offset, rv = items, 0, self.rv
            limit = int(req.query.get("limit") or 0)
            end = offset + limit if limit > 0 else len(snapshot)
            meta: dict[str, Any] = {"resourceVersion": str(rv)}
            if end < len(snapshot):
                meta["continue"] = next_token = f"c{next(self._tokens)}"
                self._continues[next_token] = (snapshot, end, rv)
            return {"kind": kind, "apiVersion": "v1", "metadata": meta, "items": snapshot[offset:end]}

    def _get_namespace(self, h: _Handler, name: str) -> None:
        if self.namespace_get_delay:
            self._down.wait(self.namespace_get_delay)
        if self.namespace_get_status is not None:
            code = self.namespace_get_status
            return h.send_json(code, status(code, "InternalError", "forced failure"))
        with self._cond:
            obj = self.namespaces.get(name)
        if obj is None:
            return h.send_json(404, status(404, "NotFound", f'namespaces "{name}" not found'))
        h.send_json(200, obj)
        return None

    def _watch(self, h: _Handler, req: Request, resource: str = "namespaces", namespace: str | None = None) -> None:
        def wanted(event_resource: str | None, obj: dict[str, Any]) -> bool:
            if event_resource is None:
                return True
            return event_resource == resource and (namespace is None or obj["metadata"].get("namespace") == namespace)

        def current() -> list[dict[str, Any]]:
            if resource == "namespaces":
                return list(self.namespaces.values())
            return [o for (ns, _), o in self.objects[resource].items() if namespace is None or ns == namespace]

        start = int(req.query.get("resourceVersion") or 0)
        deadline = time.monotonic() + float(req.query.get("timeoutSeconds") or 1800)
        with self._cond:
            close_gen, gone_gen = self._close_generation, self._gone_generation
            hang = self.hang_watches
            self._open_watches += 1
        try:
            h.start_chunked()
            with self._cond:
                expired = bool(start) and start < self.oldest_rv
                if not start:  # "any": synthetic ADDED events for the current state
                    initial = [("ADDED", o) for o in current()]
                    start = self.rv
                else:
                    initial = []
                sent = len(self.history)
                for index, (rv, *_) in enumerate(self.history):
                    if rv > start:
                        sent = index
                        break
            if expired:
                return self._send_gone(h, start)
            for kind, obj in initial:
                h.write_chunk(orjson.dumps({"type": kind, "object": obj}) + b"\n")
            while True:
                with self._cond:
                    while True:
                        if self._down.is_set() or self._close_generation != close_gen:
                            return h.end_chunked()
                        if self._gone_generation != gone_gen:
                            break
                        if not hang and (len(self.history) > sent or time.monotonic() >= deadline):
                            break
                        timeout = 0.5 if hang else max(0.0, min(0.5, deadline - time.monotonic()))
                        self._cond.wait(timeout)
                    gone = self._gone_generation != gone_gen
                    pending = self.history[sent:]
                    sent = len(self.history)
                for _, kind, obj, event_resource in pending:
                    if wanted(event_resource, obj):
                        h.write_chunk(orjson.dumps({"type": kind, "object": obj}) + b"\n")
                if gone:
                    return self._send_gone(h, start)
                if time.monotonic() >= deadline:
                    return h.end_chunked()
        finally:
            h.close_connection = True
            with self._cond:
                self._open_watches -= 1

    def _send_gone(self, h: _Handler, start: int) -> None:
        message = f"too old resource version: {start} ({self.oldest_rv})"
        h.write_chunk(orjson.dumps({"type": "ERROR", "object": status(410, "Expired", message)}) + b"\n")
        h.end_chunked()

    def _create_event(self, h: _Handler, namespace: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = orjson.loads(h.rfile.read(length)) if length else {}
        if self.event_post_status is not None:
            code = self.event_post_status
            return h.send_json(code, status(code, "InternalError", "forced failure"))
        problems = _event_problems(body, namespace)
        if problems:
            return h.send_json(422, status(422, "Invalid", "Event is invalid: " + "; ".join(problems)))
        name = body["metadata"]["name"]
        with self._cond:
            if any(ns == namespace and e["metadata"]["name"] == name for ns, e in self.events):
                return h.send_json(409, status(409, "AlreadyExists", f'events.events.k8s.io "{name}" already exists'))
            self.events.append((namespace, body))
        created = dict(
            body,
            metadata=dict(
                body["metadata"], namespace=namespace, uid=str(uuid.uuid4()), resourceVersion=str(self.other_changes(1))
            ),
        )
        h.send_json(201, created)
        return None

    def _patch_event(self, h: _Handler, req: Request, namespace: str, name: str) -> None:
        """A merge patch of a stored Event (what the recorder sends to write a series)."""
        if req.headers.get("content-type", "").split(";")[0] != "application/merge-patch+json":
            return h.send_json(415, status(415, "UnsupportedMediaType", "expected a merge patch"))
        with self._cond:
            self.event_patches.append((namespace, name, req.body))
            for index, (ns, event) in enumerate(self.events):
                if ns == namespace and event["metadata"]["name"] == name:
                    patched = _merge(event, req.body)
                    problems = _series_problems(patched) + _event_problems(patched, namespace)
                    if problems:
                        return h.send_json(422, status(422, "Invalid", "Event is invalid: " + "; ".join(problems)))
                    self.events[index] = (ns, patched)
                    return h.send_json(200, patched)
        return h.send_json(404, status(404, "NotFound", f'events.events.k8s.io "{name}" not found'))


def _series_problems(event: dict[str, Any]) -> list[str]:
    """What the API server's validation of an Event update rejects in its ``series``."""
    series = event.get("series")
    if series is None:
        return []
    problems = []
    if not isinstance(series, dict) or not isinstance(series.get("count"), int) or series["count"] < 2:
        problems.append("series.count: Invalid value: should be at least 2")
    when = series.get("lastObservedTime") if isinstance(series, dict) else None
    if not isinstance(when, str) or not MICRO_TIME.match(when):
        problems.append(f"series.lastObservedTime: Invalid value: {when!r}")
    return problems


def _event_problems(event: dict[str, Any], namespace: str) -> list[str]:
    """What the API server's events.k8s.io/v1 validation would reject in ``event``."""
    problems = []
    if event.get("apiVersion") not in (None, "events.k8s.io/v1") or event.get("kind") not in (None, "Event"):
        problems.append("apiVersion/kind: must be events.k8s.io/v1 Event")
    meta = event.get("metadata") or {}
    name = meta.get("name")
    if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        problems.append(f"metadata.name: Invalid value: {name!r}")
    if meta.get("namespace") not in (None, namespace):
        problems.append("metadata.namespace: does not match the namespace of the request")
    when = event.get("eventTime")
    if not isinstance(when, str) or not MICRO_TIME.match(when):
        problems.append(f"eventTime: Invalid value: {when!r}: must be RFC3339 with microseconds")
    for field_name, limit in (("reportingController", 253), ("reportingInstance", 128), ("action", 128), ("reason", 128)):
        value = event.get(field_name)
        if not isinstance(value, str) or not value or len(value) > limit:
            problems.append(f"{field_name}: Required value or too long")
    if event.get("type") not in ("Normal", "Warning"):
        problems.append(f"type: Unsupported value: {event.get('type')!r}")
    if len((event.get("note") or "").encode()) > 1024:
        problems.append("note: Too long: must have at most 1024 bytes")
    regarding = event.get("regarding") or {}
    if regarding.get("namespace") not in (None, "", namespace):
        problems.append("regarding.namespace: does not match event.namespace")
    return problems


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (a null removes the key)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def _rolled_out(plural: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The status a workload's controller writes once every replica runs the current template."""
    generation = obj["metadata"]["generation"]
    replicas = (obj.get("spec") or {}).get("replicas", 1)
    if plural == "deployments":
        return {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        }
    if plural == "statefulsets":
        revision = f"{obj['metadata']['name']}-{generation}"
        return {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "currentRevision": revision,
            "updateRevision": revision,
        }
    desired = (obj.get("status") or {}).get("desiredNumberScheduled", 2)
    return {
        "observedGeneration": generation,
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": desired,
        "updatedNumberScheduled": desired,
        "numberAvailable": desired,
        "numberReady": desired,
    }
