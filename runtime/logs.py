"""structlog set-up: JSON lines, bound invocation fields, secrets redacted."""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import orjson
import structlog

from runtime.context import current_context
from runtime.secrets.values import Replacements, replacements, scrub_with
from runtime.settings import Settings

#: structlog's `cache_logger_on_first_use`: a logger keeps the configuration in force at
#: its first call, which saves building it again on every line. Each process configures
#: logging once, before its first line (gunicorn's conf and `gateway.wsgi`,
#: `run_worker`, `ferry dev`, the scheduler, the CLI); a later `configure_logging` only
#: reaches loggers not used yet. The test process reconfigures between tests and turns
#: this off (tests/conftest.py).
CACHE_LOGGERS = True
REDACTED = "[redacted]"
#: Keys whose values are never written to a log, at any depth.
SECRET_KEY = re.compile(
    r"(?<![a-z])pass(word|wd|phrase)?(?![a-z])|secret|token|authori[sz]ation|api[_-]?key|cookie|credential|private[_-]?key"
    r"|signature|session",
    re.IGNORECASE,
)
#: Values that look like a Ferry API key or a bearer token, wherever they appear.
SECRET_VALUE = re.compile(r"fy_[a-z0-9]{12}_[A-Za-z0-9_-]{20,}|Bearer\s+\S+")


#: Types written as they are: nothing in them to redact (exact types; subclasses walk).
_PLAIN = frozenset({int, float, bool, type(None)})


@functools.lru_cache(maxsize=4096)
def _secret_key(key: str) -> bool:
    """Whether a key names a secret (`SECRET_KEY`); log keys are few, so each is tested once."""
    return SECRET_KEY.search(key) is not None


def _redact_text(text: str) -> str:
    # Both of SECRET_VALUE's shapes hold one of these literally: most text is skipped at
    # the cost of two substring searches instead of a regex pass.
    if "fy_" not in text and "Bearer" not in text:
        return text
    return SECRET_VALUE.sub(REDACTED, text)


def redact(value: Any) -> Any:
    """Hide values under secret-looking keys, and key-shaped strings, at any depth."""
    kind = type(value)
    if kind is str:
        return _redact_text(value)
    if kind in _PLAIN:
        return value
    if isinstance(value, Mapping):
        return {k: REDACTED if _secret_key(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _redact_text(value)
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
    secrets = ctx.secrets_in_use() if ctx is not None else None
    # The forms of each secret value are worked out once per line, not once per field.
    forms = replacements(secrets) if secrets else None
    for key, value in list(event.items()):
        if key != "event" and _secret_key(key):
            event[key] = REDACTED
            continue
        clean = redact(value)
        if forms:
            clean = _scrub_values(clean, forms)
        if clean is not value:
            event[key] = clean
    return event


def _scrub_values(value: Any, forms: Replacements) -> Any:
    kind = type(value)
    if kind is str:
        return scrub_with(value, forms)
    if kind in _PLAIN:
        return value
    if isinstance(value, str):
        return scrub_with(value, forms)
    if isinstance(value, Mapping):
        return {k: _scrub_values(v, forms) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_values(v, forms) for v in value]
    if isinstance(value, int | float):
        return value
    # Any other object is rendered by its str(); if that holds a value, the text replaces it.
    text = str(value)
    scrubbed = scrub_with(text, forms)
    return value if scrubbed == text else scrubbed


def _json_default(value: Any) -> Any:
    """What orjson cannot write itself: the object's `__structlog__()`, else its repr."""
    try:
        return value.__structlog__()
    except AttributeError:
        return repr(value)


def render_json(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> str:
    """The line as JSON, by orjson; json for the rare value orjson refuses (an int past 64 bits)."""
    try:
        return orjson.dumps(event, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(event, default=_json_default)


def configure_logging(settings: Settings, stream: Any = None) -> None:
    """Every log line of the process in one format, with secrets redacted.

    Ferry's own events are structlog's. Everything logged through the standard library
    (Dramatiq, gunicorn, periodiq, Alembic, SQLAlchemy) and every `warnings.warn` goes
    through the root logger's handler, whose `ProcessorFormatter` renders it with the
    same processors: in `json` format each one is a JSON line, its traceback included.
    """
    level = getattr(logging, settings.log_level.upper())
    renderer: Any = (
        render_json
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
        cache_logger_on_first_use=CACHE_LOGGERS,
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
