"""The claim middleware: a delivery never runs without its claim, whatever fails first."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from dramatiq.middleware import SkipMessage
from structlog.testing import capture_logs

from runtime.errors import StoreUnavailable
from runtime.worker.middleware.claim import ClaimMiddleware


class FailingClaims:
    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    def claim(self, *args, **kwargs):
        self.calls += 1
        raise self.error


class FailingPolicy:
    """Limits read from a store that is down (a psycopg error, not yet StoreUnavailable)."""

    def limits(self, tenant_id: str, function: str):
        raise ConnectionError("server closed the connection unexpectedly")


def delivery() -> SimpleNamespace:
    return SimpleNamespace(
        options={"invocation_id": "inv-1", "tenant_id": "acme"}, actor_name="echo", args=()
    )


def middleware(claims, policy=None) -> ClaimMiddleware:
    leases = SimpleNamespace(options=SimpleNamespace(lease_s=30))
    dispatcher = None if policy is None else SimpleNamespace(policy=policy)
    return ClaimMiddleware(claims, "w-1", leases, dispatcher)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("claims", "policy", "event"),
    [
        (FailingClaims(StoreUnavailable("down")), None, "claim_store_unavailable"),
        (FailingClaims(RuntimeError("a bug")), None, "claim_failed"),
        (FailingClaims(RuntimeError("never reached")), FailingPolicy(), "claim_failed"),
    ],
    ids=["store-down", "claim-raises", "limits-read-raises"],
)
def test_a_delivery_whose_claim_fails_is_skipped_not_run(claims, policy, event):
    # Given a failure before the claim is won (Dramatiq logs and swallows an error raised
    # in a "before" hook and runs the actor anyway)
    with capture_logs() as logs, pytest.raises(SkipMessage):
        # When a delivery comes in, then it is skipped: the row stays claimable, the
        # sweep sends it again
        middleware(claims, policy).before_process_message(None, delivery())  # type: ignore[arg-type]
    assert [e["event"] for e in logs] == [event]
