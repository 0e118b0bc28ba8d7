"""Live reload under a running server: rotated certificates and rewritten profiles.

The files are laid out the way the kubelet mounts a Secret or ConfigMap: the visible
names are symlinks into ``..data``, itself a symlink to a timestamped directory, and an
update swaps ``..data`` atomically. A second test rotates the way a person with ``cp``
would: one file, then the other.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from serverproc import SERVICE_DNS, ca_context, free_port, recorded_status, start_server, stop
from sidecar_injector.base import keys
from sidecar_injector.webhook.tls import write_cert_bundle
from skip_record import assert_skipped_answer
from waiting import wait_until

# -- kubelet-style volumes -----------------------------------------------------------


class AtomicVolume:
    """A directory updated like a mounted Secret/ConfigMap: files appear through ``..data``."""

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.generation = 0

    def publish(self, files: dict[str, bytes]) -> None:
        self.generation += 1
        target = self.root / f"..2026_11_21_{self.generation:04d}"
        target.mkdir()
        for name, content in files.items():
            (target / name).write_bytes(content)
        tmp_link = self.root / "..data_tmp"
        tmp_link.symlink_to(target.name)
        os.replace(tmp_link, self.root / "..data")  # the atomic step
        for name in files:
            link = self.root / name
            if not link.is_symlink():
                link.symlink_to(Path("..data") / name)
        for entry in self.root.iterdir():  # names no longer published disappear, as with the kubelet
            if entry.is_symlink() and not entry.name.startswith(".") and entry.name not in files:
                entry.unlink()
        for old in self.root.glob("..2026_*"):
            if old != target:
                shutil.rmtree(old)


def bundle_files(directory: Path) -> dict[str, bytes]:
    certs = write_cert_bundle(directory, "sidecar-injector", "sidecar-injector", extra_ips=["127.0.0.1"])
    return {"tls.crt": certs.cert.read_bytes(), "tls.key": certs.key.read_bytes(), "ca.crt": certs.ca_cert.read_bytes()}


def served_certificate(port: int, ca: ssl.SSLContext) -> bytes:
    """The DER certificate a *new* connection is given."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ca.wrap_socket(raw, server_hostname=SERVICE_DNS) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def pem_to_der(pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode())


def metric(metrics_port: int, line_prefix: str) -> float | None:
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def review(inject: str) -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-", "namespace": "shop", "annotations": {keys.INJECT: inject}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
    }
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": "shop",
            "object": pod,
        },
    }


def mutate(client: httpx.Client, inject: str) -> dict[str, Any]:
    resp = client.post("/mutate", json=review(inject), extensions={"sni_hostname": SERVICE_DNS})
    assert resp.status_code == 200, resp.text
    return resp.json()["response"]


def injected_versions(answer: dict[str, Any]) -> dict[str, str]:
    """profile -> version recorded in the status annotation the patch writes."""
    return {name: entry["version"] for name, entry in recorded_status(answer).items()}
    for op in json.loads(base64.b64decode(answer["patch"])):
        value = op.get("value")
        if op["path"] == "/metadata/annotations":
            value = value.get(keys.STATUS)
        elif op["path"] != "/metadata/annotations/sidecar.io~1status":
            continue
        return {name: entry["version"] for name, entry in json.loads(value)["profiles"].items()}
    return {}


# -- load that must not fail -----------------------------------------------------------


@dataclass
class Load:
    """Admissions in two threads: one keep-alive connection, and a new connection per call."""

    port: int
    ca: ssl.SSLContext
    ok: list[int] = field(default_factory=lambda: [0, 0])
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=f"https://127.0.0.1:{self.port}", verify=self.ca, timeout=10, trust_env=False)

    def _run(self, index: int, keep_alive: bool) -> None:
        client = self._client() if keep_alive else None
        try:
            while not self.stop.is_set():
                current = client or self._client()
                try:
                    answer = mutate(current, "logging")
                    assert answer["allowed"] is True
                    self.ok[index] += 1
                except Exception as exc:  # every failure is recorded and fails the test
                    self.failures.append(f"{'keep-alive' if keep_alive else 'new connection'}: {exc!r}")
                finally:
                    if client is None:
                        current.close()
        finally:
            if client is not None:
                client.close()

    def __enter__(self) -> Load:
        self.threads = [threading.Thread(target=self._run, args=(i, i == 0), daemon=True) for i in (0, 1)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def progress_after(self, seen: list[int], more: int = 10) -> None:
        wait_until(
            lambda: all(now >= before + more for now, before in zip(self.ok, seen, strict=True)),
            f"both load threads made {more} more admissions",
        )


@pytest.fixture
def cert_server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    old = bundle_files(tmp_path / "old")
    new = bundle_files(tmp_path / "new")
    volume = AtomicVolume(tmp_path / "tls")
    volume.publish(old)
    # during a rotation the caBundle holds both CAs, as cert-manager's CA injector arranges
    ca = ca_context(cadata=(old["ca.crt"] + new["ca.crt"]).decode())
    port, metrics_port = free_port(), free_port()
    proc = start_server(
        [
            "--cert-file",
            str(volume.root / "tls.crt"),
            "--key-file",
            str(volume.root / "tls.key"),
            "--metrics-port",
            str(metrics_port),
            "--drain-seconds",
            "0",
        ],
        tmp_path / "stderr",
        ca=ca,
        port=port,
    )
    try:
        yield {
            "port": port,
            "metrics_port": metrics_port,
            "ca": ca,
            "volume": volume,
            "old": old,
            "new": new,
            "stderr": tmp_path / "stderr",
        }
    finally:
        stop(proc)


def test_rotated_certificate_is_served_to_new_connections_with_no_failed_request(cert_server):
    port, ca, volume = cert_server["port"], cert_server["ca"], cert_server["volume"]
    old_der, new_der = pem_to_der(cert_server["old"]["tls.crt"]), pem_to_der(cert_server["new"]["tls.crt"])
    assert served_certificate(port, ca) == old_der
    with Load(port, ca) as load:
        load.progress_after([0, 0])
        volume.publish(cert_server["new"])  # what the kubelet does when cert-manager renews the Secret
        wait_until(lambda: served_certificate(port, ca) == new_der, "new connections get the new certificate")
        load.progress_after(list(load.ok))
    assert load.failures == [], load.failures[:5]
    assert metric(cert_server["metrics_port"], 'sidecar_injector_reloads_total{result="ok",what="certificate"}') == 1


def test_half_written_certificate_pair_is_refused_until_the_key_arrives(cert_server, tmp_path):
    port, ca = cert_server["port"], cert_server["ca"]
    old_der, new_der = pem_to_der(cert_server["old"]["tls.crt"]), pem_to_der(cert_server["new"]["tls.crt"])
    # a plain directory written file by file: first the certificate, then (later) its key
    plain = tmp_path / "tls"
    target = (plain / "..data").resolve()
    staged = tmp_path / "staged"
    staged.mkdir()
    for name, content in cert_server["new"].items():
        (staged / name).write_bytes(content)
    with Load(port, ca) as load:
        load.progress_after([0, 0])
        os.replace(staged / "tls.crt", target / "tls.crt")
        errors = 'sidecar_injector_reloads_total{result="error",what="certificate"}'
        wait_until(lambda: (metric(cert_server["metrics_port"], errors) or 0) >= 1, "the mismatched pair is refused")
        assert served_certificate(port, ca) == old_der  # still the old, complete pair
        load.progress_after(list(load.ok))
        os.replace(staged / "tls.key", target / "tls.key")
        wait_until(lambda: served_certificate(port, ca) == new_der, "the complete new pair is served")
        load.progress_after(list(load.ok))
    assert load.failures == [], load.failures[:5]
    assert "new certificate not loaded" in cert_server["stderr"].read_text()


# -- profiles ---------------------------------------------------------------------------


def team_profile(version: str, extra: str = "") -> bytes:
    return (
        f"name: team\nversion: '{version}'\n{extra}"
        "containers: [{name: team-agent, image: 'busybox:1.37.0', args: [sleep, infinity]}]\n"
    ).encode()


@pytest.fixture
def profile_server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    certs = write_cert_bundle(tmp_path / "certs", "sidecar-injector", "sidecar-injector", extra_ips=["127.0.0.1"])
    volume = AtomicVolume(tmp_path / "profiles")
    volume.publish({"team.yaml": team_profile("1")})
    ca = ca_context(certs.ca_cert)
    port, metrics_port = free_port(), free_port()
    proc = start_server(
        [
            "--cert-file",
            str(certs.cert),
            "--key-file",
            str(certs.key),
            "--profiles-dir",
            str(volume.root),
            "--metrics-port",
            str(metrics_port),
            "--drain-seconds",
            "0",
        ],
        tmp_path / "stderr",
        ca=ca,
        port=port,
    )
    client = httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ca, timeout=10, trust_env=False)
    try:
        yield {"client": client, "volume": volume, "metrics_port": metrics_port, "stderr": tmp_path / "stderr"}
    finally:
        client.close()
        stop(proc)


def readyz(client: httpx.Client) -> httpx.Response:
    return client.get("/readyz", extensions={"sni_hostname": SERVICE_DNS})


def test_changed_profiles_are_used_without_a_restart_and_a_broken_update_keeps_the_last_good_set(profile_server):
    client, volume, metrics_port = profile_server["client"], profile_server["volume"], profile_server["metrics_port"]
    assert injected_versions(mutate(client, "team")) == {"team": "1"}

    volume.publish({"team.yaml": team_profile("2")})
    wait_until(lambda: injected_versions(mutate(client, "team")) == {"team": "2"}, "version 2 is injected")

    # a broken edit: a typo'd field; the server keeps answering with version 2 and says why
    volume.publish({"team.yaml": team_profile("3", extra="imagePulPolicy: Always\n")})
    wait_until(lambda: "profilesError" in readyz(client).json(), "readyz reports the broken profiles")
    ready = readyz(client)
    assert ready.status_code == 200  # still ready: the last good set answers correctly
    assert "team.yaml" in ready.json()["profilesError"] and "imagePulPolicy" in ready.json()["profilesError"]
    assert injected_versions(mutate(client, "team")) == {"team": "2"}
    assert metric(metrics_port, "sidecar_injector_profiles_reload_error") == 1
    assert "profiles not reloaded" in profile_server["stderr"].read_text()

    volume.publish({"team.yaml": team_profile("3")})
    wait_until(lambda: injected_versions(mutate(client, "team")) == {"team": "3"}, "the fixed version 3 is injected")
    assert "profilesError" not in readyz(client).json()
    assert metric(metrics_port, "sidecar_injector_profiles_reload_error") == 0

    # a profile removed from the ConfigMap is gone: asking for it now gives the unknown-profile warning
    volume.publish(
        {"other.yaml": team_profile("1").replace(b"name: team", b"name: other").replace(b"team-agent", b"other-agent")}
    )
    wait_until(lambda: "team" not in readyz(client).json()["profiles"], "the removed profile is gone")
    answer = mutate(client, "team")
    assert_skipped_answer(answer, review("team")["request"]["object"], {"team": "unknown profile"})
    assert any("unknown sidecar profile(s) team" in w for w in answer["warnings"])
    assert metric(metrics_port, 'sidecar_injector_reloads_total{result="ok",what="profiles"}') == 3


# -- what the reloader survives (issue 19, item 3) ------------------------------------------------------


def test_a_profile_folder_that_cannot_be_listed_keeps_the_last_good_set(tmp_path: Path, monkeypatch) -> None:
    """Was an OSError out of reload_profiles (only ProfileError was caught), ending the reloader."""
    import asyncio

    from sidecar_injector.profiles.loading import builtin_profiles
    from sidecar_injector.runtime.interfaces import ProfileStore
    from sidecar_injector.runtime.metrics import Metrics
    from sidecar_injector.runtime.settings import Settings
    from sidecar_injector.server import reload

    def unlistable(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(reload, "load_profiles", unlistable)
    good = builtin_profiles()
    store, metrics = ProfileStore(good), Metrics()
    reloader = reload.Reloader(Settings(profiles_dir=tmp_path), store, metrics, None)

    assert asyncio.run(reloader.reload_profiles()) is False
    assert store.current is good
    assert store.error is not None and "Permission denied" in store.error
    assert metrics.registry.get_sample_value("sidecar_injector_profiles_reload_error") == 1
    assert metrics.registry.get_sample_value("sidecar_injector_reloads_total", {"what": "profiles", "result": "error"}) == 1
