"""Claim the invocation in the store before an attempt runs; skip deliveries that lost."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

import dramatiq
import structlog
from dramatiq.middleware import SkipMessage

from runtime.context import current_claim, recorded_outcome
from runtime.dispatch import Dispatcher
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
    when it ends: when its outcome is recorded, which for a success handed to the store's
    batch (`Claims.succeed_later`) is when the batch is written. A success that waits out
    an outage in the batch keeps its lease, so the sweep does not take it back meanwhile.

    With a `dispatcher`, the claim respects the tenant's and the function's concurrency
    limits, and a claim or a limited attempt's end releases the tenant's held work
    (fair dispatch, docs/fairness.md). A release that fails is left to the sweep.
    """

    def __init__(
        self,
        claims: Claims,
        worker_id: str,
        leases: LeaseKeeper,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.claims = claims
        self.worker_id = worker_id
        self.leases = leases
        self.dispatcher = dispatcher

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        recorded_outcome.set(None)
        invocation_id = message.options.get("invocation_id") or message.args[0]
        tenant_id = message.options.get("tenant_id")
        try:
            limits = None
            if self.dispatcher is not None and tenant_id is not None:
                # Read from the store (cached): inside the guard, like the claim itself.
                limits = self.dispatcher.policy.limits(tenant_id, message.actor_name)
            outcome = self.claims.claim(
                invocation_id,
                self.worker_id,
                self.leases.options.lease_s,
                tenant_id=tenant_id,
                limits=limits,
            )
        except StoreUnavailable as ex:
            # Dramatiq would log and swallow this and run the actor anyway. Without the
            # store nothing may run: the row stays claimable and the sweep resends it.
            log.warning("claim_store_unavailable", invocation_id=invocation_id, error=str(ex))
            raise SkipMessage("store unavailable") from ex
        except Exception as ex:
            # The same for any other failure: an attempt never runs without its claim.
            log.error("claim_failed", invocation_id=invocation_id, error=str(ex), exc_info=ex)
            raise SkipMessage("claim failed") from ex
        if not isinstance(outcome, Claimed):
            # Not due yet: the dispatcher's sweep sends it again when it is.
            log.info("delivery_skipped", invocation_id=invocation_id, reason=outcome.reason)
            raise SkipMessage(outcome.reason)
        if not self.leases.hold(outcome):
            # The process is exiting and has released its claims, this one included.
            log.info("delivery_skipped", invocation_id=invocation_id, reason="worker_stopping")
            raise SkipMessage("worker stopping")
        current_claim.set(outcome)
        if self.dispatcher is not None:
            self._release(self.dispatcher.after_claim, outcome.invocation.tenant_id)

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        claimed = current_claim.get()
        written = recorded_outcome.get()
        recorded_outcome.set(None)
        if claimed is not None:
            if isinstance(written, concurrent.futures.Future):
                written.add_done_callback(lambda _written: self.leases.drop(claimed))
            else:
                self.leases.drop(claimed)
            if self.dispatcher is not None:
                inv = claimed.invocation
                self._release(self.dispatcher.after_finish, inv.tenant_id, inv.function)
        current_claim.set(None)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        claimed = current_claim.get()
        if claimed is not None:
            self.leases.drop(claimed)
        current_claim.set(None)

    @staticmethod
    def _release(release: Callable[..., int], tenant_id: str, *args: str) -> None:
        try:
            release(tenant_id, *args)
        except Exception as ex:
            # Never fails the attempt: held work stays in the store; the sweep releases it.
            log.warning("release_failed", tenant_id=tenant_id, error=str(ex), exc_info=ex)
