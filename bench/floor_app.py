"""The FLOOR for the benchmark: the least a Python webhook on this stack can do.

A bare ASGI app — no framework, no validation, no logging — that reads the request body,
parses it with ``json.loads`` and answers ``allowed: true`` for the review's uid. Served by
``bench/floor_server.py`` with exactly the uvicorn settings and TLS the real server uses, it
measures what uvicorn + TLS + HTTP parsing + JSON decoding cost on this machine, so the app's
numbers can be read as a ratio to it. ``GET /healthz`` answers ``{"status":"ok"}`` for the
readiness wait.
"""

from __future__ import annotations

import json

_JSON_HEADERS = [(b"content-type", b"application/json")]


async def _send(send, status: int, payload: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return

    chunks = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)

    path, method = scope["path"], scope["method"]
    if path == "/mutate" and method == "POST":
        try:
            uid = json.loads(b"".join(chunks))["request"]["uid"]
        except (ValueError, KeyError, TypeError):
            await _send(send, 400, b'{"error":"not an AdmissionReview"}')
            return
        answer = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": uid, "allowed": True},
        }
        await _send(send, 200, json.dumps(answer, separators=(",", ":")).encode())
    elif path == "/healthz" and method == "GET":
        await _send(send, 200, b'{"status":"ok"}')
    else:
        await _send(send, 404, b'{"error":"not found"}')
