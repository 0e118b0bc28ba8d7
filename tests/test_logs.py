"""Log lines: one per event, JSON (machine) or text (people), extras included."""

from __future__ import annotations

import json
import logging

import pytest

from sidecar_injector.logs import LOGGER_NAME, JsonFormatter, TextFormatter, configure


@pytest.fixture
def restore_logging():
    """configure() rewires global loggers: put them back for the tests that follow."""
    names = (LOGGER_NAME, "uvicorn", "uvicorn.error")
    saved = {
        n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level, logging.getLogger(n).propagate) for n in names
    }
    yield
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


def test_configure_chooses_the_format_and_level(capsys, restore_logging):
    logger = configure("json", "WARNING")
    logger.info("hidden")
    logger.warning("shown", extra={"status": 400})
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [entry["message"] for entry in lines] == ["shown"]
    assert lines[0]["status"] == 400


def test_routine_lines_are_batched_but_written_within_the_interval_and_warnings_at_once():
    import io
    import time

    from sidecar_injector.logs import BatchingStreamHandler

    stream = io.StringIO()
    handler = BatchingStreamHandler(stream, interval=0.05)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test-batching")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.info("one")
        logger.info("two")
        assert stream.getvalue() == ""  # buffered: no write per line
        deadline = time.monotonic() + 10
        while "two" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)  # the flusher thread writes them without any further logging
        assert stream.getvalue() == "INFO one\nINFO two\n"
        logger.info("three")
        logger.warning("four")  # a warning writes everything pending, in order, at once
        assert stream.getvalue().endswith("INFO three\nWARNING four\n")
        logger.info("five")
    finally:
        handler.close()  # closing writes what is left
    assert stream.getvalue().endswith("INFO five\n")
