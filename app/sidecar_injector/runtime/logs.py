"""Logging setup: one line per event, JSON or text, written off the request path.

Log calls put their records on a queue (the stdlib ``QueueHandler``); one writer thread (a
``QueueListener``) formats them and writes them in batches, so an admission never waits for
the log stream. Warnings and errors are written at once, routine lines within
``LogQueue.interval``; everything queued is written at exit.
"""

from __future__ import annotations

import atexit
import collections
import logging
import logging.handlers
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

import orjson

LOGGER_NAME = "sidecar_injector"
#: the loggers configure() routes: the package's and uvicorn's
LOGGERS = (LOGGER_NAME, "uvicorn", "uvicorn.error")
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a call passed with ``extra=``, in the order given."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


#: what never reaches a log line as is: C0 and C1 control characters and DEL (newlines that
#: would forge a line, terminal escapes), Unicode line/paragraph separators, and the
#: bidirectional controls that make text display in another order than it reads
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NEEDS_QUOTES = re.compile(r'[\s"=\\]|' + _UNSAFE.pattern)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(value: str) -> str:
    """``value`` with every control character written as an escape (``\\n``, ``\\x1b``, ``\\u2028``).

    Log values come from pods and requests (a ``generateName`` is not validated before
    admission): whatever they hold, a log line stays one line that reads as written.
    """
    return _UNSAFE.sub(_escaped, value) if _UNSAFE.search(value) else value


def _text_value(value: Any) -> str:
    """A value for ``key=value``: as is when plain, else quoted (``"a b"``), so no value passes for more fields."""
    text = value if isinstance(value, str) else str(value)
    if text and not _NEEDS_QUOTES.search(text):
        return text
    return '"' + escape_controls(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


def _msecs(created: float) -> float:
    return int((created - int(created)) * 1000) + 0.0  # as LogRecord computes it


class LineFormatter(logging.Formatter):
    """One line from its parts: a LogRecord's, or a :class:`DeferredRecord`'s without building a record."""

    def format(self, record: logging.LogRecord) -> str:
        exception = self.formatException(record.exc_info) if record.exc_info else None
        return self.line(
            record.created, record.msecs, record.levelname, record.name, record.getMessage(), _extras(record), exception
        )

    def format_deferred(self, record: DeferredRecord) -> str:
        return self.line(record.created, _msecs(record.created), "INFO", record.name, record.message, record.fields, None)

    def line(
        self,
        created: float,
        msecs: float,
        levelname: str,
        name: str,
        message: str,
        fields: dict[str, Any],
        exception: str | None,
    ) -> str:
        raise NotImplementedError


class JsonFormatter(LineFormatter):
    """A JSON object per line: time, level, logger, message and every ``extra`` field (control characters escaped)."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def _time(self, created: float, msecs: float) -> str:
        second = int(created)
        if second != self._second:  # strftime once per second, not once per line
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int(msecs):03d}Z"

    def line(
        self,
        created: float,
        msecs: float,
        levelname: str,
        name: str,
        message: str,
        fields: dict[str, Any],
        exception: str | None,
    ) -> str:
        entry: dict[str, Any] = {
            "time": self._time(created, msecs),
            "level": levelname.lower(),
            "logger": name,
            "message": message,
        }
        entry.update(fields)
        if exception:
            entry["exception"] = exception
        text = orjson.dumps(entry, default=str).decode()
        if text.isascii() and "\\" not in text and "\x7f" not in text:
            return text  # nothing to escape (orjson writes every control character as an escape)
        entry["message"] = escape_controls(message)
        for key, value in fields.items():
            if isinstance(value, str):
                entry[key] = escape_controls(value)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(LineFormatter):
    """``time level message key=value ...`` for people reading a terminal.

    Values with spaces, quotes, ``=`` or control characters are quoted, control characters
    escaped: one record is one line, and each ``key=value`` is what it seems.
    """

    def line(
        self,
        created: float,
        msecs: float,
        levelname: str,
        name: str,
        message: str,
        fields: dict[str, Any],
        exception: str | None,
    ) -> str:
        # what the stdlib's default formatTime() prints, from the parts
        stamp = f"{time.strftime('%Y-%m-%d %H:%M:%S', self.converter(created))},{int(msecs):03d}"
        line = f"{stamp} {levelname:<7} {escape_controls(message)}"
        if fields:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        if exception:
            line += "\n" + exception
        return line


class DeferredRecord:
    """A routine line whose :class:`logging.LogRecord` is built on the writer thread.

    What :func:`info` queues instead of a record: the time, the logger's name, the message
    and the fields, nothing else. The listener turns it into the record ``logger.info(message,
    extra=fields)`` would have made (same name, level, time and fields), so both formats
    print it exactly like any other line.
    """

    __slots__ = ("created", "fields", "message", "name")
    levelno = logging.INFO

    def __init__(self, created: float, name: str, message: str, fields: dict[str, Any]):
        self.created = created
        self.name = name
        self.message = message
        self.fields = fields

    def to_record(self) -> logging.LogRecord:
        record = logging.makeLogRecord({"name": self.name, "msg": self.message, "levelno": logging.INFO})
        record.levelname = "INFO"
        record.created = self.created
        record.msecs = _msecs(self.created)
        record.__dict__.update(self.fields)
        return record


_LEVELS = frozenset({logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL})
#: log records dropped by every queue of this process, by level (debug, info, warning, error, critical)
_dropped_totals: dict[str, int] = {}
_totals_lock = threading.Lock()


def dropped_lines() -> dict[str, int]:
    """Log records dropped so far in this process because the log stream was not keeping up, by level."""
    with _totals_lock:
        return dict(_dropped_totals)


class LogQueue:
    """The queue between the loggers and the writer thread: a deque, and a wake-up for what is urgent.

    ``put_nowait`` (the only call :class:`logging.handlers.QueueHandler` makes) appends the
    record and returns: no lock, no thread switch. Routine records do not wake the writer,
    which drains the queue every ``interval`` seconds; a WARNING or worse (and the listener's
    stop sentinel) wakes it at once. Waking a thread per record, as ``queue.SimpleQueue``
    does, costs the event loop a thread switch on every admission: measured, that made the
    decision line dearer than writing it ourselves.

    Every level is bounded (the log stream not keeping up, e.g. a full pipe, or a flood of
    warnings some client can cause: every 4xx logs one): past ``max_pending`` queued
    records routine ones are dropped, and past ``max_pending + urgent_reserve`` warnings and
    errors too, so memory never grows without bound while warnings outlast a flood of
    routine lines. Drops are counted under a lock (records come from the event loop and
    from the informer, event and status threads at once): :attr:`dropped` for the writer's
    next warning line, :func:`dropped_lines` for the metric, by level.
    """

    def __init__(self, interval: float = 0.1, max_pending: int = 10_000, urgent_reserve: int = 1_000):
        self.interval = interval
        self.max_pending = max_pending
        self.urgent_reserve = urgent_reserve
        self.dropped = 0
        self._drop_lock = threading.Lock()
        #: the reader pauses for yield_seconds after taking this many records in a row
        self.yield_every = 16
        self.yield_seconds = 0.0001
        self._taken = 0
        #: called by the reader each time it has emptied the queue, before it waits
        self.on_idle: Callable[[], None] = lambda: None
        self._records: collections.deque[logging.LogRecord | DeferredRecord | None] = collections.deque()
        self._wake = threading.Event()

    def put_nowait(self, record: logging.LogRecord | DeferredRecord | None) -> None:
        if record is None:  # the listener's stop sentinel
            self._records.append(record)
            self._wake.set()
        elif record.levelno >= logging.WARNING:
            if len(self._records) < self.max_pending + self.urgent_reserve:
                self._records.append(record)
            else:
                self._count_drop(record.levelno)
            self._wake.set()
        elif len(self._records) < self.max_pending:
            self._records.append(record)
        else:
            self._count_drop(record.levelno)

    def _count_drop(self, levelno: int) -> None:
        level = logging.getLevelName(levelno).lower() if levelno in _LEVELS else "other"
        with self._drop_lock:
            self.dropped += 1
        with _totals_lock:
            _dropped_totals[level] = _dropped_totals.get(level, 0) + 1

    def take_dropped(self) -> int:
        """The drops since the last call (for the writer's warning line), atomically reset."""
        with self._drop_lock:
            dropped, self.dropped = self.dropped, 0
        return dropped

    def get(self, block: bool = True) -> logging.LogRecord | DeferredRecord | None:
        """The next record, waiting for one (the listener only ever asks with ``block=True``)."""
        while True:
            try:
                record = self._records.popleft()
            except IndexError:
                pass
            else:
                self._taken += 1
                if self._taken % self.yield_every == 0:
                    # Step aside for a moment so that a waiting event loop gets the GIL now, not
                    # after the whole batch (or the interpreter's 5 ms switch interval). Measured
                    # at one connection: batches formatted in one go doubled the p99 latency;
                    # sleep(0) did not help (this thread takes the GIL straight back); 0.1 ms
                    # per 16 lines brought it back to that of a server logging nothing.
                    time.sleep(self.yield_seconds)
                return record
            self.on_idle()
            self._wake.wait(self.interval)
            self._wake.clear()

    def __len__(self) -> int:
        return len(self._records)


class RecordQueueHandler(logging.handlers.QueueHandler):
    """Puts the record itself on the queue: formatting happens on the writer thread.

    The stdlib's ``prepare`` formats the record and copies it first (so that it can be
    pickled to another process); here the queue stays in the process, and an admission
    pays only for building the record and appending it. Call sites pass immutable values
    (strings, numbers) in ``extra`` and ``args``, so formatting later shows what was logged.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class BatchingStreamHandler(logging.StreamHandler[TextIO]):
    """The writer thread's handler: lines collect in memory and go out in one write.

    Used only by the listener's thread, so nothing on the request path ever waits for a
    write. The listener flushes it whenever the queue is empty; a WARNING or worse and
    ``max_bytes`` of pending text flush at once as well.
    """

    def __init__(self, stream: TextIO, max_bytes: int = 64 * 1024):
        super().__init__(stream)
        self.max_bytes = max_bytes
        self._pending: list[str] = []
        self._size = 0

    def emit(self, record: logging.LogRecord | DeferredRecord) -> None:
        try:
            if isinstance(record, DeferredRecord):
                formatter = self.formatter
                if isinstance(formatter, LineFormatter):
                    line = formatter.format_deferred(record) + self.terminator
                else:
                    line = self.format(record := record.to_record()) + self.terminator
            else:
                line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record if isinstance(record, logging.LogRecord) else record.to_record())
            return
        self._pending.append(line)
        self._size += len(line)
        if record.levelno >= logging.WARNING or self._size >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._size = 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # stream closed or broken: nothing better to do
            pass


class LogListener(logging.handlers.QueueListener):
    """The stdlib listener on a :class:`LogQueue`, flushing its handlers whenever it has emptied the queue."""

    def __init__(self, log_queue: LogQueue, *handlers: logging.Handler):
        super().__init__(log_queue, *handlers)
        self.log_queue = log_queue
        log_queue.on_idle = self.flush

    def flush(self) -> None:
        self._report_dropped()
        for handler in self.handlers:
            handler.flush()

    def _report_dropped(self) -> None:
        dropped = self.log_queue.take_dropped()
        if dropped:
            self.handle(
                logging.makeLogRecord(
                    {
                        "name": LOGGER_NAME,
                        "levelno": logging.WARNING,
                        "levelname": "WARNING",
                        "msg": "log lines dropped: the log stream was not keeping up",
                        "dropped": dropped,
                    }
                )
            )

    def stop(self) -> None:
        """Write everything queued, then end the thread (idempotent)."""
        if self._thread is not None:
            super().stop()
            self.flush()


_listener: LogListener | None = None
_handler: RecordQueueHandler | None = None


def info(logger: logging.Logger, message: str, fields: dict[str, Any]) -> None:
    """``logger.info(message, extra=fields)``, for the line every admission writes.

    When :func:`configure` routes ``logger`` to the writer thread (and nothing else), the
    caller only queues the time and the fields: building the LogRecord, like formatting it,
    happens on the writer thread. Measured in the benchmark, the Python logging machinery
    on the event loop cost more than a tenth of the server's CPU per admission. Otherwise
    (logging not configured, other handlers attached, e.g. by tests) it is ``logger.info``.
    ``fields`` must not be changed after the call.
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    handlers = logger.handlers
    if _handler is None or len(handlers) != 1 or handlers[0] is not _handler or logger.filters or logger.disabled:
        logger.info(message, extra=fields)
        return
    _handler.queue.put_nowait(DeferredRecord(time.time(), logger.name, message, fields))


def configure(log_format: str, level: str, stream: TextIO | None = None) -> logging.Logger:
    """Send the package's logs (and uvicorn's) to stderr in the chosen format.

    A log call only queues its record (:class:`RecordQueueHandler`); a writer thread
    (:class:`LogListener`) formats and writes them in batches. :func:`shutdown` (also run
    at exit) writes what is still queued. Also turns off what every record would otherwise
    collect and no line of ours prints (caller frame, thread and process names): the
    logging HOWTO's own "Optimization" advice, worth a third of a decision line's cost on
    the admission path.
    """
    global _listener, _handler
    logging._srcfile = None  # no sys._getframe() walk per record
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    shutdown()  # a second configure() replaces the first one's writer
    writer = BatchingStreamHandler(stream if stream is not None else sys.stderr)
    writer.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    log_queue = LogQueue()
    _listener = LogListener(log_queue, writer)
    _listener.start()
    _handler = handler = RecordQueueHandler(log_queue)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    return logging.getLogger(LOGGER_NAME)


def shutdown() -> None:
    """Stop the writer thread after it has written everything queued.

    Anything logged afterwards is written at once, line by line, in the same format (the
    process is ending: nothing waits on it any more). Safe to call more than once.
    """
    global _listener, _handler
    listener, _listener, _handler = _listener, None, None
    if listener is None:
        return
    listener.stop()
    [writer] = listener.handlers
    direct = logging.StreamHandler(writer.stream if isinstance(writer, logging.StreamHandler) else sys.stderr)
    direct.setFormatter(writer.formatter)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [direct if isinstance(h, RecordQueueHandler) else h for h in logger.handlers]


atexit.register(shutdown)


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)
