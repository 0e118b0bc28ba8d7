"""Helpers of the kind e2e suite: prerequisites, make/helm, and the Kubernetes API.

Everything that talks to the cluster goes through the ``kubernetes`` Python client with an
explicit context (``kind-<KIND_CLUSTER>``): the suite never touches whatever cluster the
current kubectl context points at. Every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

REPO = Path(__file__).resolve().parents[2]
E2E_DIR = Path(__file__).resolve().parent

# The same names (and defaults) as the Makefile's variables: `make e2e` passes them on.
CLUSTER = os.environ.get("KIND_CLUSTER", "sidecar-injector-e2e")
CONTEXT = f"kind-{CLUSTER}"
RELEASE = os.environ.get("E2E_RELEASE", "sidecar-injector")
RELEASE_NAMESPACE = os.environ.get("E2E_NAMESPACE", "sidecar-injector")
#: the chart's fullname for this release (the Deployment, Service, webhook configuration)
FULLNAME = RELEASE if "sidecar-injector" in RELEASE else f"{RELEASE}-sidecar-injector"
HELM = REPO / ".tools" / "helm"

# The contract (design section 2): literal here on purpose, as users write them.
INJECT = "sidecar.io/inject"
STATUS = "sidecar.io/status"
NAMESPACE_PROFILES = "sidecar.io/profiles"

#: the application container of the test pods: tiny, runs forever, already on kind nodes
APP_IMAGE = "registry.k8s.io/pause:3.10"
#: a run-to-completion application (the Job test)
JOB_IMAGE = "docker.io/library/busybox:1.37.0"

T = TypeVar("T")


# -- prerequisites ------------------------------------------------------------------------


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0][:200] if lines else ""


def skip_setup() -> bool:
    """E2E_SKIP_SETUP=1: use the cluster and release as they are (CI sets them up step by step)."""
    return os.environ.get("E2E_SKIP_SETUP", "") not in ("", "0", "false")


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run the suite, in words a person can act on; [] when nothing."""
    missing = [f"{tool} (not on PATH)" for tool in ("docker", "kind", "kubectl") if shutil.which(tool) is None]
    if shutil.which("docker"):
        try:
            info = subprocess.run(
                ["docker", "info", "--format", "{{.ServerVersion}}"],
                capture_output=True,
                text=True,
                timeout=20,
                stdin=subprocess.DEVNULL,
            )
            if info.returncode != 0 or not info.stdout.strip():
                reason = _first_line(info.stderr) or f"docker info exited {info.returncode}"
                missing.append(f"a reachable docker engine ({reason})")
        except (OSError, subprocess.TimeoutExpired) as exc:
            missing.append(f"a reachable docker engine (docker info: {exc})")
    if skip_setup() and not missing:
        try:
            probe = subprocess.run(
                ["kubectl", "--context", CONTEXT, "--request-timeout=10s", "get", "--raw", "/readyz"],
                capture_output=True,
                text=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
            )
            if probe.returncode != 0:
                missing.append(f"a reachable cluster (context {CONTEXT}: {_first_line(probe.stderr)})")
        except (OSError, subprocess.TimeoutExpired) as exc:
            missing.append(f"a reachable cluster (context {CONTEXT}: {exc})")
    return missing


# -- running things -----------------------------------------------------------------------


class CommandFailed(AssertionError):
    pass


def run(
    args: list[str], *, timeout: float, input: str | None = None, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command with a deadline; on failure raise with the command and the tail of its output."""
    try:
        result = subprocess.run(
            args,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"")[-4000:] if isinstance(exc.stdout, bytes) else (exc.stdout or "")[-4000:]
        raise CommandFailed(f"{' '.join(args)} timed out after {timeout}s\n{out}") from None
    if check and result.returncode != 0:
        tail = (result.stdout[-3000:] + "\n" + result.stderr[-3000:]).strip()
        raise CommandFailed(f"{' '.join(args)} exited {result.returncode}:\n{tail}")
    return result


def make(*targets: str, timeout: float, **variables: str) -> subprocess.CompletedProcess[str]:
    """``make TARGET... VAR=value`` in the repository, with this suite's cluster and release."""
    settings = {
        "KIND_CLUSTER": CLUSTER,
        "E2E_RELEASE": RELEASE,
        "E2E_NAMESPACE": RELEASE_NAMESPACE,
        **variables,
    }
    return run(["make", "--no-print-directory", *targets, *(f"{k}={v}" for k, v in settings.items())], timeout=timeout)


def helm(*args: str, timeout: float = 360) -> subprocess.CompletedProcess[str]:
    return run([str(HELM), "--kube-context", CONTEXT, "--namespace", RELEASE_NAMESPACE, *args], timeout=timeout)


def kubectl(
    *args: str, timeout: float = 60, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return run(["kubectl", "--context", CONTEXT, *args], timeout=timeout, input=input, check=check)


class Fatal(AssertionError):
    """Raised by a probe of :func:`eventually` when waiting longer cannot help (a Job failed, say)."""


def eventually(probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 2.0) -> T:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds.

    An exception from the probe counts as "not yet" (the cluster is still converging) and
    is reported if the deadline passes; :class:`Fatal` ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last = value
        except Fatal:
            raise
        except Exception as exc:  # "not yet": reported below if it persists
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}"[:4000])
        time.sleep(interval)


def unique_name(prefix: str) -> str:
    return f"e2e-{prefix}-{secrets.token_hex(3)}"[:63]


def write_values(values: dict[str, Any]) -> Path:
    """A temporary Helm values file (the caller's test owns it; the OS cleans /tmp)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="e2e-values-", delete=False) as handle:
        yaml.safe_dump(values, handle, sort_keys=False)
    return Path(handle.name)


# -- what a pod looks like ----------------------------------------------------------------


def pod_manifest(
    name: str,
    *,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    image: str = APP_IMAGE,
    command: list[str] | None = None,
    restart_policy: str = "Always",
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "app",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "resources": {"requests": {"cpu": "5m", "memory": "8Mi"}, "limits": {"memory": "64Mi"}},
    }
    if command:
        container["command"] = command
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/part-of": "sidecar-injector-e2e", **(labels or {})},
            "annotations": dict(annotations or {}),
        },
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 2,
            "restartPolicy": restart_policy,
            "containers": [container],
        },
    }


def annotations_of(pod: dict[str, Any]) -> dict[str, str]:
    return pod.get("metadata", {}).get("annotations") or {}


def injection_status(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The parsed sidecar.io/status profiles map, or None when the pod was not injected (no status, or
    a status that only records why its requested profiles were skipped: ``"profiles": {}``)."""
    raw = annotations_of(pod).get(STATUS)
    return (json.loads(raw)["profiles"] or None) if raw is not None else None


def container_names(pod: dict[str, Any]) -> list[str]:
    spec = pod["spec"]
    return [c["name"] for c in (spec.get("initContainers") or []) + spec["containers"]]


def assert_injected_once(pod: dict[str, Any], profiles: Iterable[str]) -> dict[str, Any]:
    """The pod carries exactly ``profiles``, each once, and no container name twice."""
    names = container_names(pod)
    assert len(names) == len(set(names)), f"duplicate container names: {names}"
    status = injection_status(pod)
    assert status is not None, f"no {STATUS} annotation: {annotations_of(pod)}"
    assert sorted(status) == sorted(profiles), status
    for profile, record in status.items():
        for container in record.get("containers", []) + record.get("initContainers", []):
            assert names.count(container) == 1, f"{profile}: {container} appears {names.count(container)} times"
    volumes = [v["name"] for v in pod["spec"].get("volumes") or []]
    assert len(volumes) == len(set(volumes)), f"duplicate volumes: {volumes}"
    return status


def assert_untouched(pod: dict[str, Any]) -> None:
    assert STATUS not in annotations_of(pod), annotations_of(pod)
    assert container_names(pod) == ["app"], container_names(pod)


_WARNING = re.compile(r'^\d{3} \S+ "((?:[^"\\]|\\.)*)"')


def parse_warnings(headers: Any) -> list[str]:
    """The texts of the HTTP ``Warning`` headers (RFC 7234 format, as the API server sends them)."""
    if headers is None:
        return []
    values = headers.getlist("Warning") if hasattr(headers, "getlist") else [headers.get("Warning") or ""]
    texts = []
    for value in values:
        match = _WARNING.match(value.strip())
        texts.append(match.group(1).replace('\\"', '"').replace("\\\\", "\\") if match else value)
    return [t for t in texts if t]


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The sum of a Prometheus metric's samples whose labels include ``labels`` (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in (labels or {}).items()):
            total += float(match.group(2))
    return total


# -- the cluster ----------------------------------------------------------------------------


class Kube:
    """The kind cluster, through the kubernetes client (explicit context, timeouts on every call)."""

    REQUEST_TIMEOUT = 30

    def __init__(self) -> None:
        from kubernetes import client, config

        self.client_module = client
        self.api = config.new_client_from_config(context=CONTEXT, persist_config=False)
        # every API call gets a deadline, also those a test makes without _request_timeout
        rest, default = self.api.rest_client, self.REQUEST_TIMEOUT
        send = rest.request

        def request(*args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
            return send(*args, _request_timeout=_request_timeout or default, **kwargs)

        rest.request = request
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.admission = client.AdmissionregistrationV1Api(self.api)
        self.rbac = client.RbacAuthorizationV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self._probe_namespace: str | None = None

    # plain dicts in and out: the manifests read as they would in YAML
    def to_dict(self, obj: Any) -> dict[str, Any]:
        return self.api.sanitize_for_serialization(obj)

    @staticmethod
    def is_not_found(exc: BaseException) -> bool:
        return getattr(exc, "status", None) == 404

    # -- namespaces --------------------------------------------------------------------------

    def create_namespace(
        self, prefix: str, *, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None
    ) -> str:
        name = unique_name(prefix)
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {"sidecar-injector-e2e": "true", **(labels or {})},
                "annotations": dict(annotations or {}),
            },
        }
        self.core.create_namespace(body, _request_timeout=self.REQUEST_TIMEOUT)
        # pods are refused until the namespace's default ServiceAccount exists
        eventually(
            lambda: self.core.read_namespaced_service_account("default", name, _request_timeout=self.REQUEST_TIMEOUT),
            timeout=60,
            what=f"the default ServiceAccount of namespace {name}",
            interval=0.5,
        )
        return name

    def delete_namespace(self, name: str) -> None:
        try:
            self.core.delete_namespace(
                name, propagation_policy="Background", grace_period_seconds=0, _request_timeout=self.REQUEST_TIMEOUT
            )
        except Exception as exc:
            if not self.is_not_found(exc):
                raise

    @property
    def probe_namespace(self) -> str:
        """A namespace of the suite's own for dry-run probes (never labelled)."""
        if self._probe_namespace is None:
            self._probe_namespace = self.create_namespace("probe")
        return self._probe_namespace

    # -- pods ----------------------------------------------------------------------------------

    def create_pod(
        self, namespace: str, manifest: dict[str, Any], *, dry_run: bool = False
    ) -> tuple[dict[str, Any], list[str]]:
        """Create a pod; return it as the API server stored it (or would, dry-run) and the warnings."""
        data, _status, headers = self.core.create_namespaced_pod_with_http_info(
            namespace,
            manifest,
            dry_run="All" if dry_run else None,
            _request_timeout=self.REQUEST_TIMEOUT,
        )
        return self.to_dict(data), parse_warnings(headers)

    def read_pod(self, namespace: str, name: str) -> dict[str, Any]:
        return self.to_dict(self.core.read_namespaced_pod(name, namespace, _request_timeout=self.REQUEST_TIMEOUT))

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        pods = self.core.list_namespaced_pod(namespace, label_selector=selector, _request_timeout=self.REQUEST_TIMEOUT)
        return [self.to_dict(p) for p in pods.items]

    def wait_pod_ready(self, namespace: str, name: str, *, timeout: float = 300) -> dict[str, Any]:
        """Wait until every container of the pod (native sidecars included) is ready."""

        def ready() -> dict[str, Any] | None:
            pod = self.read_pod(namespace, name)
            status = pod.get("status") or {}
            conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
            statuses = (status.get("containerStatuses") or []) + [
                s for s in status.get("initContainerStatuses") or [] if s["name"] in _restartable(pod)
            ]
            if conditions.get("Ready") == "True" and statuses and all(s.get("ready") for s in statuses):
                return pod
            raise AssertionError(
                f"pod {namespace}/{name} not ready: phase={status.get('phase')} containers={_container_states(status)}"
            )

        return eventually(ready, timeout=timeout, what=f"pod {namespace}/{name} to be Ready", interval=3)

    # -- the webhook ---------------------------------------------------------------------------

    def webhook_deployment(self) -> dict[str, Any]:
        return self.to_dict(
            self.apps.read_namespaced_deployment(FULLNAME, RELEASE_NAMESPACE, _request_timeout=self.REQUEST_TIMEOUT)
        )

    def webhook_selector(self) -> str:
        labels = self.webhook_deployment()["spec"]["selector"]["matchLabels"]
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))

    def webhook_pods(self) -> list[dict[str, Any]]:
        """The webhook's pods that are not on their way out."""
        pods = self.list_pods(RELEASE_NAMESPACE, self.webhook_selector())
        return [p for p in pods if not p["metadata"].get("deletionTimestamp")]

    def webhook_identities(self) -> dict[str, tuple[str, int]]:
        """Pod name -> (uid, total restarts): equal before and after means nothing restarted."""
        return {
            p["metadata"]["name"]: (
                p["metadata"]["uid"],
                sum(s.get("restartCount", 0) for s in (p.get("status") or {}).get("containerStatuses") or []),
            )
            for p in self.webhook_pods()
        }

    def wait_webhook_rollout(self, *, timeout: float = 300) -> None:
        def rolled_out() -> bool:
            dep = self.webhook_deployment()
            spec, status = dep["spec"], dep.get("status") or {}
            want = spec.get("replicas", 1)
            done = (
                status.get("observedGeneration", 0) >= dep["metadata"]["generation"]
                and status.get("updatedReplicas", 0) == want
                and status.get("readyReplicas", 0) == want
                and status.get("availableReplicas", 0) == want
                and status.get("replicas", 0) == want
            )
            all_pods = self.list_pods(RELEASE_NAMESPACE, self.webhook_selector())
            if not done or len(all_pods) != want:
                raise AssertionError(f"deployment {FULLNAME}: want {want}, status {status}, pods {len(all_pods)}")
            return True

        eventually(rolled_out, timeout=timeout, what=f"the rollout of deployment {FULLNAME}", interval=3)

    def scale_webhook(self, replicas: int) -> None:
        self.apps.patch_namespaced_deployment_scale(
            FULLNAME, RELEASE_NAMESPACE, {"spec": {"replicas": replicas}}, _request_timeout=self.REQUEST_TIMEOUT
        )

    def probe(self, inject: str, *, namespace: str | None = None) -> dict[str, Any]:
        """Dry-run a pod annotated ``sidecar.io/inject: <inject>``: what the webhook does now, nothing stored."""
        pod, _ = self.create_pod(
            namespace or self.probe_namespace, pod_manifest(unique_name("probe"), annotations={INJECT: inject}), dry_run=True
        )
        return pod

    def wait_serving(self, *, timeout: float = 180) -> None:
        """Until the API server reaches the webhook and gets injections back (endpoints, TLS, caBundle)."""
        eventually(
            lambda: injection_status(self.probe("logging")), timeout=timeout, what="the webhook to inject into a dry-run pod"
        )

    def webhook_configuration(self) -> dict[str, Any] | None:
        try:
            return self.to_dict(
                self.admission.read_mutating_webhook_configuration(FULLNAME, _request_timeout=self.REQUEST_TIMEOUT)
            )
        except Exception as exc:
            if self.is_not_found(exc):
                return None
            raise

    def deploy(self, values: dict[str, Any] | None = None, *, timeout: float = 600) -> None:
        """``make deploy`` (helm upgrade --install --wait) with the e2e values, plus ``values`` when given.

        Without ``values`` the release goes back to exactly the e2e values (no --reuse-values).
        """
        helm_args = f"--values {write_values(values)}" if values else ""
        make("deploy", timeout=timeout, HELM_ARGS=helm_args)
        self.wait_webhook_rollout()
        self.wait_serving()

    def metrics(self, pod_name: str) -> str:
        """A webhook pod's /metrics (plain HTTP on 9090), through the API server's pod proxy."""
        response = self.core.connect_get_namespaced_pod_proxy_with_path(
            f"{pod_name}:9090",
            RELEASE_NAMESPACE,
            "metrics",
            _preload_content=False,
            _request_timeout=self.REQUEST_TIMEOUT,
        )
        return response.data.decode("utf-8")

    def metric_total(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A metric summed over every webhook pod."""
        return sum(metric_value(self.metrics(p["metadata"]["name"]), name, labels) for p in self.webhook_pods())


def _restartable(pod: dict[str, Any]) -> set[str]:
    """Names of the pod's native sidecars (init containers with restartPolicy Always)."""
    return {c["name"] for c in pod["spec"].get("initContainers") or [] if c.get("restartPolicy") == "Always"}


def _container_states(status: dict[str, Any]) -> dict[str, str]:
    states = {}
    for s in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        state = s.get("state") or {}
        kind = next(iter(state), "unknown")
        detail = (state.get(kind) or {}).get("reason") or ""
        states[s["name"]] = f"{kind}{'/' + detail if detail else ''}{' ready' if s.get('ready') else ''}"
    return states
