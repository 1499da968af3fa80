"""A typed Python client for the Ferry HTTP API, blocking (`FerryClient`) and asyncio
(`AsyncFerryClient`), on httpx and pydantic."""

from __future__ import annotations

from .client import AsyncFerryClient, ClientOptions, FerryClient
from .errors import (
    APIError,
    BadRequest,
    Conflict,
    FerryError,
    Forbidden,
    InputInvalid,
    NotFound,
    RateLimited,
    RetryableError,
    TransportError,
    Unauthorized,
    Unavailable,
    WaitTimeout,
)
from .models import (
    Attempt,
    BatchAccepted,
    BatchItemResult,
    BatchRefused,
    FieldError,
    Invocation,
    InvocationDetail,
    InvocationError,
    InvocationPage,
    InvocationReceipt,
    Problem,
    Status,
)

__all__ = [
    "FerryClient",
    "AsyncFerryClient",
    "ClientOptions",
    "Invocation",
    "InvocationDetail",
    "InvocationReceipt",
    "InvocationPage",
    "BatchAccepted",
    "BatchRefused",
    "BatchItemResult",
    "InvocationError",
    "Attempt",
    "Problem",
    "FieldError",
    "Status",
    "FerryError",
    "APIError",
    "TransportError",
    "WaitTimeout",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "InputInvalid",
    "RetryableError",
    "RateLimited",
    "Unavailable",
]
