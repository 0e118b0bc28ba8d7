"""The webhook application: the FastAPI app with its endpoints, health and readiness; the metrics app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import make_asgi_app
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sidecar_injector.profiles.loading import ProfileSet
from sidecar_injector.runtime.interfaces import (
    Background,
    EventSink,
    Lifecycle,
    NamespaceSource,
    ProfileSource,
    ProfileStore,
)
from sidecar_injector.runtime.metrics import Metrics
from sidecar_injector.runtime.settings import Settings
from sidecar_injector.webhook.endpoints import (
    LargeReviews,
    MutateEndpoint,
    ValidateProfileEndpoint,
    json_response,
    send_body,
)

#: how long the app waits for its background jobs to stop at shutdown
_BACKGROUND_STOP_SECONDS = 2.0


class WebhookApp:
    """The outermost ASGI callable: admissions straight to their endpoints, the rest to FastAPI.

    ``POST /mutate`` and ``POST /validate-profile`` are on the path of every pod creation
    (and profile apply), so they reach their bare endpoints before any framework layer:
    no ServerErrorMiddleware, FastAPI middlewares or router wrapping ``send`` (their frames
    cost about a sixth of an admission's CPU). The endpoints answer their own errors (a JSON
    500 at worst). Every other request, the lifespan included, goes to :attr:`framework`,
    where the two routes stay registered so that other methods get their 405.
    """

    def __init__(self, framework: FastAPI, admissions: dict[str, ASGIApp]):
        self.framework = framework
        self._admissions = admissions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self._admissions.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.framework(scope, receive, send)


def create_app(
    settings: Settings,
    profiles: ProfileStore | ProfileSet,
    *,
    metrics: Metrics | None = None,
    lifecycle: Lifecycle | None = None,
    namespaces: NamespaceSource | None = None,
    events: EventSink | None = None,
    profile_source: ProfileSource | None = None,
    background: Sequence[Background] = (),
) -> WebhookApp:
    """The webhook application, answering with ``profiles`` and ``settings``.

    ``profiles`` is the store the server's reloader swaps sets into (a plain profile set
    gets a store of its own). ``metrics`` and ``lifecycle`` are shared with the server that
    runs the app (metrics port, graceful shutdown); by default the app gets its own.
    ``namespaces`` gives the namespaces' labels/annotations (else the core decides without
    them), ``events`` receives each decision for a Kubernetes Event, ``profile_source`` gives
    each namespace's profiles with the profile resources (and validates those at
    ``/validate-profile``; readiness waits for their first list), and each ``background``
    job runs for the app's lifespan (started before the first request, stopped after the
    last one).
    """
    store = profiles if isinstance(profiles, ProfileStore) else ProfileStore(profiles)
    metrics = metrics or Metrics()
    lifecycle = lifecycle or Lifecycle()
    metrics.profiles_loaded.set(len(store.current))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = [asyncio.create_task(job(stop)) for job in background]
        try:
            yield
        finally:
            stop.set()
            if tasks:
                _done, pending = await asyncio.wait(tasks, timeout=_BACKGROUND_STOP_SECONDS)
                for task in pending:
                    task.cancel()

    app = FastAPI(
        title="sidecar-injector",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        # FastAPI's built-in OpenTelemetry hooks check for providers on every request; the
        # webhook is on the pod-creation path and reports through its own logs instead.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    large = LargeReviews(settings)  # the two endpoints take turns with their large reviews
    admissions: dict[str, ASGIApp] = {
        "/mutate": MutateEndpoint(settings, store, metrics, namespaces, events, profile_source, large),
        "/validate-profile": ValidateProfileEndpoint(settings, metrics, profile_source, large),
    }
    for path, endpoint in admissions.items():
        app.router.routes.append(Route(path, endpoint, methods=["POST"]))

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz")
    async def readyz(request: Request) -> Response:
        if lifecycle.draining:
            return json_response({"status": "draining"}, 503)
        verbose = "verbose" in request.query_params
        failing = lifecycle.failing_jobs()
        if failing:  # a broken replica leaves the Service (a dead reloader: before its certificate expires)
            return json_response({"status": "failing", "failingJobs": failing if verbose else sorted(failing)}, 503)
        body: dict[str, Any] = {"status": "ready", "profiles": store.current.names()}
        if verbose:
            body["backgroundJobs"] = lifecycle.job_states()
        if namespaces is not None:
            body["namespaceCache"] = "synced" if namespaces.synced else "syncing (cache misses read the API)"
        if profile_source is not None:
            # a new replica must not answer without the tenants' profiles (bounded: see readiness())
            ready, body["profileResources"] = profile_source.readiness()
            if not ready:
                return json_response({"status": "waiting", "profileResources": body["profileResources"]}, 503)
        if store.error:
            # still ready: the last good profiles answer correctly; the problem is reported here
            # (and in the sidecar_injector_profiles_reload_error metric) for whoever edits them
            body["profilesError"] = store.error
        return json_response(body)

    return WebhookApp(app, admissions)


def metrics_app(metrics: Metrics) -> ASGIApp:
    """The metrics port's application: ``GET /metrics`` (Prometheus' text format), 404 on every other path."""
    exposition = make_asgi_app(metrics.registry)
    not_found = b'{"error":"not found: the metrics are at /metrics"}'

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/metrics" and scope["method"] in ("GET", "HEAD"):
            await exposition(scope, receive, send)
        else:
            await send_body(send, 404, not_found)

    return app
