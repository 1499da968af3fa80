"""The cheap paths of `runtime.logs`: cached loggers, orjson lines, redaction that skips clean text.

Each test configures logging into a buffer and puts the test process's configuration
back after it; loggers are made in the test, so a cached one leaves with it.
"""

from __future__ import annotations

import io
import json
import logging
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

import runtime.logs
from runtime.context import current_context
from runtime.logs import configure_logging, redact
from runtime.secrets.values import SecretValues, replacements, scrub
from runtime.settings import Settings

KEY = "fy_abcdefghijkl_" + "s" * 32
VALUE = "s3cr3t value/of+the tenant"


@pytest.fixture
def stream(sqlite_env: str) -> Iterator[io.StringIO]:
    """JSON logging at info into a buffer; the test process's logging restored after."""
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buffer = io.StringIO()
    configure_logging(Settings.from_env(log_format="json", log_level="info"), stream=buffer)
    yield buffer
    logging.captureWarnings(False)
    structlog.configure(**config)
    structlog.contextvars.clear_contextvars()
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


class _Attempt:
    """Stands in for an attempt's `Context`: the secrets it has read."""

    def __init__(self, values: SecretValues) -> None:
        self.values = values

    def secrets_in_use(self) -> SecretValues:
        return self.values


def test_a_cached_logger_writes_level_timestamp_event_and_the_bound_fields(stream, monkeypatch):
    # Given loggers cached on first use, as in every Ferry process
    monkeypatch.setattr(runtime.logs, "CACHE_LOGGERS", True)
    configure_logging(Settings.from_env(log_format="json", log_level="info"), stream=stream)
    log = structlog.get_logger("test.cached")
    structlog.contextvars.bind_contextvars(request_id="r1", tenant_id="acme")
    # When it writes lines, the second one from the cache
    log.info("attempt_started", invocation_id="i1", function="f", attempt=2)
    log.debug("hidden")
    log.info("invocation_succeeded", token="t0ken", note=f"with {KEY}")
    bound = structlog.get_logger("test.cached.bound").bind(invocation_id="i2", attempt=1)
    bound.warning("lease_lost_result_discarded")
    # Then each has its level, a UTC timestamp, its event and the bound fields
    first, second, third = lines(stream)
    assert first["level"] == "info" and first["event"] == "attempt_started"
    assert first["timestamp"].endswith("Z")
    assert datetime.fromisoformat(first["timestamp"]).tzinfo is not None
    assert (first["request_id"], first["tenant_id"], first["invocation_id"]) == ("r1", "acme", "i1")
    assert (first["function"], first["attempt"]) == ("f", 2)
    assert second["event"] == "invocation_succeeded" and second["request_id"] == "r1"
    assert second["token"] == "[redacted]" and KEY not in second["note"]
    assert third["level"] == "warning" and (third["invocation_id"], third["attempt"]) == ("i2", 1)
    # And the logger is the cached one (the proxy keeps its first configuration)
    assert "bind" in vars(log)


def test_uncached_loggers_follow_a_later_configuration(stream, monkeypatch):
    # Given the test process's setting: no cache (it reconfigures between tests)
    monkeypatch.setattr(runtime.logs, "CACHE_LOGGERS", False)
    configure_logging(Settings.from_env(log_format="json", log_level="info"), stream=stream)
    log = structlog.get_logger("test.uncached")
    log.info("before")
    # When logging is configured again, at debug into another buffer
    other = io.StringIO()
    configure_logging(Settings.from_env(log_format="json", log_level="debug"), stream=other)
    log.debug("after")
    # Then the logger used before follows it, and capture_logs sees its lines too
    assert [line["event"] for line in lines(other)] == ["after"]
    with structlog.testing.capture_logs() as captured:
        log.info("captured")
    assert [entry["event"] for entry in captured] == ["captured"]


def test_an_attempts_secret_is_scrubbed_from_every_line_and_field(stream):
    # Given an attempt that read a secret
    values = SecretValues({"crm_token": VALUE}, ("crm_token",))
    token = current_context.set(_Attempt(values))  # type: ignore[arg-type]
    try:
        log = structlog.get_logger("test.secret")
        # When several lines carry its value, as is, escaped, in a URL, deep, in an object
        for _ in range(2):
            log.info(
                "called",
                url="https://crm.example/?k=" + urllib.parse.quote(VALUE, safe=""),
                nested={"a": [{"b": f"x {VALUE} y"}]},
                as_repr=repr(VALUE),
                thing=_Holder(VALUE),
                count=3,
                ratio=0.5,
                flag=True,
                nothing=None,
            )
    finally:
        current_context.reset(token)
    # Then no line holds it, each names the secret instead, and plain values stay
    for line in lines(stream):
        text = json.dumps(line)
        assert VALUE not in text and "s3cr3t" not in text
        assert line["nested"] == {"a": [{"b": "x [secret:crm_token] y"}]}
        assert line["thing"] == "holds [secret:crm_token]"
        assert "[secret:crm_token]" in line["url"] and "[secret:crm_token]" in line["as_repr"]
        assert (line["count"], line["ratio"], line["flag"], line["nothing"]) == (3, 0.5, True, None)
    # And the forms were made once for the attempt's values, the same as `scrub` finds
    assert replacements(values) is replacements(values)
    assert scrub(f"a {VALUE}", values) == "a [secret:crm_token]"


class _Holder:
    def __init__(self, value: str) -> None:
        self.value = value

    def __str__(self) -> str:
        return f"holds {self.value}"


class _Text(str):
    """A str subclass (an enum's value, say): checked like any string."""


def test_redact_skips_clean_text_and_still_finds_each_shape():
    clean = "nothing to see here, fy or bearer in lower case"
    assert redact(clean) is clean
    assert redact(f"key {KEY} end") == "key [redacted] end"
    assert redact("Authorization: Bearer abc.def") == "Authorization: [redacted]"
    assert redact(_Text(f"sub {KEY}")) == "sub [redacted]"
    assert redact({"Session": "x", "ok": ("Bearer t", 1, None)}) == {
        "Session": "[redacted]",
        "ok": ["[redacted]", 1, None],
    }
    # A key is judged by its name each time, whatever was seen before
    assert redact({"passed_over": 3, "password": 4}) == {"passed_over": 3, "password": "[redacted]"}


def test_lines_orjson_cannot_write_are_still_json(stream):
    log = structlog.get_logger("test.render")
    log.info(
        "odd_values",
        huge=2**70,
        at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        mapping={1: "one"},
        things={"a"},
        custom=_Custom(),
    )
    log.info("plain", at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), mapping={1: "one"})
    odd, plain = lines(stream)
    assert odd["huge"] == 2**70 and odd["custom"] == {"as": "structlog"}
    assert odd["things"] == "{'a'}" and odd["mapping"] == {"1": "one"}
    assert plain["mapping"] == {"1": "one"} and plain["at"].startswith("2026-01-02T03:04:05")


class _Custom:
    def __structlog__(self) -> dict[str, str]:
        return {"as": "structlog"}
