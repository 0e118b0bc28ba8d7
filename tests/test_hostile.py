"""Hostile load (issue 12): each attack, reproduced small, against the real server or the app.

The findings of the hostile-load review, one section each: patch amplification and large
reviews (1), header bombs (2), slow and idle connections (3), memory after waves of
connections (4), the metrics port (5), log injection (7) and the kind check (8) — the
NetworkPolicy (6) is in tests/test_chart.py. Every attack is bounded in size (a few MB at
most) and time (every socket has a timeout, every server is stopped) and stays on
loopback. ``make attack`` (bench/attack.py) runs them all at full size, together, for
measurements.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

import sidecar_injector.webhook.endpoints
import sidecar_injector.webhook.scheduler
from serverproc import SERVICE_DNS, ca_context, free_port, server_env, start_server, stop
from sidecar_injector.core.decide import decide
from sidecar_injector.core.inputs import InjectionPolicy, RequestContext
from sidecar_injector.profiles.loading import builtin_profiles
from sidecar_injector.runtime.logs import JsonFormatter, TextFormatter
from sidecar_injector.runtime.metrics import Metrics
from sidecar_injector.runtime.settings import Settings
from sidecar_injector.webhook.admission import ADMISSION_API_VERSION
from sidecar_injector.webhook.app import create_app
from sidecar_injector.webhook.tls import CertBundlePaths, write_cert_bundle

ALL_PROFILES = ",".join(builtin_profiles().names())
WAIT = 10.0  # seconds any single socket operation may take before the test gives up


# --------------------------------------------------------------------------- helpers


def make_pod(inject: str | None = "logging", containers: int = 1) -> dict[str, Any]:
    metadata: dict[str, Any] = {"generateName": "web-", "namespace": "shop"}
    if inject is not None:
        metadata["annotations"] = {"sidecar.io/inject": inject}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": f"c{i}", "image": "i"} for i in range(containers)]},
    }


def review(pod: dict[str, Any], uid: str = "u-1", **request: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "shop",
        "operation": "CREATE",
        "object": pod,
    }
    base.update(request)
    return {
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "AdmissionReview",
        "request": {k: v for k, v in base.items() if v is not None},
    }


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    certs: CertBundlePaths
    stderr: Path
    started: float = 0.0  # time.monotonic() when it was started

    def tls(self) -> ssl.SSLSocket:
        """A verified TLS connection to the webhook port, as the API server makes them."""
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)
        return ca_context(self.certs.ca_cert).wrap_socket(raw, server_hostname=SERVICE_DNS)

    def rss_kb(self) -> int:
        return _status_kb(self.proc.pid, "VmRSS")

    def threads(self) -> int:
        return _status_kb(self.proc.pid, "Threads")


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def serve(tmp: Path, *args: str) -> Served:
    certs = write_cert_bundle(tmp / "certs", "sidecar-injector", "sidecar-injector", extra_ips=["127.0.0.1"])
    port, metrics_port = free_port(), free_port()
    started = time.monotonic()
    proc = start_server(
        [
            "--cert-file",
            str(certs.cert),
            "--key-file",
            str(certs.key),
            "--metrics-port",
            str(metrics_port),
            "--drain-seconds",
            "0",
            "--no-reload",
            *args,
        ],
        tmp / "server.stderr",
        ca=ca_context(certs.ca_cert),
        port=port,
        env=server_env(),
    )
    return Served(proc, port, metrics_port, certs, tmp / "server.stderr", started)


def read_until_closed(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Everything the server sends until it closes the connection (a timeout fails the test)."""
    data = b""
    while len(data) < limit:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            pytest.fail(f"the server kept the connection open for more than {WAIT}s (got {data[:200]!r})")
        except (ConnectionResetError, ssl.SSLError):
            return data  # dropped: closed too
        if not chunk:
            return data
        data += chunk
    return data


def healthz(served: Served) -> bytes:
    with served.tls() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return read_until_closed(sock)


# Tight limits, so that each deadline passes in a second or two.
LIMITS = (
    "--header-timeout-seconds",
    "1",
    "--request-timeout-seconds",
    "2",
    "--max-connections",
    "8",
    "--max-header-bytes",
    "16384",
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    srv = serve(tmp_path_factory.mktemp("hostile"), *LIMITS)
    try:
        yield srv
    finally:
        stop(srv.proc)


# --------------------------------------------------------------------------- 1. large reviews


def test_body_cap_defaults_to_the_api_servers_request_limit() -> None:
    assert Settings().max_body_bytes == 3 * 1024 * 1024


def test_body_declared_over_the_cap_is_413_at_once_and_the_connection_closed(served: Served) -> None:
    """With the default cap, a review declaring one byte more than the API server can send is
    refused before its body is read, and the connection is closed rather than read on."""
    with served.tls() as sock:
        sock.sendall(
            b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n{" % (3 * 1024 * 1024 + 1)
        )
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"connection: close" in answer.lower()


def test_patch_amplification_is_refused_without_building_the_patch() -> None:
    """100,000 containers asking for every profile: a 3 MB review once got a 258 MB answer
    (1.7 GB of memory, 10 s). The pod is refused — it could never be stored — with work
    bounded by the room the pod has left, not by its size."""
    profiles = builtin_profiles()
    for containers in (100_000, 40_000):  # over the object limit already; under it but the patch is not
        body = orjson.dumps(review(make_pod(ALL_PROFILES, containers)))
        pod = orjson.loads(body)["request"]["object"]
        tracemalloc.start()
        try:
            decision = decide(pod, RequestContext(object_bytes=len(body)), profiles, InjectionPolicy())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert (decision.outcome, decision.reason) == ("skipped", "pod-too-large"), containers
        assert set(decision.skipped) == set(ALL_PROFILES.split(",")), decision.skipped
        if containers == 100_000:  # over the limit already: not even the record of why fits
            assert not decision.patch
        else:  # only the record of why: one small operation
            [op] = decision.patch
            assert op["path"] == "/metadata/annotations/sidecar.io~1status" and len(op["value"]) < 2048
            assert json.loads(op["value"]) == {"profiles": {}, "skipped": decision.skipped}
        # what is left is a little bookkeeping per container (the pod is at most 1.5 MiB); the
        # whole patch was 146 MiB for 40,000 containers, 334 MiB for 100,000
        assert peak < 32 * 1024 * 1024, f"{containers} containers: deciding took {peak // 1024} KiB"


class _BlockingDecide:
    """``decide`` that waits until the test releases it: a large review "being decided"."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = 0
        self.most_at_once = 0
        self.started = threading.Event()
        self._lock = threading.Lock()
        self.real = sidecar_injector.webhook.endpoints.decide

    def __call__(self, pod: Any, *args: Any) -> Any:
        if len(pod.get("spec", {}).get("containers", [])) < 100:  # small reviews: the real thing
            return self.real(pod, *args)
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        self.started.set()
        try:
            self.release.wait(WAIT)  # on the event loop this would freeze everything for WAIT seconds
            return self.real(pod, *args)
        finally:
            with self._lock:
                self.running -= 1


def _large_review(uid: str, containers: int = 5000) -> bytes:
    """A review over ``large_body_bytes`` (5,000 containers), or a small one of a pod with many containers."""
    body = orjson.dumps(review(make_pod("logging", containers), uid=uid))
    assert len(body) > Settings().large_body_bytes or containers > sidecar_injector.webhook.scheduler.MANY_CONTAINERS
    return body


async def _post(client: httpx.AsyncClient, body: bytes) -> httpx.Response:
    return await client.post("/mutate", content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize("containers", [5000, 100], ids=["large-body", "small-body-many-containers"])
def test_a_large_review_being_decided_blocks_neither_health_checks_nor_small_reviews(
    monkeypatch: pytest.MonkeyPatch, containers: int
) -> None:
    blocking = _BlockingDecide()
    monkeypatch.setattr(sidecar_injector.webhook.endpoints, "decide", blocking)
    app = create_app(Settings(), builtin_profiles())

    async def scenario() -> list[str]:
        order: list[str] = []
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://webhook", timeout=WAIT) as client:

            async def large() -> None:
                resp = await _post(client, _large_review("large", containers))
                assert resp.status_code == 200 and resp.json()["response"]["allowed"] is True
                order.append("large answered")

            task = asyncio.ensure_future(large())
            await asyncio.to_thread(blocking.started.wait, WAIT)  # the large review is being decided now
            assert (await client.get("/healthz")).status_code == 200
            order.append("healthz answered")
            small = await _post(client, orjson.dumps(review(make_pod("logging"), uid="small")))
            assert "patch" in small.json()["response"]
            order.append("small answered")
            blocking.release.set()
            await task
        return order

    assert asyncio.run(scenario()) == ["healthz answered", "small answered", "large answered"]


def test_large_reviews_are_read_and_decided_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each large review holds its body and decoded pod in memory: they take turns (large_body_workers=1)."""
    blocking = _BlockingDecide()
    monkeypatch.setattr(sidecar_injector.webhook.endpoints, "decide", blocking)
    app = create_app(Settings(), builtin_profiles())

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://webhook", timeout=WAIT) as client:
            tasks = [asyncio.ensure_future(_post(client, _large_review(f"large-{i}"))) for i in range(3)]
            await asyncio.to_thread(blocking.started.wait, WAIT)
            await asyncio.sleep(0.2)  # room for a second one to start, were it allowed to
            blocking.release.set()
            answers = await asyncio.gather(*tasks)
        assert [a.json()["response"]["uid"] for a in answers] == ["large-0", "large-1", "large-2"]

    asyncio.run(scenario())
    assert blocking.most_at_once == 1


def test_huge_reviews_are_decoded_at_a_bounded_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding a review of megabytes holds the interpreter in one piece (no thread switch
    can cut it): huge ones wait for their turn so that they take a bounded share of the time."""
    now = [1000.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(sidecar_injector.webhook.scheduler.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(sidecar_injector.webhook.scheduler.asyncio, "sleep", sleep)
    budget = sidecar_injector.webhook.scheduler.ByteBudget(rate=1_000_000, burst=3_000_000)

    async def spend_all() -> None:
        await budget.spend(3_000_000)  # the burst: one review of the largest size at once
        await budget.spend(2_000_000)  # then 2 s for the next 2 MB
        now[0] += 10  # idle: the bucket refills, up to the burst only
        await budget.spend(3_000_000)
        await budget.spend(1_000_000)

    asyncio.run(spend_all())
    assert slept == [2.0, 1.0]


# --------------------------------------------------------------------------- 2. header bomb


def test_header_bomb_gets_431_after_the_cap_and_the_server_goes_on(served: Served) -> None:
    with served.tls() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bomb: ")
        try:
            for _ in range(64):  # up to 4 MiB; the server stops reading after 16 KiB
                sock.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b" 200 OK" in healthz(served)


def test_headers_under_the_cap_are_served(served: Served) -> None:
    with served.tls() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " + b"a" * 12000 + b"\r\n\r\n")
        assert b" 200 OK" in read_until_closed(sock)


# --------------------------------------------------------------------------- 3. slow and idle connections


def test_connection_that_never_sends_a_request_is_closed(served: Served) -> None:
    with served.tls() as sock:
        assert read_until_closed(sock) == b""


def test_tcp_connection_that_never_starts_tls_is_closed(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=WAIT) as sock:
        assert read_until_closed(sock) == b""


def test_slowloris_gets_408_and_is_closed(served: Served) -> None:
    with served.tls() as sock:
        sock.sendall(b"POST /mutate HTTP/1.1\r\nHost: x\r\n")
        answer = b""
        for i in range(int(WAIT * 4)):  # a header line every 0.25 s, until the server has had enough
            try:
                sock.sendall(b"X-Slow-%d: x\r\n" % i)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                break
            sock.settimeout(0.25)
            try:
                answer += sock.recv(65536)
                break
            except TimeoutError:
                continue
            finally:
                sock.settimeout(WAIT)
        answer += read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]


def test_slow_body_is_cut_off(served: Served) -> None:
    body = orjson.dumps(review(make_pod()))
    with served.tls() as sock:
        sock.sendall(
            b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body[:10]
        )
        # a byte every 0.25 s would take minutes; the request deadline (2 s) ends it
        for byte in body[10 : 10 + int(WAIT * 4)]:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                break
            time.sleep(0.25)
        else:
            pytest.fail("the server was still reading the slow body")
        assert read_until_closed(sock) == b""


def test_a_new_connection_closes_the_longest_idle_one_when_at_the_cap(served: Served) -> None:
    idle = [served.tls() for _ in range(8)]  # the cap
    try:
        assert b" 200 OK" in healthz(served)  # got in, although 8 were open
        idle[0].settimeout(0.5)
        assert idle[0].recv(1) == b"", "the oldest idle connection should have made room"
    finally:
        for sock in idle:
            sock.close()


def test_the_caps_worth_of_stalled_bodies_cannot_keep_admissions_out(served: Served) -> None:
    """Issue 19: connections that send a review's head and a few bytes of its body, then
    nothing, are not "busy": each admission closes the one that has gone longest without a
    byte. (A request that is complete and being decided is never closed: tests/test_guard.py.)"""
    body = orjson.dumps(review(make_pod()))
    head = (
        b"POST /mutate HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    stalled = [served.tls() for _ in range(8)]  # the cap
    try:
        for sock in stalled:
            sock.sendall(head + body[:10])
        time.sleep(0.2)
        for i in range(3):
            with served.tls() as sock:
                sock.sendall(head + body)
                answer = read_until_closed(sock)
            assert answer.startswith(b"HTTP/1.1 200 ") and b'"patch"' in answer, (i, answer[:300])
        for sock in stalled[:3]:  # the oldest made room, one per admission
            assert read_until_closed(sock) == b""
    finally:
        for sock in stalled:
            sock.close()


def test_keep_alive_connections_are_served_request_after_request(served: Served) -> None:
    with served.tls() as sock:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b'{"status":"ok"}'):
                chunk = sock.recv(65536)
                assert chunk, f"closed after {answer!r}"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 ")
            time.sleep(0.6)  # idle in between, under the keep-alive timeout


def test_limits_are_logged_without_a_line_per_connection(served: Served) -> None:
    for _ in range(5):
        with served.tls() as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bomb: " + b"a" * 20000 + b"\r\n\r\n")
            assert read_until_closed(sock).startswith(b"HTTP/1.1 431 ")
    deadline = time.monotonic() + WAIT
    while True:
        lines = [line for line in served.stderr.read_text().splitlines() if "closed connections that broke" in line]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert lines, "no warning about closed connections"
    # a summary at most every 10 s, not a line per closed connection
    assert len(lines) <= (time.monotonic() - served.started) / 10 + 1, lines


# --------------------------------------------------------------------------- 4. memory after waves of connections


def _wave(served: Served, connections: int) -> None:
    ctx = ca_context(served.certs.ca_cert)
    sockets = []
    try:
        for _ in range(connections):
            raw = socket.create_connection(("127.0.0.1", served.port), timeout=WAIT)
            sockets.append(ctx.wrap_socket(raw, server_hostname=SERVICE_DNS))
    finally:
        for sock in sockets:
            sock.close()


def test_memory_comes_back_after_waves_of_idle_connections(tmp_path: Path) -> None:
    """Rounds of idle TLS connections, opened and closed: RSS once grew by the same amount
    every round, never given back (glibc keeps the freed, fragmented heap)."""
    srv = serve(tmp_path, "--max-connections", "2000", "--memory-trim-seconds", "0.5")
    try:
        after = []
        for _ in range(3):
            _wave(srv, 500)
            time.sleep(1.5)  # the connections' close, then a trim
            after.append(srv.rss_kb())
        growth = after[-1] - after[0]
        assert growth < 6 * 1024, f"RSS after each wave: {after} kB"
    finally:
        stop(srv.proc)


# --------------------------------------------------------------------------- 5. the metrics port


def _http_get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, bytes]:
    with httpx.Client(timeout=WAIT, trust_env=False) as client:
        resp = client.get(f"http://{host}:{port}{path}")
        return resp.status_code, resp.content


def test_metrics_are_served_at_metrics_only(served: Served) -> None:
    status, body = _http_get(served.metrics_port, "/metrics")
    assert status == 200 and b"sidecar_injector_admission_requests_total" in body
    for path in ("/", "/healthz", "/metrics/x", "/favicon.ico"):
        assert _http_get(served.metrics_port, path)[0] == 404, path


def test_slow_metrics_clients_cost_no_threads_and_are_closed(served: Served) -> None:
    before = served.threads()
    slow = [socket.create_connection(("127.0.0.1", served.metrics_port), timeout=WAIT) for _ in range(40)]
    try:
        for sock in slow:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")  # and nothing more
        time.sleep(0.3)
        assert served.threads() <= before + 1, "a thread per metrics connection"
        assert _http_get(served.metrics_port, "/metrics")[0] == 200  # a scrape still gets in
        for sock in slow:
            read_until_closed(sock)  # closed: over the cap at once, the others at the header deadline
    finally:
        for sock in slow:
            sock.close()


def test_metrics_port_binds_its_own_address(tmp_path: Path) -> None:
    srv = serve(tmp_path, "--metrics-host", "127.0.0.2")
    try:
        assert _http_get(srv.metrics_port, "/metrics", host="127.0.0.2")[0] == 200
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", srv.metrics_port), timeout=WAIT).close()
    finally:
        stop(srv.proc)


# --------------------------------------------------------------------------- 7. log injection


def _record(**extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("sidecar_injector", logging.INFO, __file__, 1, "admission decision", None, None)
    record.__dict__.update(extra)
    return record


FORGED = "web-\n2026-01-01 00:00:00,000 WARNING forged line outcome=denied"


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_a_newline_in_a_pod_name_cannot_forge_a_log_line(formatter: logging.Formatter) -> None:
    line = formatter.format(_record(pod=FORGED, uid="u\r\x1b[31mred\x00", namespace="shop"))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x00" not in line, line
    assert "\\n2026-01-01" in line and "\\x1b[31m" in line


def test_text_values_that_could_pass_for_fields_are_quoted() -> None:
    line = TextFormatter().format(_record(pod="web outcome=injected", namespace="shop", reason="two words"))
    assert 'pod="web outcome=injected"' in line and "namespace=shop" in line and 'reason="two words"' in line


def test_json_log_lines_keep_the_values_readable() -> None:
    entry = json.loads(JsonFormatter().format(_record(pod=FORGED, profiles="logging,metrics")))
    assert entry["pod"] == FORGED.replace("\n", "\\n") and entry["profiles"] == "logging,metrics"


# --------------------------------------------------------------------------- 8. the kind check


NOT_PODS = {
    "kind missing": {"kind": None},
    "apps/v1 Deployment": {"kind": {"group": "apps", "version": "v1", "kind": "Deployment"}},
    "v1 Service": {"kind": {"group": "", "version": "v1", "kind": "Service"}},
    "a Pod kind in another group": {"kind": {"group": "example.com", "version": "v1", "kind": "Pod"}},
    "a Pod kind of another version": {"kind": {"group": "", "version": "v2", "kind": "Pod"}},
    "resource not pods": {"resource": {"group": "", "version": "v1", "resource": "services"}},
    "a subresource": {"subResource": "ephemeralcontainers"},
}


@pytest.mark.parametrize("request_fields", NOT_PODS.values(), ids=NOT_PODS.keys())
def test_only_a_core_v1_pod_is_treated_as_a_pod(request_fields: dict[str, Any]) -> None:
    metrics = Metrics()
    app = create_app(Settings(), builtin_profiles(), metrics=metrics)
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        body = review(make_pod("logging"), **request_fields)  # the object looks like a pod asking for logging
        answer = client.post("/mutate", json=body).json()["response"]
        assert answer["allowed"] is True and "patch" not in answer, answer
        assert metrics.skips.labels("not-a-pod")._value.get() == 1
        pod = client.post("/mutate", json=review(make_pod("logging"))).json()["response"]
        assert "patch" in pod  # the same object as a core/v1 Pod is injected
