"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

The binaries are the ones ``make cluster-bin`` builds from source (``.cluster/bin``), or
those of ``KUBEBUILDER_ASSETS`` (the envtest convention). Everything is generated per run
in a temporary folder: a cluster CA, the API server's serving certificate, an admin
client certificate (``system:masters``), the service-account signing key. The API server
runs with RBAC, service-account tokens and the admission plugins a real cluster has,
webhooks and admission policies included; the controller manager makes Deployments make
ReplicaSets make Pods, gives every namespace its ``default`` ServiceAccount and collects
garbage. There is no scheduler and no kubelet: pods stay Pending, which admission does not
care about.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT = Path(__file__).resolve().parents[2]
BUILT = ROOT / ".cluster" / "bin"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")
FIX = "make cluster-bin"

# the admission plugins on top of the API server's defaults (which already include the
# webhook and admission-policy plugins in 1.37; naming them makes the intent explicit)
ADMISSION_PLUGINS = (
    "NamespaceLifecycle",
    "ServiceAccount",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionWebhook",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionWebhook",
    "ResourceQuota",
)


def find_binaries() -> tuple[dict[str, Path], str]:
    """({name: path} for the four binaries, '') or ({}, why not and the command that fixes it)."""
    assets = os.environ.get("KUBEBUILDER_ASSETS", "")
    found: dict[str, Path] = {}
    for name in BINARIES:
        for folder in ([Path(assets)] if assets else []) + [BUILT]:
            if (folder / name).is_file() and os.access(folder / name, os.X_OK):
                found[name] = folder / name
                break
    missing = [n for n in BINARIES if n not in found]
    if missing:
        where = f"KUBEBUILDER_ASSETS={assets} or {BUILT}" if assets else str(BUILT)
        return {}, f"control-plane binaries missing ({', '.join(missing)} not in {where}): run `{FIX}` (needs Go)"
    return found, ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- certificates


@dataclass
class KeyPair:
    cert: x509.Certificate
    key: Any

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def write(self, folder: Path, stem: str) -> tuple[Path, Path]:
        crt, key = folder / f"{stem}.crt", folder / f"{stem}.key"
        crt.write_bytes(self.cert_pem())
        key.write_bytes(self.key_pem())
        key.chmod(0o600)
        return crt, key


def _name(common: str, org: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if org:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(parts)


def make_ca(common: str) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def issue(ca: KeyPair, common: str, *, org: str | None = None, dns: Sequence[str] = (), ips: Sequence[str] = ()) -> KeyPair:
    """A leaf certificate: for serving when it has DNS names or IPs, else a client certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    serving = bool(dns or ips)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common, org))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if serving else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    )
    if serving:
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return KeyPair(builder.sign(ca.key, hashes.SHA256()), key)


def kubeconfig(
    path: Path, server: str, ca_file: Path, *, cert: Path | None = None, key: Path | None = None, token: str | None = None
) -> Path:
    user: dict[str, str] = {}
    if token is not None:
        user["token"] = token
    else:
        assert cert is not None and key is not None
        user = {"client-certificate": str(cert), "client-key": str(key)}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cp", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "cp", "context": {"cluster": "cp", "user": "u"}}],
        "current-context": "cp",
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


# --------------------------------------------------------------------------- processes


@dataclass
class Process:
    """One long-running binary with its log file."""

    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 15) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        self.popen.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)

    def pause(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGCONT)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_for(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    *,
    interval: float = 0.2,
    why: Callable[[], str] = str,
    process: Process | None = None,
) -> None:
    """Poll `check` until it is true; a TimeoutError saying `what` (and `why()`) after `timeout`,
    a RuntimeError at once if `process` exited meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            code = process.popen.returncode if process.popen else None
            raise RuntimeError(f"{what}: {process.name} exited ({code})\n{why()}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s\n{why()}")


# --------------------------------------------------------------------------- the control plane


@dataclass
class ControlPlane:
    binaries: dict[str, Path]
    workdir: Path
    etcd_port: int = field(default_factory=free_port)
    etcd_peer_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    processes: dict[str, Process] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pki = self.workdir / "pki"
        self.pki.mkdir(parents=True, exist_ok=True)
        self.ca = make_ca("cluster-ca")
        self.ca_file = self.pki / "ca.crt"
        self.ca_file.write_bytes(self.ca.cert_pem())
        (self.pki / "ca.key").write_bytes(self.ca.key_pem())
        serving = issue(
            self.ca,
            "kube-apiserver",
            dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
            ips=["127.0.0.1", "10.0.0.1"],
        )
        self.serving_cert, self.serving_key = serving.write(self.pki, "apiserver")
        admin = issue(self.ca, "admin", org="system:masters")
        self.admin_cert, self.admin_key = admin.write(self.pki, "admin")
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sa_key = self.pki / "sa.key"
        self.sa_key.write_bytes(
            sa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        self.sa_pub = self.pki / "sa.pub"
        self.sa_pub.write_bytes(
            sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        self.server = f"https://127.0.0.1:{self.api_port}"
        self.admin_kubeconfig = kubeconfig(
            self.workdir / "admin.kubeconfig", self.server, self.ca_file, cert=self.admin_cert, key=self.admin_key
        )
        self.logs = self.workdir / "logs"
        self.logs.mkdir(exist_ok=True)

    # -- lifecycle

    def start(self) -> None:
        self.start_etcd()
        self.start_apiserver()
        self.start_controller_manager()
        wait_for(
            "the default ServiceAccount (kube-controller-manager working)",
            lambda: self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0,
            120,
            why=lambda: self.processes["kube-controller-manager"].tail(),
            process=self.processes["kube-controller-manager"],
        )

    def start_etcd(self) -> None:
        data = self.workdir / "etcd-data"
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        argv = [
            str(self.binaries["etcd"]),
            "--name=default",
            f"--data-dir={data}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--unsafe-no-fsync=true",  # a test cluster: durability across power loss is not the point
            "--log-level=warn",
            "--quota-backend-bytes=1073741824",
        ]
        self.processes["etcd"] = Process("etcd", argv, self.logs / "etcd.log").start()
        wait_for(
            "etcd health",
            lambda: json.loads(urllib.request.urlopen(f"{client}/health", timeout=2).read())["health"] == "true",
            60,
            why=lambda: self.processes["etcd"].tail(),
            process=self.processes["etcd"],
        )

    def apiserver_argv(self, port: int | None = None, cert_dir: str = "apiserver-certs") -> list[str]:
        return [
            str(self.binaries["kube-apiserver"]),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port or self.api_port}",
            f"--tls-cert-file={self.serving_cert}",
            f"--tls-private-key-file={self.serving_key}",
            f"--client-ca-file={self.ca_file}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={self.sa_pub}",
            f"--service-account-signing-key-file={self.sa_key}",
            "--service-cluster-ip-range=10.0.0.0/24",
            f"--enable-admission-plugins={','.join(ADMISSION_PLUGINS)}",
            f"--cert-dir={self.workdir / cert_dir}",
            "--allow-privileged=true",
            "--endpoint-reconciler-type=none",  # loopback cannot be the kubernetes Service endpoint
            "--profiling=false",
            "--v=1",
        ]

    def start_apiserver(self) -> None:
        log = self.logs / "kube-apiserver.log"
        self.processes["kube-apiserver"] = Process("kube-apiserver", self.apiserver_argv(), log).start()
        self.wait_apiserver_ready()

    def wait_apiserver_ready(self, timeout: float = 120) -> None:
        wait_for(
            "kube-apiserver /readyz",
            lambda: self.get_raw("/readyz") == b"ok",
            timeout,
            why=lambda: self.processes["kube-apiserver"].tail(),
            process=self.processes["kube-apiserver"],
        )

    def restart_apiserver(self, down_for: float = 0.0, during: Callable[[], None] | None = None) -> None:
        """Stop the API server (same etcd), optionally do something while it is down, start it again."""
        self.processes["kube-apiserver"].stop()
        if during is not None:
            during()
        time.sleep(down_for)
        self.start_apiserver()

    def with_other_apiserver(self, action: Callable[[Path], None]) -> None:
        """Run `action(kubeconfig)` against a second API server on the same etcd, on another port,
        then stop it: how a change reaches the cluster while the usual endpoint is down (as with
        several API servers behind a load balancer, one of them restarting)."""
        port = free_port()
        other = Process(
            "kube-apiserver-2", self.apiserver_argv(port, "apiserver-2-certs"), self.logs / "kube-apiserver-2.log"
        )
        other.start()
        try:
            server = f"https://127.0.0.1:{port}"
            config = kubeconfig(
                self.workdir / "other.kubeconfig", server, self.ca_file, cert=self.admin_cert, key=self.admin_key
            )
            ctx = self.ssl_context()

            def ready() -> bool:
                with urllib.request.urlopen(server + "/readyz", context=ctx, timeout=5) as response:
                    return bool(response.read() == b"ok")

            wait_for("the second kube-apiserver /readyz", ready, 120, why=other.tail, process=other)
            action(config)
        finally:
            other.stop()

    def start_controller_manager(self) -> None:
        argv = [
            str(self.binaries["kube-controller-manager"]),
            f"--kubeconfig={self.admin_kubeconfig}",
            f"--authentication-kubeconfig={self.admin_kubeconfig}",
            f"--authorization-kubeconfig={self.admin_kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            f"--cert-dir={self.workdir / 'kcm-certs'}",
            f"--service-account-private-key-file={self.sa_key}",
            f"--root-ca-file={self.ca_file}",
            "--leader-elect=false",
            # what a pod-less cluster needs: workloads, namespaces, service accounts, GC
            "--controllers=*,-nodeipam,-nodelifecycle,-persistentvolume-binder,-attachdetach,-persistentvolume-expander",
            "--concurrent-deployment-syncs=5",
            "--v=1",
        ]
        log = self.logs / "kube-controller-manager.log"
        self.processes["kube-controller-manager"] = Process("kube-controller-manager", argv, log).start()

    def stop(self) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            if name in self.processes:
                self.processes[name].stop()

    # -- talking to it

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.admin_cert), str(self.admin_key))
        return ctx

    def get_raw(self, path: str, timeout: float = 5) -> bytes:
        with urllib.request.urlopen(self.server + path, context=self.ssl_context(), timeout=timeout) as response:
            return bytes(response.read())

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        kubeconfig: Path | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binaries["kubectl"]), f"--kubeconfig={kubeconfig or self.admin_kubeconfig}", *args]
        result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
        return result

    def get(self, *args: str, kubeconfig: Path | None = None) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json", kubeconfig=kubeconfig).stdout)

    def apply(
        self, manifest: str | dict[str, Any] | list[dict[str, Any]], *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        if not isinstance(manifest, str):
            docs = manifest if isinstance(manifest, list) else [manifest]
            manifest = "\n---\n".join(json.dumps(d) for d in docs)
        return self.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=tests",
            "-f",
            "-",
            *args,
            input=manifest,
            check=check,
        )

    def create(self, manifest: dict[str, Any], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.kubectl("create", "-f", "-", "-o", "json", *args, input=json.dumps(manifest), check=check)

    def token(self, service_account: str, namespace: str, duration: str = "24h") -> str:
        """A token for a ServiceAccount from the TokenRequest API (what a projected token is)."""
        return self.kubectl("create", "token", service_account, "-n", namespace, f"--duration={duration}").stdout.strip()

    # -- etcd

    def etcd_call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.etcd_port}{path}", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.loads(response.read()))

    def compact_etcd(self) -> int:
        """Compact etcd's history up to its current revision (what the API server's periodic
        compaction does): every watch that resumes from an older resourceVersion gets 410 Gone."""
        key = base64.b64encode(b"/registry/").decode()
        header = self.etcd_call("/v3/kv/range", {"key": key, "limit": 1, "keys_only": True})["header"]
        revision = int(header["revision"])
        self.etcd_call("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision


def write_profiles(config_map: dict[str, Any], folder: Path) -> Path:
    """The files a ConfigMap volume would show the container (its data keys)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for key, text in (config_map.get("data") or {}).items():
        (folder / key).write_text(text)
    return folder


def ready(url: str, context: ssl.SSLContext, timeout: float = 2) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
