"""Logging setup: one line per event, JSON or text."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, TextIO

import orjson

LOGGER_NAME = "sidecar_injector"
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


class BatchingStreamHandler(logging.StreamHandler[TextIO]):
    """A StreamHandler that writes routine lines in batches instead of one syscall each.

    INFO/DEBUG lines (one per admission decision) are collected and written together at
    most ``interval`` seconds later (by a small daemon thread) or as soon as ``max_bytes``
    have piled up; a WARNING or worse writes everything at once, and so does closing the
    handler (``logging.shutdown`` at exit). At worst a killed process loses the last
    ``interval`` of routine lines — never a warning or an error.
    """

    def __init__(self, stream: TextIO, interval: float = 0.1, max_bytes: int = 64 * 1024):
        super().__init__(stream)
        self.interval = interval
        self.max_bytes = max_bytes
        self._pending: list[str] = []
        self._size = 0
        self._stopped = threading.Event()
        threading.Thread(target=self._flush_periodically, name="log-flusher", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._pending.append(line)
        self._size += len(line)
        if record.levelno >= logging.WARNING or self._size >= self.max_bytes:
            self._write_pending()

    def _write_pending(self) -> None:
        if self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            self._size = 0
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):  # stream closed or broken: nothing better to do
                pass

    def flush(self) -> None:
        self.acquire()  # Handler.lock is created in __init__; acquire/release handle it being None
        try:
            self._write_pending()
        finally:
            self.release()

    def _flush_periodically(self) -> None:
        while not self._stopped.wait(self.interval):
            self.flush()

    def close(self) -> None:
        self._stopped.set()
        self.flush()
        super().close()


def configure(log_format: str, level: str) -> logging.Logger:
    """Send the package's logs (and uvicorn's) to stderr in the chosen format.

    Also turns off what every record would otherwise collect and no line of ours prints
    (caller frame, thread and process names): the logging HOWTO's own "Optimization"
    advice, worth a third of a decision line's cost on the admission path.
    """
    logging._srcfile = None  # no sys._getframe() walk per record
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BatchingStreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    for name in (LOGGER_NAME, "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        for old in logger.handlers:
            if isinstance(old, BatchingStreamHandler):
                old.close()
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    return logging.getLogger(LOGGER_NAME)


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)
