"""Graceful shutdown of the real server: readiness first, then finish in-flight reviews."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from serverproc import free_port
from sidecar_injector.webhook.tls import write_cert_bundle

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SERVICE_DNS = "sidecar-injector.sidecar-injector.svc"


def client_for(port: int, ca: Path) -> httpx.Client:
    """Each test closes its clients before waiting for the exit: an idle keep-alive TLS
    connection whose client never reads (httpx has no background reader, unlike Go's
    net/http in the API server) would hold the server until its shutdown timeout."""
    return httpx.Client(
        base_url=f"https://127.0.0.1:{port}", timeout=30, trust_env=False, verify=ssl.create_default_context(cafile=str(ca))
    )


def review_body(uid: str) -> bytes:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-", "annotations": {"sidecar.io/inject": "logging"}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
    }
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "operation": "CREATE",
                "namespace": "shop",
                "object": pod,
            },
        }
    ).encode()


@pytest.fixture
def running_server(tmp_path: Path):
    certs = write_cert_bundle(tmp_path, "sidecar-injector", "sidecar-injector", extra_ips=["127.0.0.1"])
    port = free_port()
    with open(tmp_path / "stderr", "wb") as stderr:
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
                "0",
                "--drain-seconds",
                "3",
                "--shutdown-timeout-seconds",
                "15",
            ],
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        deadline = time.monotonic() + 30
        with client_for(port, certs.ca_cert) as client:
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("server did not start: " + (tmp_path / "stderr").read_text())
                time.sleep(0.2)
        yield proc, certs, port, tmp_path / "stderr"
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_sigterm_turns_readiness_off_first_and_keeps_answering_during_the_drain(running_server):
    proc, certs, port, _ = running_server
    with client_for(port, certs.ca_cert) as client:
        assert client.get("/readyz").status_code == 200
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "draining"
        answer = client.post("/mutate", content=review_body("during-drain"), headers={"Content-Type": "application/json"})
        assert answer.status_code == 200 and answer.json()["response"]["patchType"] == "JSONPatch"
    assert proc.wait(timeout=30) == 0


def test_reviews_in_flight_when_the_server_stops_all_finish(running_server):
    """Slow uploads straddle the moment uvicorn stops accepting: each still gets its answer."""
    proc, certs, port, stderr_path = running_server
    results: dict[str, Any] = {}

    def slow_review(uid: str) -> None:
        body = review_body(uid)
        pieces = [body[i : i + 64] for i in range(0, len(body), 64)]

        def upload():
            for piece in pieces:
                time.sleep(4.0 / len(pieces))  # ~4 s per upload: still going when the drain ends
                yield piece

        with client_for(port, certs.ca_cert) as own:
            try:
                resp = own.post("/mutate", content=upload(), headers={"Content-Type": "application/json"})
                results[uid] = (resp.status_code, resp.json()["response"]["uid"])
            except Exception as exc:  # recorded, asserted below
                results[uid] = exc

    proc.send_signal(signal.SIGTERM)  # drain: 3 s, then graceful shutdown
    threads = []
    for i in range(6):  # started during the drain, still uploading when it ends
        thread = threading.Thread(target=slow_review, args=(f"slow-{i}",))
        thread.start()
        threads.append(thread)
        time.sleep(0.25)
    for thread in threads:
        thread.join(timeout=60)
    assert proc.wait(timeout=30) == 0
    assert results == {f"slow-{i}": (200, f"slow-{i}") for i in range(6)}, stderr_path.read_text()
    assert "shutting down: readiness is off, draining" in stderr_path.read_text()


def test_sigint_skips_the_drain(running_server):
    proc, *_ = running_server
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
