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
import queue
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


class JsonFormatter(logging.Formatter):
    """A JSON object per line: time, level, logger, message and every ``extra`` field."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def _time(self, created: float, msecs: float) -> str:
        second = int(created)
        if second != self._second:  # strftime once per second, not once per line
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int(msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record.created, record.msecs),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """``time level message key=value ...`` for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        line = f"{self.formatTime(record)} {record.levelname:<7} {record.getMessage()}"
        if extras:
            line += " " + extras
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class LogQueue:
    """The queue between the loggers and the writer thread: a deque, and a wake-up for what is urgent.

    ``put_nowait`` (the only call :class:`logging.handlers.QueueHandler` makes) appends the
    record and returns: no lock, no thread switch. Routine records do not wake the writer,
    which drains the queue every ``interval`` seconds; a WARNING or worse (and the listener's
    stop sentinel) wakes it at once. Waking a thread per record, as ``queue.SimpleQueue``
    does, costs the event loop a thread switch on every admission: measured, that made the
    decision line dearer than writing it ourselves.

    Past ``max_pending`` queued records (the log stream is not keeping up, e.g. a full pipe),
    routine records are dropped and counted rather than growing memory without bound;
    warnings and errors are always kept. The writer reports the count as a warning.
    """

    def __init__(self, interval: float = 0.1, max_pending: int = 10_000):
        self.interval = interval
        self.max_pending = max_pending
        self.dropped = 0
        #: called by the reader each time it has emptied the queue, before it waits
        self.on_idle: Callable[[], None] = lambda: None
        self._records: collections.deque[logging.LogRecord | None] = collections.deque()
        self._wake = threading.Event()

    def put_nowait(self, record: logging.LogRecord | None) -> None:
        if record is None or record.levelno >= logging.WARNING:
            self._records.append(record)
            self._wake.set()
        elif len(self._records) < self.max_pending:
            self._records.append(record)
        else:
            self.dropped += 1

    def get(self, block: bool = True) -> logging.LogRecord | None:
        while True:
            try:
                return self._records.popleft()
            except IndexError:
                if not block:
                    raise queue.Empty from None
            self.on_idle()
            self._wake.wait(self.interval)
            self._wake.clear()

    def get_nowait(self) -> logging.LogRecord | None:
        return self.get(block=False)

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

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
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
        dropped, self.log_queue.dropped = self.log_queue.dropped, 0
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


def configure(log_format: str, level: str, stream: TextIO | None = None) -> logging.Logger:
    """Send the package's logs (and uvicorn's) to stderr in the chosen format.

    A log call only queues its record (:class:`RecordQueueHandler`); a writer thread
    (:class:`LogListener`) formats and writes them in batches. :func:`shutdown` (also run
    at exit) writes what is still queued. Also turns off what every record would otherwise
    collect and no line of ours prints (caller frame, thread and process names): the
    logging HOWTO's own "Optimization" advice, worth a third of a decision line's cost on
    the admission path.
    """
    global _listener
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
    handler = RecordQueueHandler(log_queue)
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
    global _listener
    listener, _listener = _listener, None
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
