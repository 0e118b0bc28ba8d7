"""Running the webhook: build the app, serve it over HTTPS with uvicorn, shut down cleanly."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import dataclasses
import gc
import math
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

import uvicorn
from uvicorn.server import ServerState

from sidecar_injector.profiles.loading import ProfileSet
from sidecar_injector.runtime import logs
from sidecar_injector.runtime.interfaces import Background, Lifecycle, ProfileStore
from sidecar_injector.runtime.logs import configure, get_logger
from sidecar_injector.runtime.metrics import Metrics
from sidecar_injector.runtime.settings import Settings
from sidecar_injector.runtime.supervise import Supervisor
from sidecar_injector.webhook.app import create_app, metrics_app
from sidecar_injector.webhook.guard import ConnectionLimits, guarded, loop_factory
from sidecar_injector.webhook.tls import cert_not_after

#: connections the metrics port keeps open at once (a Prometheus or two, and a person with curl)
METRICS_MAX_CONNECTIONS = 16
#: request line + headers of a scrape
METRICS_MAX_HEADER_BYTES = 8 * 1024


class ServeError(Exception):
    """The server cannot start; the message says what to fix."""


def check_tls_files(settings: Settings) -> None:
    if settings.cert_file is None or settings.key_file is None:
        raise ServeError(
            "no serving certificate: set --cert-file/--key-file (SIDECAR_INJECTOR_CERT_FILE/_KEY_FILE); "
            "for development create them with `sidecar-injector certs generate --out certs`"
        )
    for path in (settings.cert_file, settings.key_file):
        if not path.is_file():
            raise ServeError(f"{path}: file not found")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(settings.cert_file, settings.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ServeError(f"{settings.cert_file} / {settings.key_file}: not a usable certificate and key: {exc}") from None


class DrainingServer(uvicorn.Server):
    """uvicorn, with a readiness-first shutdown.

    On SIGTERM readiness turns false at once while the server keeps answering for
    ``drain_seconds`` (time for the API server and kube-proxy to stop sending new work),
    then uvicorn's graceful shutdown stops accepting, lets in-flight reviews finish (up to
    the shutdown timeout) and exits 0. SIGINT (Ctrl-C) or a second signal skip the drain;
    a second Ctrl-C also stops waiting for open connections.

    Only the signal handling is uvicorn's to change (an ASGI lifespan sees no signals);
    the background jobs run in the app's lifespan.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        lifecycle: Lifecycle,
        drain_seconds: float,
        new_loop: Callable[[], asyncio.AbstractEventLoop],
    ):
        super().__init__(config)
        self.lifecycle = lifecycle
        self.drain_seconds = drain_seconds
        self.new_loop = new_loop
        self._drain_until: float | None = None
        self._drain_logged = False

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        with asyncio.Runner(loop_factory=self.new_loop) as runner:
            runner.run(self.serve(sockets=sockets))

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs as a signal handler: only plain assignments here, the loop does the rest.
        self.lifecycle.draining = True
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: do not wait for open connections
        elif sig == signal.SIGTERM and self._drain_until is None and self.drain_seconds > 0:
            self._drain_until = time.monotonic() + self.drain_seconds
        else:
            self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._drain_until is not None:
            if not self._drain_logged:
                self._drain_logged = True
                get_logger().info("shutting down: readiness is off, draining", extra={"drain_seconds": self.drain_seconds})
            if time.monotonic() >= self._drain_until:
                self.should_exit = True
        return await super().on_tick(counter)


class _ThreadService(Protocol):
    def start(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...


def _running(service: _ThreadService) -> Background:
    """A thread-backed service (namespace cache, event recorder) as a background job of the server."""

    async def job(stop: asyncio.Event) -> None:
        service.start()
        await stop.wait()
        await asyncio.to_thread(service.stop)

    return job


def _reloading(
    settings: Settings, store: ProfileStore, metrics: Metrics, ssl_context: Callable[[], ssl.SSLContext | None]
) -> Background:
    """The reloader as a background job; the SSLContext is uvicorn's, built once the config is loaded."""

    reloader = None

    async def job(stop: asyncio.Event) -> None:
        from sidecar_injector.server.reload import Reloader

        nonlocal reloader
        if reloader is None:  # once: a run started again by the supervisor compares with what was loaded
            reloader = Reloader(settings, store, metrics, ssl_context())
        await reloader.run(stop)

    return job


def connection_limits(settings: Settings) -> ConnectionLimits:
    """The limits of the webhook's HTTPS port."""
    return ConnectionLimits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout=settings.header_timeout_seconds,
        request_timeout=settings.request_timeout_seconds,
        max_connections=settings.max_connections,
    )


def metrics_listener(settings: Settings) -> socket.socket | None:
    """The metrics port's listening socket (None when metrics are off), bound now so a clash fails the start."""
    if not settings.metrics_port:
        return None
    host = settings.metrics_host or settings.host
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, settings.metrics_port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(64)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise ServeError(f"cannot serve metrics on {host}:{settings.metrics_port}: {exc}") from None
    sock.setblocking(False)
    return sock


def _serving_metrics(sock: socket.socket, metrics: Metrics, settings: Settings) -> Background:
    """GET /metrics on its own plain-HTTP socket, in the server's event loop, with bounded connections and time.

    The same protocol and limits as the webhook port (header cap, deadlines, a connection
    cap of its own), so no scrape or slow client costs a thread or stays open for ever.
    """

    async def job(stop: asyncio.Event) -> None:
        limits = dataclasses.replace(
            connection_limits(settings), max_header_bytes=METRICS_MAX_HEADER_BYTES, max_connections=METRICS_MAX_CONNECTIONS
        )
        config = uvicorn.Config(
            metrics_app(metrics),
            http=guarded(limits, "metrics"),
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            timeout_keep_alive=settings.keep_alive_timeout_seconds,
        )
        config.load()
        state = ServerState()

        def protocol() -> asyncio.Protocol:
            return config.http_protocol_class(config=config, server_state=state, app_state={})  # type: ignore[call-arg]

        server = await asyncio.get_running_loop().create_server(protocol, sock=sock)
        try:
            await stop.wait()
        finally:
            server.close()
            for connection in list(state.connections):
                connection.shutdown()

    return job


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def _trimming_memory(seconds: float) -> Background:
    """Give free heap memory back to the system every ``seconds``.

    Each TLS connection allocates its buffers and OpenSSL state with the C allocator; once
    thousands of them have come and gone, glibc keeps the freed memory, fragmented, in its
    heap, and RSS grows with every wave of connections (measured with uvloop: about
    +25 MB per 2,000 idle connections, round after round, never given back). malloc_trim
    returns every free page, so RSS follows the connections that are open instead.
    """

    async def job(stop: asyncio.Event) -> None:
        trim = _malloc_trim()
        if trim is None:
            return
        while True:
            try:
                await asyncio.wait_for(stop.wait(), seconds)
                return
            except TimeoutError:
                await asyncio.to_thread(trim, 0)  # ~10 ms after thousands of connections closed

    return job


def kubernetes_services(
    settings: Settings, metrics: Metrics, store: ProfileStore, supervisor: Supervisor | None = None
) -> tuple[Any, Any, Any]:
    """The namespace cache, the event recorder and the profile resources the settings ask for (None for each that is off).

    Their threads (each informer, the event sender, the status writer and its election) run under ``supervisor``.
    """
    if not (settings.namespace_lookup or settings.events or settings.profile_resources):
        return None, None, None
    if settings.profile_resources and settings.profile_status and not settings.namespace:
        raise ServeError(
            "--profile-status needs --namespace (SIDECAR_INJECTOR_NAMESPACE), where its Lease lives; "
            "or turn it off with --no-profile-status"
        )
    from sidecar_injector.cluster.events import EventRecorder
    from sidecar_injector.cluster.kube import KubeConfigError, api_client
    from sidecar_injector.cluster.namespaces import NamespaceCache
    from sidecar_injector.cluster.profile_sources import ProfileResources

    try:
        api = api_client()
    except KubeConfigError as exc:
        raise ServeError(f"--namespace-lookup / --events / --profile-resources need the Kubernetes API: {exc}") from None
    namespaces = events = resources = None
    if settings.profile_resources:
        resources = ProfileResources(
            api,
            lambda: store.current,
            namespaced=settings.namespaced_profiles,
            sync_timeout_seconds=settings.profile_resources_sync_timeout_seconds,
            write_status=settings.profile_status,
            lease_namespace=settings.namespace,
            lease_name=settings.profile_status_lease,
            identity=f"{socket.gethostname()}_{os.getpid()}",
            metrics=metrics,
            supervisor=supervisor,
        )
    if settings.namespace_lookup:
        namespaces = NamespaceCache(
            api,
            resync_seconds=settings.namespace_resync_seconds,
            lookup_timeout_seconds=settings.namespace_lookup_timeout_seconds,
            metrics=metrics,
            supervisor=supervisor,
        )
    if settings.events:
        events = EventRecorder(api, socket.gethostname(), metrics=metrics, supervisor=supervisor)
    return namespaces, events, resources


def serve(settings: Settings, profiles: ProfileSet) -> None:
    """Serve /mutate over HTTPS until SIGTERM/SIGINT, then shut down gracefully."""
    check_tls_files(settings)
    log = configure(settings.log_format, settings.log_level)
    metrics = Metrics()
    assert settings.cert_file is not None
    metrics.cert_expiry.set(cert_not_after(settings.cert_file).timestamp())
    metrics_socket = metrics_listener(settings)
    # every long-running job runs under one supervisor: a failure is logged, counted and retried,
    # and a job that keeps failing turns readiness off (runtime/supervise.py)
    supervisor = Supervisor(metrics)
    lifecycle = Lifecycle(jobs=supervisor)
    store = ProfileStore(profiles)
    namespaces, events, resources = kubernetes_services(settings, metrics, store, supervisor)
    # the thread-backed services supervise their own threads; starting and stopping them is plain
    background: list[Background] = [_running(service) for service in (namespaces, events, resources) if service is not None]
    if metrics_socket is not None:
        background.append(supervisor.supervise("metrics-server", _serving_metrics(metrics_socket, metrics, settings)))
    if settings.reload:
        background.append(supervisor.supervise("reloader", _reloading(settings, store, metrics, lambda: config.ssl)))
    if settings.memory_trim_seconds:
        background.append(supervisor.supervise("memory-trim", _trimming_memory(settings.memory_trim_seconds)))
    app = create_app(
        settings,
        store,
        metrics=metrics,
        lifecycle=lifecycle,
        namespaces=namespaces,
        events=events,
        profile_source=resources,
        background=background,
    )
    # Everything built so far (modules, profiles, the app) lives as long as the process:
    # move it out of the collector's sight so full collections, triggered by the many
    # short-lived objects of large reviews, stay short (measured: p99 stalls of ~45 ms).
    gc.collect()
    gc.freeze()
    log.info(
        "starting sidecar-injector",
        extra={
            "address": f"https://{settings.host}:{settings.port}",
            "metrics": f"http://{settings.metrics_host or settings.host}:{settings.metrics_port}/metrics"
            if settings.metrics_port
            else "off",
            "loop": settings.event_loop,
            "profiles": ",".join(profiles.names()),
        },
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.cert_file),
        ssl_keyfile=str(settings.key_file),
        log_config=None,
        access_log=False,
        server_header=False,
        # The API server calls the webhook directly: no X-Forwarded-* header is to be trusted,
        # and the middleware that reads them would wrap every admission for nothing.
        proxy_headers=False,
        lifespan="on",
        http=guarded(connection_limits(settings)),
        timeout_keep_alive=settings.keep_alive_timeout_seconds,
        # uvicorn takes whole seconds; rounding up never cuts an in-flight review short
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_seconds),
    )
    config.load()  # builds the SSLContext, which the reloader updates in place
    new_loop = loop_factory(settings.event_loop, tls_timeout=settings.header_timeout_seconds)
    DrainingServer(config, lifecycle, settings.drain_seconds, new_loop).run()
    log.info("stopped")
    logs.shutdown()  # write every queued line before the process ends (atexit would too)
