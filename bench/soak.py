"""Soak: benchmark load for minutes while certificates rotate and profiles are rewritten.

    .venv/bin/python bench/soak.py [--minutes 10] [--out bench/results/soak-NAME.json]

What it does:

1. the certificate and the profiles directory are laid out as the kubelet mounts a Secret
   and a ConfigMap (names are symlinks into ``..data``, swapped atomically on update);
2. the real server (``python -m sidecar_injector serve``, JSON logs at INFO, reload on) serves them;
3. two ``wrk`` runs for the whole duration: 16 keep-alive connections, and 2 connections
   that close after every request (``Connection: close``), so new TLS handshakes keep
   happening while the certificate changes under them; every review asks for ``logging``
   and for the ``soak`` profile that is being rewritten;
4. every ``--rotate-every`` seconds a new certificate pair (new key) is published; every
   ``--rewrite-every`` seconds the ``soak`` profile gets a new version, and every third
   rewrite is broken on purpose (a typo'd field), which must keep the last good set;
5. the server's RSS is sampled every 5 s.

It reports failed requests (socket errors and non-2xx of both wrk runs, and the server's
own error counter), the reloads the server counted, and RSS over time: the median of the
second minute against the median of the last minute (for runs under 5 minutes, of the
second and last fifths). Exit 0 only with zero failures, all
reloads seen, and memory growth under ``--max-rss-growth`` (percent).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

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
    read_status_kb,
    run_wrk,
    wait_healthy,
)
from sidecar_injector.webhook.tls import write_cert_bundle

RSS_INTERVAL_S = 5.0


class KubeletVolume:
    """A directory updated like a mounted Secret/ConfigMap: an atomic ``..data`` symlink swap."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True)
        self.generation = 0

    def publish(self, files: dict[str, bytes]) -> None:
        self.generation += 1
        target = self.root / f"..{self.generation:06d}"
        target.mkdir()
        for name, content in files.items():
            (target / name).write_bytes(content)
        (self.root / "..data_tmp").symlink_to(target.name)
        (self.root / "..data_tmp").replace(self.root / "..data")
        for name in files:
            if not (self.root / name).is_symlink():
                (self.root / name).symlink_to(Path("..data") / name)
        for old in self.root.glob("..0*"):
            if old != target:
                for child in old.iterdir():
                    child.unlink()
                old.rmdir()


def cert_files(scratch: Path) -> dict[str, bytes]:
    paths = write_cert_bundle(scratch, "sidecar-injector", "sidecar-injector", extra_ips=[HOST])
    return {"tls.crt": paths.cert.read_bytes(), "tls.key": paths.key.read_bytes(), "ca.crt": paths.ca_cert.read_bytes()}


def soak_profile(version: int, broken: bool) -> dict[str, bytes]:
    typo = "    imagePulPolicy: Always\n" if broken else ""
    text = (
        f"name: soak\nversion: '{version}'\ncontainers:\n  - name: soak-agent\n    image: busybox:1.37.0\n"
        f"    args: [sleep, infinity]\n{typo}"
    )
    return {"soak.yaml": text.encode()}


def scrape(port: int) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("sidecar_injector_") and " " in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


class Churn(threading.Thread):
    """Rotates the certificate and rewrites the profiles on schedule."""

    def __init__(
        self, certs: KubeletVolume, profiles: KubeletVolume, scratch: Path, rotate: float, rewrite: float, seconds: float
    ):
        super().__init__(daemon=True, name="churn")
        self.seconds = seconds  # stop changing files this long after the start
        self.certs, self.profiles, self.scratch = certs, profiles, scratch
        self.rotate, self.rewrite = rotate, rewrite
        self.halt = threading.Event()
        self.rotations = 0
        self.rewrites = 0
        self.broken_rewrites = 0

    def run(self) -> None:
        start = time.monotonic()
        next_rotate, next_rewrite = start + self.rotate, start + self.rewrite
        while not self.halt.wait(0.2):
            now = time.monotonic()
            if now - start >= self.seconds:
                return
            if now >= next_rotate:
                self.rotations += 1
                self.certs.publish(cert_files(self.scratch / f"cert-{self.rotations}"))
                next_rotate += self.rotate
            if now >= next_rewrite:
                self.rewrites += 1
                broken = self.rewrites % 3 == 0
                self.broken_rewrites += broken
                self.profiles.publish(soak_profile(self.rewrites + 1, broken))
                next_rewrite += self.rewrite


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="duration of the load (default 10)")
    parser.add_argument("--rotate-every", type=float, default=30.0, help="seconds between certificate rotations")
    parser.add_argument("--rewrite-every", type=float, default=20.0, help="seconds between profile rewrites")
    parser.add_argument(
        "--max-rss-growth",
        type=float,
        default=10.0,
        help="percent RSS growth (2nd minute vs last minute) still called flat (default 10)",
    )
    parser.add_argument("--wrk", default="wrk", help="wrk binary")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak-latest.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    duration = int(args.minutes * 60)
    with tempfile.TemporaryDirectory(prefix="sidecar-soak-") as tmp_name:
        tmp = Path(tmp_name)
        certs, profiles = KubeletVolume(tmp / "tls"), KubeletVolume(tmp / "profiles")
        first = cert_files(tmp / "cert-0")
        certs.publish(first)
        profiles.publish(soak_profile(1, broken=False))
        (tmp / "ca.crt").write_bytes(first["ca.crt"])
        body = tmp / "review.json"
        body.write_bytes(encode(make_review(make_pod(1, 0, "logging,soak"), "soak")))
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
            str(certs.root / "tls.crt"),
            "--key-file",
            str(certs.root / "tls.key"),
            "--profiles-dir",
            str(profiles.root),
            "--metrics-port",
            str(metrics_port),
            "--drain-seconds",
            "0",
            "--log-format",
            "json",
        ]
        # INFO logging stays on (it is part of the real cost); the lines go nowhere to spare the disk
        server = Server(
            "app",
            argv_server,
            Path("/dev/null"),
            port,
            {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_INJECTOR_")},
        )
        # the last change lands 10 s before the load ends, so the server's reload of it is counted
        churn = Churn(certs, profiles, tmp, args.rotate_every, args.rewrite_every, seconds=max(duration - 10, 0))
        rss: list[tuple[float, int]] = []
        results: dict[str, Any] = {}
        try:
            wait_healthy(server, client_context(tmp / "ca.crt"))
            started = time.monotonic()
            runs = {
                "keep-alive c16": lambda: run_wrk(args.wrk, port, str(body), 16, duration),
                "new connection per request c2": lambda: run_wrk(
                    args.wrk, port, str(body), 2, duration, headers=("Connection: close",)
                ),
            }
            threads = [
                threading.Thread(target=lambda n=n, f=f: results.__setitem__(n, f()), daemon=True) for n, f in runs.items()
            ]
            for thread in threads:
                thread.start()
            churn.start()
            while any(thread.is_alive() for thread in threads):
                value = read_status_kb(server.pid, "VmRSS")
                if value is not None:
                    rss.append((round(time.monotonic() - started, 1), value))
                for thread in threads:
                    thread.join(timeout=RSS_INTERVAL_S / len(threads))
            churn.halt.set()
            churn.join(timeout=10)
            metrics = scrape(metrics_port)
        finally:
            exit_code = server.stop()

    def median_between(lo: float, hi: float) -> float | None:
        values = [kb for t, kb in rss if lo <= t < hi]
        return statistics.median(values) if values else None

    window = min(60.0, duration / 5)  # after a warm-up window, against the last one
    early, late = median_between(window, 2 * window), median_between(duration - window, duration + 1)
    growth = round(100 * (late - early) / early, 1) if early and late else None
    failed = {name: r.get("errors_total") for name, r in results.items()}  # None: wrk itself failed
    server_errors = metrics.get('sidecar_injector_admission_requests_total{outcome="error"}', 0)
    reloads = {
        k.split("{", 1)[1].rstrip("}"): v for k, v in metrics.items() if k.startswith("sidecar_injector_reloads_total")
    }
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(args.wrk),
        "minutes": args.minutes,
        "wrk": results,
        "failed_requests": failed,
        "server_error_responses": server_errors,
        "server_exit_code": exit_code,
        "rotations": churn.rotations,
        "profile_rewrites": churn.rewrites,
        "broken_profile_rewrites": churn.broken_rewrites,
        "server_reloads": reloads,
        "rss_kb": {
            "median_minute_2": early,
            "median_last_minute": late,
            "growth_percent": growth,
            "max": max((kb for _, kb in rss), default=None),
            "samples": rss,
        },
    }
    ok_reloads = reloads.get('result="ok",what="certificate"', 0) >= churn.rotations
    ok_profiles = reloads.get('result="ok",what="profiles"', 0) >= churn.rewrites - churn.broken_rewrites
    ok_memory = growth is not None and growth <= args.max_rss_growth
    ok_requests = all(v == 0 for v in failed.values()) and not server_errors
    report["verdict"] = {
        "zero_failed_requests": ok_requests,
        "every_rotation_reloaded": ok_reloads,
        "every_good_rewrite_reloaded": ok_profiles,
        "rss_flat": ok_memory,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    print(
        f"soak: {args.minutes:g} min, {churn.rotations} certificate rotations, {churn.rewrites} profile rewrites "
        f"({churn.broken_rewrites} broken on purpose)"
    )
    for name, r in results.items():
        print(
            f"  {name:32s} requests {r.get('requests', '?'):>9}  req/s {r.get('requests_per_s', 0):8.0f}  "
            f"p99 {r.get('latency_ms', {}).get('p99', 0):7.2f} ms  failed {failed[name]}  {r.get('problems') or ''}"
        )
    print(f"  server: error responses {server_errors:.0f}, reloads {reloads}, exit code {exit_code}")
    print(
        f"  RSS: minute 2 median {early} kB, last minute median {late} kB, growth {growth}% "
        f"(flat means <= {args.max_rss_growth}%), max {report['rss_kb']['max']} kB"
    )
    print("  verdict: " + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in report["verdict"].items()))
    print(f"  written: {args.out}")
    return 0 if all(report["verdict"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
