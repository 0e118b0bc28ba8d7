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
* a **body deadline**: a request's body must have arrived ``header_timeout`` seconds after
  its headers plus a second per ``min_body_rate`` bytes it announced (or, without a
  Content-Length, has sent so far); then the connection is dropped. A body left unread
  because the app stopped reading it (a large review waiting for a worker: uvicorn pauses
  reading after 64 KiB) is the app's wait, not the client's: it is only held to the
  request deadline;
* a **request deadline**: from a request's headers to the end of its answer — reading the
  body, deciding, writing the answer to a client that may read slowly — at most
  ``request_timeout`` seconds (then the connection is dropped; the handler sees a
  disconnect);
* a **connection cap**: when a connection is made while ``max_connections`` are open, the
  one that has gone longest without sending a byte (or being answered) while it waits for
  a request, sends its headers or sends its body is closed to make room; a connection
  whose request is complete — being decided, or its answer being written — is never
  closed for a newcomer. If every connection is such, the new one is closed at once
  instead. Idle connections and stalled bodies, however many an attacker opens, thus never
  lock out a client that sends its request. A body the app had stopped reading counts as
  new when the app takes it up again (:class:`_ResumeNoticed`); one still waiting for a
  worker ages like any other, so bodies queued for a worker cannot fill the cap either.

It also writes each answer's head and body in one write (:class:`OneWriteAnswers`): over TLS
that is one record and one system call per answer instead of two.

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
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

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
    """What the connections of one listening socket share: who may be closed for a newcomer,
    what has a deadline, and what was closed.

    Deadlines are checked by one sweep every ``SWEEP_SECONDS`` over the connections that
    have one, rather than by a timer per request: a request then costs a float and a set
    entry instead of two timers (measured in-process: the guard adds ~2 µs to a request, timers ~3.5).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        #: connections waiting for a request or sending one (head or body), the longest without a byte first
        self.stallable: dict[GuardedHttpToolsProtocol, None] = {}
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
    #: connections open at once: at the cap a new one closes the one longest without a byte
    #: that is not busy with a complete request (or itself, when all are busy)
    max_connections: int
    #: bytes per second a body must arrive at, beyond ``header_timeout``: its deadline after the
    #: headers is header_timeout + announced size / min_body_rate (never past the request's)
    min_body_rate: float = 64 * 1024


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`ConnectionLimits` (one subclass per listener: :func:`guarded`)."""

    limits: ClassVar[ConnectionLimits]  # both set by guarded()
    listener: ClassVar[_Listener]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: loop time by which the current phase (head, body, or request) must be over; 0: none
        self.deadline = 0.0
        self._in_head = True  # reading a request line and headers (or waiting for a request)
        self._head_bytes = 0  # bytes of the current request head fed to the parser so far
        self._message_complete = True  # False from a request's headers to the end of its body
        self._refused = False
        self._stallable = False  # in listener.stallable: may be closed for a newcomer
        self._request_deadline = 0.0  # loop time by which the current request must be answered
        self._body_started = 0.0  # loop time of the current request's headers
        self._body_bytes = 0  # bytes of its body received after the data its headers came with

    # -- the connection ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self.connections) >= self.limits.max_connections and not self._evict_one():
            self._refused = True
            self.transport = transport  # type: ignore[assignment]
            transport.abort()  # type: ignore[attr-defined]
            self.listener.count("over the connection cap")
            return
        super().connection_made(transport)  # type: ignore[arg-type]
        self._answers = OneWriteAnswers(transport, self.loop)  # type: ignore[arg-type]
        self.flow = _ResumeNoticed(transport, self)  # type: ignore[arg-type]
        self._arm(self.limits.header_timeout)
        self._stall()

    def connection_lost(self, exc: Exception | None) -> None:
        self.deadline = 0.0
        self._unstall()
        self.listener.timed.discard(self)
        if not self._refused:
            super().connection_lost(exc)

    def _stall(self) -> None:
        """Join (or rejoin) the connections that may be closed for a newcomer, as the newest."""
        stallable = self.listener.stallable
        if self._stallable:
            del stallable[self]
        stallable[self] = None
        self._stallable = True

    def _unstall(self) -> None:
        if self._stallable:
            del self.listener.stallable[self]
            self._stallable = False

    def _resumed(self) -> None:
        """The app reads the body again (after uvicorn paused reading it): the connection's wait
        was the app's, so it counts as the newest, as if a byte had just come."""
        if self._stallable:
            self._stall()

    def _evict_one(self) -> bool:
        """Close the connection longest without a byte that is waiting for or sending a request; False if none is."""
        stallable = self.listener.stallable
        if not stallable:
            return False
        oldest = next(iter(stallable))
        idle = oldest._message_complete
        oldest._unstall()
        oldest.deadline = 0.0
        oldest.transport.abort()
        self.listener.count("idle, closed for a new connection" if idle else "stalled body, closed for a new connection")
        return True

    def data_received(self, data: bytes) -> None:
        if self._refused or self.transport.is_closing():
            return
        if self._stallable:
            self._stall()  # a byte: the newest of those that may be closed for a newcomer
        if not self._message_complete:
            self._body_bytes += len(data)  # a body of unknown size is allowed time for what it sent
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
        self._message_complete = False  # still stallable, until the body is complete
        now = self.loop.time()
        self._request_deadline = now + self.limits.request_timeout
        self._body_started = now
        self._body_bytes = 0
        # The body's first deadline is its minimum, header_timeout: most bodies come with their
        # headers, and the whole deadline (which reads the Content-Length) is worked out at that
        # deadline, off the admission path.
        self.deadline = min(self._request_deadline, now + self.limits.header_timeout)
        self.listener.time(self)
        super().on_headers_complete()
        self.cycle.transport = self._answers  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        self._message_complete = True
        self._in_head = True  # a pipelined request may follow; its head is counted from 0
        self._head_bytes = 0
        self._unstall()  # complete: being decided, never closed for a newcomer
        if self.deadline:
            self.deadline = self._request_deadline
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self.deadline = 0.0
        if not self._message_complete and not self.transport.is_closing():
            # answered before the whole body arrived (413, say): do not go on reading it
            self.transport.close()
        elif self._in_head and not self.pipeline:
            self._stall()  # idle again: the newest of those that may be closed for a newcomer
        super().on_response_complete()

    # -- the deadline --------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self.deadline = self.loop.time() + seconds
        self.listener.time(self)

    def _body_deadline(self) -> float:
        """When the current request's body must be complete (never after the request's deadline):
        header_timeout after its headers, plus the time its announced size (or, without a
        Content-Length, what it has sent so far) takes at ``min_body_rate``."""
        declared = _declared_length(self.headers)
        size = self._body_bytes if declared is None else declared
        allowed = self.limits.header_timeout + size / self.limits.min_body_rate
        return min(self._request_deadline, self._body_started + allowed)

    def expired(self) -> None:
        """The deadline passed (called by the listener's sweep)."""
        self.deadline = 0.0
        if self.transport.is_closing():
            return
        if not self._message_complete:  # the body is not all there
            now = self.loop.time()
            if now < self._request_deadline:
                if self.flow.read_paused:
                    # the app stopped reading it (a large review waiting for a worker): its wait, not the client's
                    self.deadline = self._request_deadline
                    self.listener.time(self)
                    return
                deadline = self._body_deadline()
                if now < deadline:  # the first, minimal deadline: the body's own is later
                    self.deadline = deadline
                    self.listener.time(self)
                    return
            self.transport.abort()
            self.listener.count("body timed out")
        elif self.cycle is not None and not self.cycle.response_complete:
            self.transport.abort()  # a request too slow to answer (deciding, or a client reading the answer slowly)
            self.listener.count("request timed out")
        elif self._head_bytes:
            self._answer_and_close(_408)  # a client that sent part of a request hears why
            self.listener.count("headers timed out")
        else:
            self.transport.abort()
            self.listener.count("no request in time")


class _ResumeNoticed(FlowControl):
    """uvicorn's flow control of a connection, telling the connection when its reading resumes.

    uvicorn stops reading a body when more than 64 KiB of it wait for the app (a large review
    queued for a worker) and resumes when the app reads it. No byte comes meanwhile, but that
    wait is the app's: on resuming, the connection counts as the newest for the cap, so the
    review the app has just taken up is not the first one closed for a newcomer.
    """

    def __init__(self, transport: asyncio.Transport, connection: GuardedHttpToolsProtocol):
        super().__init__(transport)
        # weak: a reference cycle would keep each closed connection (and its TLS buffers) in
        # memory until a full collection (measured: +18 MB per 500 idle connections)
        self._connection = weakref.ref(connection)

    def resume_reading(self) -> None:
        if self.read_paused and (connection := self._connection()) is not None:
            connection._resumed()
        super().resume_reading()


class OneWriteAnswers:
    """The transport a request's answer is written to: one write per answer instead of two.

    uvicorn writes a response's head as soon as the app sends ``http.response.start`` and its
    body at ``http.response.body``: over TLS each write is a TLS record of its own, encrypted
    and sent with a system call of its own. Here the head is held until the body follows
    (an endpoint sends both back to back) and both go out in one write; a head whose body
    does not follow in the same turn of the event loop goes out at the end of that turn.
    Everything else is the connection's transport.
    """

    __slots__ = ("_held", "_loop", "_transport", "_turn")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._turn: asyncio.Handle | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            self._held = data
            self._turn = self._loop.call_soon(self._flush)
            return
        self._held = None
        self._turn.cancel()  # type: ignore[union-attr]
        self._transport.write(held + data)

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length of a request's headers (lower-cased names, as uvicorn keeps them), or None."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class UnsupportedUvicorn(RuntimeError):
    """The installed uvicorn lacks internals the guard relies on (pyproject.toml pins the tested release)."""


#: what the guard uses of uvicorn's internals, which no release promises to keep: the methods
#: it overrides or calls, and the attributes it reads, by the class whose ``__init__`` sets them
_UVICORN_METHODS = {
    HttpToolsProtocol: (
        "connection_made",
        "connection_lost",
        "data_received",
        "on_headers_complete",
        "on_message_complete",
        "on_response_complete",
    ),
    FlowControl: ("resume_reading",),
}
_UVICORN_ATTRIBUTES = {
    HttpToolsProtocol: ("connections", "cycle", "flow", "headers", "loop", "pipeline", "transport"),
    RequestResponseCycle: ("response_complete",),
    FlowControl: ("read_paused",),
}


def check_uvicorn() -> None:
    """Raise :class:`UnsupportedUvicorn` naming what is missing, when the installed uvicorn lacks
    a method or attribute the guard relies on (checked at start-up, by :func:`guarded`)."""
    missing = [
        f"{cls.__name__}.{name}()"
        for cls, names in _UVICORN_METHODS.items()
        for name in names
        if not callable(getattr(cls, name, None))
    ]
    for cls, names in _UVICORN_ATTRIBUTES.items():
        init = getattr(vars(cls).get("__init__"), "__code__", None)
        assigned = set(init.co_names) if init is not None else set()  # attribute names __init__ uses
        missing += [f"{cls.__name__}.{name}" for name in names if name not in assigned]
    if missing:
        import uvicorn

        raise UnsupportedUvicorn(
            f"uvicorn {uvicorn.__version__} lacks what the connection guard relies on: {', '.join(missing)}; "
            "install the release pyproject.toml pins (uvicorn>=0.54,<0.55)"
        )


def guarded(limits: ConnectionLimits, name: str = "https") -> type[GuardedHttpToolsProtocol]:
    """A protocol class for uvicorn's ``http=`` with these limits, for one listening socket (``name`` in logs).

    Raises :class:`UnsupportedUvicorn` when the installed uvicorn lacks what the guard relies on.
    """
    check_uvicorn()
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
