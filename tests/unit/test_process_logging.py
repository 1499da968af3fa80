"""Every line a process logs is one JSON line; the scheduler stops on a signal with 0."""

from __future__ import annotations

import io
import json
import logging
import signal
import warnings
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import structlog

from runtime.logs import configure_logging
from runtime.scheduling.periodiq_entry import InlineBroker, StopOnSignal
from runtime.settings import Settings

KEY = "fy_abcdefghijkl_" + "s" * 32


@pytest.fixture
def json_stream(sqlite_env: str) -> Iterator[io.StringIO]:
    """Logging configured for JSON into a buffer; the test process's logging restored after."""
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logging.captureWarnings(False)
    stream = io.StringIO()
    configure_logging(Settings.from_env(log_format="json"), stream=stream)
    yield stream
    logging.captureWarnings(False)
    structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """Each line written, parsed as JSON (fails on a line that is not)."""
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_a_library_line_with_a_traceback_is_one_json_line_with_secrets_redacted(json_stream):
    # When a library logs an exception through the standard library
    try:
        raise ValueError(f"rejected key {KEY}")
    except ValueError:
        logging.getLogger("dramatiq.worker").exception("failed with Bearer %s", KEY)

    # Then it is one JSON line, its traceback a field, the key redacted everywhere
    [line] = lines(json_stream)
    assert line["logger"] == "dramatiq.worker" and line["level"] == "error"
    assert line["event"] == "failed with [redacted]"
    assert "Traceback (most recent call last)" in line["exception"]
    assert "ValueError: rejected key [redacted]" in line["exception"]
    assert KEY not in json_stream.getvalue()


def test_ferrys_own_exception_lines_are_redacted_too(json_stream):
    try:
        raise RuntimeError(f"bad key {KEY}")
    except RuntimeError:
        structlog.get_logger("ferry.test").error("sweep_failed", exc_info=True)
    [line] = lines(json_stream)
    assert "RuntimeError: bad key [redacted]" in line["exception"]
    assert KEY not in json_stream.getvalue()


def test_python_warnings_are_json_lines(json_stream):
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("this API is going away", DeprecationWarning, stacklevel=1)
    [line] = lines(json_stream)
    assert line["logger"] == "py.warnings" and line["level"] == "warning"
    assert "DeprecationWarning: this API is going away" in line["event"]


# --- the scheduler's stop --------------------------------------------------------------------


def clock_broker(body: Any) -> tuple[InlineBroker, StopOnSignal]:
    stop = StopOnSignal()
    broker = InlineBroker(stop=stop)
    dramatiq.actor(broker=broker, actor_name="tick", queue_name="clock")(body)
    return broker, stop


def test_a_signal_during_a_tick_lets_the_tick_finish_then_exits_0():
    done: list[str] = []

    def tick() -> None:
        stop.on_signal(signal.SIGTERM, None)  # as the signal would, halfway through
        done.append("rest of the tick")

    broker, stop = clock_broker(tick)
    with pytest.raises(SystemExit) as exited:
        broker.actors["tick"].send()
    assert exited.value.code == 0
    assert done == ["rest of the tick"]
    assert stop.signal_name == "SIGTERM"


def test_a_signal_between_ticks_exits_0_at_once():
    stop = StopOnSignal()
    with pytest.raises(SystemExit) as exited:
        stop.on_signal(signal.SIGINT, None)
    assert exited.value.code == 0


def test_a_second_signal_does_not_wait_for_the_tick():
    done: list[str] = []

    def tick() -> None:
        stop.on_signal(signal.SIGTERM, None)
        stop.on_signal(signal.SIGTERM, None)
        done.append("never")

    broker, stop = clock_broker(tick)
    with pytest.raises(SystemExit):
        broker.actors["tick"].send()
    assert done == []


def test_a_failing_tick_is_logged_and_the_next_one_runs(json_stream):
    calls: list[int] = []

    def tick() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("store down")

    broker, _stop = clock_broker(tick)
    broker.actors["tick"].send()
    broker.actors["tick"].send()
    assert len(calls) == 2
    [failed] = [line for line in lines(json_stream) if line["event"] == "scheduler_tick_failed"]
    assert failed["error"] == "store down" and "RuntimeError" in failed["exception"]
