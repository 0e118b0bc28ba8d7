"""Connection limits uvicorn does not have, as a thin layer over its HTTP protocol.

uvicorn's ``httptools`` protocol reads a request's headers without a size limit (a 96 MB
header took 19 s, quadratic in its size, and stalled everything else), has no deadline
for a request's headers or body (slowloris connections and idle connections that never
send a request stay open for ever) and accepts any number of connections. Its own knobs
do not cover this: ``timeout_keep_alive`` only runs between requests and is cancelled by
the first byte of the next one, ``limit_concurrency`` answers 503 to *requests* but never
closes an idle connection, and ``h11_max_incomplete_event_size`` belongs to the much
slower pure-Python h11 parser. So :class:`GuardedHttpToolsProtocol` adds, per connection:

* a **header size cap**: the request line and headers may take ``max_header_bytes``; one
  byte more and the answer is ``431 Request Header Fields Too Large`` and the connection
  closes (the parser is never fed past the cap);
* a **header deadline**: a connection's first request must have sent its whole request
  line and headers ``header_timeout`` seconds after the TLS handshake, and a later request
  on a keep-alive connection that long after its first byte (408, then close);
* a **request deadline**: from a request's headers to the end of its answer — reading the
  body, deciding, writing the answer to a client that may read slowly — at most
  ``request_timeout`` seconds (then the connection is dropped; the handler sees a
  disconnect);
* a **connection cap**: when a connection is made while ``max_connections`` are open, the
  one that has waited longest for a request (idle since its handshake or since its last
  answer, or still sending its headers) is closed to make room; if every connection is
  busy with a request, the new one is closed at once instead. Idle connections, however
  many an attacker opens, thus never lock out a client that sends its request.

Closed connections are counted and summed up in a warning at most every
``REPORT_SECONDS``, so an attack shows in the logs without flooding them.

Between requests uvicorn's ``timeout_keep_alive`` still closes idle keep-alive connections.
The TLS handshake itself is bounded by :func:`loop_factory`, which gives every TLS server
socket a handshake and shutdown timeout (uvicorn passes neither to the event loop, whose
default lets a connection that never finishes its handshake stay for 60 s).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sidecar_injector.runtime.logs import LOGGER_NAME

_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\ncontent-length: 36\r\nconnection: close\r\n\r\n"
    b"request line and headers are too big"
)
_408 = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\ncontent-length: 33\r\nconnection: close\r\n\r\n"
    b"request headers were not complete"
)


#: at most one warning about closed connections per this many seconds
REPORT_SECONDS = 10.0
#: how often deadlines are checked: a deadline is met up to this much late
SWEEP_SECONDS = 0.25


class _Listener:
    """What the connections of one listening socket share: who is waiting, what has a
    deadline, and what was closed.

    Deadlines are checked by one sweep every ``SWEEP_SECONDS`` over the connections that
    have one, rather than by a timer per request: a request then costs a float and a set
    entry instead of two timers (measured in-process: the guard adds ~2 µs to a request, timers ~3.5).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        #: connections waiting for a request (or still sending its head), oldest first
        self.waiting: dict[GuardedHttpToolsProtocol, None] = {}
        #: connections that may have a deadline (those whose deadline passed or was cleared leave at the next sweep)
        self.timed: set[GuardedHttpToolsProtocol] = set()
        self.closed: Counter[str] = Counter()
        self._reported = 0.0
        self._sweeping = False

    def time(self, connection: GuardedHttpToolsProtocol) -> None:
        """Have ``connection``'s deadline checked from now on."""
        self.timed.add(connection)
        if not self._sweeping:
            self._sweeping = True
            connection.loop.call_later(SWEEP_SECONDS, self._sweep, connection.loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for connection in list(self.timed):
            deadline = connection.deadline
            if not deadline:
                self.timed.discard(connection)
            elif now >= deadline:
                self.timed.discard(connection)
                connection.expired()
        if self.timed:
            loop.call_later(SWEEP_SECONDS, self._sweep, loop)
        else:
            self._sweeping = False

    def count(self, why: str) -> None:
        self.closed[why] += 1
        now = time.monotonic()
        if now - self._reported >= REPORT_SECONDS:
            self._reported = now
            logging.getLogger(LOGGER_NAME).warning(
                "closed connections that broke the limits",
                extra={"listener": self.name, **{why.replace(" ", "_"): n for why, n in sorted(self.closed.items())}},
            )
            self.closed.clear()


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits one listening socket applies to each of its connections (their defaults are the settings')."""

    #: request line + headers, in bytes (431 above)
    max_header_bytes: int
    #: seconds for a request's line and headers (from the handshake, or from the request's first byte)
    header_timeout: float
    #: seconds from a request's headers to the end of its answer (body read, decision, answer written)
    request_timeout: float
    #: connections open at once: at the cap a new one closes the longest-idle one (or itself, when all are busy)
    max_connections: int


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`ConnectionLimits` (one subclass per listener: :func:`guarded`)."""

    limits: ClassVar[ConnectionLimits]  # both set by guarded()
    listener: ClassVar[_Listener]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: loop time by which the current phase (head, or request) must be over; 0: none
        self.deadline = 0.0
        self._in_head = True  # reading a request line and headers (or waiting for a request)
        self._head_bytes = 0  # bytes of the current request head fed to the parser so far
        self._message_complete = True
        self._refused = False

    # -- the connection ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self.connections) >= self.limits.max_connections and not self._evict_one():
            self._refused = True
            self.transport = transport  # type: ignore[assignment]
            transport.abort()  # type: ignore[attr-defined]
            self.listener.count("over the connection cap")
            return
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm(self.limits.header_timeout)
        self.listener.waiting[self] = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.deadline = 0.0
        self.listener.waiting.pop(self, None)
        self.listener.timed.discard(self)
        if not self._refused:
            super().connection_lost(exc)

    def _evict_one(self) -> bool:
        """Close the connection that has waited longest for a request; False if none is waiting."""
        waiting = self.listener.waiting
        if not waiting:
            return False
        oldest = next(iter(waiting))
        del waiting[oldest]
        oldest.deadline = 0.0
        oldest.transport.abort()
        self.listener.count("idle, closed for a new connection")
        return True

    def data_received(self, data: bytes) -> None:
        if self._refused or self.transport.is_closing():
            return
        while self._in_head:
            if not self.deadline:  # the first byte of a request on a keep-alive connection
                self._arm(self.limits.header_timeout)
            room = self.limits.max_header_bytes - self._head_bytes
            if len(data) <= room:
                self._head_bytes += len(data)
                super().data_received(data)
                return
            # Feed only what the cap allows; if the head ends in there, go on with the rest.
            head, data = data[:room], data[room:]
            self._head_bytes += len(head)
            if head:
                super().data_received(head)
            if self.transport.is_closing():
                return
            if self._in_head:
                self._answer_and_close(_431)
                self.listener.count("headers too large")
                return
        super().data_received(data)

    def _answer_and_close(self, answer: bytes) -> None:
        """Answer ``answer`` (a whole response, Connection: close) unless a response is under way, and close."""
        self.deadline = 0.0
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(answer)
            self.transport.close()
        else:
            self.transport.abort()

    # -- the request ---------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._message_complete = False
        self.listener.waiting.pop(self, None)
        self._arm(self.limits.request_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._message_complete = True
        self._in_head = True  # a pipelined request may follow; its head is counted from 0
        self._head_bytes = 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self.deadline = 0.0
        if not self._message_complete and not self.transport.is_closing():
            # answered before the whole body arrived (413, say): do not go on reading it
            self.transport.close()
        elif self._in_head and not self.pipeline:
            self.listener.waiting[self] = None  # idle again: the newest of the waiting
        super().on_response_complete()

    # -- the deadline --------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self.deadline = self.loop.time() + seconds
        self.listener.time(self)

    def expired(self) -> None:
        """The deadline passed (called by the listener's sweep)."""
        self.deadline = 0.0
        if self.transport.is_closing():
            return
        if not self._in_head:
            self.transport.abort()  # a request too slow to finish (body, decision or reading the answer)
            self.listener.count("request timed out")
        elif self._head_bytes and (self.cycle is None or self.cycle.response_complete):
            self._answer_and_close(_408)  # a client that sent part of a request hears why
            self.listener.count("headers timed out")
        else:
            self.transport.abort()
            self.listener.count("no request in time")


def guarded(limits: ConnectionLimits, name: str = "https") -> type[GuardedHttpToolsProtocol]:
    """A protocol class for uvicorn's ``http=`` with these limits, for one listening socket (``name`` in logs)."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits, "listener": _Listener(name)})


def loop_factory(kind: str, tls_timeout: float) -> Callable[[], asyncio.AbstractEventLoop]:
    """An event loop (``uvloop`` or ``asyncio``) whose TLS servers time out handshakes and shutdowns.

    ``tls_timeout`` bounds both the handshake of a new connection and the wait for the
    peer's close_notify when a connection is closed (default 60 s and 30 s).
    """
    base: type[asyncio.AbstractEventLoop]
    if kind == "uvloop":
        import uvloop

        base = uvloop.Loop
    else:
        base = asyncio.SelectorEventLoop

    class TimedTLSLoop(base):  # type: ignore[valid-type,misc]
        async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.AbstractServer:
            if kwargs.get("ssl") is not None:
                kwargs.setdefault("ssl_handshake_timeout", tls_timeout)
                kwargs.setdefault("ssl_shutdown_timeout", tls_timeout)
            return await super().create_server(*args, **kwargs)

    return TimedTLSLoop
