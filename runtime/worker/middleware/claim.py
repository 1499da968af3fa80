"""Claim the invocation in the store before an attempt runs; skip deliveries that lost."""

from __future__ import annotations

from typing import Any

import dramatiq
import structlog
from dramatiq.middleware import SkipMessage

from runtime.context import current_claim
from runtime.errors import StoreUnavailable
from runtime.recovery.leases import LeaseKeeper
from runtime.store.claims import Claimed, Claims

log = structlog.get_logger("ferry.claim")


class ClaimMiddleware(dramatiq.Middleware):
    """Turn a delivery into an attempt only if this worker wins the invocation.

    A duplicate delivery (redelivery after a crash, the sweep sending again, two
    schedulers) finds the invocation running or finished and is skipped, so a message
    delivered twice runs once. The decision is made here, in a "before" hook, because
    raising `SkipMessage` is the one way to stop a message in Dramatiq.

    The claim's lease is short; `leases` renews it while the attempt runs and stops
    when it ends.
    """

    def __init__(self, claims: Claims, worker_id: str, leases: LeaseKeeper) -> None:
        self.claims = claims
        self.worker_id = worker_id
        self.leases = leases

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        invocation_id = message.options.get("invocation_id") or message.args[0]
        try:
            outcome = self.claims.claim(invocation_id, self.worker_id, self.leases.options.lease_s)
        except StoreUnavailable as ex:
            # Dramatiq would log and swallow this and run the actor anyway. Without the
            # store nothing may run: the row stays claimable and the sweep resends it.
            log.warning("claim_store_unavailable", invocation_id=invocation_id, error=str(ex))
            raise SkipMessage("store unavailable") from ex
        if not isinstance(outcome, Claimed):
            # Not due yet: the dispatcher's sweep sends it again when it is.
            log.info("delivery_skipped", invocation_id=invocation_id, reason=outcome.reason)
            raise SkipMessage(outcome.reason)
        if not self.leases.hold(outcome):
            # The process is exiting and has released its claims, this one included.
            log.info("delivery_skipped", invocation_id=invocation_id, reason="worker_stopping")
            raise SkipMessage("worker stopping")
        current_claim.set(outcome)

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        claimed = current_claim.get()
        if claimed is not None:
            self.leases.drop(claimed)
        current_claim.set(None)

    after_skip_message = after_process_message
