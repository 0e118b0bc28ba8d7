"""The HTTP edge: decode an AdmissionReview, call the core, encode the answer.

This is the only module that knows HTTP. Two error families, mapped here and only here:

* a bad *webhook request* (empty/undecodable body, wrong content type, wrong apiVersion or
  kind, missing ``request``, missing ``object`` on CREATE, body over the cap) is answered
  with an HTTP 4xx and a JSON ``{"error": ..., "details": [...]}``;
* a *refused pod* (strict mode) is a normal HTTP 200 AdmissionReview with
  ``allowed: false`` and a status.

``POST /mutate`` and ``POST /validate-profile`` are on the path of every pod creation
(and profile apply), so they are bare ASGI endpoints: each reads its own body (with a cap)
and writes its own response, with none of the per-request Request/Response/dependency
machinery, and the app's dispatcher (``webhook.app.WebhookApp``) hands them their requests
before any framework layer. Each step of an answer runs inside one guard that turns any
unexpected exception into a counted, logged JSON 500 (a third family: the webhook's own
bug). A large review is decoded and decided in a worker thread, one at a time, so health
checks and small admissions never wait behind it. The other routes are ordinary FastAPI
handlers.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from sidecar_injector.core.decide import decide, object_name
from sidecar_injector.core.decision import Decision
from sidecar_injector.core.inputs import NamespaceFacts, RequestContext
from sidecar_injector.core.memo import DecisionMemo
from sidecar_injector.profiles.catalog import Catalog, admission_problems
from sidecar_injector.profiles.loading import ProfileSet
from sidecar_injector.runtime import logs
from sidecar_injector.runtime.interfaces import (
    EventSink,
    NamespaceSource,
    NamespaceUnavailable,
    ProfileSource,
    ProfileStore,
)
from sidecar_injector.runtime.logs import get_logger
from sidecar_injector.runtime.metrics import Metrics
from sidecar_injector.runtime.settings import Settings
from sidecar_injector.webhook.admission import AdmissionRequest, AdmissionReview, review_response, validation_response
from sidecar_injector.webhook.scheduler import (
    HUGE_BODY_BYTES,
    HUGE_BODY_RATE,
    ByteBudget,
    LargeReviewWorkers,
    many_containers,
)

_JSON = "application/json"
_JSON_HEADERS = [(b"content-type", b"application/json")]


class BadWebhookRequest(Exception):
    """A request that is not a usable AdmissionReview; answered with ``status`` (4xx)."""

    def __init__(self, status: int, error: str, details: list[str] | None = None):
        super().__init__(error)
        self.status = status
        self.error = error
        self.details = details or []


class ClientGone(Exception):
    """The client disconnected before sending the whole body: there is no one to answer."""


def json_response(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=_JSON)


def _content_length(value: bytes | None) -> int | None:
    """The declared body size, or None (no Content-Length, or not a number: uvicorn's parser refuses those)."""
    return int(value) if value is not None and value.isdigit() else None


def _check_declared(declared: int | None, limit: int) -> None:
    """Refuse (413) a body whose Content-Length is over ``limit``, before reading any of it."""
    if declared is not None and declared > limit:
        raise BadWebhookRequest(413, f"request body is larger than {limit} bytes")


async def _read_body(receive: Receive, declared: int | None, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes whatever Content-Length says."""
    _check_declared(declared, limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BadWebhookRequest(413, f"request body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _parse_review(body: bytes, content_type: bytes | None) -> AdmissionReview:
    media_type = (content_type or b"").split(b";", 1)[0].strip().lower().decode("latin-1")
    if media_type != _JSON:
        raise BadWebhookRequest(415, f"content type must be {_JSON}, got {media_type or 'none'!r}")
    if not body.strip():
        raise BadWebhookRequest(400, "empty request body: expected an admission.k8s.io/v1 AdmissionReview")
    try:
        # orjson: strict UTF-8 and RFC 8259 (no NaN), nesting capped at 1024 levels
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadWebhookRequest(400, "request body is not valid JSON", [str(exc)[:300]]) from None
    try:
        return AdmissionReview.model_validate(data)
    except ValidationError as exc:
        details = []
        for err in exc.errors(include_url=False, include_input=False):
            loc = ".".join(str(p) for p in err["loc"]) or "body"
            details.append(f"{loc}: {err['msg']}")
        raise BadWebhookRequest(400, "request body is not an admission.k8s.io/v1 AdmissionReview", details[:20]) from None


class LargeReviews:
    """What the endpoints share for large reviews: the worker threads that read, decode and
    decide them one at a time (:class:`LargeReviewWorkers`) and the byte budget of huge ones."""

    def __init__(self, settings: Settings):
        self.limit = settings.large_body_bytes
        self.workers = LargeReviewWorkers(settings.large_body_workers)
        self.huge = ByteBudget(HUGE_BODY_RATE, burst=max(settings.max_body_bytes, HUGE_BODY_BYTES))

    def offloads(self, declared: int | None) -> bool:
        """Whether a body of ``declared`` bytes (None: unknown) is read and decoded by a worker."""
        return declared is None or declared > self.limit


class Exchange:
    """One review's request and answer: what the guard needs to answer it whatever happens."""

    __slots__ = ("answering", "body_bytes", "offloaded", "send", "started", "uid")

    def __init__(self, send: Send, offloaded: bool):
        self.send = send
        #: time.perf_counter() when the request reached the endpoint
        self.started = time.perf_counter()
        #: the review's uid, once decoded
        self.uid: str | None = None
        #: the body's size, once read
        self.body_bytes = 0
        #: whether a large-review worker reads, decodes (and decides) it
        self.offloaded = offloaded
        #: whether the answer has begun to go out (then nothing else can be sent)
        self.answering = False

    async def reply(self, body: bytes) -> None:
        """Send the JSON answer (200)."""
        self.answering = True
        await send_body(self.send, 200, body)


class _ReviewEndpoint:
    """An AdmissionReview endpoint: the body read and decoded (large ones by a worker) and
    answered by :meth:`answer`, all of it inside one guard: the API server always gets a JSON
    AdmissionReview, a JSON 4xx for a bad request, or a JSON 500 that is counted (in
    ``sidecar_injector_admission_requests{outcome="error"}``) and logged with the review's uid,
    never the framework's plain-text 500.
    """

    #: what the endpoint does, for its 500 and log line
    doing = "deciding"
    #: the log message of a bad request
    refused = "rejected webhook request"

    def __init__(self, settings: Settings, metrics: Metrics, large: LargeReviews | None = None):
        self.settings = settings
        self.metrics = metrics
        self.large = large or LargeReviews(settings)
        self.log = get_logger()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        declared = _content_length(headers.get(b"content-length"))
        # A large body (or one of unknown size) is read and decoded by one of the few large-review
        # workers. Until one is free the body stays unread (uvicorn stops reading the socket after
        # 64 KiB), so waiting reviews cost no memory; the connection's request deadline still runs.
        exchange = Exchange(send, self.large.offloads(declared))
        slots = self.large.workers.slots
        holding = False
        try:
            if exchange.offloaded:
                _check_declared(declared, self.settings.max_body_bytes)  # before waiting for a worker
                await slots.acquire()
                holding = True
            body = await _read_body(receive, declared, self.settings.max_body_bytes)
            exchange.body_bytes = len(body)
            content_type = headers.get(b"content-type")
            if exchange.offloaded:
                if len(body) >= HUGE_BODY_BYTES:
                    await self.large.huge.spend(len(body))
                review = await self.large.workers.run(_parse_review, body, content_type)
            else:
                review = _parse_review(body, content_type)
            del body  # a large body need not outlive its decoding
            exchange.uid = review.request.uid
            await self.answer(review.request, exchange)
        except ClientGone:
            return
        except BadWebhookRequest as exc:
            await _send_bad_request(send, exc, self.metrics, self.log, self.refused)
        except Exception:  # a bug, here or in what it calls: let the API server apply its failurePolicy
            self.log.exception("internal error while %s", self.doing, extra={"uid": exchange.uid or ""})
            await self._internal_error(exchange)
        finally:
            if holding:
                slots.release()

    async def answer(self, req: AdmissionRequest, exchange: Exchange) -> None:
        """Answer the decoded review (with :meth:`Exchange.reply`)."""
        raise NotImplementedError

    async def _internal_error(self, exchange: Exchange) -> None:
        """Count the failure and answer a JSON 500 (unless the answer had begun)."""
        try:
            self.metrics.observe_error()
        except Exception:  # the metrics themselves broken: the answer must still go out
            self.log.exception("internal error while counting an internal error", extra={"uid": exchange.uid or ""})
        if not exchange.answering:
            await _send(exchange.send, 500, {"error": f"internal error while {self.doing}; see the webhook's logs"})


class MutateEndpoint(_ReviewEndpoint):
    """``POST /mutate``: AdmissionReview in, AdmissionReview (or a 4xx/500 error) out."""

    def __init__(
        self,
        settings: Settings,
        store: ProfileStore,
        metrics: Metrics,
        namespaces: NamespaceSource | None = None,
        events: EventSink | None = None,
        profile_source: ProfileSource | None = None,
        large: LargeReviews | None = None,
    ):
        super().__init__(settings, metrics, large)
        self.store = store
        self.namespaces = namespaces
        self.events = events
        self.profile_source = profile_source
        #: the decisions of the event loop's admissions, remembered for the replicas of one template
        self.memo = DecisionMemo()

    async def _namespace(self, name: str | None) -> tuple[NamespaceFacts | None, bool]:
        """The namespace's facts, and whether reading them failed. From memory on the hot
        path; a miss makes one short GET in a worker thread, never on the event loop."""
        if self.namespaces is None or not name or name in self.settings.policy.never_inject_namespaces:
            return None, False
        facts = self.namespaces.cached(name)
        if facts is not None:
            return facts, False
        try:
            return await run_in_threadpool(self.namespaces.lookup, name), False
        except NamespaceUnavailable as exc:
            self.log.warning(
                "namespace not readable; deciding without its labels", extra={"namespace": name, "error": str(exc)}
            )
            return None, True

    async def answer(self, req: AdmissionRequest, exchange: Exchange) -> None:
        facts, unavailable = await self._namespace(req.namespace)
        # the namespace's SidecarProfiles, the cluster's and the injector's own (views built per change)
        profiles = self.store.current if self.profile_source is None else self.profile_source.profiles_for(req.namespace)
        # the body holds the object and a small envelope: an upper bound of the object's size
        context = req.context(facts, unavailable, object_bytes=exchange.body_bytes)
        if exchange.offloaded:
            decision, answer = await self.large.workers.run(self._decide, req, context, profiles)
        elif many_containers(req.object):
            async with self.large.workers.slots:
                decision, answer = await self.large.workers.run(self._decide, req, context, profiles)
        else:
            decision = self.memo.decide(req.object or {}, context, profiles, self.settings.policy, decider=decide)
            answer = orjson.dumps(review_response(req.uid, decision))

        if self.events is not None and req.namespace:
            self.events.record(decision, req.object, req.namespace, dry_run=req.dry_run)
        elapsed = time.perf_counter() - exchange.started
        self.metrics.observe_decision(decision, profiles, elapsed)
        if self.log.isEnabledFor(logging.INFO):
            logs.info(
                self.log,
                "admission decision",
                {
                    "uid": req.uid,
                    "namespace": req.namespace or "",
                    "pod": object_name(req.object),
                    "operation": req.operation,
                    "profiles": ",".join(decision.injected or decision.requested),
                    "outcome": decision.outcome,
                    "reason": decision.reason,
                    "dry_run": req.dry_run,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )
        await exchange.reply(answer)

    def _decide(self, req: AdmissionRequest, context: RequestContext, profiles: ProfileSet) -> tuple[Decision, bytes]:
        """The decision and the encoded AdmissionReview answer (in a worker thread for large reviews)."""
        decision = decide(req.object or {}, context, profiles, self.settings.policy)
        return decision, orjson.dumps(review_response(req.uid, decision))


class ValidateProfileEndpoint(_ReviewEndpoint):
    """``POST /validate-profile``: the validating webhook of SidecarProfile/ClusterSidecarProfile.

    Refuses a profile resource ``profiles validate`` would refuse, with the same lines
    (422 Invalid), so ``kubectl apply`` of a broken profile fails at once. The watcher
    judges every resource again anyway: the chart registers this webhook with
    ``failurePolicy: Ignore``, so profiles stay editable while the webhook is down. Large
    bodies are read, decoded and judged by the large-review workers, as at ``/mutate``.
    """

    doing = "validating"
    refused = "rejected profile validation request"

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        profile_source: ProfileSource | None = None,
        large: LargeReviews | None = None,
    ):
        super().__init__(settings, metrics, large)
        self.profile_source = profile_source

    async def answer(self, req: AdmissionRequest, exchange: Exchange) -> None:
        if req.operation not in ("CREATE", "UPDATE") or req.object is None:
            await exchange.reply(orjson.dumps(validation_response(req.uid, [])))
            return
        if exchange.offloaded:
            problems, warnings = await self.large.workers.run(self._judge, req)
        else:
            problems, warnings = self._judge(req)
        self.metrics.profile_validations.labels("refused" if problems else "accepted").inc()
        self.log.info(
            "profile validation",
            extra={
                "uid": req.uid,
                "kind": req.kind.kind,
                "namespace": req.namespace or "",
                "profile": object_name(req.object),
                "operation": req.operation,
                "allowed": not problems,
                "problems": "; ".join(problems)[:1000],
            },
        )
        await exchange.reply(orjson.dumps(validation_response(req.uid, problems, warnings)))

    def _judge(self, req: AdmissionRequest) -> tuple[list[str], list[str]]:
        """The profile resource's problems and warnings (in a worker thread for large reviews)."""
        obj = req.object or {}
        metadata = obj.get("metadata")
        if req.namespace and isinstance(metadata, dict) and not metadata.get("namespace"):
            obj = {**obj, "metadata": {**metadata, "namespace": req.namespace}}
        if self.profile_source is not None:
            problems, warnings = self.profile_source.admission_problems(obj)
        else:
            problems, warnings = admission_problems(obj, Catalog(), {}, namespaced_enabled=self.settings.namespaced_profiles)
        if problems and _spec_unchanged(req.operation, req.old_object, obj):
            # Validation ratchets, as Kubernetes' own does: an UPDATE that leaves the spec as it
            # was (labels, annotations, finalizers, owner references) cannot make the profile
            # worse, and refusing it would leave a resource that broke later (a rule added by an
            # upgrade, a cluster-level profile of its name created since) stuck, even for the
            # finalizer removal its deletion waits for. It is let through, the problems named.
            warnings = [*warnings, *(f"unchanged spec, still refused by the watcher: {p}" for p in problems)]
            problems = []
        return list(problems), list(warnings)


async def _send_bad_request(send: Send, exc: BadWebhookRequest, metrics: Metrics, log: logging.Logger, what: str) -> None:
    """Answer a bad webhook request with its 4xx and JSON error, counted and logged as ``what``."""
    metrics.observe_bad_request()
    log.warning(what, extra={"status": exc.status, "error": exc.error, "details": "; ".join(exc.details[:3])})
    # a 413 is sent before the body is read: close the connection rather than read the rest
    await _send(send, exc.status, {"error": exc.error, "details": exc.details}, close=exc.status == 413)


def _spec_unchanged(operation: str, old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether ``operation`` is an UPDATE that leaves the object's ``spec`` exactly as it was."""
    return operation == "UPDATE" and isinstance(old, dict) and "spec" in old and old.get("spec") == new.get("spec")


async def _send(send: Send, status: int, payload: dict[str, Any], *, close: bool = False) -> None:
    await send_body(send, status, orjson.dumps(payload), close=close)


async def send_body(send: Send, status: int, body: bytes, *, close: bool = False) -> None:
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
