"""Hostile load: the attacks of issue 12, in rounds, next to normal admissions.

    .venv/bin/python bench/attack.py [--rounds 4] [--round-seconds 12] [--out bench/results/attack-NAME.json]

What it does:

1. starts the real server (``python -m sidecar_injector serve``, TLS, JSON logs at INFO) with
   the **chart's settings**: the ``limits`` block of charts/sidecar-injector/values.yaml,
   turned into the environment variables the chart's Deployment sets;
2. runs, for the whole time, what a cluster does: admissions like the API server's (a
   keep-alive connection, 20/s, plus a new connection per admission, 5/s) and kubelet-style
   ``GET /healthz`` probes (a new connection each, every 100 ms);
3. measures them for ``--quiet-seconds`` alone (the quiet p99), then for ``--rounds``
   rounds of ``--round-seconds`` of attacks from a separate attacker process (uvloop):
   - **amplification**: reviews of 2.9 MB (100,000 containers) and 1.4 MB (40,000
     containers) asking for every profile, back to back on 2 connections;
   - **header bomb**: 2 connections sending a 16 MB header as fast as they can, again and again;
   - **slowloris**: 500 connections sending a header line a second;
   - **slow bodies**: 200 connections sending a body at 100 bytes a second (half of them
     declaring 60 KB, half 2 MB);
   - **idle connections**: 2,000 TLS connections that never send a request, and 500 TCP
     connections that never start TLS;
   each opened once per round (``--reopen``: reopened a second after the server closes
   them), all closed at the end of the round;
   then one more round of **stalled bodies** alone (issue 19): ``--stalled-body`` (520,
   more than the chart's connection cap) connections that each send a ``POST /mutate``
   head announcing 100 KB, a few bytes of it, and then nothing, each reopened 0.1 s after
   the server closes it, so that the cap stays full of them;
4. samples the server's RSS every 100 ms, and reports the peak (and VmHWM), the RSS after
   each round, the admissions' p99 quiet and under attack, every failed admission, the
   longest ``/healthz`` probe, and what the attacker saw (431s, connections closed).

Exit 0 when the peak RSS stays under ``--max-rss-mib`` (256, the chart's memory limit), no
admission failed, no probe failed or took longer than ``--max-stall`` (1 s), and the p99
under attack is within ``--max-p99-ratio`` (6) times the quiet one. Load goes to 127.0.0.1
only; every wait is bounded; the server and the attacker are always stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import http.client
import json
import os
import shlex
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from run import (
    HOST,
    ROOT,
    Server,
    client_context,
    encode,
    free_port,
    machine_info,
    make_pod,
    make_review,
    read_cpu_s,
    read_status_kb,
    wait_healthy,
)
from sidecar_injector.webhook.tls import write_cert_bundle

VALUES = ROOT / "charts" / "sidecar-injector" / "values.yaml"
#: values.yaml ``limits.<key>`` -> the environment variable the chart's Deployment sets from it
CHART_LIMITS_ENV = {
    "maxBodyBytes": "SIDECAR_INJECTOR_MAX_BODY_BYTES",
    "maxHeaderBytes": "SIDECAR_INJECTOR_MAX_HEADER_BYTES",
    "headerTimeoutSeconds": "SIDECAR_INJECTOR_HEADER_TIMEOUT_SECONDS",
    "requestTimeoutSeconds": "SIDECAR_INJECTOR_REQUEST_TIMEOUT_SECONDS",
    "keepAliveTimeoutSeconds": "SIDECAR_INJECTOR_KEEP_ALIVE_TIMEOUT_SECONDS",
    "maxConnections": "SIDECAR_INJECTOR_MAX_CONNECTIONS",
    "largeBodyBytes": "SIDECAR_INJECTOR_LARGE_BODY_BYTES",
    "largeBodyWorkers": "SIDECAR_INJECTOR_LARGE_BODY_WORKERS",
}
ALL_PROFILES = "logging,metrics,proxy,git-sync,tls,backup,cert-renewal,config-reload"
SAMPLE_S = 0.1
PROBE_EVERY_S = 0.1
CALL_TIMEOUT_S = 10.0


def chart_env() -> dict[str, str]:
    """The chart's default limits as the environment its Deployment gives the server."""
    limits = yaml.safe_load(VALUES.read_text())["limits"]
    assert set(limits) == set(CHART_LIMITS_ENV), f"values.yaml limits changed: {sorted(limits)}"
    return {CHART_LIMITS_ENV[key]: str(value) for key, value in limits.items()}


# --------------------------------------------------------------------------- the cluster's side


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Phase:
    """Which phase (quiet, round-N, pause-N) the measurements belong to, and since when."""

    name = "startup"
    since = time.monotonic()

    @classmethod
    def enter(cls, name: str) -> None:
        cls.name, cls.since = name, time.monotonic()

    @classmethod
    def offset(cls) -> float:
        return round(time.monotonic() - cls.since, 2)


class Admissions(threading.Thread):
    """Admissions like the API server sends them, every ``interval`` s; keep-alive or one connection each.

    A reused keep-alive connection the server closed while idle is retried once on a new
    one (as the API server's Go client does); anything else that is not a 200 answer with
    the right uid is a failure.
    """

    def __init__(self, name: str, ctx: ssl.SSLContext, port: int, body: bytes, interval: float, keep_alive: bool):
        super().__init__(daemon=True, name=name)
        self.ctx, self.port, self.body, self.interval, self.keep_alive = ctx, port, body, interval, keep_alive
        self.latencies: dict[str, list[float]] = {}
        self.failures: list[dict[str, Any]] = []
        self.slowest: list[tuple[float, str, float]] = []  # (seconds, phase, seconds into the phase)
        self.halt = threading.Event()
        self._conn: http.client.HTTPSConnection | None = None

    def _connection(self) -> tuple[http.client.HTTPSConnection, bool]:
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(HOST, self.port, context=self.ctx, timeout=CALL_TIMEOUT_S)
            return self._conn, False
        return self._conn, True

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _once(self) -> None:
        for attempt in range(2):
            conn, reused = self._connection()
            try:
                headers = {"Content-Type": "application/json"}
                if not self.keep_alive:
                    headers["Connection"] = "close"
                conn.request("POST", "/mutate", body=self.body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop()
                if reused and attempt == 0:
                    continue  # the server closed an idle keep-alive connection: retry on a new one
                raise RuntimeError(f"{type(exc).__name__}: {exc}") from None
            if not self.keep_alive or resp.will_close:
                self._drop()
            if resp.status != 200 or b'"allowed":true' not in data:
                raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")
            return

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.halt.is_set():
            phase = Phase.name
            started = time.monotonic()
            try:
                self._once()
                took = time.monotonic() - started
                self.latencies.setdefault(phase, []).append(took)
                self.slowest.append((took, phase, Phase.offset()))
                self.slowest = sorted(self.slowest, reverse=True)[:10]
            except Exception as exc:
                self._drop()
                self.failures.append({"phase": phase, "t": round(started, 3), "error": str(exc)[:300]})
            next_at += self.interval
            self.halt.wait(max(0.0, next_at - time.monotonic()))
        self._drop()


class Probes(threading.Thread):
    """``GET /healthz`` on a new connection every PROBE_EVERY_S, as kubelet probes; each probe's duration."""

    def __init__(self, ctx: ssl.SSLContext, port: int):
        super().__init__(daemon=True, name="probes")
        self.ctx, self.port = ctx, port
        self.durations: dict[str, list[float]] = {}
        self.failures: list[dict[str, Any]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            phase, started = Phase.name, time.monotonic()
            conn = http.client.HTTPSConnection(HOST, self.port, context=self.ctx, timeout=CALL_TIMEOUT_S)
            try:
                conn.request("GET", "/healthz", headers={"Connection": "close"})
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}")
                self.durations.setdefault(phase, []).append(time.monotonic() - started)
            except Exception as exc:
                self.failures.append({"phase": phase, "error": f"{type(exc).__name__}: {exc}"[:300]})
            finally:
                conn.close()
            self.halt.wait(PROBE_EVERY_S)


class Sampler(threading.Thread):
    """The server's VmRSS, threads and open files every SAMPLE_S."""

    def __init__(self, pid: int):
        super().__init__(daemon=True, name="sampler")
        self.pid = pid
        self.samples: list[dict[str, Any]] = []
        self.halt = threading.Event()
        self._t0 = time.monotonic()

    def run(self) -> None:
        while not self.halt.is_set():
            rss = read_status_kb(self.pid, "VmRSS")
            threads = read_status_kb(self.pid, "Threads")
            cpu = read_cpu_s(self.pid)
            try:
                fds = len(os.listdir(f"/proc/{self.pid}/fd"))
            except OSError:
                fds = None
            if rss is not None:
                self.samples.append(
                    {
                        "t": round(time.monotonic() - self._t0, 2),
                        "phase": Phase.name,
                        "rss_kb": rss,
                        "threads": threads,
                        "fds": fds,
                        "cpu_s": cpu,
                    }
                )
            self.halt.wait(SAMPLE_S)

    def last_rss_kb(self) -> int | None:
        return self.samples[-1]["rss_kb"] if self.samples else None


# --------------------------------------------------------------------------- the attacker (its own process)


class Attacker:
    def __init__(
        self, port: int, ctx: ssl.SSLContext, seconds: float, reopen: bool, bodies: dict[str, bytes], reopen_seconds: float
    ):
        self.port, self.ctx, self.seconds, self.reopen, self.bodies = port, ctx, seconds, reopen, bodies
        self.reopen_seconds = reopen_seconds
        self.stats: dict[str, dict[str, Any]] = {}
        self.deadline = 0.0
        self.opening = asyncio.Semaphore(64)  # connections (handshakes) being opened at once

    def stat(self, kind: str, key: str, add: float = 1) -> None:
        self.stats.setdefault(kind, {}).setdefault(key, 0)
        self.stats[kind][key] += add

    async def _open(self, tls: bool) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if time.monotonic() >= self.deadline:
            raise TimeoutError("the round is over")
        async with self.opening:  # a bounded number of connections (handshakes) being opened at once
            return await asyncio.wait_for(
                asyncio.open_connection(
                    HOST,
                    self.port,
                    ssl=self.ctx if tls else None,
                    server_hostname="localhost" if tls else None,
                    limit=1 << 20,
                ),
                timeout=CALL_TIMEOUT_S,
            )

    async def _until_closed(self, reader: asyncio.StreamReader, kind: str, opened: float) -> None:
        """Wait until the server closes the connection (or the round ends); note how long it stayed open."""
        try:
            left = self.deadline - time.monotonic()
            data = await asyncio.wait_for(reader.read(65536), timeout=max(left, 0.01))
            while data:
                data = await asyncio.wait_for(reader.read(65536), timeout=max(self.deadline - time.monotonic(), 0.01))
            self.stat(kind, "closed by the server")
            self.stat(kind, "open seconds (sum)", time.monotonic() - opened)
        except (TimeoutError, ConnectionError, ssl.SSLError, OSError):
            if time.monotonic() < self.deadline:
                self.stat(kind, "closed by the server")
            else:
                self.stat(kind, "still open at the end of the round")

    async def _repeat(self, kind: str, once: Any) -> None:
        while time.monotonic() < self.deadline:
            try:
                await once()
            except (TimeoutError, ConnectionError, ssl.SSLError, OSError) as exc:
                self.stat(kind, f"error {type(exc).__name__}")
            if not self.reopen:
                return
            await asyncio.sleep(self.reopen_seconds)

    async def idle(self, tls: bool) -> None:
        kind = "idle TLS" if tls else "idle TCP (no handshake)"
        opened = time.monotonic()
        reader, writer = await self._open(tls)
        self.stat(kind, "opened")
        try:
            await self._until_closed(reader, kind, opened)
        finally:
            writer.transport.abort()

    async def _trickle(self, kind: str, head: bytes, drip: Callable[[int], bytes] | None) -> None:
        """Open a TLS connection, send ``head``, then ``drip(i)`` once a second (None: nothing
        more) until the server closes it or the round ends; counted under ``kind``."""
        opened = time.monotonic()
        reader, writer = await self._open(True)
        self.stat(kind, "opened")
        try:
            writer.write(head)
            watcher = asyncio.ensure_future(self._until_closed(reader, kind, opened))
            i = 0
            while drip is not None and not watcher.done() and time.monotonic() < self.deadline:
                writer.write(drip(i))
                i += 1
                await asyncio.wait([watcher], timeout=1.0)
            await watcher
        finally:
            writer.transport.abort()

    async def slowloris(self) -> None:
        """A request head that never ends: one more header line a second."""
        await self._trickle(
            "slowloris", b"POST /mutate HTTP/1.1\r\nHost: sidecar-injector\r\n", lambda i: b"X-Slow-%d: x\r\n" % i
        )

    async def slow_body(self, size: int) -> None:
        """A body of ``size`` bytes announced, sent 100 bytes a second."""
        head = (
            b"POST /mutate HTTP/1.1\r\nHost: sidecar-injector\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n{" % size
        )
        await self._trickle(f"slow body ({size // 1000} KB declared)", head, lambda _: b" " * 100)

    async def stalled_body(self) -> None:
        """A review's head announcing 100 KB, 13 bytes of it, then nothing (issue 19's cap filler)."""
        head = (
            b"POST /mutate HTTP/1.1\r\nHost: sidecar-injector\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100000\r\n\r\n{"apiVersion"'
        )
        await self._trickle("stalled body (100 KB declared)", head, None)

    async def header_bomb(self) -> None:
        kind = "header bomb (16 MB)"
        reader, writer = await self._open(True)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: sidecar-injector\r\nX-Bomb: ")
            chunk = b"a" * 65536
            sent = 0
            reply = asyncio.ensure_future(reader.read(200))
            while sent < 16 * 1024 * 1024 and not reply.done():
                writer.write(chunk)
                sent += len(chunk)
                await writer.drain()
            head = await asyncio.wait_for(reply, timeout=CALL_TIMEOUT_S)
            self.stat(kind, "answered " + (head.split(b" ", 2)[1].decode() if head.count(b" ") >= 2 else "nothing"))
            self.stat(kind, "MB sent before the answer (sum)", sent / 1e6)
        finally:
            writer.transport.abort()

    async def amplification(self, name: str) -> None:
        kind = f"amplification ({name})"
        body = self.bodies[name]
        reader, writer = await self._open(True)
        try:
            while time.monotonic() < self.deadline:
                started = time.monotonic()
                writer.write(
                    b"POST /mutate HTTP/1.1\r\nHost: sidecar-injector\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body) + body
                )
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=CALL_TIMEOUT_S)
                length = int(
                    next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
                )
                answer = await asyncio.wait_for(reader.readexactly(length), timeout=CALL_TIMEOUT_S)
                self.stat(kind, "answered " + head.split(b" ", 2)[1].decode())
                self.stat(kind, "answer bytes (max)", 0)
                self.stats[kind]["answer bytes (max)"] = max(self.stats[kind]["answer bytes (max)"], len(answer))
                self.stat(kind, "seconds (sum)", time.monotonic() - started)
        finally:
            writer.transport.abort()

    async def run(self, counts: dict[str, int]) -> dict[str, Any]:
        self.deadline = time.monotonic() + self.seconds
        self.opening = asyncio.Semaphore(64)
        jobs = [self._repeat("amplification", lambda n=n: self.amplification(n)) for n in ("2.9MB", "1.4MB")][
            : counts.get("amplification", 0)
        ]
        jobs += [self._repeat("header bomb", self.header_bomb) for _ in range(counts.get("header_bomb", 0))]
        jobs += [self._repeat("slowloris", self.slowloris) for _ in range(counts.get("slowloris", 0))]
        jobs += [
            self._repeat("slow body", lambda i=i: self.slow_body(60_000 if i % 2 else 2_000_000))
            for i in range(counts.get("slow_body", 0))
        ]
        jobs += [self._repeat("idle TLS", lambda: self.idle(True)) for _ in range(counts.get("idle_tls", 0))]
        jobs += [self._repeat("idle TCP", lambda: self.idle(False)) for _ in range(counts.get("idle_tcp", 0))]
        jobs += [self._repeat("stalled body", self.stalled_body) for _ in range(counts.get("stalled_body", 0))]
        tasks = [asyncio.ensure_future(job) for job in jobs]
        _done, late = await asyncio.wait(tasks, timeout=self.seconds + 30)
        for task in late:
            task.cancel()
        self.stats["attacker"] = {"tasks still running after the round": len(late)}
        return self.stats


def attacker_main(args: argparse.Namespace) -> int:
    import uvloop

    ctx = client_context(Path(args.ca))
    bodies = {
        "2.9MB": encode(make_review(_tiny_pod(100_000), "amplification-2.9MB")),
        "1.4MB": encode(make_review(_tiny_pod(40_000), "amplification-1.4MB")),
    }
    counts = json.loads(args.counts)
    # ready: the costly preparation (imports, bodies) is done before the round is measured
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    stats = uvloop.run(Attacker(args.port, ctx, args.seconds, args.reopen, bodies, args.reopen_seconds).run(counts))
    print(json.dumps(stats), flush=True)
    return 0


def _tiny_pod(containers: int) -> dict[str, Any]:
    """A pod of many one-line containers asking for every profile: the most patch per request byte."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "amp-", "namespace": "shop", "annotations": {"sidecar.io/inject": ALL_PROFILES}},
        "spec": {"containers": [{"name": f"c{i}", "image": "i"} for i in range(containers)]},
    }


# --------------------------------------------------------------------------- the run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds of attacks (default 4)")
    parser.add_argument("--round-seconds", type=float, default=12.0, help="seconds of each round (default 12)")
    parser.add_argument("--pause-seconds", type=float, default=4.0, help="seconds between rounds (default 4)")
    parser.add_argument("--quiet-seconds", type=float, default=20.0, help="seconds of normal load alone first (default 20)")
    parser.add_argument("--idle-tls", type=int, default=2000, help="idle TLS connections per round (default 2000)")
    parser.add_argument("--idle-tcp", type=int, default=500, help="idle TCP connections per round (default 500)")
    parser.add_argument("--slowloris", type=int, default=500, help="slowloris connections per round (default 500)")
    parser.add_argument("--slow-body", type=int, default=200, help="slow-body connections per round (default 200)")
    parser.add_argument("--header-bomb", type=int, default=2, help="header-bomb connections (default 2)")
    parser.add_argument("--amplification", type=int, default=2, help="amplification connections, 0-2 (default 2)")
    parser.add_argument("--reopen", action="store_true", help="reopen each attack connection a second after it is closed")
    parser.add_argument(
        "--stalled-body",
        type=int,
        default=520,
        help="stalled-body connections of the last round, reopened at once when closed (default 520; 0: no such round)",
    )
    parser.add_argument("--server-args", default="", help='extra `serve` arguments, e.g. "--event-loop asyncio"')
    parser.add_argument("--max-rss-mib", type=float, default=256.0, help="peak RSS limit (default 256: the chart's)")
    parser.add_argument("--max-stall", type=float, default=1.0, help="longest /healthz probe allowed, seconds (default 1)")
    parser.add_argument("--max-p99-ratio", type=float, default=6.0, help="p99 under attack / quiet p99 allowed (default 6)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "attack-latest.json")
    # the attacker process
    parser.add_argument("--attacker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--reopen-seconds", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--counts", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _cores(samples: list[dict[str, Any]], phase: str) -> float | None:
    """The server's CPU use during a phase, in cores."""
    inside = [s for s in samples if s["phase"] == phase and s.get("cpu_s") is not None]
    if len(inside) < 2 or inside[-1]["t"] <= inside[0]["t"]:
        return None
    return round((inside[-1]["cpu_s"] - inside[0]["cpu_s"]) / (inside[-1]["t"] - inside[0]["t"]), 2)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.attacker:
        return attacker_main(args)
    counts = {
        "amplification": args.amplification,
        "header_bomb": args.header_bomb,
        "slowloris": args.slowloris,
        "slow_body": args.slow_body,
        "idle_tls": args.idle_tls,
        "idle_tcp": args.idle_tcp,
    }
    limits = chart_env()
    with tempfile.TemporaryDirectory(prefix="sidecar-attack-") as tmp_name:
        tmp = Path(tmp_name)
        certs = write_cert_bundle(
            tmp / "certs", "sidecar-injector", "sidecar-injector", extra_dns=["localhost"], extra_ips=[HOST]
        )
        port, metrics_port = free_port(), free_port()
        argv_server = [
            sys.executable,
            "-m",
            "sidecar_injector",
            "serve",
            "--host",
            HOST,
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
            "--log-format",
            "json",
            *shlex.split(args.server_args),
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_INJECTOR_")} | limits
        server = Server("app", argv_server, tmp / "server.log", port, env)
        ctx = client_context(certs.ca_cert)
        typical = encode(make_review(make_pod(1, 0, "logging"), "legit"))
        clients = [
            Admissions("keep-alive", ctx, port, typical, 0.05, keep_alive=True),
            Admissions("new-connection", ctx, port, typical, 0.2, keep_alive=False),
        ]
        probes = Probes(ctx, port)
        sampler: Sampler | None = None
        rounds: list[dict[str, Any]] = []
        warnings: list[str] = []
        try:
            wait_healthy(server, ctx)
            sampler = Sampler(server.pid)
            sampler.start()
            time.sleep(1.0)
            rss_start = sampler.last_rss_kb()
            for thread in (*clients, probes):
                thread.start()
            Phase.enter("quiet")
            time.sleep(args.quiet_seconds)
            plan = [(counts, args.reopen, 1.0)] * args.rounds
            if args.stalled_body:
                plan.append(({"stalled_body": args.stalled_body}, True, 0.1))
            for number, (round_counts, reopen, reopen_seconds) in enumerate(plan, 1):
                attacker = subprocess.Popen(
                    [
                        sys.executable,
                        str(Path(__file__).resolve()),
                        "--attacker",
                        "--port",
                        str(port),
                        "--ca",
                        str(certs.ca_cert),
                        "--seconds",
                        str(args.round_seconds),
                        "--counts",
                        json.dumps(round_counts),
                        "--reopen-seconds",
                        str(reopen_seconds),
                        *(["--reopen"] if reopen else []),
                    ],
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                try:
                    ready = attacker.stdout.readline() if attacker.stdout else ""
                    Phase.enter(f"round-{number}")
                    if ready.strip() == "ready" and attacker.stdin:
                        attacker.stdin.write("go\n")
                        attacker.stdin.flush()
                    out, err = attacker.communicate(timeout=args.round_seconds + 90)
                except subprocess.TimeoutExpired:
                    attacker.kill()
                    out, err = attacker.communicate(timeout=30)
                Phase.enter(f"pause-{number}")
                time.sleep(args.pause_seconds)
                try:
                    seen = json.loads(out.strip().splitlines()[-1])
                except (ValueError, IndexError):
                    seen = {"attacker failed": attacker.returncode, "stderr": err[-2000:]}
                rounds.append(
                    {"round": number, "counts": round_counts, "attacker": seen, "rss_kb_after_pause": sampler.last_rss_kb()}
                )
                if server.proc.poll() is not None:
                    break
        finally:
            for thread in (*clients, probes):
                thread.halt.set()
            for thread in (*clients, probes):
                thread.join(timeout=15)
            if sampler is not None:
                sampler.halt.set()
                sampler.join(timeout=5)
            hwm = read_status_kb(server.pid, "VmHWM")
            exit_code = server.stop()
            log_tail = server.log_tail(5)
            server_log = args.out.with_suffix(".server.log")
            with contextlib.suppress(OSError):
                args.out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(tmp / "server.log", server_log)
                warnings = [line for line in (tmp / "server.log").read_text().splitlines() if '"closed connections' in line]

    samples = sampler.samples if sampler else []
    attack_phases = {f"round-{r['round']}" for r in rounds} | {f"pause-{r['round']}" for r in rounds}

    def latencies(phases: set[str], only: str | None = None) -> list[float]:
        return [
            v
            for c in clients
            if only is None or c.name == only
            for phase, values in c.latencies.items()
            if phase in phases
            for v in values
        ]

    quiet = latencies({"quiet"})
    attacked = latencies(attack_phases)
    probe_all = [v for values in probes.durations.values() for v in values]
    probe_attacked = [v for phase, values in probes.durations.items() if phase in attack_phases for v in values]
    failures = [f for c in clients for f in c.failures]
    peak_kb = max((s["rss_kb"] for s in samples), default=None)
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info("wrk"),
        "args": {k: v for k, v in vars(args).items() if k not in ("attacker", "port", "ca", "seconds", "counts", "out")},
        "server_env": limits,
        "server_argv": argv_server,
        "attack_per_round": counts,
        "rss_mib": {
            "start": round(rss_start / 1024, 1) if rss_start else None,
            "peak_sampled": round(peak_kb / 1024, 1) if peak_kb else None,
            "vmhwm": round(hwm / 1024, 1) if hwm else None,
            "after_each_round": [round(r["rss_kb_after_pause"] / 1024, 1) for r in rounds if r["rss_kb_after_pause"]],
        },
        "server_cpu_cores": {phase: _cores(samples, phase) for phase in ("quiet", *sorted(attack_phases))},
        "threads_max": max((s["threads"] or 0 for s in samples), default=None),
        "fds_max": max((s["fds"] or 0 for s in samples), default=None),
        "admissions": {
            "quiet": {"n": len(quiet), "p50_ms": _ms(percentile(quiet, 0.5)), "p99_ms": _ms(percentile(quiet, 0.99))},
            "under_attack": {
                "n": len(attacked),
                "p50_ms": _ms(percentile(attacked, 0.5)),
                "p99_ms": _ms(percentile(attacked, 0.99)),
                "max_ms": _ms(max(attacked, default=None)),
            },
            "per_client": {
                c.name: {
                    "quiet_p99_ms": _ms(percentile(latencies({"quiet"}, c.name), 0.99)),
                    "under_attack_p99_ms": _ms(percentile(latencies(attack_phases, c.name), 0.99)),
                }
                for c in clients
            },
            "failures": failures,
            "per_round": {
                f"round-{r['round']}": {
                    "attack": r["counts"],
                    "admissions": len(latencies({f"round-{r['round']}"})),
                    "p99_ms": _ms(percentile(latencies({f"round-{r['round']}"}), 0.99)),
                    "failed": sum(1 for f in failures if f["phase"] == f"round-{r['round']}"),
                }
                for r in rounds
            },
            "slowest": [
                {"ms": _ms(took), "phase": phase, "seconds_into_phase": at}
                for took, phase, at in sorted((x for c in clients for x in c.slowest), reverse=True)[:10]
            ],
        },
        "healthz": {
            "probes": len(probe_all),
            "longest_ms": _ms(max(probe_all, default=None)),
            "longest_under_attack_ms": _ms(max(probe_attacked, default=None)),
            "median_ms": _ms(statistics.median(probe_all)) if probe_all else None,
            "failures": probes.failures,
        },
        "rounds": rounds,
        "server": {"exit_code": exit_code, "log": str(server_log), "log_tail": log_tail, "limit_warnings": warnings[-5:]},
        "samples": samples,
    }
    quiet_p99, attacked_p99 = percentile(quiet, 0.99), percentile(attacked, 0.99)
    ratio = attacked_p99 / quiet_p99 if quiet_p99 and attacked_p99 else None
    report["admissions"]["p99_ratio"] = round(ratio, 2) if ratio else None
    report["verdict"] = {
        f"peak RSS under {args.max_rss_mib:g} MiB": peak_kb is not None
        and peak_kb / 1024 < args.max_rss_mib
        and (hwm is None or hwm / 1024 < args.max_rss_mib),
        "no failed admission": not failures and bool(attacked),
        f"no /healthz probe failed or over {args.max_stall:g} s": not probes.failures
        and bool(probe_all)
        and max(probe_all) < args.max_stall,
        f"p99 under attack within {args.max_p99_ratio:g}x quiet": ratio is not None and ratio <= args.max_p99_ratio,
        "server survived": len(rounds) == args.rounds + (1 if args.stalled_body else 0) and exit_code == 0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    print(f"  written: {args.out}")
    return 0 if all(report["verdict"].values()) else 1


def print_report(report: dict[str, Any]) -> None:
    rss, adm, hz = report["rss_mib"], report["admissions"], report["healthz"]
    print(f"attack: {len(report['rounds'])} rounds, per round {report['attack_per_round']}")
    print(f"  server limits (the chart's): {report['server_env']}")
    print(
        f"  RSS MiB: start {rss['start']}, peak {rss['peak_sampled']} (VmHWM {rss['vmhwm']}), "
        f"after each round {rss['after_each_round']}; threads max {report['threads_max']}, fds max {report['fds_max']}"
    )
    print(f"  server CPU (cores): {report['server_cpu_cores']}")
    print(
        f"  admissions: quiet p99 {adm['quiet']['p99_ms']} ms (n={adm['quiet']['n']}), under attack p50 "
        f"{adm['under_attack']['p50_ms']} / p99 {adm['under_attack']['p99_ms']} / max {adm['under_attack']['max_ms']} ms "
        f"(n={adm['under_attack']['n']}), ratio {adm['p99_ratio']}, failures {len(adm['failures'])}"
    )
    for name, p99 in adm["per_client"].items():
        print(f"    {name}: p99 quiet {p99['quiet_p99_ms']} ms, under attack {p99['under_attack_p99_ms']} ms")
    print(
        f"  /healthz probes: {hz['probes']}, median {hz['median_ms']} ms, longest {hz['longest_ms']} ms "
        f"(under attack {hz['longest_under_attack_ms']} ms), failures {len(hz['failures'])}"
    )
    for name, r in adm["per_round"].items():
        print(
            f"    {name} ({', '.join(r['attack'])}): {r['admissions']} admissions answered (p99 {r['p99_ms']} ms), "
            f"{r['failed']} failed"
        )
    for failure in (adm["failures"] + hz["failures"])[:5]:
        print(f"    failure: {failure}")
    for r in report["rounds"]:
        print(f"  round {r['round']}: {json.dumps(r['attacker'], sort_keys=True)[:900]}")
    print("  verdict: " + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in report["verdict"].items()))


if __name__ == "__main__":
    sys.exit(main())
