"""The HTTP edge: decode an AdmissionReview, call the core, encode the answer.

This is the only module that knows HTTP. Two error families, mapped here and only here:

* a bad *webhook request* (empty/undecodable body, wrong content type, wrong apiVersion or
  kind, missing ``request``, missing ``object`` on CREATE, body over the cap) is answered
  with an HTTP 4xx and a JSON ``{"error": ..., "details": [...]}``;
* a *refused pod* (strict mode) is a normal HTTP 200 AdmissionReview with
  ``allowed: false`` and a status.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import ValidationError

from app.admission import AdmissionReview, review_response
from app.injection import Decision, decide
from app.logs import get_logger
from app.profiles import ProfileSet
from app.settings import Settings

_JSON = "application/json"


class BadWebhookRequest(Exception):
    """A request that is not a usable AdmissionReview; answered with ``status`` (4xx)."""

    def __init__(self, status: int, error: str, details: list[str] | None = None):
        super().__init__(error)
        self.status = status
        self.error = error
        self.details = details or []


@dataclass
class ProfileStore:
    """The profiles the server answers with; replaced as a whole, never mutated."""

    current: ProfileSet


def _json_response(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status_code=status, media_type=_JSON)


def _error_response(exc: BadWebhookRequest) -> Response:
    return _json_response({"error": exc.error, "details": exc.details}, exc.status)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadWebhookRequest(413, f"request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadWebhookRequest(413, f"request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_review(body: bytes, content_type: str | None) -> AdmissionReview:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != _JSON:
        raise BadWebhookRequest(415, f"content type must be {_JSON}, got {media_type or 'none'!r}")
    if not body.strip():
        raise BadWebhookRequest(400, "empty request body: expected an admission.k8s.io/v1 AdmissionReview")
    try:
        return AdmissionReview.model_validate_json(body)
    except ValidationError as exc:
        details = []
        for err in exc.errors(include_url=False, include_input=False):
            loc = ".".join(str(p) for p in err["loc"]) or "body"
            details.append(f"{loc}: {err['msg']}")
        if any(err["type"] == "json_invalid" for err in exc.errors()):
            error = "request body is not valid JSON"
        else:
            error = "request body is not an admission.k8s.io/v1 AdmissionReview"
        raise BadWebhookRequest(400, error, details[:20]) from None


def _pod_label(pod: dict[str, Any] | None) -> str:
    metadata = pod.get("metadata") if isinstance(pod, dict) else None
    if not isinstance(metadata, dict):
        return ""
    name = metadata.get("name") or metadata.get("generateName") or ""
    return name if isinstance(name, str) else ""


def create_app(settings: Settings, profiles: ProfileSet) -> FastAPI:
    """The webhook application, answering with ``profiles`` and ``settings``."""
    app = FastAPI(title="sidecar-injector", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.profiles = ProfileStore(profiles)
    log = get_logger()

    @app.post("/mutate")
    async def mutate(request: Request) -> Response:
        started = time.perf_counter()
        try:
            body = await _read_body(request, settings.max_body_bytes)
            review = _parse_review(body, request.headers.get("content-type"))
        except BadWebhookRequest as exc:
            log.warning(
                "rejected webhook request",
                extra={"status": exc.status, "error": exc.error, "details": "; ".join(exc.details[:3])},
            )
            return _error_response(exc)

        req = review.request
        try:
            decision: Decision = decide(req.object or {}, req.context(), app.state.profiles.current, settings)
        except Exception:  # a bug in the core: let the API server apply its failurePolicy
            log.exception("internal error while deciding", extra={"uid": req.uid})
            return _json_response({"error": "internal error while deciding; see the webhook's logs"}, 500)

        log.info(
            "admission decision",
            extra={
                "uid": req.uid,
                "namespace": req.namespace or "",
                "pod": _pod_label(req.object),
                "operation": req.operation,
                "profiles": ",".join(decision.injected or decision.requested),
                "outcome": decision.outcome,
                "reason": decision.reason,
                "dry_run": req.dry_run,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            },
        )
        return _json_response(review_response(req.uid, decision))

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json_response({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        current = app.state.profiles.current
        return _json_response({"status": "ready", "profiles": current.names()})

    return app
