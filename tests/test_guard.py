"""The connection guard (webhook/guard.py) in-process: uvicorn with the guarded protocol on
loopback, plain HTTP, small limits, and an app whose "decision" the test holds or releases.

What is checked is behaviour — which connection is closed, which is answered, and why the
guard says it closed one — never how fast: every wait is bounded by a generous timeout.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sidecar_injector.webhook import guard
from sidecar_injector.webhook.guard import ConnectionLimits, UnsupportedUvicorn, check_uvicorn, guarded

WAIT = 10.0
CAP = 4


@dataclass
class Held:
    """The app: ``POST /hold`` reads its body and waits for ``release`` before answering
    (a decision that takes long); ``POST /late-read`` waits for ``release`` before reading its
    body; everything else reads its body and answers at once."""

    release: threading.Event = field(default_factory=threading.Event)
    holding: int = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/late-read":
            await self._wait()
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/hold":
            self.holding += 1
            await self._wait()
        answer = b"got %d" % len(body)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(answer))]})
        await send({"type": "http.response.body", "body": answer})

    async def _wait(self) -> None:
        await asyncio.to_thread(self.release.wait, WAIT)


@dataclass
class Served:
    port: int
    app: Held
    closed: list[str]  # why the guard closed connections, in order

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)

    def request(self, path: str = "/ok", body: bytes = b"{}") -> bytes:
        """A whole request on a new connection; the answer (b"" when closed without one)."""
        with self.connect() as sock:
            sock.sendall(head(path, len(body)) + body)
            return read_all(sock)


def head(path: str, length: int, *, close: bool = True) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n" % (
        path.encode(),
        b"Connection: close\r\n" if close else b"",
        length,
    )


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        except TimeoutError:
            pytest.fail(f"the connection stayed open for {WAIT}s (got {data!r})")
        if not chunk:
            return data
        data += chunk


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (waiting up to WAIT for it)."""
    return read_all(sock) == b""


def serve(**limits: Any) -> Iterator[Served]:
    values = {"max_header_bytes": 8192, "header_timeout": 5.0, "request_timeout": 30.0, "max_connections": CAP}
    protocol = guarded(ConnectionLimits(**{**values, **limits}), "test")
    closed: list[str] = []
    protocol.listener.count = closed.append  # type: ignore[method-assign]
    app = Held()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    config = uvicorn.Config(app, http=protocol, lifespan="off", log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    try:
        yield Served(sock.getsockname()[1], app, closed)
    finally:
        app.release.set()
        server.should_exit = True
        thread.join(WAIT)
        sock.close()


@pytest.fixture
def served() -> Iterator[Served]:
    yield from serve()


def wait_for(what: str, condition: Any) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.01)


# --------------------------------------------------------------------------- the cap


def test_the_caps_worth_of_stalled_bodies_cannot_keep_admissions_out(served: Served) -> None:
    """Each attacker's connection announces 100 KB, sends 10 bytes of it and stalls, and the
    attacker opens a new one whenever one is closed: every admission still gets in, each
    closing the stalled body that has gone longest without a byte."""
    stalled: list[socket.socket] = []

    def stall() -> None:
        sock = served.connect()
        sock.sendall(head("/mutate", 100_000) + b"x" * 10)
        stalled.append(sock)

    try:
        for _ in range(CAP):
            stall()
        time.sleep(0.1)
        for i in range(2 * CAP):
            answer = served.request(body=b"{}")
            assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"got 2"), (i, answer)
            stall()  # the cap is full again
            time.sleep(0.05)
        for sock in stalled[: 2 * CAP]:  # the oldest were closed for the admissions, in order
            assert closed_by_server(sock)
        assert served.closed == ["stalled body, closed for a new connection"] * (2 * CAP)
    finally:
        for sock in stalled:
            sock.close()


def test_the_connection_longest_without_a_byte_is_closed_first(served: Served) -> None:
    socks = [served.connect() for _ in range(CAP)]
    try:
        for sock in socks:
            sock.sendall(head("/mutate", 1000) + b"x")
        time.sleep(0.05)
        socks[0].sendall(b"y")  # the oldest sends a byte: now socks[1] is the longest without one
        time.sleep(0.05)
        assert served.request().endswith(b"got 2")
        assert closed_by_server(socks[1])
        socks[0].sendall(b"z" * 998)  # the rest of its body: it was left alone
        assert read_all(socks[0]).endswith(b"got 1000")
    finally:
        for sock in socks:
            sock.close()


def test_an_idle_connection_is_closed_before_a_request_being_decided(served: Served) -> None:
    busy = [served.connect() for _ in range(CAP - 1)]
    idle = served.connect()
    try:
        for sock in busy:
            sock.sendall(head("/hold", 2) + b"{}")
        wait_for("the requests are being decided", lambda: served.app.holding == CAP - 1)
        assert served.request("/ok").endswith(b"got 2")  # got in: the idle one made room
        assert closed_by_server(idle)
        served.app.release.set()
        for sock in busy:
            assert read_all(sock).endswith(b"got 2")
        assert served.closed == ["idle, closed for a new connection"]
    finally:
        for sock in [*busy, idle]:
            sock.close()


def test_a_complete_request_being_decided_is_never_closed_for_a_newcomer(served: Served) -> None:
    busy = [served.connect() for _ in range(CAP)]
    try:
        for sock in busy:
            sock.sendall(head("/hold", 2) + b"{}")
        wait_for("the requests are being decided", lambda: served.app.holding == CAP)
        assert served.request("/ok") == b""  # closed at once: every connection is busy
        served.app.release.set()
        for sock in busy:
            assert read_all(sock).endswith(b"got 2")
        assert served.closed == ["over the connection cap"]
    finally:
        for sock in busy:
            sock.close()


# --------------------------------------------------------------------------- deadlines


def test_a_stalled_body_is_cut_off_at_its_own_deadline_before_the_requests() -> None:
    """Deadline: header_timeout + announced size / min_body_rate (here 0.2 s + 1 s), the request's 30 s."""
    for served in serve(header_timeout=0.2, min_body_rate=1000):
        with served.connect() as sock:
            sock.sendall(head("/mutate", 1000) + b"x" * 10)
            assert closed_by_server(sock)
        wait_for("the guard counted it", lambda: served.closed)  # noqa: B023
        assert served.closed == ["body timed out"]


def test_a_body_of_unknown_size_must_keep_coming() -> None:
    for served in serve(header_timeout=0.3, min_body_rate=1000):
        with served.connect() as sock:
            sock.sendall(b"POST /mutate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            assert closed_by_server(sock)
        wait_for("the guard counted it", lambda: served.closed)  # noqa: B023
        assert served.closed == ["body timed out"]


def test_a_body_the_app_has_not_read_yet_is_not_the_clients_delay() -> None:
    """A large review waits for a worker before its body is read (uvicorn stops reading after
    64 KiB): that wait is held to the request's deadline, not the body's."""
    for served in serve(header_timeout=0.2, min_body_rate=1_000_000, request_timeout=WAIT):
        body = b"x" * 300_000
        with served.connect() as sock:
            sock.sendall(head("/late-read", len(body)) + body)
            time.sleep(1.0)  # well past the body's deadline (0.2 s + 0.3 s)
            served.app.release.set()
            assert read_all(sock).endswith(b"got 300000")
        assert served.closed == []


def test_a_slow_decision_is_a_request_timeout_not_no_request() -> None:
    for served in serve(request_timeout=0.3):
        with served.connect() as sock:
            sock.sendall(head("/hold", 2) + b"{}")
            assert closed_by_server(sock)
        wait_for("the guard counted it", lambda: served.closed)  # noqa: B023
        assert served.closed == ["request timed out"]


def test_a_connection_that_sends_nothing_is_no_request() -> None:
    for served in serve(header_timeout=0.3):
        with served.connect() as sock:
            assert closed_by_server(sock)
        wait_for("the guard counted it", lambda: served.closed)  # noqa: B023
        assert served.closed == ["no request in time"]


# --------------------------------------------------------------------------- the uvicorn it relies on


def test_the_installed_uvicorn_has_what_the_guard_relies_on() -> None:
    check_uvicorn()


def test_a_uvicorn_without_a_method_the_guard_overrides_fails_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(HttpToolsProtocol, "on_response_complete")
    with pytest.raises(UnsupportedUvicorn, match=r"HttpToolsProtocol\.on_response_complete\(\).*uvicorn>=0\.54,<0\.55"):
        guarded(ConnectionLimits(8192, 5.0, 10.0, 8))


def test_a_uvicorn_without_an_attribute_the_guard_reads_fails_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    original = HttpToolsProtocol.__init__

    def renamed(self: Any, *args: Any, **kwargs: Any) -> None:  # sets no .pipeline
        original(self, *args, **kwargs)

    monkeypatch.setattr(HttpToolsProtocol, "__init__", renamed)
    with pytest.raises(UnsupportedUvicorn) as raised:
        guard.check_uvicorn()
    assert "HttpToolsProtocol.pipeline" in str(raised.value) and "HttpToolsProtocol.cycle" in str(raised.value)


# --------------------------------------------------------------------------- one write per answer


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> str:
        return f"info {name}"


def test_an_answer_goes_out_in_one_write() -> None:
    async def scenario() -> Transport:
        transport = Transport()
        answers = guard.OneWriteAnswers(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
        answers.write(b"HTTP/1.1 200 OK\r\n\r\n")
        assert transport.writes == []  # held for its body
        answers.write(b"body")
        assert transport.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
        await asyncio.sleep(0)
        assert transport.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]  # nothing written twice
        assert answers.get_extra_info("peername") == "info peername"  # the rest is the transport's
        return transport

    asyncio.run(scenario())


def test_a_head_whose_body_does_not_follow_goes_out_at_the_end_of_the_turn_or_at_close() -> None:
    async def scenario() -> None:
        transport = Transport()
        answers = guard.OneWriteAnswers(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
        answers.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await asyncio.sleep(0)
        assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
        answers.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")  # a HEAD answer: no body write
        answers.close()
        assert transport.writes[1:] == [b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"] and transport.closed
        await asyncio.sleep(0)
        assert len(transport.writes) == 2

    asyncio.run(scenario())


def test_bodies_queued_for_the_app_cannot_fill_the_cap() -> None:
    """A body over 64 KiB that the app does not read yet (a large review waiting for a worker):
    uvicorn stops reading it, and it ages like a stalled body, so such bodies cannot fill the cap."""
    for served in serve(request_timeout=WAIT):
        body = b"x" * 300_000
        queued = served.connect()
        queued.sendall(head("/late-read", len(body)) + body)  # read paused after 64 KiB
        time.sleep(0.3)
        idle = [served.connect() for _ in range(CAP - 1)]  # newer than the queued body's last byte
        time.sleep(0.1)
        try:
            assert served.request().endswith(b"got 2")
            assert closed_by_server(queued)  # the oldest: closed for the newcomer
            assert served.closed == ["stalled body, closed for a new connection"]
        finally:
            for sock in [queued, *idle]:
                sock.close()


def test_a_body_the_app_takes_up_again_counts_as_new() -> None:
    """When the app reads a body uvicorn had stopped reading, the connection becomes the newest
    for the cap (the wait was the app's), once per pause."""

    class Paused:
        def pause_reading(self) -> None: ...

        def resume_reading(self) -> None: ...

    resumed: list[str] = []

    class Connection:
        def _resumed(self) -> None:
            resumed.append("resumed")

    connection = Connection()
    flow = guard._ResumeNoticed(Paused(), connection)  # type: ignore[arg-type]
    flow.resume_reading()
    assert resumed == []  # was not paused
    flow.pause_reading()
    flow.resume_reading()
    flow.resume_reading()
    assert resumed == ["resumed"] and not flow.read_paused
