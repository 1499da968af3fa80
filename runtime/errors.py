"""Ferry's error tree: one root, families below it; the docstring is the default message."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar


class FerryError(Exception):
    """Ferry failed."""

    #: An attempt that ends with this error would end the same way if run again, so it
    #: is not retried (`runtime.worker.execution.classify`).
    permanent: ClassVar[bool] = False

    def __init__(self, message: str | None = None, **data: Any) -> None:
        self.message = message or (self.__doc__ or "").strip()
        self.data = data
        super().__init__(self.message)


# --- failures a function raises to steer retries --------------------------------------------


class Retryable(FerryError):
    """The attempt failed for a reason that may pass; try again after a backoff."""

    def __init__(self, message: str | None = None, *, delay_s: float | None = None) -> None:
        super().__init__(message)
        #: Seconds to wait instead of the computed backoff.
        self.delay_s = delay_s


class Permanent(FerryError):
    """The attempt failed for a reason that will not pass; do not retry."""

    permanent = True


# Outbound HTTP (`ctx.http`, runtime/outbound.py): both are permanent, as the same request
# would be refused again.


class OutboundRefused(Permanent):
    """The outbound request was refused: its target is not one a function may reach."""


class ResponseTooLarge(Permanent):
    """The outbound answer is larger than FERRY_OUTBOUND_MAX_RESPONSE_BYTES."""


# --- configuration ------------------------------------------------------------------------


class ConfigurationError(FerryError):
    """Ferry is configured wrongly and cannot start."""


class SettingsInvalid(ConfigurationError):
    """A FERRY_* setting has a bad value."""


class FunctionDefinitionError(ConfigurationError):
    """A function is defined wrongly."""


class SecretUndecryptable(ConfigurationError):
    """A stored secret does not decrypt under FERRY_SECRET_KEY or FERRY_SECRET_KEY_PREVIOUS."""


# --- requests the runtime refuses -----------------------------------------------------------


class RequestRejected(FerryError):
    """The request cannot be carried out."""

    # The request itself is wrong (an unknown function, an input its model refuses, a
    # reused idempotency key, ...); raised in an attempt, say by `ctx.invoke` or by
    # validating the stored payload, a retry makes the same request and is refused again.
    permanent = True


class BadRequest(RequestRejected):
    """A parameter of the request is malformed."""


class NotFound(RequestRejected):
    """No such resource."""


class FunctionNotFound(NotFound):
    """No function has that name."""


class InvocationNotFound(NotFound):
    """No invocation has that id."""


class TenantNotFound(NotFound):
    """No tenant has that id."""


class ScheduleNotFound(NotFound):
    """No schedule has that id."""


class InputInvalid(RequestRejected):
    """The input is not valid for the function."""

    def __init__(self, message: str | None = None, *, errors: Sequence[dict[str, Any]] = ()):
        super().__init__(message)
        #: `{loc, msg}` for each problem.
        self.errors = list(errors)


class SecretNotFound(NotFound):
    """The tenant has no secret of that name."""


class SecretMissing(InputInvalid):
    """A secret the function needs is not set for the tenant."""

    # Its `errors` name each missing secret (`loc` ["secrets", name]); an attempt that
    # meets one (the secret was deleted after the invocation was accepted) is not retried.


class IdempotencyConflict(RequestRejected):
    """The idempotency key was used before with another body."""


class InvalidState(RequestRejected):
    """The invocation is not in a state that allows this."""


class Unauthenticated(RequestRejected):
    """An API key is needed."""

    # Raised where a write verified the caller's key and found it revoked or expired
    # (`InvocationService.accept` with `key_id`); the gateway refuses other bad keys itself.


class TenantSuspended(RequestRejected):
    """The tenant is suspended."""

    # Until it is resumed: a suspended tenant's retries wait unclaimed until then.
    permanent = False


class AlreadyExists(RequestRejected):
    """That resource exists already."""


class LimitExceeded(RequestRejected):
    """A limit of the tenant refuses the request; nothing was stored."""

    # Limits pass: the same request may be accepted later.
    permanent = False

    def __init__(self, message: str, *, limit: str, retry_after_s: float) -> None:
        super().__init__(message)
        #: Which limit refused it: `rate_per_s`, `max_waiting` or `function.max_waiting`.
        self.limit = limit
        #: Seconds until trying again may be accepted (a guess for waiting limits).
        self.retry_after_s = retry_after_s


# --- backing services -----------------------------------------------------------------------


class Unavailable(FerryError):
    """A backing service is unreachable; nothing was accepted."""


class StoreUnavailable(Unavailable):
    """The invocation store is unreachable."""


class BrokerUnavailable(Unavailable):
    """The message broker is unreachable."""
