"""What the built-in profiles pass to their images, checked against the images' upstream sources.

Three sidecars have no package on a registry reachable here (Fluent Bit, git-sync,
statsd-exporter), so they cannot run in tests/test_sidecars_run.py. Their flags, properties and
environment variables were read in the upstream source at the image's exact tag; the tables
below record where each is defined. A profile passing anything not in these tables fails here,
so a change is re-checked against upstream before it ships.

Every image's STOPSIGNAL (what the runtime sends its PID 1 on stop) was read in its upstream
build file too; a shell wrapper that is PID 1 must trap it, or it is ignored (the tls bug).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import podemu
from sidecar_injector.profiles.loading import builtin_profiles
from sidecar_injector.profiles.templating import PodFacts

BUILTINS = builtin_profiles()
DOCS = Path(__file__).resolve().parents[1] / "docs" / "builtin-profiles.md"

# image -> (STOPSIGNAL, where upstream says so). "none" = the build sets no STOPSIGNAL: SIGTERM.
IMAGE_STOP_SIGNALS: dict[str, tuple[signal.Signals, str]] = {
    "cr.fluentbit.io/fluent/fluent-bit:3.1.9": (
        signal.SIGTERM,
        "fluent/fluent-bit v3.1.9 dockerfiles/Dockerfile: none (distroless); src/fluent-bit.c handles SIGTERM",
    ),
    "envoyproxy/envoy:v1.31.3": (
        signal.SIGTERM,
        "envoyproxy/envoy distribution/docker/Dockerfile-envoy: none; Envoy shuts down on SIGTERM",
    ),
    "registry.k8s.io/git-sync/git-sync:v4.3.0": (
        signal.SIGTERM,
        "kubernetes/git-sync v4.3.0 Dockerfile.in: none; a Go binary exits on SIGTERM",
    ),
    "prom/statsd-exporter:v0.27.1": (
        signal.SIGTERM,
        "prometheus/statsd_exporter v0.27.1 Dockerfile: none; a Go binary exits on SIGTERM",
    ),
    "nginxinc/nginx-unprivileged:1.27.3-alpine": (
        signal.SIGQUIT,
        (
            "nginxinc/docker-nginx-unprivileged 1.27.3 mainline/alpine-slim/Dockerfile: STOPSIGNAL SIGQUIT"
            " (mainline/alpine builds FROM it)"
        ),
    ),
    "alpine/openssl:3.3.2": (
        signal.SIGTERM,
        "alpine-docker/multi-arch-docker-images openssl/Dockerfile: none (FROM alpine, ENTRYPOINT openssl)",
    ),
    "rclone/rclone:1.68.2": (signal.SIGTERM, "rclone/rclone v1.68.2 Dockerfile: none (FROM alpine)"),
    "curlimages/curl:8.11.1": (
        signal.SIGTERM,
        "curl/curl-container 8.11.1 create_base_image.sh/create_appliance_image.sh: none (alpine:3.21.0)",
    ),
}

# Fluent Bit v3.1.9: src/fluent-bit.c long_opts; plugins/in_tail/tail.c config_map; src/flb_input.c
FLUENT_BIT_OPTIONS = {"http", "port", "flush", "input", "prop", "output", "match"}
FLUENT_BIT_TAIL_PROPERTIES = {"path", "path_key", "db", "read_from_head", "refresh_interval", "skip_long_lines"}
FLUENT_BIT_INPUT_PROPERTIES = {"tag", "mem_buf_limit"}  # every input's, flb_input_set_property
FLUENT_BIT_MONITORING_PATHS = {"/api/v1/uptime"}  # src/http_server/api/v1/uptime.c

# statsd_exporter v0.27.1 main.go (kingpin flags); --log.level from prometheus/common v0.55.0
# promlog/flag (one of debug, info, warn, error)
STATSD_EXPORTER_FLAGS = {"statsd.listen-udp", "statsd.listen-tcp", "web.listen-address", "web.telemetry-path", "log.level"}
STATSD_LOG_LEVELS = {"debug", "info", "warn", "error"}

# git-sync v4.3.0 main.go (pflag defaults read from env) and env.go (how values parse):
# envInt = strconv.ParseInt(v, 0, 0), envBool = strconv.ParseBool, envDuration = time.ParseDuration;
# --period and --sync-timeout must be >= 10ms.
GIT_SYNC_ENV = {
    "GITSYNC_REPO": "string",
    "GITSYNC_REF": "string",
    "GITSYNC_ROOT": "string",
    "GITSYNC_LINK": "string",
    "GITSYNC_DEPTH": "int",
    "GITSYNC_ONE_TIME": "bool",
    "GITSYNC_MAX_FAILURES": "int",
    "GITSYNC_PERIOD": "duration",
    "GITSYNC_SYNC_TIMEOUT": "duration",
}
GIT_SYNC_WRAPPER_ENV = {"GIT_CONTENT_REQUIRED"}  # ours: read by the init container's wrapper script
GO_BOOLS = {"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"}
GO_DURATION = re.compile(r"^(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+$")
GO_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

# the images' own users, where a profile keeps them (git-sync: Dockerfile.in USER 65533:65533;
# statsd_exporter: Dockerfile USER 65534)
IMAGE_USERS = {"registry.k8s.io/git-sync/git-sync:v4.3.0": 65533, "prom/statsd-exporter:v0.27.1": 65534}


#: what a pod must set for the required parameters of the built-ins
REQUIRED = {"git-sync": {"repo": "https://github.com/acme/site"}}


def rendered(name: str, **values: str):
    """The built-in as a pod gets it: its parameters' defaults, the required ones, and ``values``."""
    profile = BUILTINS[name]
    defaults = {k: p.default for k, p in profile.parameters.items() if p.default is not None}
    return profile.render({**defaults, **REQUIRED.get(name, {}), **values}, PodFacts(namespace="shop"))


def all_containers(name: str, **values: str) -> list[dict[str, Any]]:
    profile = rendered(name, **values)
    return [*profile.init_containers, *profile.containers]


def go_duration_seconds(value: str) -> float:
    assert GO_DURATION.match(value), f"{value!r} is not a Go duration"
    return sum(float(n) * GO_DURATION_UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", value))


def test_every_builtin_image_has_its_stop_signal_on_record():
    images = {c["image"] for name in BUILTINS for c in all_containers(name)}
    assert images == set(IMAGE_STOP_SIGNALS)
    for image, standin in podemu.STAND_INS.items():
        assert standin.stop_signal == IMAGE_STOP_SIGNALS[image][0], image


def shell_wrappers() -> list[tuple[str, dict[str, Any]]]:
    return [
        (name, c)
        for name in BUILTINS
        for c in BUILTINS[name].containers  # the long-running ones (init containers are never stopped)
        if (c.get("command") or [])[:2] == ["/bin/sh", "-c"]
    ]


@pytest.mark.parametrize(("name", "container"), shell_wrappers(), ids=lambda v: v if isinstance(v, str) else v["name"])
def test_each_shell_wrapper_traps_its_images_stop_signal(name, container):
    """The wrapper is PID 1: the kernel drops a signal PID 1 has no handler for."""
    script = container["args"][0]
    traps = re.findall(r"^\s*trap\s+(?:'[^']*'|\"[^\"]*\")\s+([A-Z ]+)$", script, re.MULTILINE)
    assert traps, f"{container['name']} sets no trap"
    trapped = set(" ".join(traps).split())
    stop_signal = IMAGE_STOP_SIGNALS[container["image"]][0]
    assert stop_signal.name.removeprefix("SIG") in trapped, (container["name"], trapped)


def test_the_docs_list_every_images_stop_signal():
    docs = DOCS.read_text()
    for image, (sig, _) in IMAGE_STOP_SIGNALS.items():
        assert re.search(rf"`{re.escape(image)}`[^\n]*\| {sig.name}", docs), f"{image} ({sig.name}) missing from the docs"


def test_logging_passes_only_fluent_bit_options_and_properties_that_exist_upstream():
    (container,) = BUILTINS["logging"].containers
    options, properties = set(), set()
    for arg in container["args"]:
        match = re.match(r"--([a-z_-]+)(?:=(.*))?$", arg)
        assert match, arg
        options.add(match.group(1))
        if match.group(1) == "prop":
            properties.add(match.group(2).split("=", 1)[0])
    assert options <= FLUENT_BIT_OPTIONS, options - FLUENT_BIT_OPTIONS
    assert properties <= FLUENT_BIT_TAIL_PROPERTIES | FLUENT_BIT_INPUT_PROPERTIES
    assert container["readinessProbe"]["httpGet"]["path"] in FLUENT_BIT_MONITORING_PATHS
    assert "--input=tail" in container["args"]


@pytest.mark.parametrize("level", BUILTINS["metrics"].parameters["log-level"].enum)
def test_metrics_passes_only_statsd_exporter_flags_that_exist_upstream(level):
    (container,) = rendered("metrics", **{"log-level": level}).containers
    flags = {}
    for arg in container["args"]:
        flag, _, value = arg.removeprefix("--").partition("=")
        flags[flag] = value
    assert set(flags) <= STATSD_EXPORTER_FLAGS, set(flags) - STATSD_EXPORTER_FLAGS
    assert flags["log.level"] == level and level in STATSD_LOG_LEVELS
    assert container["readinessProbe"]["httpGet"]["path"] == flags["web.telemetry-path"]
    assert container["securityContext"]["runAsUser"] == IMAGE_USERS[container["image"]]


def test_git_sync_sets_only_upstream_variables_with_values_git_sync_parses():
    for container in all_containers("git-sync"):
        env = {var["name"]: var["value"] for var in container["env"]}
        unknown = set(env) - set(GIT_SYNC_ENV) - GIT_SYNC_WRAPPER_ENV
        assert not unknown, f"{container['name']}: {unknown}"
        for key, value in env.items():
            kind = GIT_SYNC_ENV.get(key)
            if kind == "int":
                int(value, 0)
            elif kind == "bool":
                assert value in GO_BOOLS, (key, value)
            elif kind == "duration":
                assert go_duration_seconds(value) >= 0.01, (key, value)
        assert container["securityContext"]["runAsUser"] == IMAGE_USERS[container["image"]]
    for period in ("5s", "90s", "1h30m", "24h"):  # the period parameter's values are Go durations git-sync parses
        [sidecar] = rendered("git-sync", period=period).containers
        assert go_duration_seconds({v["name"]: v["value"] for v in sidecar["env"]}["GITSYNC_PERIOD"]) >= 5
    (init,) = BUILTINS["git-sync"].init_containers
    assert {v["name"]: v["value"] for v in init["env"]}["GITSYNC_ONE_TIME"] == "true"
    assert "/git-sync" in init["args"][0]  # the image's binary (Dockerfile.in: COPY ... /{ARG_BIN})


def shell_scripts() -> list[tuple[str, str, str]]:
    scripts = []
    for name in BUILTINS:
        for container in all_containers(name):
            if (container.get("command") or [])[:2] == ["/bin/sh", "-c"]:
                # git-sync's image links /bin/sh to bash (Dockerfile.in); the others are busybox ash
                shell = "bash" if "git-sync" in container["image"] else "sh"
                scripts.append((container["name"], shell, container["args"][0]))
    return scripts


@pytest.mark.parametrize(("container", "shell", "script"), shell_scripts(), ids=lambda v: v if "\n" not in v else "")
def test_each_builtin_shell_script_passes_shellcheck(container, shell, script):
    shellcheck = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (make install)")
    result = subprocess.run([shellcheck, "--color=never", "-s", shell, "-"], input=script, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
