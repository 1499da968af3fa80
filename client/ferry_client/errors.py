"""Typed errors: each problem+json answer of the API raises the class of its status.

Catch `FerryError` for everything the client raises, `APIError` for answers of the
server, `TransportError` for a server that could not be reached or dropped the request.
"""

from __future__ import annotations

from .models import FieldError, Problem, Status


class FerryError(Exception):
    """Anything the Ferry client raises."""


class TransportError(FerryError):
    """The server could not be reached, or the connection failed before a full answer."""


class WaitTimeout(FerryError, TimeoutError):
    """`wait` ran out of time before the invocation finished; `status` is the last seen."""

    def __init__(self, invocation_id: str, status: Status, timeout: float) -> None:
        super().__init__(f"invocation {invocation_id} still {status} after {timeout:g} s")
        self.invocation_id = invocation_id
        self.status = status


class APIError(FerryError):
    """An error answer of the API, with its problem document and request id."""

    def __init__(self, problem: Problem, *, request_id: str | None = None) -> None:
        super().__init__(f"{problem.status} {problem.title}: {problem.detail}".rstrip(": "))
        self.problem = problem
        self.status = problem.status
        self.request_id = request_id


class BadRequest(APIError):
    """400, 413 or 415: the request itself was malformed, too large or not JSON."""


class Unauthorized(APIError):
    """401: the API key is missing, unknown or revoked."""


class Forbidden(APIError):
    """403: the key is known but lacks the scope (or its tenant is suspended)."""


class NotFound(APIError):
    """404: no such function or invocation (another tenant's looks exactly like this)."""


class Conflict(APIError):
    """409: the invocation is not in a state that allows it (say, cancelling a running one)."""


class InputInvalid(APIError):
    """422: the input is not valid for the function; `errors` says where and why."""

    @property
    def errors(self) -> list[FieldError]:
        return list(self.problem.errors or [])


class RetryableError(APIError):
    """An answer that says to try again later; `retry_after` is its `Retry-After` in seconds."""

    def __init__(
        self, problem: Problem, *, request_id: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(problem, request_id=request_id)
        self.retry_after = retry_after


class RateLimited(RetryableError):
    """429: too many requests; still refused after the client's own retries."""


class Unavailable(RetryableError):
    """503: the store (or the server) is unavailable and nothing was accepted."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: BadRequest,
    415: BadRequest,
    422: InputInvalid,
}


def error_for(problem: Problem, *, request_id: str | None, retry_after: float | None) -> APIError:
    """The typed error an answer with `problem` raises."""
    if problem.status == 429:
        return RateLimited(problem, request_id=request_id, retry_after=retry_after)
    if problem.status == 503:
        return Unavailable(problem, request_id=request_id, retry_after=retry_after)
    return _BY_STATUS.get(problem.status, APIError)(problem, request_id=request_id)
