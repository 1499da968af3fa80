"""Ferry: write a function, get an HTTP endpoint, retries, idempotency and a ledger.

Only what a function author needs is exported here.
"""

from __future__ import annotations

from runtime.context import Context
from runtime.errors import FerryError, Permanent, Retryable
from runtime.registry import function

__all__ = [
    # Writing a function
    "Context",
    "function",
    # Steering failures
    "FerryError",
    "Permanent",
    "Retryable",
]
