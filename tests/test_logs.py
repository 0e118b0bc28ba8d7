"""Log lines: one per event, JSON (machine) or text (people), extras included."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
import threading

import pytest

from sidecar_injector.runtime import logs
from sidecar_injector.runtime.logs import (
    LOGGER_NAME,
    LOGGERS,
    BatchingStreamHandler,
    JsonFormatter,
    LogListener,
    LogQueue,
    RecordQueueHandler,
    TextFormatter,
    configure,
)
from waiting import wait_until


@pytest.fixture
def restore_logging():
    """configure() rewires global loggers: put them back for the tests that follow."""
    saved = {
        n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level, logging.getLogger(n).propagate) for n in LOGGERS
    }
    yield
    logs.shutdown()
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def _record(**extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord(
        {"name": "sidecar_injector", "levelno": logging.INFO, "levelname": "INFO", "msg": "admission decision", "args": ()}
    )
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_the_message_level_time_and_every_extra_field():
    line = JsonFormatter().format(_record(uid="u-1", outcome="injected", duration_ms=0.42))
    entry = json.loads(line)
    assert entry["message"] == "admission decision"
    assert entry["level"] == "info"
    assert entry["uid"] == "u-1" and entry["outcome"] == "injected" and entry["duration_ms"] == 0.42
    assert entry["time"].endswith("Z")
    assert "\n" not in line


def test_json_lines_include_the_traceback_of_an_error():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = _record()
        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in entry["exception"]


def test_text_lines_show_extras_as_key_value_pairs():
    line = TextFormatter().format(_record(uid="u-2", outcome="skipped"))
    assert "admission decision" in line and "uid=u-2" in line and "outcome=skipped" in line


class BlockingStream(io.StringIO):
    """A log stream whose writes wait until released: a full pipe, a stuck log collector."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.released = threading.Event()

    def write(self, text: str) -> int:
        self.entered.set()
        if not self.released.wait(30):
            raise OSError("never released")
        return super().write(text)


def _pipeline(stream: io.StringIO, interval: float = 0.05, max_pending: int = 10_000) -> tuple[logging.Logger, LogListener]:
    """A logger -> queue -> writer thread -> stream chain like configure() builds, on its own logger."""
    log_queue = LogQueue(interval=interval, max_pending=max_pending)
    writer = BatchingStreamHandler(stream)
    writer.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    listener = LogListener(log_queue, writer)
    listener.start()
    logger = logging.getLogger(f"test-logs-{id(listener)}")
    logger.handlers[:] = [RecordQueueHandler(log_queue)]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, listener


def test_configure_chooses_the_format_and_level(restore_logging):
    stream = io.StringIO()
    logger = configure("json", "WARNING", stream=stream)
    logger.info("hidden")
    logger.warning("shown", extra={"status": 400})
    wait_until(lambda: "shown" in stream.getvalue(), "the warning is written")
    logs.shutdown()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [entry["message"] for entry in lines] == ["shown"]
    assert lines[0]["status"] == 400 and lines[0]["level"] == "warning"


def test_uvicorns_loggers_are_routed_through_the_same_writer_and_format(restore_logging):
    stream = io.StringIO()
    configure("text", "INFO", stream=stream)
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    logging.getLogger(LOGGER_NAME).info("admission decision", extra={"outcome": "injected"})
    logs.shutdown()
    text_lines = stream.getvalue().splitlines()
    assert "INFO    Started server process [42]" in text_lines[0]
    assert "admission decision outcome=injected" in text_lines[1]
    for name in LOGGERS:
        assert logging.getLogger(name).propagate is False


def test_routine_lines_are_written_by_the_writer_thread_without_further_logging():
    stream = io.StringIO()
    logger, listener = _pipeline(stream, interval=0.05)
    try:
        logger.info("one")
        logger.info("two")
        wait_until(lambda: "two" in stream.getvalue(), "the writer thread writes the queued lines")
        assert stream.getvalue() == "INFO one\nINFO two\n"
    finally:
        listener.stop()


def test_a_warning_wakes_the_writer_and_is_written_with_the_lines_before_it_in_order():
    stream = io.StringIO()
    logger, listener = _pipeline(stream, interval=3600)  # routine lines alone would wait an hour
    try:
        logger.info("one")
        logger.info("two")
        logger.warning("three")
        wait_until(lambda: "three" in stream.getvalue(), "the warning is written without waiting for the interval")
        assert stream.getvalue() == "INFO one\nINFO two\nWARNING three\n"
    finally:
        listener.stop()


def test_stopping_writes_everything_still_queued():
    stream = io.StringIO()
    logger, listener = _pipeline(stream, interval=3600)
    for n in range(500):
        logger.info("line %d", n)
    listener.stop()
    assert stream.getvalue().splitlines() == [f"INFO line {n}" for n in range(500)]
    listener.stop()  # idempotent


def test_a_log_call_never_waits_for_a_stuck_stream():
    stream = BlockingStream()
    logger, listener = _pipeline(stream)
    logger.warning("first")  # the writer takes it and blocks in write()
    assert stream.entered.wait(30), "the writer thread never wrote"
    returned = threading.Event()

    def log_more() -> None:
        for n in range(100):
            logger.info("routine %d", n)
        logger.error("an error")
        returned.set()

    thread = threading.Thread(target=log_more, daemon=True)
    thread.start()
    try:
        assert returned.wait(30), "logging blocked behind the stuck stream"
    finally:
        stream.released.set()
        listener.stop()
    lines = stream.getvalue().splitlines()
    assert lines == ["WARNING first", *(f"INFO routine {n}" for n in range(100)), "ERROR an error"]


def test_past_the_queue_cap_routine_lines_are_dropped_counted_and_reported_but_warnings_kept():
    stream = BlockingStream()
    log_queue = LogQueue(interval=0.05, max_pending=5)
    writer = BatchingStreamHandler(stream)
    writer.setFormatter(JsonFormatter())
    listener = LogListener(log_queue, writer)
    listener.start()
    logger = logging.getLogger("test-logs-cap")
    logger.handlers[:] = [RecordQueueHandler(log_queue)]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.warning("stuck")
        assert stream.entered.wait(30)
        for n in range(20):
            logger.info("routine %d", n)
        logger.warning("kept")
        assert len(log_queue) == 6 and log_queue.dropped == 15
    finally:
        stream.released.set()
        listener.stop()
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["message"] for e in entries[:7]] == ["stuck", *(f"routine {n}" for n in range(5)), "kept"]
    assert entries[7]["message"] == "log lines dropped: the log stream was not keeping up"
    assert entries[7]["level"] == "warning" and entries[7]["dropped"] == 15


def test_after_shutdown_lines_are_still_written_directly(restore_logging):
    stream = io.StringIO()
    logger = configure("text", "INFO", stream=stream)
    logs.shutdown()
    logs.shutdown()  # idempotent
    logger.info("late line")
    assert "late line" in stream.getvalue()


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_nothing_queued_is_lost_when_the_process_exits(log_format):
    program = textwrap.dedent(
        f"""
        from sidecar_injector.runtime.logs import configure
        log = configure({log_format!r}, "INFO")
        for n in range(2000):
            log.info("decision %d", n, extra={{"uid": n}})
        log.warning("last words")
        """
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=True)
    lines = result.stderr.splitlines()
    assert len(lines) == 2001, result.stderr[-2000:]
    if log_format == "json":
        assert [json.loads(line)["uid"] for line in lines[:-1]] == list(range(2000))
        assert json.loads(lines[-1])["message"] == "last words"
    else:
        assert all(f"decision {n} uid={n}" in line for n, line in enumerate(lines[:-1]))


def _json_entries(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_deferred_info_line_prints_exactly_like_logger_info(restore_logging):
    stream = io.StringIO()
    logger = configure("json", "INFO", stream=stream)
    fields = {"uid": "u-1", "outcome": "injected", "dry_run": False, "duration_ms": 0.42}
    logs.info(logger, "admission decision", fields)
    logger.info("admission decision", extra=fields)
    logs.shutdown()
    deferred, direct = _json_entries(stream)
    assert deferred.pop("time") <= direct.pop("time")  # the time it was logged, not the time it was written
    assert (
        deferred
        == direct
        == {
            "level": "info",
            "logger": LOGGER_NAME,
            "message": "admission decision",
            "uid": "u-1",
            "outcome": "injected",
            "dry_run": False,
            "duration_ms": 0.42,
        }
    )


def test_deferred_info_lines_keep_their_order_among_other_lines_and_the_time_they_were_logged(restore_logging):
    stream = io.StringIO()
    logger = configure("text", "INFO", stream=stream)
    logger.info("before")
    logs.info(logger, "admission decision", {"uid": "u-2"})
    logger.warning("after")
    logs.shutdown()
    lines = stream.getvalue().splitlines()
    fields = [line.split(None, 3) for line in lines]  # date, time, level, message and extras
    assert [f[3] for f in fields] == ["before", "admission decision uid=u-2", "after"]
    assert [f[2] for f in fields] == ["INFO", "INFO", "WARNING"]
    assert fields[0][:2] <= fields[1][:2] <= fields[2][:2]  # the deferred line carries the time it was logged


def test_deferred_info_respects_the_level(restore_logging):
    stream = io.StringIO()
    logger = configure("json", "WARNING", stream=stream)
    logs.info(logger, "admission decision", {"uid": "u-3"})
    logs.shutdown()
    assert stream.getvalue() == ""


def test_deferred_info_without_configure_or_with_other_handlers_is_logger_info(caplog):
    logger = logging.getLogger("test-logs-plain")
    with caplog.at_level(logging.INFO, logger="test-logs-plain"):
        logs.info(logger, "admission decision", {"uid": "u-4"})
    [record] = caplog.records
    assert record.getMessage() == "admission decision" and record.uid == "u-4"


def test_text_lines_start_with_the_stdlib_time_stamp():
    record = _record(uid="u-5")
    assert TextFormatter().format(record).startswith(logging.Formatter().formatTime(record) + " INFO    ")


def test_a_deferred_record_is_printed_by_any_formatter_as_the_record_it_stands_for():
    stream = io.StringIO()
    logger, listener = _pipeline(stream)  # a plain logging.Formatter: "%(levelname)s %(message)s"
    try:
        logger.handlers[0].queue.put_nowait(logs.DeferredRecord(0.0, logger.name, "deferred", {"uid": "u-6"}))
        logger.warning("after it")
    finally:
        listener.stop()
    assert stream.getvalue() == "INFO deferred\nWARNING after it\n"


def test_past_the_reserve_warnings_are_dropped_and_counted_too():
    """Was unbounded: WARNING records bypassed the cap, and every 4xx a client causes logs one."""
    log_queue = LogQueue(interval=60, max_pending=5, urgent_reserve=3)  # no listener: nothing drains it
    before = logs.dropped_lines()
    logger = logging.getLogger("test-logs-warning-cap")
    logger.handlers[:] = [RecordQueueHandler(log_queue)]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for n in range(10):
        logger.info("routine %d", n)
    for n in range(1000):
        logger.warning("bad request %d", n)
    logger.error("an error")

    assert len(log_queue) == 8  # max_pending + urgent_reserve, whatever the level
    assert log_queue.take_dropped() == 5 + 997 + 1
    assert log_queue.take_dropped() == 0  # taken atomically, once
    after = logs.dropped_lines()
    assert after.get("info", 0) - before.get("info", 0) == 5
    assert after.get("warning", 0) - before.get("warning", 0) == 997
    assert after.get("error", 0) - before.get("error", 0) == 1


def test_drops_from_many_threads_are_all_counted():
    """The dropped counter is incremented under a lock: concurrent drops are never lost."""
    log_queue = LogQueue(interval=60, max_pending=0, urgent_reserve=0)
    record = logging.makeLogRecord({"msg": "x", "levelno": logging.INFO})
    threads, per_thread = 8, 5000

    def drop() -> None:
        for _ in range(per_thread):
            log_queue.put_nowait(record)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, to give a lost update its chance
    try:
        workers = [threading.Thread(target=drop) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(interval)
    assert log_queue.take_dropped() == threads * per_thread
