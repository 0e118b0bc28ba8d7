"""Running the webhook: build the app, serve it over HTTPS with uvicorn, shut down cleanly."""

from __future__ import annotations

import asyncio
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
from prometheus_client import start_http_server

from sidecar_injector import logs
from sidecar_injector.interfaces import Background, Lifecycle, ProfileStore
from sidecar_injector.logs import configure, get_logger
from sidecar_injector.metrics import Metrics
from sidecar_injector.profiles import ProfileSet
from sidecar_injector.settings import Settings
from sidecar_injector.tls import cert_not_after
from sidecar_injector.web import create_app


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

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, drain_seconds: float):
        super().__init__(config)
        self.lifecycle = lifecycle
        self.drain_seconds = drain_seconds
        self._drain_until: float | None = None
        self._drain_logged = False

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

    async def job(stop: asyncio.Event) -> None:
        from sidecar_injector.reload import Reloader

        await Reloader(settings, store, metrics, ssl_context()).run(stop)

    return job


def kubernetes_services(settings: Settings, metrics: Metrics, store: ProfileStore | None = None) -> tuple[Any, Any, Any]:
    """The namespace cache, the event recorder and the profile resources the settings ask for (None for each that is off)."""
    if not (settings.namespace_lookup or settings.events or settings.profile_resources):
        return None, None, None
    if settings.profile_resources and settings.profile_status and not settings.namespace:
        raise ServeError(
            "--profile-status needs --namespace (SIDECAR_INJECTOR_NAMESPACE), where its Lease lives; "
            "or turn it off with --no-profile-status"
        )
    from sidecar_injector.events import EventRecorder
    from sidecar_injector.kube import KubeConfigError, api_client
    from sidecar_injector.namespaces import NamespaceCache
    from sidecar_injector.profile_resources import ProfileResources

    try:
        api = api_client()
    except KubeConfigError as exc:
        raise ServeError(f"--namespace-lookup / --events / --profile-resources need the Kubernetes API: {exc}") from None
    namespaces = events = resources = None
    if settings.profile_resources:
        current = store or ProfileStore(ProfileSet({}, {}))
        resources = ProfileResources(
            api,
            lambda: current.current,
            namespaced=settings.namespaced_profiles,
            sync_timeout_seconds=settings.profile_resources_sync_timeout_seconds,
            write_status=settings.profile_status,
            lease_namespace=settings.namespace,
            lease_name=settings.profile_status_lease,
            identity=f"{socket.gethostname()}_{os.getpid()}",
            metrics=metrics,
        )
    if settings.namespace_lookup:
        namespaces = NamespaceCache(
            api,
            resync_seconds=settings.namespace_resync_seconds,
            lookup_timeout_seconds=settings.namespace_lookup_timeout_seconds,
            metrics=metrics,
        )
    if settings.events:
        events = EventRecorder(api, socket.gethostname(), metrics=metrics)
    return namespaces, events, resources


def serve(settings: Settings, profiles: ProfileSet) -> None:
    """Serve /mutate over HTTPS until SIGTERM/SIGINT, then shut down gracefully."""
    check_tls_files(settings)
    log = configure(settings.log_format, settings.log_level)
    metrics = Metrics()
    assert settings.cert_file is not None
    metrics.cert_expiry.set(cert_not_after(settings.cert_file).timestamp())
    if settings.metrics_port:
        try:
            start_http_server(settings.metrics_port, addr=settings.host, registry=metrics.registry)
        except OSError as exc:
            raise ServeError(f"cannot serve metrics on {settings.host}:{settings.metrics_port}: {exc}") from None
    lifecycle = Lifecycle()
    store = ProfileStore(profiles)
    namespaces, events, resources = kubernetes_services(settings, metrics, store)
    background: list[Background] = [_running(service) for service in (namespaces, events, resources) if service is not None]
    if settings.reload:
        background.append(_reloading(settings, store, metrics, lambda: config.ssl))
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
            "metrics": f"http://{settings.host}:{settings.metrics_port}/metrics" if settings.metrics_port else "off",
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
        lifespan="on",
        # uvicorn takes whole seconds; rounding up never cuts an in-flight review short
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_seconds),
    )
    config.load()  # builds the SSLContext, which the reloader updates in place
    DrainingServer(config, lifecycle, settings.drain_seconds).run()
    log.info("stopped")
    logs.shutdown()  # write every queued line before the process ends (atexit would too)
