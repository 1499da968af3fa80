"""structlog set-up: JSON lines, bound invocation fields, secrets redacted."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from runtime.context import current_context
from runtime.secrets.values import scrub
from runtime.settings import Settings

REDACTED = "[redacted]"
#: Keys whose values are never written to a log, at any depth.
SECRET_KEY = re.compile(
    r"(?<![a-z])pass(word|wd|phrase)?(?![a-z])|secret|token|authori[sz]ation|api[_-]?key|cookie|credential|private[_-]?key"
    r"|signature|session",
    re.IGNORECASE,
)
#: Values that look like a Ferry API key or a bearer token, wherever they appear.
SECRET_VALUE = re.compile(r"fy_[a-z0-9]{12}_[A-Za-z0-9_-]{20,}|Bearer\s+\S+")


def redact(value: Any) -> Any:
    """Hide values under secret-looking keys, and key-shaped strings, at any depth."""
    if isinstance(value, Mapping):
        return {k: REDACTED if SECRET_KEY.search(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return SECRET_VALUE.sub(REDACTED, value)
    return value


def redact_event(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace the values of secret-looking keys, and key-shaped strings, by `[redacted]`.

    In a thread running an attempt, the values of the tenant's secrets it has read
    (`ctx.secrets`) become `[secret:<name>]` wherever they appear in the line, its
    traceback included.
    """
    ctx = current_context.get()
    secrets = ctx.secrets_in_use() if ctx is not None else {}
    for key in list(event):
        if key != "event" and SECRET_KEY.search(key):
            event[key] = REDACTED
        else:
            event[key] = redact(event[key])
            if secrets:
                event[key] = _scrub_values(event[key], secrets)
    return event


def _scrub_values(value: Any, secrets: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, Mapping):
        return {k: _scrub_values(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_values(v, secrets) for v in value]
    if value is None or isinstance(value, int | float):
        return value
    # Any other object is rendered by its str(); if that holds a value, the text replaces it.
    text = str(value)
    scrubbed = scrub(text, secrets)
    return value if scrubbed == text else scrubbed


def configure_logging(settings: Settings, stream: Any = None) -> None:
    """Every log line of the process in one format, with secrets redacted.

    Ferry's own events are structlog's. Everything logged through the standard library
    (Dramatiq, gunicorn, periodiq, Alembic, SQLAlchemy) and every `warnings.warn` goes
    through the root logger's handler, whose `ProcessorFormatter` renders it with the
    same processors: in `json` format each one is a JSON line, its traceback included.
    """
    level = getattr(logging, settings.log_level.upper())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # Redaction comes after the traceback is rendered: an exception's text may hold a secret.
    finish: list[Any] = [structlog.processors.format_exc_info, redact_event, renderer]
    structlog.configure(
        processors=[*shared, *finish],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *finish],
            foreign_pre_chain=[
                *shared,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.INFO))
    # Python's warnings (deprecations, SQLAlchemy's) become lines of the `py.warnings` logger.
    logging.captureWarnings(True)
    # Alembic announces its plugins at INFO in every process that migrates or checks.
    logging.getLogger("alembic").setLevel(logging.WARNING)
