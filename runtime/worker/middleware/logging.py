"""Bind the invocation's fields to every log line a worker thread writes during an attempt."""

from __future__ import annotations

from typing import Any

import dramatiq
import structlog

from runtime.context import current_claim


class LogContextMiddleware(dramatiq.Middleware):
    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        claimed = current_claim.get()
        if claimed is None:
            return
        structlog.contextvars.bind_contextvars(
            **claimed.invocation.log_context(), attempt=claimed.attempt
        )

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        structlog.contextvars.clear_contextvars()

    after_skip_message = after_process_message
