"""Every error becomes an RFC 9457 `application/problem+json` answer, mapped here alone.

Runtime errors (`runtime.errors`) are mapped to status codes by class, relying on Falcon's
most-specific-class dispatch; Falcon's own errors (unknown route, 405, bad headers) and
unexpected exceptions go through the same serializer, so even a bug answers problem+json.
"""

from __future__ import annotations

import http
import json
import math
import re
from typing import Any

import falcon
import redis
import structlog
from sqlalchemy import exc as sa_exc

from gateway import schemas
from gateway.types import WsgiApp
from runtime import errors

log = structlog.get_logger("ferry.gateway")

PROBLEM_JSON = "application/problem+json"
#: Seconds a client should wait before trying again after a 503.
RETRY_AFTER_S = 5

#: Status code of each runtime error family; a subclass takes its nearest ancestor's.
STATUS_OF_ERROR: dict[type[errors.FerryError], int] = {
    errors.RequestRejected: 400,
    errors.BadRequest: 400,
    errors.NotFound: 404,
    errors.InputInvalid: 422,
    errors.IdempotencyConflict: 422,
    errors.InvalidState: 409,
    errors.Unauthenticated: 401,
    errors.TenantSuspended: 403,
    errors.AlreadyExists: 409,
    errors.LimitExceeded: 429,
    errors.Unavailable: 503,
}


class Problem(falcon.HTTPError):
    """An HTTP error with the fields of an RFC 9457 problem document."""

    def __init__(
        self,
        status: int,
        *,
        kind: str,
        title: str,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(status, title=title, description=detail, headers=headers)
        #: Short, stable name of the problem type (the last part of its `type` URI).
        self.kind = kind
        #: `{loc, msg}` per problem, for validation failures.
        self.errors = errors
        #: Extra members of the problem document (RFC 9457 extensions).
        self.extensions = extensions or {}

    @property
    def type_uri(self) -> str:
        return f"urn:ferry:problem:{self.kind}"


def unavailable(kind: str, title: str, detail: str, **extensions: Any) -> Problem:
    """A 503 that tells the client when to try again."""
    return Problem(
        503,
        kind=kind,
        title=title,
        detail=detail,
        headers={"Retry-After": str(RETRY_AFTER_S)},
        extensions=extensions,
    )


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def problem_of(error: errors.FerryError) -> Problem:
    """The problem a runtime error answers as: the class names the type, the message is the detail."""
    status = next(STATUS_OF_ERROR[cls] for cls in type(error).__mro__ if cls in STATUS_OF_ERROR)
    summary = (type(error).__doc__ or "").strip().splitlines()
    title = summary[0] if summary else http.HTTPStatus(status).phrase
    return Problem(
        status,
        kind=_kebab(type(error).__name__),
        title=title,
        detail=error.message,
        errors=error.errors if isinstance(error, errors.InputInvalid) else None,
        headers=_HEADERS_OF_STATUS.get(status),
    )


#: What a client needs besides the body: when to try again, how to authenticate.
_HEADERS_OF_STATUS = {
    503: {"Retry-After": str(RETRY_AFTER_S)},
    401: {"WWW-Authenticate": 'Bearer realm="ferry"'},
}


def limit_problem(error: errors.LimitExceeded) -> Problem:
    """429 naming the limit, with `Retry-After` in whole seconds (at least 1)."""
    retry_after = max(1, math.ceil(error.retry_after_s))
    return Problem(
        429,
        kind="limit-exceeded",
        title="A limit of the tenant refuses the request; nothing was stored.",
        detail=error.message,
        headers={"Retry-After": str(retry_after)},
        extensions={"limit": error.limit, "retry_after_s": round(error.retry_after_s, 3)},
    )


def _handle_ferry_error(
    req: falcon.Request, resp: falcon.Response, error: errors.FerryError, params: Any
) -> None:
    if isinstance(error, errors.LimitExceeded):
        raise limit_problem(error)
    raise problem_of(error)


def _handle_store_driver_error(
    req: falcon.Request, resp: falcon.Response, error: Exception, params: Any
) -> None:
    # Store calls translate these into StoreUnavailable; this catches any call that does not.
    log.warning("store_unreachable", error_type=type(error).__name__)
    raise unavailable(
        "store-unavailable",
        "The invocation store is unreachable.",
        "the invocation store did not answer; nothing was accepted",
    )


def _handle_database_error(
    req: falcon.Request, resp: falcon.Response, error: sa_exc.DBAPIError, params: Any
) -> None:
    # A connection that broke mid-statement is an unreachable store; anything else is a bug.
    if error.connection_invalidated or isinstance(error, sa_exc.InterfaceError):
        _handle_store_driver_error(req, resp, error, params)
    _handle_unexpected(req, resp, error, params)


def _handle_broker_driver_error(
    req: falcon.Request, resp: falcon.Response, error: Exception, params: Any
) -> None:
    log.warning("broker_unreachable", error_type=type(error).__name__)
    raise unavailable(
        "broker-unavailable",
        "The message broker is unreachable.",
        "the message broker did not answer; nothing was accepted",
    )


def _handle_unexpected(
    req: falcon.Request, resp: falcon.Response, error: Exception, params: Any
) -> None:
    log.error(
        "unhandled_error",
        method=req.method,
        route=req.uri_template,
        error_type=type(error).__name__,
        exc_info=error,
    )
    raise Problem(
        500,
        kind="internal-error",
        title="Internal Server Error",
        detail="the server failed to answer; the error was logged under this request's "
        "X-Request-ID",
    )


def problem_document(req: falcon.Request, error: falcon.HTTPError) -> schemas.Problem:
    """The RFC 9457 problem of an error, for Ferry's problems and Falcon's own errors alike."""
    status = error.status_code
    if isinstance(error, Problem):
        members: dict[str, Any] = {"errors": error.errors} if error.errors is not None else {}
        return schemas.Problem(
            type=error.type_uri,
            title=error.title,
            status=status,
            detail=error.description,
            **members,
            **error.extensions,
        )
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = str(status)
    # Falcon's default titles are status lines ("404 Not Found"); RFC 9457 wants the phrase.
    title = phrase if not error.title or error.title.startswith(str(status)) else error.title
    if error.description:
        detail = error.description
    elif status == 404:
        detail = f"nothing is at {req.path}"
    elif status == 405:
        detail = f"{req.method} is not allowed on {req.path}"
    else:
        detail = title
    return schemas.Problem(type="about:blank", title=title, status=status, detail=detail)


def serialize_problem(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    resp.content_type = PROBLEM_JSON
    resp.data = json.dumps(problem_document(req, error).media()).encode()


def install(app: WsgiApp) -> None:
    """Register the error handlers and the problem+json serializer on `app`."""
    # Added first, so the more specific handlers below win by class.
    app.add_error_handler(Exception, _handle_unexpected)
    for error_class in STATUS_OF_ERROR:
        app.add_error_handler(error_class, _handle_ferry_error)
    app.add_error_handler(sa_exc.DBAPIError, _handle_database_error)
    app.add_error_handler(sa_exc.OperationalError, _handle_store_driver_error)
    app.add_error_handler(sa_exc.TimeoutError, _handle_store_driver_error)
    app.add_error_handler(redis.ConnectionError, _handle_broker_driver_error)
    app.add_error_handler(redis.TimeoutError, _handle_broker_driver_error)
    app.set_error_serializer(serialize_problem)
