"""Benchmark the webhook against a floor: the real server and a bare ASGI app, both over TLS.

    .venv/bin/python bench/run.py [--duration S] [--out bench/results/NAME.json] [--quick]

What it does (bench/README.md explains every number):

1. dev certificates in a temp dir (``sidecar_injector.webhook.tls.write_cert_bundle``);
2. AdmissionReview bodies (pod CREATE in namespace ``shop``): ``typical`` (a Deployment pod
   asking for ``logging``), ``none`` (the same pod without the annotation), ``large``
   (>= 100 KB, dozens of containers, ``logging,metrics,proxy``) and a size series of pods of
   ~3 KB, ~30 KB and ~300 KB asking for ``logging``;
3. the real server (``python -m sidecar_injector serve ... --log-format json``, INFO logging on, to a file)
   and the FLOOR (``bench/floor_server.py``: ``bench/floor_app.py`` under the same uvicorn
   settings and TLS), each checked once with a verifying TLS client;
4. ``wrk`` (``bench/post.lua``, keep-alive, one thread) against each at concurrency 1 and 16,
   floor and app cells interleaved; then the size series at concurrency 1;
5. peak RSS (VmHWM) after each cell and VmRSS sampled every second;
6. a table on stdout and everything as JSON in ``--out``, with the targets and pass/fail.

Load goes to 127.0.0.1 only; every wait is bounded; both servers are always stopped.
Exit status: 0 when every cell ran without errors, 1 when a cell or a check failed (the
report is still written), 3 with ``--enforce-targets`` when a target is missed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import datetime as dt
import hashlib
import http.client
import importlib.metadata
import itertools
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sidecar_injector.webhook.tls import write_cert_bundle

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent

HOST = "127.0.0.1"
CONCURRENCIES = (1, 16)
SCENARIOS = ("typical", "distinct", "none", "large")
#: the distinct body's token that post.lua replaces with a counter (WRK_VARY): every pod differs
DISTINCT_TOKEN = "000000000000"
SIZE_SERIES = (("size-3k", 3 * 1024), ("size-30k", 30 * 1024), ("size-300k", 300 * 1024))
SERVERS = ("floor", "app")
STARTUP_TIMEOUT_S = 30.0
STOP_GRACE_S = 10.0
RESULT_PREFIX = "BENCH_RESULT "
TARGETS = (
    # (id, description, scenario, concurrency, metric, op, threshold)
    (
        "typical_c16_throughput_ratio",
        "typical c16 throughput ratio (app/floor) >= 0.5",
        "typical",
        16,
        "throughput",
        ">=",
        0.5,
    ),
    ("typical_c1_p99_ratio", "typical c1 p99 latency ratio (app/floor) <= 2.0", "typical", 1, "p99", "<=", 2.0),
    # issue 17: the server's CPU time (utime+stime over the cell) per admission, against the floor's in the same run
    (
        "typical_c16_cpu_ratio",
        "typical c16 CPU per admission ratio (app/floor) <= 2.3",
        "typical",
        16,
        "cpu_per_adm",
        "<=",
        2.3,
    ),
)
KB = 1024
BUSY_CORES = 0.25  # other processes using more than this many cores during a cell make it "noisy"


# --------------------------------------------------------------------------- request bodies

SA_MOUNT = {
    "name": "kube-api-access-x7k2p",
    "readOnly": True,
    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
}
SA_VOLUME = {
    "name": "kube-api-access-x7k2p",
    "projected": {
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {
                "downwardAPI": {
                    "items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]
                }
            },
        ],
        "defaultMode": 420,
    },
}


def _container(index: int, multi: bool, extra_env: int) -> dict[str, Any]:
    """An application container as the API server hands it over (defaults filled in)."""
    name = f"web-{index:03d}" if multi else "web"
    port = 8080 + index  # distinct per container; clear of every built-in profile's ports
    env: list[dict[str, Any]] = [
        {"name": "APP_ENV", "value": "production"},
        {"name": "HTTP_PORT", "value": str(port)},
        {"name": "DB_HOST", "value": "postgres.shop.svc.cluster.local"},
        {
            "name": "DB_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "shop-db", "key": "password"}},
        },
    ]
    env.extend(
        {"name": f"FEATURE_FLAG_{j:03d}", "value": f"checkout-experiment-{index}-{j}-enabled"} for j in range(extra_env)
    )
    probe_port: Any = "http" if not multi else port
    return {
        "name": name,
        "image": "ghcr.io/example/shop-web:1.8.3",
        "ports": [{"name": "http" if not multi else f"http-{index}", "containerPort": port, "protocol": "TCP"}],
        "env": env,
        "resources": {
            "limits": {"cpu": "500m", "memory": "256Mi"},
            "requests": {"cpu": "100m", "memory": "128Mi"},
        },
        "volumeMounts": [dict(SA_MOUNT)],
        "livenessProbe": {
            "httpGet": {"path": "/livez", "port": probe_port, "scheme": "HTTP"},
            "initialDelaySeconds": 5,
            "timeoutSeconds": 1,
            "periodSeconds": 10,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": probe_port, "scheme": "HTTP"},
            "timeoutSeconds": 1,
            "periodSeconds": 5,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
    }


def make_pod(containers: int, extra_env: int, inject: str | None, revision: str | None = None) -> dict[str, Any]:
    """A Deployment-created pod with ``containers`` app containers, each with 4 + extra_env env vars
    (``revision``: an extra annotation, the value post.lua varies per request for the distinct scenario)."""
    annotations: dict[str, str] = {}
    if inject is not None:
        annotations["sidecar.io/inject"] = inject
    if revision is not None:
        annotations["example.com/revision"] = revision
    multi = containers > 1
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "generateName": "web-7d4b9c8f6d-",
            "namespace": "shop",
            "labels": {
                "app.kubernetes.io/name": "web",
                "pod-template-hash": "7d4b9c8f6d",
            },
            **({"annotations": annotations} if annotations else {}),
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "web-7d4b9c8f6d",
                    "uid": "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "volumes": [copy.deepcopy(SA_VOLUME)],
            "containers": [_container(i, multi, extra_env) for i in range(containers)],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
            ],
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": {},
    }


def make_review(pod: dict[str, Any], uid: str) -> dict[str, Any]:
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "6c1f4b1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
            },
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }


def encode(obj: Any) -> bytes:
    """Compact JSON, as the API server sends it."""
    return json.dumps(obj, separators=(",", ":")).encode()


def _sized_pod(target: int, inject: str) -> tuple[int, int, bytes]:
    """(containers, extra env, body) of the pod closest to ``target`` bytes, grown along n containers x 1.5n env."""
    best: tuple[int, int, bytes] | None = None
    for n in range(1, 400):
        extra = round(1.5 * (n - 1))
        body = encode(make_review(make_pod(n, extra, inject), f"size-{target}"))
        if best is None or abs(len(body) - target) < abs(len(best[2]) - target):
            best = (n, extra, body)
        if len(body) >= target:
            break
    assert best is not None
    return best


def build_bodies(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Write every request body into out_dir; return name -> {file, bytes, ...}."""
    specs: dict[str, dict[str, Any]] = {}

    def add(
        name: str,
        body: bytes,
        containers: int,
        extra_env: int,
        inject: str | None,
        expect_patch: bool,
        vary: str | None = None,
    ) -> None:
        path = out_dir / f"body-{name}.json"
        path.write_bytes(body)
        specs[name] = {
            "file": str(path),
            "vary": vary,
            "bytes": len(body),
            "kb": round(len(body) / KB, 2),
            "containers": containers,
            "env_per_container": 4 + extra_env,
            "inject": inject,
            "expect_patch": expect_patch,
        }

    add("typical", encode(make_review(make_pod(1, 0, "logging"), "0b6a3c1e-typical")), 1, 0, "logging", True)
    # The typical pod is a ReplicaSet's: every replica reaches the webhook as the same object, so
    # the server answers its repeats from the decision memo. The distinct one differs in every
    # request (post.lua varies an annotation), so every admission is decided afresh.
    distinct = encode(make_review(make_pod(1, 0, "logging", revision=DISTINCT_TOKEN), "0b6a3c1e-distinct"))
    add("distinct", distinct, 1, 0, "logging", True, vary=DISTINCT_TOKEN)
    add("none", encode(make_review(make_pod(1, 0, None), "0b6a3c1e-none")), 1, 0, None, False)
    large_n, large_env = 36, 32
    large = encode(make_review(make_pod(large_n, large_env, "logging,metrics,proxy"), "0b6a3c1e-large"))
    assert len(large) >= 100 * 1000, len(large)
    add("large", large, large_n, large_env, "logging,metrics,proxy", True)
    for name, target in SIZE_SERIES:
        n, extra, body = _sized_pod(target, "logging")
        add(name, body, n, extra, "logging", True)
    return specs


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def read_status_kb(pid: int, field: str) -> int | None:
    """A ``kB`` field (VmRSS, VmHWM) of /proc/<pid>/status, or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def read_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (/proc/<pid>/stat), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14, 15)
    except (OSError, ValueError, IndexError):
        return None


def system_busy_s() -> float | None:
    """CPU seconds all CPUs spent busy since boot (/proc/stat: everything but idle and iowait)."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _CLK_TCK


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Server:
    """A server subprocess (own process group) with its log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, port: int, env: dict[str, str]):
        self.name = name
        self.argv = argv
        self.port = port
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> int | None:
        """terminate, wait up to STOP_GRACE_S, then kill; returns the exit code."""
        if self.proc.poll() is None:
            try:
                self.proc.terminate()
                self.proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=STOP_GRACE_S)
            except ProcessLookupError:
                pass
        self._log.close()
        return self.proc.returncode


def adapt_to_serve_flags(env: dict[str, str], metrics_port: int) -> list[str]:
    """Extra `serve` flags for features newer servers have, found in `serve --help`.

    A metrics endpoint stays on (it is part of the real cost) but on a free loopback port, so
    the run never collides with a server already on the default one; SIGTERM draining is off
    so the server stops at once when the run ends (it does not change the measured path).
    """
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "sidecar_injector", "serve", "--help"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return []
    flags: list[str] = []
    if "--metrics-port" in proc.stdout:
        flags += ["--metrics-port", str(metrics_port)]
    if "--drain-seconds" in proc.stdout:
        flags += ["--drain-seconds", "0"]
    return flags


def app_source_fingerprint() -> str:
    """sha256 over app/'s .py and .yaml files (path + content): which code a report measured."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "app").rglob("*")):
        if path.suffix in (".py", ".yaml", ".yml") and path.is_file():
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def client_context(ca_file: Path) -> ssl.SSLContext:
    """A client that trusts only the generated CA and checks the name, like the API server."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.check_hostname = True
    return ctx


def request(
    ctx: ssl.SSLContext, port: int, method: str, path: str, body: bytes | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection(HOST, port, context=ctx, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_healthy(server: Server, ctx: ssl.SSLContext, timeout: float = STARTUP_TIMEOUT_S) -> float:
    """Poll GET /healthz over TLS until 200; seconds it took. Raises RuntimeError on exit/timeout."""
    started = time.monotonic()
    deadline = started + timeout
    last_error = "no attempt"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.name} server exited with {server.proc.returncode} before it was healthy; log:\n{server.log_tail()}"
            )
        try:
            status, _ = request(ctx, server.port, "GET", "/healthz", timeout=2.0)
            if status == 200:
                return time.monotonic() - started
            last_error = f"HTTP {status}"
        except (OSError, http.client.HTTPException) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} server not healthy after {timeout:.0f}s ({last_error}); log:\n{server.log_tail()}")


def sanity_check(server: Server, ctx: ssl.SSLContext, bodies: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """POST every body once with a verifying client; check the answer is the right kind of 200."""
    results: dict[str, Any] = {}
    for name, spec in bodies.items():
        body = Path(spec["file"]).read_bytes()
        uid = json.loads(body)["request"]["uid"]
        entry: dict[str, Any] = {"ok": False}
        try:
            t0 = time.perf_counter()
            status, raw = request(ctx, server.port, "POST", "/mutate", body, timeout=30.0)
            entry["seconds"] = round(time.perf_counter() - t0, 4)
            entry["status"] = status
            entry["response_bytes"] = len(raw)
            problems = []
            if status != 200:
                problems.append(f"HTTP {status}: {raw[:300]!r}")
            else:
                resp = json.loads(raw).get("response", {})
                if resp.get("uid") != uid:
                    problems.append(f"uid {resp.get('uid')!r} != {uid!r}")
                if resp.get("allowed") is not True:
                    problems.append(f"allowed is {resp.get('allowed')!r}")
                if server.name == "app":
                    has_patch = "patch" in resp
                    entry["patch_ops"] = len(json.loads(base64.b64decode(resp["patch"]))) if has_patch else 0
                    entry["warnings"] = resp.get("warnings", [])
                    if has_patch != spec["expect_patch"]:
                        problems.append(f"patch present={has_patch}, expected {spec['expect_patch']}")
                    if entry["warnings"]:
                        problems.append(f"unexpected warnings: {entry['warnings']}")
            entry["problems"] = problems
            entry["ok"] = not problems
        except (OSError, http.client.HTTPException, ValueError) as exc:
            entry["problems"] = [f"{type(exc).__name__}: {exc}"]
        results[name] = entry
    return results


class RssSampler(threading.Thread):
    """VmRSS of every server once a second, tagged with the cell being measured."""

    def __init__(self, servers: dict[str, Server], interval: float = 1.0):
        super().__init__(daemon=True, name="rss-sampler")
        self.servers = servers
        self.interval = interval
        self.phase = "startup"
        self.samples: list[dict[str, Any]] = []
        self._halt = threading.Event()
        self._t0 = time.monotonic()

    def run(self) -> None:
        while not self._halt.is_set():
            sample: dict[str, Any] = {"t": round(time.monotonic() - self._t0, 2), "phase": self.phase}
            for name, server in self.servers.items():
                sample[f"{name}_vmrss_kb"] = read_status_kb(server.pid, "VmRSS")
            self.samples.append(sample)
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def max_in(self, phase: str, server: str) -> int | None:
        values = [s[f"{server}_vmrss_kb"] for s in self.samples if s["phase"] == phase and s.get(f"{server}_vmrss_kb")]
        return max(values) if values else None


# --------------------------------------------------------------------------- wrk


def run_wrk(
    wrk: str,
    port: int,
    body_file: str,
    concurrency: int,
    duration: int,
    headers: tuple[str, ...] = (),
    vary: str | None = None,
) -> dict[str, Any]:
    """One wrk run; the parsed BENCH_RESULT line plus ok/problems (``vary``: post.lua's WRK_VARY)."""
    argv = [
        wrk,
        "-t1",
        f"-c{concurrency}",
        f"-d{duration}s",
        "--latency",
        "-s",
        str(BENCH_DIR / "post.lua"),
        *(arg for header in headers for arg in ("-H", header)),
        f"https://{HOST}:{port}/mutate",
    ]
    env = dict(os.environ, WRK_BODY_FILE=body_file)
    if vary:
        env["WRK_VARY"] = vary
    out: dict[str, Any] = {"argv": argv, "ok": False, "problems": []}
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration + 30, check=False)
    except subprocess.TimeoutExpired:
        out["problems"].append(f"wrk did not finish within {duration + 30}s")
        return out
    out["returncode"] = proc.returncode
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)), None)
    if proc.returncode != 0:
        out["problems"].append(f"wrk exited with {proc.returncode}: {proc.stderr.strip()[:500]}")
    if line is None:
        out["problems"].append(f"no {RESULT_PREFIX.strip()} line in wrk output: {proc.stdout.strip()[-500:]}")
        return out
    result = json.loads(line[len(RESULT_PREFIX) :])
    out.update(result)
    errors = result["errors"]
    out["errors_total"] = sum(errors[k] for k in ("connect", "read", "write", "timeout", "non2xx"))
    if out["errors_total"]:
        out["problems"].append("errors: " + ", ".join(f"{k}={v}" for k, v in errors.items() if v))
    if result["requests"] == 0:
        out["problems"].append("no request completed")
    out["ok"] = not out["problems"]
    return out


def wrk_version(wrk: str) -> str:
    try:
        proc = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (proc.stdout + proc.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


# --------------------------------------------------------------------------- machine


def machine_info(wrk: str) -> dict[str, Any]:
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total_kb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total_kb = int(line.split()[1])
    except OSError:
        pass

    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model,
        "memory_total_mb": round(mem_total_kb / 1024) if mem_total_kb else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "uvicorn": version("uvicorn"),
        "fastapi": version("fastapi"),
        "starlette": version("starlette"),
        "pydantic": version("pydantic"),
        "uvloop": version("uvloop"),
        "httptools": version("httptools"),
        "wrk": wrk_version(wrk),
        "openssl": ssl.OPENSSL_VERSION,
        "loadavg_start": os.getloadavg(),
    }


# --------------------------------------------------------------------------- analysis


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def cell_summary(cell: dict[str, Any]) -> dict[str, Any]:
    wrk = cell["wrk"]
    lat = wrk.get("latency_ms", {})
    return {
        "ok": wrk["ok"],
        "requests": wrk.get("requests"),
        "throughput": round(wrk["requests_per_s"], 1) if "requests_per_s" in wrk else None,
        "p50": lat.get("p50"),
        "p90": lat.get("p90"),
        "p99": lat.get("p99"),
        "max": lat.get("max"),
        "errors": wrk.get("errors_total"),
        "cpu_ms_per_adm": wrk.get("server_cpu_ms_per_req"),
        "server_cpu_s": wrk.get("server_cpu_s"),
        "wrk_cpu_s": wrk.get("wrk_cpu_s"),
        "other_cpu_cores": wrk.get("other_cpu_cores"),
        "error_detail": wrk.get("errors"),
        "problems": wrk.get("problems", []),
        "vmhwm_kb": cell.get("vmhwm_kb"),
        "max_sampled_vmrss_kb": cell.get("max_sampled_vmrss_kb"),
    }


def ratios(app: dict[str, Any], floor: dict[str, Any]) -> dict[str, float | None]:
    return {
        "throughput": _ratio(app["throughput"], floor["throughput"]),
        **{k: _ratio(app[k], floor[k]) for k in ("p50", "p90", "p99", "max")},
        "cpu_per_adm": _ratio(app["cpu_ms_per_adm"], floor["cpu_ms_per_adm"]),
    }


def linear_fit(xs: list[float], ys: list[float]) -> dict[str, float | None]:
    n = len(xs)
    if n < 2:
        return {"slope": None, "intercept": None, "r2": None}
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx if sxx else 0.0
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    r2 = 1 - ss_res / ss_tot if ss_tot else 1.0
    return {"slope": slope, "intercept": intercept, "r2": r2}


def size_analysis(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-KB cost of p50 and of 1/throughput along the size series; is it roughly linear?"""
    good = [p for p in points if p["p50"] is not None and p["throughput"]]
    xs = [p["kb"] for p in good]
    p50 = [p["p50"] for p in good]
    per_req = [1000.0 / p["throughput"] for p in good]  # ms of wall time per request at c1
    fit_p50 = linear_fit(xs, p50)
    fit_req = linear_fit(xs, per_req)
    cpu_pts = [(p["kb"], p["cpu_ms_per_adm"]) for p in good if p.get("cpu_ms_per_adm") is not None]
    fit_cpu = linear_fit([x for x, _ in cpu_pts], [y for _, y in cpu_pts])
    segments = []
    for a, b in itertools.pairwise(good):
        dx = b["kb"] - a["kb"]
        segments.append(
            {
                "from": a["scenario"],
                "to": b["scenario"],
                "p50_ms_per_kb": round((b["p50"] - a["p50"]) / dx, 5) if dx else None,
                "ms_per_request_per_kb": round((1000.0 / b["throughput"] - 1000.0 / a["throughput"]) / dx, 5)
                if dx
                else None,
                "cpu_ms_per_kb": round((b["cpu_ms_per_adm"] - a["cpu_ms_per_adm"]) / dx, 5)
                if dx and a.get("cpu_ms_per_adm") is not None and b.get("cpu_ms_per_adm") is not None
                else None,
            }
        )
    verdict = None
    if len(segments) == 2 and segments[0]["p50_ms_per_kb"] and segments[0]["p50_ms_per_kb"] > 0:
        # Per-KB slope from 30 to 300 KB over the one from 3 to 30 KB: 1 if cost is linear in
        # size, about 10 if quadratic, about 0.1 if a fixed cost dominated. Within 0.5-2 is
        # "roughly linear": run-to-run noise on this small a series is easily 2x.
        growth = segments[1]["p50_ms_per_kb"] / segments[0]["p50_ms_per_kb"]
        shape = "roughly linear" if 0.5 <= growth <= 2.0 else ("superlinear" if growth > 2.0 else "sublinear")
        verdict = f"{shape} (per-KB slope 30->300 KB is {growth:.2f}x the 3->30 KB slope; quadratic would be ~10x)"
    return {
        "p50_ms_per_kb": round(fit_p50["slope"], 5) if fit_p50["slope"] is not None else None,
        "p50_intercept_ms": round(fit_p50["intercept"], 4) if fit_p50["intercept"] is not None else None,
        "p50_fit_r2": round(fit_p50["r2"], 4) if fit_p50["r2"] is not None else None,
        "ms_per_request_per_kb": round(fit_req["slope"], 5) if fit_req["slope"] is not None else None,
        "cpu_ms_per_kb": round(fit_cpu["slope"], 5) if fit_cpu["slope"] is not None else None,
        "cpu_intercept_ms": round(fit_cpu["intercept"], 4) if fit_cpu["intercept"] is not None else None,
        "segments": segments,
        "linearity": verdict,
    }


def evaluate_targets(matrix: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for tid, desc, scenario, conc, metric, op, threshold in TARGETS:
        cell = matrix.get(scenario, {}).get(f"c{conc}", {})
        value = cell.get("ratio", {}).get(metric)
        if value is None or not (cell.get("app", {}).get("ok") and cell.get("floor", {}).get("ok")):
            status = "error"
        elif (value >= threshold) if op == ">=" else (value <= threshold):
            status = "pass"
        else:
            status = "fail"
        out.append(
            {
                "id": tid,
                "target": desc,
                "scenario": scenario,
                "concurrency": conc,
                "metric": metric,
                "op": op,
                "threshold": threshold,
                "value": value,
                "status": status,
            }
        )
    return out


# --------------------------------------------------------------------------- report


def _f(value: Any, fmt: str, width: int) -> str:
    if value is None:
        return "-".rjust(width)
    return format(value, fmt).rjust(width)


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print()
    print(
        f"machine: {m['nproc']} CPU ({m['cpu_model']}), {m['memory_total_mb']} MB, Python {m['python']}, "
        f"uvicorn {m['uvicorn']}, fastapi {m['fastapi']}, {m['wrk']}"
    )
    print(
        f"cells: {report['args']['duration']} s each (size series {report['args']['size_duration']} s), "
        "latency in ms, throughput in admissions/s, cpu/adm = server CPU ms per admission; x = app / floor"
    )
    print()
    head = (
        f"{'scenario':<9}{'c':>3} | {'server':<5} {'adm/s':>8} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7} {'err':>4}"
        f" {'cpu/adm':>7} {'HWM MB':>6} | {'thr x':>6} {'p50 x':>6} {'p90 x':>6} {'p99 x':>6} {'max x':>6} {'cpu x':>6}"
    )
    print(head)
    print("-" * len(head))
    for scenario in SCENARIOS:
        for conc in CONCURRENCIES:
            cell = report["matrix"][scenario][f"c{conc}"]
            for server in SERVERS:
                s = cell[server]
                hwm = s["vmhwm_kb"] / 1024 if s.get("vmhwm_kb") else None
                line = (
                    f"{scenario if server == 'floor' else '':<9}{conc if server == 'floor' else '':>3} | "
                    f"{server:<5} {_f(s['throughput'], '.0f', 8)} {_f(s['p50'], '.2f', 7)} {_f(s['p90'], '.2f', 7)} "
                    f"{_f(s['p99'], '.2f', 7)} {_f(s['max'], '.2f', 7)} {_f(s['errors'], 'd', 4)} "
                    f"{_f(s['cpu_ms_per_adm'], '.3f', 7)} {_f(hwm, '.0f', 6)} |"
                )
                if server == "app":
                    r = cell["ratio"]
                    line += (
                        f" {_f(r['throughput'], '.2f', 6)} {_f(r['p50'], '.2f', 6)} {_f(r['p90'], '.2f', 6)}"
                        f" {_f(r['p99'], '.2f', 6)} {_f(r['max'], '.2f', 6)} {_f(r['cpu_per_adm'], '.2f', 6)}"
                    )
                if not s["ok"]:
                    line += "  FAILED: " + "; ".join(s["problems"])
                print(line)
    print()
    print("size series at c1 (pod requesting logging):")
    head2 = (
        f"{'body':<10}{'KB':>7} | {'floor p50':>9} {'adm/s':>7} {'cpu/adm':>7} | {'app p50':>8} {'adm/s':>7} {'cpu/adm':>7}"
        f" | {'p50 x':>6} {'thr x':>6} {'cpu x':>6}"
    )
    print(head2)
    print("-" * len(head2))
    series = report["size_series"]
    for name, _ in SIZE_SERIES:
        f_, a_ = series["points"]["floor"][name], series["points"]["app"][name]
        line = (
            f"{name:<10}{_f(a_['kb'], '.1f', 7)} | {_f(f_['p50'], '.2f', 9)} {_f(f_['throughput'], '.0f', 7)}"
            f" {_f(f_['cpu_ms_per_adm'], '.3f', 7)} | {_f(a_['p50'], '.2f', 8)} {_f(a_['throughput'], '.0f', 7)}"
            f" {_f(a_['cpu_ms_per_adm'], '.3f', 7)} | {_f(_ratio(a_['p50'], f_['p50']), '.2f', 6)}"
            f" {_f(_ratio(a_['throughput'], f_['throughput']), '.2f', 6)}"
            f" {_f(_ratio(a_['cpu_ms_per_adm'], f_['cpu_ms_per_adm']), '.2f', 6)}"
        )
        for who, p in (("floor", f_), ("app", a_)):
            if not p["ok"]:
                line += f"  {who} FAILED: " + "; ".join(p["problems"])
        print(line)
    for server in SERVERS:
        a = series["analysis"][server]
        print(
            f"  {server:<5} p50 {_f(a['p50_ms_per_kb'], '.4f', 0)} ms/KB (fit r2 {_f(a['p50_fit_r2'], '.3f', 0)}), "
            f"CPU {_f(a['cpu_ms_per_kb'], '.4f', 0)} ms/KB; {a['linearity']}"
        )
    excess = series["analysis"].get("app_minus_floor_p50_ms_per_kb")
    excess_cpu = series["analysis"].get("app_minus_floor_cpu_ms_per_kb")
    print(f"  app's own per-KB cost (app - floor): p50 {_f(excess, '.4f', 0)} ms/KB, CPU {_f(excess_cpu, '.4f', 0)} ms/KB")
    print()
    mem = report["memory"]
    startup_kb = mem["app"]["vmrss_after_startup_kb"]
    print(
        f"peak RSS (VmHWM): floor {_f(mem['floor']['vmhwm_kb'] and mem['floor']['vmhwm_kb'] / 1024, '.1f', 0)} MB, "
        f"app {_f(mem['app']['vmhwm_kb'] and mem['app']['vmhwm_kb'] / 1024, '.1f', 0)} MB "
        f"(app after startup: {_f(startup_kb and startup_kb / 1024, '.1f', 0)} MB)"
    )
    print()
    if report.get("noisy_cells"):
        print(
            f"NOTE: other processes used > {BUSY_CORES} cores during {len(report['noisy_cells'])} of "
            f"{len(report.get('cells', []))} cells ({', '.join(report['noisy_cells'][:6])}"
            f"{', ...' if len(report['noisy_cells']) > 6 else ''}): those figures are noisy; rerun on a quiet machine."
        )
        print()
    for scenario, what in (("typical", "typical pod (a ReplicaSet's replicas)"), ("distinct", "every pod distinct")):
        cell = report["matrix"].get(scenario, {}).get("c16", {})
        if not cell:
            continue
        app_cpu, floor_cpu = cell["app"]["cpu_ms_per_adm"], cell["floor"]["cpu_ms_per_adm"]
        print(
            f"CPU per admission, {what} at c16 (server utime+stime / admissions, one run): "
            f"app {_f(app_cpu, '.3f', 0)} ms, floor {_f(floor_cpu, '.3f', 0)} ms"
            f" = {_f(cell['ratio']['cpu_per_adm'], '.2f', 0)}x the floor's; "
            f"throughput {_f(cell['ratio']['throughput'], '.2f', 0)}x the floor's"
        )
    print()
    print("targets:")
    for t in report["targets"]:
        print(f"  [{t['status'].upper():>5}] {t['target']}: {_f(t['value'], '.3f', 0)}")
    print()
    if report["problems"]:
        print("PROBLEMS:")
        for p in report["problems"]:
            print(f"  - {p}")
        print()


# --------------------------------------------------------------------------- main


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark sidecar-injector against a floor ASGI app (see bench/README.md)."
    )
    parser.add_argument("--duration", type=int, default=None, help="seconds per cell (default 10; --quick: 3)")
    parser.add_argument(
        "--size-duration",
        type=int,
        default=None,
        help="seconds per size-series cell (default: half of --duration, at least 3)",
    )
    parser.add_argument("--warmup", type=int, default=1, help="warm-up seconds per server (default 1)")
    parser.add_argument("--quick", action="store_true", help="3 s per cell: a smoke run, not a measurement")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "latest.json", help="JSON report path")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "/usr/bin/wrk", help="wrk binary")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (certs, bodies, server logs)")
    parser.add_argument("--app-args", default="", help="extra arguments for `python -m sidecar_injector serve` (one string)")
    parser.add_argument("--enforce-targets", action="store_true", help="exit 3 when a target is missed")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 3 if args.quick else 10
    if args.size_duration is None:
        args.size_duration = max(3, args.duration // 2)
    if args.duration < 1 or args.size_duration < 1 or args.warmup < 0:
        parser.error("durations must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (os.path.isfile(args.wrk) and os.access(args.wrk, os.X_OK)):
        print(f"bench: wrk not found ({args.wrk}); install it (apt-get install wrk) or pass --wrk", file=sys.stderr)
        return 1
    wall_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-bench-"))
    print(f"bench: temp dir {tmp}")
    report: dict[str, Any] = {
        "schema": 1,
        "tool": "bench/run.py",
        "args": {
            "duration": args.duration,
            "size_duration": args.size_duration,
            "warmup": args.warmup,
            "quick": args.quick,
            "app_args": args.app_args,
            "concurrencies": list(CONCURRENCIES),
            "wrk_threads": 1,
        },
        "machine": machine_info(args.wrk),
        "app_source_sha256": app_source_fingerprint(),
        "problems": [],
    }
    servers: dict[str, Server] = {}
    sampler: RssSampler | None = None
    # Stop the servers on SIGTERM too (make, CI timeouts), not only on Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        certs = write_cert_bundle(
            tmp / "certs", "sidecar-injector", "sidecar-injector", extra_dns=["localhost"], extra_ips=["127.0.0.1"]
        )
        bodies = build_bodies(tmp)
        report["bodies"] = {k: {kk: vv for kk, vv in v.items() if kk != "file"} for k, v in bodies.items()}
        print("bench: request bodies")
        for name, spec in bodies.items():
            print(
                f"  {name:<10} {spec['bytes']:>8} bytes ({spec['kb']:.1f} KB), {spec['containers']} container(s) x "
                f"{spec['env_per_container']} env, inject={spec['inject']}"
            )

        # Servers get a clean environment: no SIDECAR_INJECTOR_* from the caller's shell.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_INJECTOR_")}
        env["PYTHONUNBUFFERED"] = "1"
        ports: list[int] = []
        while len(ports) < 3:
            port = free_port()
            if port not in ports:
                ports.append(port)
        app_port, floor_port, metrics_port = ports
        app_argv = [
            sys.executable,
            "-m",
            "sidecar_injector",
            "serve",
            "--host",
            HOST,
            "--port",
            str(app_port),
            "--cert-file",
            str(certs.cert),
            "--key-file",
            str(certs.key),
            "--log-format",
            "json",
        ]
        app_argv += adapt_to_serve_flags(env, metrics_port)
        app_argv += shlex.split(args.app_args)
        servers["app"] = Server("app", app_argv, tmp / "app.log", app_port, env)
        servers["floor"] = Server(
            "floor",
            [
                sys.executable,
                str(BENCH_DIR / "floor_server.py"),
                "--host",
                HOST,
                "--port",
                str(floor_port),
                "--cert-file",
                str(certs.cert),
                "--key-file",
                str(certs.key),
            ],
            tmp / "floor.log",
            floor_port,
            env,
        )
        sampler = RssSampler(servers)
        sampler.start()
        ctx = client_context(certs.ca_cert)
        report["servers"] = {}
        for name in SERVERS:
            took = wait_healthy(servers[name], ctx)
            report["servers"][name] = {
                "argv": servers[name].argv,
                "pid": servers[name].pid,
                "port": servers[name].port,
                "healthy_after_s": round(took, 2),
                "vmrss_after_startup_kb": read_status_kb(servers[name].pid, "VmRSS"),
            }
            print(f"bench: {name} server pid {servers[name].pid} healthy on :{servers[name].port} after {took:.1f}s")

        report["sanity"] = {}
        for name in SERVERS:
            checks = sanity_check(servers[name], ctx, bodies)
            report["sanity"][name] = checks
            for body, entry in checks.items():
                if not entry["ok"]:
                    report["problems"].append(f"sanity {name}/{body}: " + "; ".join(entry["problems"]))
        app_checks = report["sanity"]["app"]
        print("bench: sanity OK" if not report["problems"] else "bench: sanity problems (see below)")
        for body in bodies:
            e = app_checks[body]
            if e.get("ok"):
                print(f"  app {body:<10} -> {e['response_bytes']} bytes, {e.get('patch_ops', 0)} patch ops")

        if args.warmup:
            for name in SERVERS:
                sampler.phase = f"warmup-{name}"
                w = run_wrk(args.wrk, servers[name].port, bodies["typical"]["file"], 16, args.warmup)
                if not w["ok"]:
                    report["problems"].append(f"warm-up {name}: " + "; ".join(w["problems"]))

        cells: list[dict[str, Any]] = []
        noisy: list[str] = []

        def measure(server: str, scenario: str, conc: int, duration: int) -> dict[str, Any]:
            label = f"{server}/{scenario}/c{conc}"
            sampler.phase = label
            srv = servers[server]
            if srv.proc.poll() is not None:
                wrk = {"ok": False, "problems": [f"{server} server exited with {srv.proc.returncode}"]}
            else:
                cpu0, wrk_cpu0, busy0 = read_cpu_s(srv.pid), children_cpu_s(), system_busy_s()
                wrk = run_wrk(args.wrk, srv.port, bodies[scenario]["file"], conc, duration, vary=bodies[scenario]["vary"])
                cpu1, wrk_cpu1, busy1 = read_cpu_s(srv.pid), children_cpu_s(), system_busy_s()
                wrk["wrk_cpu_s"] = round(wrk_cpu1 - wrk_cpu0, 3)
                if cpu0 is not None and cpu1 is not None:
                    wrk["server_cpu_s"] = round(cpu1 - cpu0, 3)
                    if wrk.get("requests"):
                        wrk["server_cpu_ms_per_req"] = round((cpu1 - cpu0) * 1000 / wrk["requests"], 4)
                    if busy0 is not None and busy1 is not None:
                        # CPU used by everything else on the machine meanwhile, in cores: the noise.
                        other = (busy1 - busy0) - (cpu1 - cpu0) - wrk["wrk_cpu_s"]
                        wrk["other_cpu_cores"] = round(max(other, 0.0) / duration, 2)
            cell = {
                "server": server,
                "scenario": scenario,
                "concurrency": conc,
                "duration_s": duration,
                "wrk": wrk,
                "vmhwm_kb": read_status_kb(srv.pid, "VmHWM"),
                "max_sampled_vmrss_kb": sampler.max_in(label, server),
            }
            cells.append(cell)
            s = cell_summary(cell)
            status = "ok" if s["ok"] else "FAILED " + "; ".join(s["problems"])
            print(
                f"  {label:<22} {_f(s['throughput'], '.0f', 7)} adm/s  p50 {_f(s['p50'], '.2f', 7)}  "
                f"p99 {_f(s['p99'], '.2f', 7)} ms  cpu/adm {_f(s['cpu_ms_per_adm'], '.3f', 6)} ms  "
                f"other load {_f(s['other_cpu_cores'], '.2f', 4)} cores  {status}",
                flush=True,
            )
            if s["other_cpu_cores"] is not None and s["other_cpu_cores"] > BUSY_CORES:
                noisy.append(label)
            if not s["ok"]:
                report["problems"].append(f"{label}: " + "; ".join(s["problems"]))
            return s

        print(f"bench: matrix, {args.duration} s per cell")
        matrix: dict[str, Any] = {}
        for scenario in SCENARIOS:
            matrix[scenario] = {}
            for conc in CONCURRENCIES:
                entry = {server: measure(server, scenario, conc, args.duration) for server in SERVERS}
                entry["ratio"] = ratios(entry["app"], entry["floor"])
                matrix[scenario][f"c{conc}"] = entry
        report["matrix"] = matrix

        print(f"bench: size series, c1, {args.size_duration} s per cell")
        points: dict[str, dict[str, Any]] = {server: {} for server in SERVERS}
        for name, _ in SIZE_SERIES:
            for server in SERVERS:
                s = measure(server, name, 1, args.size_duration)
                points[server][name] = {
                    "scenario": name,
                    "bytes": bodies[name]["bytes"],
                    "kb": round(bodies[name]["bytes"] / KB, 3),
                    **s,
                }
        analysis = {server: size_analysis(list(points[server].values())) for server in SERVERS}
        if analysis["app"]["p50_ms_per_kb"] is not None and analysis["floor"]["p50_ms_per_kb"] is not None:
            analysis["app_minus_floor_p50_ms_per_kb"] = round(
                analysis["app"]["p50_ms_per_kb"] - analysis["floor"]["p50_ms_per_kb"], 5
            )
        if analysis["app"]["cpu_ms_per_kb"] is not None and analysis["floor"]["cpu_ms_per_kb"] is not None:
            analysis["app_minus_floor_cpu_ms_per_kb"] = round(
                analysis["app"]["cpu_ms_per_kb"] - analysis["floor"]["cpu_ms_per_kb"], 5
            )
        report["size_series"] = {"concurrency": 1, "duration_s": args.size_duration, "points": points, "analysis": analysis}
        report["cells"] = cells
        report["noisy_cells"] = noisy
        report["targets"] = evaluate_targets(matrix)
    except KeyboardInterrupt:
        report["problems"].append("interrupted")
        print("bench: interrupted", file=sys.stderr)
    except Exception as exc:
        report["problems"].append(f"{type(exc).__name__}: {exc}")
        print(f"bench: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # Stop the servers first, each on its own: nothing below may leave one running.
        report["memory"] = {}
        for name in SERVERS:
            srv = servers.get(name)
            if srv is None:
                continue
            mem: dict[str, Any] = {
                "vmhwm_kb": read_status_kb(srv.pid, "VmHWM"),
                "vmrss_end_kb": read_status_kb(srv.pid, "VmRSS"),
                "vmrss_after_startup_kb": report.get("servers", {}).get(name, {}).get("vmrss_after_startup_kb"),
            }
            report["memory"][name] = mem
            alive = srv.proc.poll() is None
            try:
                mem["exit_code"] = srv.stop()
            except BaseException as exc:
                srv.proc.kill()
                mem["exit_code"] = None
                report["problems"].append(f"stopping {name}: {type(exc).__name__}: {exc}")
            if not alive:
                report["problems"].append(
                    f"{name} server had exited on its own with {mem['exit_code']}; log tail:\n{srv.log_tail()}"
                )
            with contextlib.suppress(OSError):
                mem["log_bytes"] = srv.log_path.stat().st_size
        if sampler is not None:
            sampler.stop()
            report["memory"]["samples"] = sampler.samples
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"bench: kept {tmp}")

    report["machine"]["loadavg_end"] = os.getloadavg()
    report["wall_seconds"] = round(time.monotonic() - wall_start, 1)
    report["ok"] = not report["problems"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if "matrix" in report and "size_series" in report:
        print_report(report)
    else:
        for p in report["problems"]:
            print(f"  - {p}")
    print(f"bench: wrote {args.out} ({report['wall_seconds']} s)")
    if not report["ok"]:
        return 1
    if args.enforce_targets and any(t["status"] != "pass" for t in report.get("targets", [])):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
