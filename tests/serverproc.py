"""Running the real server (``python -m sidecar_injector serve``) as a subprocess in tests, and reading its answers.

Every wait has a deadline and the process is always reaped, so a broken server fails a
test instead of hanging it.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SERVICE_DNS = "sidecar-injector.sidecar-injector.svc"  # what the API server verifies for the Service
STARTUP_DEADLINE = 30.0  # seconds for the server to answer /healthz


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(**extra: str) -> dict[str, str]:
    """The current environment without any SIDECAR_INJECTOR_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_INJECTOR_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def stop(proc: subprocess.Popen[Any]) -> None:
    """Terminate the process and reap it; kill it if it does not stop in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def ca_context(ca_file: Path | None = None, *, cadata: str | None = None) -> ssl.SSLContext:
    """Trust only the given CA(s) and verify the hostname, as the API server does with a caBundle."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file else None, cadata=cadata)
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    return ctx


def start_server(
    args: list[str], stderr_path: Path, *, ca: ssl.SSLContext, port: int, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``python -m sidecar_injector serve --host 127.0.0.1 --port PORT ARGS``, returned once /healthz answers."""
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sidecar_injector", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            cwd=PROJECT_ROOT,
            env=env or server_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    deadline = time.monotonic() + STARTUP_DEADLINE
    with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ca, timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}; stderr:\n{stderr_path.read_text()}")
            try:
                if client.get("/healthz", extensions={"sni_hostname": SERVICE_DNS}).status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    stop(proc)
    pytest.fail(f"server not healthy after {STARTUP_DEADLINE}s; stderr:\n{stderr_path.read_text()}")


def recorded_status(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """profile -> entry of the ``sidecar.io/status`` an admission answer's patch writes ({}: no patch)."""
    if "patch" not in answer:
        return {}
    for op in json.loads(base64.b64decode(answer["patch"])):
        if op["path"] == "/metadata/annotations":
            return json.loads(op["value"]["sidecar.io/status"])["profiles"]
        if op["path"] == "/metadata/annotations/sidecar.io~1status":
            return json.loads(op["value"])["profiles"]
    return {}
