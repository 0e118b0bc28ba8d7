"""The real server: ``python -m sidecar_injector serve`` as a subprocess, called over TLS.

The client checks the certificate the way the Kubernetes API server does: it trusts only
the webhook's CA (the ``caBundle``) and verifies the Service DNS name
``sidecar-injector.sidecar-injector.svc`` while connecting to 127.0.0.1 (SNI / hostname
check through httpcore's ``sni_hostname`` request extension).

Every network call has a timeout and the server process is always terminated, so a broken
server fails the tests instead of hanging them.
"""

from __future__ import annotations

import base64
import copy
import json
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import pytest

from podcheck import assert_valid_pod
from required_values import values_for
from serverproc import SERVICE_DNS, ca_context, free_port, server_env, stop
from sidecar_injector.base import keys
from sidecar_injector.profiles.loading import builtin_profiles
from sidecar_injector.webhook.admission import ADMISSION_API_VERSION
from sidecar_injector.webhook.tls import CertBundlePaths, write_cert_bundle

SERVICE = NAMESPACE = "sidecar-injector"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
STARTUP_DEADLINE = 30.0  # seconds for the server to answer /healthz
CALL_TIMEOUT = httpx.Timeout(10.0)
MAX_BODY_BYTES = 65536  # set through SIDECAR_INJECTOR_MAX_BODY_BYTES

INJECT = keys.INJECT
STATUS = keys.STATUS

BUILTIN_NAMES = builtin_profiles().names()  # test_builtin_profiles checks they are the eight


# --------------------------------------------------------------------------- process helpers


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    certs: CertBundlePaths
    stderr_path: Path
    metrics_port: int

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def client(self, ca_file: Path | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            verify=ca_context(ca_file or self.certs.ca_cert),
            timeout=CALL_TIMEOUT,
            trust_env=False,
        )


def call(client: httpx.Client, method: str, path: str, *, server_name: str = SERVICE_DNS, **kwargs: Any) -> httpx.Response:
    """A request to 127.0.0.1 whose TLS handshake sends and verifies ``server_name``."""
    return client.request(method, path, extensions={"sni_hostname": server_name}, **kwargs)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("tls-server")
    certs = write_cert_bundle(tmp / "certs", SERVICE, NAMESPACE, extra_dns=["localhost"], extra_ips=["127.0.0.1"])
    port, metrics_port = free_port(), free_port()
    stderr_path = tmp / "server.stderr"
    with open(stderr_path, "wb") as stderr, open(tmp / "server.stdout", "wb") as stdout:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sidecar_injector",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--cert-file",
                str(certs.cert),
                "--key-file",
                str(certs.key),
                "--metrics-port",
                str(metrics_port),
                "--drain-seconds",
                "0",
            ],
            cwd=PROJECT_ROOT,
            env=server_env(SIDECAR_INJECTOR_MAX_BODY_BYTES=str(MAX_BODY_BYTES)),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
    srv = Server(proc, port, certs, stderr_path, metrics_port)
    try:
        _wait_until_healthy(srv)
        yield srv
    finally:
        stop(proc)


def _wait_until_healthy(srv: Server) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE
    last_error: Exception | None = None
    with srv.client() as c:
        while time.monotonic() < deadline:
            if srv.proc.poll() is not None:
                pytest.fail(f"server exited with {srv.proc.returncode} before it was healthy; stderr:\n{srv.stderr()}")
            try:
                resp = call(c, "GET", "/healthz", timeout=2.0)
                if resp.status_code == 200:
                    return
            except httpx.HTTPError as exc:
                last_error = exc
            time.sleep(0.2)
    pytest.fail(f"server not healthy after {STARTUP_DEADLINE}s (last error: {last_error!r}); stderr:\n{srv.stderr()}")


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


# --------------------------------------------------------------------------- admission helpers


def make_pod(inject: str | None) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/web:1.4.2"}]},
    }
    if inject is not None:
        pod["metadata"]["annotations"] = {INJECT: inject, **values_for(inject)}
    return pod


def review(pod: dict[str, Any] | None, uid: str | None = None, operation: str = "CREATE") -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()),
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "default",
        "operation": operation,
        "userInfo": {"username": "kubernetes-admin"},
        "dryRun": False,
    }
    if pod is not None:
        request["object"] = pod
    return {"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview", "request": request}


def mutate(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    resp = call(client, "POST", "/mutate", json=body)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["apiVersion"] == ADMISSION_API_VERSION and answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == body["request"]["uid"]
    assert ("patchType" in response) == ("patch" in response)
    return response


def apply(pod: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"], validate=True))
    return jsonpatch.apply_patch(copy.deepcopy(pod), ops)


def injected_profiles(pod: dict[str, Any]) -> set[str]:
    return set(json.loads(pod["metadata"]["annotations"][STATUS])["profiles"])


def assert_injects(client: httpx.Client, names: list[str]) -> dict[str, Any]:
    pod = make_pod(",".join(names))
    response = mutate(client, review(pod))
    assert response["allowed"] is True, response
    assert "warnings" not in response, response["warnings"]
    patched = apply(pod, response)
    assert injected_profiles(patched) == set(names)
    assert_valid_pod(patched)
    return patched


# --------------------------------------------------------------------------- the served webhook


def test_healthz_and_readyz(server: Server, client: httpx.Client) -> None:
    assert call(client, "GET", "/healthz").status_code == 200
    resp = call(client, "GET", "/readyz")
    assert resp.status_code == 200
    assert set(BUILTIN_NAMES) <= set(resp.json()["profiles"])
    assert call(client, "GET", "/mutate").status_code == 405


def test_server_certificate_names_the_service(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        with ca_context(server.certs.ca_cert).wrap_socket(raw, server_hostname=SERVICE_DNS) as tls:
            cert = tls.getpeercert()
    sans = {value for kind, value in cert["subjectAltName"] if kind == "DNS"}
    assert SERVICE_DNS in sans


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_each_builtin_profile(client: httpx.Client, name: str) -> None:
    patched = assert_injects(client, [name])
    # the API server calls again (reinvocationPolicy: IfNeeded): nothing more is added
    again = mutate(client, review(patched))
    assert again["allowed"] is True and "patch" not in again


def test_several_builtin_profiles_at_once(client: httpx.Client) -> None:
    assert_injects(client, ["logging", "metrics"])
    assert_injects(client, BUILTIN_NAMES)


def test_no_profile_requested(client: httpx.Client) -> None:
    pod = make_pod(None)
    response = mutate(client, review(pod))
    assert response["allowed"] is True
    assert "patch" not in response and "patchType" not in response
    assert_valid_pod(pod)


def test_unknown_profile_warns(client: httpx.Client) -> None:
    response = mutate(client, review(make_pod("logging,nosuchprofile")))
    assert response["allowed"] is True
    assert any("nosuchprofile" in w for w in response["warnings"])


def test_client_trusting_another_ca_fails_the_handshake(server: Server, tmp_path: Path) -> None:
    other = write_cert_bundle(tmp_path / "other", SERVICE, NAMESPACE, extra_ips=["127.0.0.1"])
    with server.client(other.ca_cert) as c:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            call(c, "GET", "/healthz")
    # direct stdlib check as well, independent of httpx
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            ca_context(other.ca_cert).wrap_socket(raw, server_hostname=SERVICE_DNS)


def test_client_with_system_trust_only_fails_the_handshake(server: Server) -> None:
    with httpx.Client(
        base_url=server.base_url, verify=ssl.create_default_context(), timeout=CALL_TIMEOUT, trust_env=False
    ) as c:
        with pytest.raises(httpx.ConnectError):
            call(c, "GET", "/healthz")


@pytest.mark.parametrize("wrong_name", ["other-service.sidecar-injector.svc", "sidecar-injector.default.svc", "example.com"])
def test_name_not_in_the_certificate_fails_verification(server: Server, wrong_name: str) -> None:
    with server.client() as c:  # a fresh client: no pooled connection verified for another name
        with pytest.raises(httpx.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|match"):
            call(c, "GET", "/healthz", server_name=wrong_name)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            ca_context(server.certs.ca_cert).wrap_socket(raw, server_hostname=wrong_name)


@pytest.mark.parametrize(
    "name", [f"{SERVICE}", f"{SERVICE}.{NAMESPACE}", SERVICE_DNS, f"{SERVICE_DNS}.cluster.local", "localhost"]
)
def test_every_service_name_verifies(server: Server, name: str) -> None:
    with server.client() as c:
        assert call(c, "GET", "/healthz", server_name=name).status_code == 200


def test_plain_http_is_refused(server: Server) -> None:
    with httpx.Client(timeout=CALL_TIMEOUT, trust_env=False) as c:
        try:
            resp = c.get(f"http://127.0.0.1:{server.port}/healthz")
        except httpx.HTTPError:
            return  # connection dropped: fine
        assert resp.status_code >= 400, resp.text


@pytest.mark.parametrize(
    "content,content_type,status",
    [
        (b"", "application/json", 400),
        (b"not json", "application/json", 400),
        (b"[]", "application/json", 400),
        (json.dumps(review(make_pod("logging"))).encode(), "text/plain", 415),
        (
            json.dumps({**review(make_pod("logging")), "apiVersion": "admission.k8s.io/v1beta1"}).encode(),
            "application/json",
            400,
        ),
        (json.dumps(review(None)).encode(), "application/json", 400),
        (b'{"kind": "\xff"}', "application/json", 400),
    ],
    ids=["empty", "not-json", "array", "text-plain", "v1beta1", "create-without-object", "bad-utf8"],
)
def test_bad_request_then_a_good_one(client: httpx.Client, content: bytes, content_type: str, status: int) -> None:
    resp = call(client, "POST", "/mutate", content=content, headers={"content-type": content_type})
    assert resp.status_code == status, resp.text
    assert set(resp.json()) == {"error", "details"}
    assert_injects(client, ["logging"])


def _oversized_body() -> bytes:
    pod = make_pod("logging")
    pod["metadata"]["annotations"]["example.com/padding"] = "x" * (MAX_BODY_BYTES + 1000)
    return json.dumps(review(pod)).encode()


def test_body_over_the_cap_is_413(client: httpx.Client) -> None:
    resp = call(client, "POST", "/mutate", content=_oversized_body(), headers={"content-type": "application/json"})
    assert resp.status_code == 413, resp.text
    assert "error" in resp.json()
    assert_injects(client, ["logging"])


def test_streamed_body_over_the_cap_is_413(client: httpx.Client) -> None:
    content = _oversized_body()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(content), 8192):
            yield content[i : i + 8192]

    resp = call(client, "POST", "/mutate", content=chunks(), headers={"content-type": "application/json"})
    assert resp.status_code == 413, resp.text
    assert_injects(client, ["logging"])


def test_one_log_line_per_decision_with_the_uid(server: Server, client: httpx.Client) -> None:
    uids = {
        f"log-test-{kind}-{uuid.uuid4()}": pod
        for kind, pod in [("injected", make_pod("logging")), ("skipped", make_pod(None)), ("unknown", make_pod("nosuch"))]
    }
    for uid, pod in uids.items():
        mutate(client, review(pod, uid=uid))
    deadline = time.monotonic() + 10
    while True:
        lines = server.stderr().splitlines()
        counts = {uid: sum(uid in line for line in lines) for uid in uids}
        if all(n >= 1 for n in counts.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert all(n == 1 for n in counts.values()), (counts, server.stderr()[-4000:])
    for uid in uids:
        (line,) = [line for line in lines if uid in line]
        assert "default" in line  # the namespace
        assert "web" in line  # the pod


# --------------------------------------------------------------------------- failing to start


def _run_serve(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sidecar_injector",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
            "--metrics-port",
            "0",
            *args,
        ],
        cwd=PROJECT_ROOT,
        env=server_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_with_a_broken_profiles_dir_exits_with_the_file_and_field(tmp_path: Path) -> None:
    certs = write_cert_bundle(tmp_path / "certs", SERVICE, NAMESPACE, extra_ips=["127.0.0.1"])
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    broken = profiles / "broken.yaml"
    broken.write_text(
        "name: shipper\n"
        "version: '1.0'\n"
        "sidecarz:\n"  # the typo
        "  - name: shipper\n"
        "    image: busybox:1.36.1\n"
    )
    result = _run_serve(
        ["--cert-file", str(certs.cert), "--key-file", str(certs.key), "--profiles-dir", str(profiles)], tmp_path
    )
    assert result.returncode != 0, result
    assert str(broken) in result.stderr or "broken.yaml" in result.stderr, result.stderr
    assert "sidecarz" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_serve_with_a_broken_container_field_names_it(tmp_path: Path) -> None:
    certs = write_cert_bundle(tmp_path / "certs", SERVICE, NAMESPACE, extra_ips=["127.0.0.1"])
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "typo.yaml").write_text(
        "name: shipper\nversion: '1.0'\ncontainers:\n  - name: shipper\n    image: busybox:1.36.1\n    volumeMountz: []\n"
    )
    result = _run_serve(
        ["--cert-file", str(certs.cert), "--key-file", str(certs.key), "--profiles-dir", str(profiles)], tmp_path
    )
    assert result.returncode != 0, result
    assert "typo.yaml" in result.stderr and "volumeMountz" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_serve_without_cert_files_exits_with_a_message(tmp_path: Path) -> None:
    result = _run_serve([], tmp_path)
    assert result.returncode != 0, result
    assert "--cert-file" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_serve_with_missing_cert_file_exits_with_a_message(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "tls.crt"
    result = _run_serve(["--cert-file", str(missing), "--key-file", str(tmp_path / "nope" / "tls.key")], tmp_path)
    assert result.returncode != 0, result
    assert str(missing) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_serve_with_a_key_that_does_not_match_exits_with_a_message(tmp_path: Path) -> None:
    one = write_cert_bundle(tmp_path / "one", SERVICE, NAMESPACE)
    two = write_cert_bundle(tmp_path / "two", SERVICE, NAMESPACE)
    result = _run_serve(["--cert-file", str(one.cert), "--key-file", str(two.key)], tmp_path)
    assert result.returncode != 0, result
    assert "certificate" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


# --------------------------------------------------------------------------- metrics


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_metrics_are_served_on_their_own_plain_http_port(server: Server, client: httpx.Client) -> None:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    before = httpx.get(url, timeout=CALL_TIMEOUT).text
    assert_injects(client, ["logging"])
    call(client, "POST", "/mutate", content=b"{not json", headers={"Content-Type": "application/json"})
    after = httpx.get(url, timeout=CALL_TIMEOUT).text

    def grew(name: str, **labels: str) -> float:
        return _metric(after, name, **labels) - _metric(before, name, **labels)

    assert grew("sidecar_injector_admission_requests_total", outcome="injected") >= 1
    assert grew("sidecar_injector_admission_requests_total", outcome="bad_request") == 1
    assert grew("sidecar_injector_injections_total", profile="logging", outcome="injected") >= 1
    assert grew("sidecar_injector_decision_duration_seconds_count") >= 1
    assert _metric(after, "sidecar_injector_profiles_loaded") == len(BUILTIN_NAMES)
    from sidecar_injector.webhook.tls import cert_not_after

    expiry = _metric(after, "sidecar_injector_certificate_expiry_timestamp_seconds")
    assert expiry == pytest.approx(cert_not_after(server.certs.cert).timestamp())
