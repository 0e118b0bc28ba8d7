"""What the control-plane tests share: the chart installed for real and the webhook processes
on the host (Injector, Webhook), and small builders of the objects they create."""

from __future__ import annotations

import base64
import copy
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from controlplane import ROOT, ControlPlane, Process, free_port, kubeconfig, wait_for, write_profiles
from prometheus_client.parser import text_string_to_metric_families

CHART = ROOT / "charts" / "sidecar-injector"
RELEASE = "sidecar-injector"
NAMESPACE = "sidecar-injector"
SERVICE_ACCOUNT = "sidecar-injector"
CLI = [sys.executable, "-m", "sidecar_injector"]


@dataclass
class Webhook:
    """One `sidecar-injector serve` process."""

    process: Process
    port: int
    metrics_port: int
    ca_file: Path

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def is_ready(self) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            with urllib.request.urlopen(self.url("/readyz"), context=ctx, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def metrics(self) -> dict[str, float]:
        """Every sample, keyed 'name{label="v",...}' (labels sorted)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}"] = sample.value
        return samples

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for key, value in self.metrics().items():
            sample, _, rest = key.partition("{")
            if sample != name:
                continue
            if all(f'{k}="{v}"' in rest for k, v in labels.items()):
                total += value
        return total

    def admissions(self) -> float:
        return self.metric("sidecar_injector_admission_requests_total")

    def logs(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.process.log.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines


@dataclass
class Injector:
    """The chart installed into the control plane, and its webhook processes on the host."""

    plane: ControlPlane
    helm: Path
    workdir: Path
    port: int = field(default_factory=free_port)
    webhooks: list[Webhook] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.certs = self.workdir / "certs"
        self.generate_certs(self.certs)

    # -- certificates (the project's own `certs generate`)

    def generate_certs(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                *CLI,
                "certs",
                "generate",
                "--service",
                RELEASE,
                "--namespace",
                NAMESPACE,
                "--out",
                str(folder),
                "--extra-dns",
                "localhost",
                "--extra-ip",
                "127.0.0.1",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return folder

    def ca_bundle(self, *folders: Path) -> str:
        pem = b"".join((f / "ca.crt").read_bytes() for f in (folders or (self.certs,)))
        return base64.b64encode(pem).decode()

    # -- the chart

    def render(self, values: dict[str, Any], *, in_cluster: bool = False) -> list[dict[str, Any]]:
        merged = copy.deepcopy(values)
        merged.setdefault("tls", {}).setdefault("mode", "secret")
        merged["tls"].setdefault("secret", {})["caBundle"] = (
            merged["tls"].get("secret", {}).get("caBundle") or self.ca_bundle()
        )
        if in_cluster:
            merged["tls"]["secret"]["name"] = "unused"
        else:
            merged.setdefault("webhook", {})["url"] = f"https://127.0.0.1:{self.port}"
        values_file = self.workdir / "values.json"
        values_file.write_text(json.dumps(merged))
        result = subprocess.run(
            [
                str(self.helm),
                "template",
                RELEASE,
                str(CHART),
                "--namespace",
                NAMESPACE,
                "-f",
                str(values_file),
                "--kube-version",
                "1.37.2",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return [d for d in yaml.safe_load_all(result.stdout) if d]

    def install(self, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """helm template | kubectl apply --server-side, CRDs first (and established)."""
        self.values = copy.deepcopy(values or {})
        docs = self.render(self.values)
        self.plane.kubectl("create", "namespace", NAMESPACE, check=False)
        crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
        if crds:
            self.plane.apply(crds)
            for crd in crds:
                self.plane.kubectl("wait", "--for=condition=Established", f"crd/{crd['metadata']['name']}", "--timeout=60s")
        self.plane.apply([d for d in docs if d["kind"] != "CustomResourceDefinition"])
        # a configuration that rendered a webhook before and not now must not linger
        for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            names = {d["metadata"]["name"] for d in docs if d["kind"] == kind}
            for existing in self.plane.get(kind.lower(), "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]:
                if existing["metadata"]["name"] not in names:
                    self.plane.kubectl("delete", kind.lower(), existing["metadata"]["name"])
        return docs

    def container_env(self, values: dict[str, Any]) -> dict[str, str]:
        """The environment the chart gives the webhook's container, for a process on the host."""
        docs = self.render(values, in_cluster=True)
        deployment = next(d for d in docs if d["kind"] == "Deployment")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env: dict[str, str] = {}
        for item in container["env"]:
            if "value" in item:
                env[item["name"]] = item["value"]
            else:
                path = item["valueFrom"]["fieldRef"]["fieldPath"]
                env[item["name"]] = {"metadata.namespace": NAMESPACE, "status.podIP": "127.0.0.1"}[path]
        return env

    # -- processes

    def token_kubeconfig(self, name: str = "webhook") -> Path:
        token = self.plane.token(SERVICE_ACCOUNT, NAMESPACE)
        return kubeconfig(self.workdir / f"{name}.kubeconfig", self.plane.server, self.plane.ca_file, token=token)

    def start(
        self,
        name: str = "a",
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        certs: Path | None = None,
        wait: bool = True,
    ) -> Webhook:
        certs = certs or self.certs
        profiles = write_profiles(
            next(d for d in self.render(self.values) if d["kind"] == "ConfigMap"), self.workdir / f"profiles-{name}"
        )
        metrics_port = free_port()
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_INJECTOR_")}
        environment.update(self.container_env(self.values))
        environment.update(
            {
                "SIDECAR_INJECTOR_CERT_FILE": str(certs / "tls.crt"),
                "SIDECAR_INJECTOR_KEY_FILE": str(certs / "tls.key"),
                "SIDECAR_INJECTOR_PROFILES_DIR": str(profiles),
                "SIDECAR_INJECTOR_METRICS_PORT": str(metrics_port),
                "SIDECAR_INJECTOR_METRICS_HOST": "127.0.0.1",
                "KUBECONFIG": str(self.token_kubeconfig(name)),
                **(env or {}),
            }
        )
        port = port or self.port
        process = Process(
            f"webhook-{name}",
            [*CLI, "serve", "--host", "127.0.0.1", "--port", str(port)],
            self.workdir / f"webhook-{name}.log",
            env=environment,
        ).start()
        hook = Webhook(process, port, metrics_port, certs / "ca.crt")
        self.webhooks.append(hook)
        if wait:
            wait_for(f"webhook {name} ready", hook.is_ready, 60, why=process.tail)
        return hook

    def stop_all(self) -> None:
        for hook in self.webhooks:
            hook.process.stop()
        self.webhooks.clear()

    def restart(self, values: dict[str, Any] | None = None, **start: Any) -> Webhook:
        """Re-install the chart with these values and run one webhook again."""
        self.stop_all()
        self.install(values)
        return self.start(**start)


_counter = [0]


def unique(prefix: str) -> str:
    _counter[0] += 1
    return f"{prefix}-{os.getpid() % 1000}-{_counter[0]}-{int(time.time() * 1000) % 100000}"


def pod_manifest(name: str, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}, "labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.0"}], **spec},
    }


def deployment_manifest(name: str, annotations: dict[str, str] | None = None, replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations or {}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.0"}]},
            },
        },
    }


def status_of(pod: dict[str, Any]) -> dict[str, Any]:
    text = (pod["metadata"].get("annotations") or {}).get("sidecar.io/status")
    return dict(json.loads(text)) if text else {}


def container_names(pod: dict[str, Any]) -> list[str]:
    spec = pod["spec"]
    return [c["name"] for c in spec.get("initContainers", [])] + [c["name"] for c in spec["containers"]]
