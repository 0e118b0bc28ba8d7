"""Test helper: a tiny fake Kubernetes API server on loopback, for Helm's ``lookup``.

``helm template --dry-run=server`` renders with cluster access: ``lookup`` GETs the
objects it names, and Helm maps every rendered kind to a resource through discovery.
This server answers exactly that - ``/version``, legacy discovery (``/api``, ``/apis``,
``/api/v1``, ``/apis/<group>/<version>``) for the kinds the chart renders, and GET of
single objects from an in-memory store (404 when absent) - so the chart's certificate
reuse can be tested offline against the real helm binary. It serves plain HTTP on
127.0.0.1 only and accepts no writes.

    with FakeKubeAPI() as api:
        api.put(secret_dict)
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# group/version -> [(kind, plural, namespaced)]
RESOURCES: dict[str, list[tuple[str, str, bool]]] = {
    "v1": [
        ("Secret", "secrets", True),
        ("ConfigMap", "configmaps", True),
        ("Service", "services", True),
        ("ServiceAccount", "serviceaccounts", True),
        ("Namespace", "namespaces", False),
    ],
    "apps/v1": [("Deployment", "deployments", True)],
    "policy/v1": [("PodDisruptionBudget", "poddisruptionbudgets", True)],
    "batch/v1": [("CronJob", "cronjobs", True)],
    "rbac.authorization.k8s.io/v1": [
        ("ClusterRole", "clusterroles", False),
        ("ClusterRoleBinding", "clusterrolebindings", False),
        ("Role", "roles", True),
        ("RoleBinding", "rolebindings", True),
    ],
    "admissionregistration.k8s.io/v1": [
        ("MutatingWebhookConfiguration", "mutatingwebhookconfigurations", False),
        ("ValidatingWebhookConfiguration", "validatingwebhookconfigurations", False),
    ],
    "apiextensions.k8s.io/v1": [("CustomResourceDefinition", "customresourcedefinitions", False)],
    "cert-manager.io/v1": [("Certificate", "certificates", True), ("Issuer", "issuers", True)],
    "monitoring.coreos.com/v1": [("ServiceMonitor", "servicemonitors", True)],
}
_PLURALS = {kind: plural for resources in RESOURCES.values() for kind, plural, _ in resources}
_OBJECT = re.compile(r"^/(?:api|apis/[^/]+)/[^/]+/namespaces/([^/]+)/([^/]+)/([^/]+)$")
_CLUSTER_OBJECT = re.compile(r"^/(?:api|apis/[^/]+)/[^/]+/([^/]+)/([^/]+)$")


class FakeKubeAPI:
    def __init__(self, version: str = "1.31.0") -> None:
        self.version = version
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (namespace, plural, name)
        self.requests: list[str] = []
        self._server: ThreadingHTTPServer | None = None

    # -- the store -------------------------------------------------------------------

    def put(self, obj: dict[str, Any], release: str | None = None, namespace: str | None = None) -> None:
        """Store an object; with ``release``, as ``helm install`` leaves it (owned by that release)."""
        if release is not None:
            obj = json.loads(json.dumps(obj))
            obj["metadata"].setdefault("annotations", {}).update(
                {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": namespace or ""}
            )
            obj["metadata"].setdefault("labels", {})["app.kubernetes.io/managed-by"] = "Helm"
        meta = obj["metadata"]
        self.objects[(meta.get("namespace", ""), _PLURALS[obj["kind"]], meta["name"])] = obj

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self.objects.pop((namespace, _PLURALS[kind], name), None)

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> FakeKubeAPI:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def write_kubeconfig(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        return path

    # -- answers ---------------------------------------------------------------------

    def answer(self, path: str) -> tuple[int, dict[str, Any]]:
        path = path.split("?", 1)[0].rstrip("/")
        self.requests.append(path)
        major, minor, _ = self.version.split(".")
        if path == "/version":
            return 200, {"major": major, "minor": minor, "gitVersion": f"v{self.version}", "platform": "linux/amd64"}
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            groups = []
            for group_version in RESOURCES:
                if "/" in group_version:
                    group, version = group_version.split("/")
                    entry = {"groupVersion": group_version, "version": version}
                    groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        group_version = path.removeprefix("/api/") if path.startswith("/api/") else path.removeprefix("/apis/")
        if group_version in RESOURCES:
            return 200, {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": group_version,
                "resources": [
                    {
                        "name": plural,
                        "singularName": kind.lower(),
                        "namespaced": namespaced,
                        "kind": kind,
                        "verbs": ["get", "list", "watch"],
                    }
                    for kind, plural, namespaced in RESOURCES[group_version]
                ],
            }
        if match := _OBJECT.match(path):
            found = self.objects.get(match.groups())
        elif match := _CLUSTER_OBJECT.match(path):
            found = self.objects.get(("", *match.groups()))
        else:
            found = None
        if found is not None:
            return 200, found
        return 404, {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": "NotFound",
            "message": f"{path} not found",
            "code": 404,
        }


def _handler(api: FakeKubeAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = api.answer(self.path)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
