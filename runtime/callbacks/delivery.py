"""Deliver completion callbacks: POST each finished invocation, signed, to its callback URL.

The sweep starts a round (`CallbackDelivery.start_round`) in a thread of its own, so a
slow receiver delays neither the sweep nor any worker. A round takes the due callbacks
of finished invocations from the store (held there while being sent, so a deliverer that
dies leaves them to the next round) and sends each through the outbound client of
`ctx.http`: an internal address is refused before anything is sent, unless
`FERRY_OUTBOUND_ALLOW` permits it.

Outcomes, like `functions/send_webhook.py`: a 2xx answer delivers. A 5xx, 408 or 429
answer, a failed connection and a timeout are tried again with exponential backoff, up to
`MAX_ATTEMPTS` tries in all. A refused address, a redirect or another 4xx fails the
delivery at once: trying again would not change it. Errors name the status or the rule,
never the answer's body.
"""

from __future__ import annotations

import json
import threading
import time

import requests
import structlog

from runtime.errors import OutboundRefused
from runtime.outbound import OutboundClient
from runtime.services.secrets import SecretService
from runtime.signing import signature_header
from runtime.store import Store
from runtime.store.callbacks import CallbackState, DueCallback

log = structlog.get_logger("ferry.callbacks")

#: Tries in all before a delivery is given up (`failed`).
MAX_ATTEMPTS = 8
#: The wait after the first failed try; it doubles after each, up to `MAX_BACKOFF_S`.
MIN_BACKOFF_S = 5.0
MAX_BACKOFF_S = 3600.0
#: How long a taken callback is held: longer than one request may take.
HOLD_S = 120.0
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 20.0
#: Callbacks one round takes at most; the next round takes the rest.
BATCH = 20
EVENT = "invocation.finished"
USER_AGENT = "Ferry-Callbacks/1"
RETRYABLE_STATUSES = frozenset({408, 429})


class RetryLater(Exception):
    """This try failed in a way another may not."""


class GiveUp(Exception):
    """This delivery cannot succeed; it is failed now."""


def callback_body(due: DueCallback) -> bytes:
    """The request body: the finished invocation as the API shows it (its input left out)."""
    document = due.invocation.as_dict()
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def backoff_s(attempt: int) -> float:
    """The wait after failed try number `attempt` (1-based)."""
    return float(min(MAX_BACKOFF_S, MIN_BACKOFF_S * 2 ** (attempt - 1)))


class CallbackDelivery:
    """Sends due completion callbacks; one round at a time per process."""

    def __init__(self, store: Store, secrets: SecretService, client: OutboundClient) -> None:
        self.store = store
        self.secrets = secrets
        self.client = client
        self._round: threading.Thread | None = None
        self._lock = threading.Lock()

    def start_round(self) -> bool:
        """Start delivering in the background unless a round is still going; for the sweep."""
        with self._lock:
            if self._round is not None and self._round.is_alive():
                return False
            self._round = threading.Thread(
                target=self._background_round, name="ferry-callbacks", daemon=True
            )
            self._round.start()
            return True

    def join(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for a round still going (when the process stops)."""
        with self._lock:
            running = self._round
        if running is not None:
            running.join(timeout=timeout_s)

    def _background_round(self) -> None:
        try:
            self.deliver_due()
        except Exception as ex:  # the next sweep starts another round
            log.error("callback_round_failed", error_type=type(ex).__name__, exc_info=ex)

    def deliver_due(self) -> int:
        """Try every due callback once (up to `BATCH`); returns how many were delivered."""
        delivered = 0
        # One at a time: each is held from just before its own request, so a slow
        # receiver ahead of it cannot outlast its hold.
        for _ in range(BATCH):
            taken = self.store.callbacks.take_due(hold_s=HOLD_S, limit=1)
            if not taken:
                break
            delivered += self.deliver(taken[0])
        return delivered

    def deliver(self, due: DueCallback) -> bool:
        """One try of one callback, its outcome recorded; True when delivered."""
        invocation_id = due.invocation.id
        context = {**due.invocation.log_context(), "attempt": due.attempt}
        try:
            status = self._send(due)
        except GiveUp as ex:
            log.warning("callback_failed", **context, error=str(ex))
            self.store.callbacks.record(invocation_id, CallbackState.FAILED, error=str(ex))
            return False
        except RetryLater as ex:
            if due.attempt >= MAX_ATTEMPTS:
                error = f"gave up after {due.attempt} attempts: {ex}"
                log.warning("callback_failed", **context, error=error)
                self.store.callbacks.record(invocation_id, CallbackState.FAILED, error=error)
                return False
            wait = backoff_s(due.attempt)
            log.info("callback_retrying", **context, error=str(ex), retry_in_s=wait)
            self.store.callbacks.record(
                invocation_id, CallbackState.PENDING, error=str(ex), retry_in_s=wait
            )
            return False
        log.info("callback_delivered", **context, status_code=status)
        self.store.callbacks.record(invocation_id, CallbackState.DELIVERED)
        return True

    def _send(self, due: DueCallback) -> int:
        """POST the callback; its 2xx status, else `RetryLater` or `GiveUp`."""
        body = callback_body(due)
        keys = self.secrets.webhook_secret(due.invocation.tenant_id).signing_keys
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Ferry-Signature": signature_header(keys, int(time.time()), body),
            "Ferry-Event": EVENT,
            "Ferry-Delivery": due.invocation.id,
            "Idempotency-Key": due.invocation.id,
        }
        try:
            response = self.client.post(
                due.url,
                data=body,
                headers=headers,
                timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
                allow_redirects=False,
                read_body=False,
            )
        except OutboundRefused as ex:
            raise GiveUp(str(ex)) from ex
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as ex:
            raise RetryLater(f"could not connect: {type(ex).__name__}") from ex
        except requests.exceptions.RequestException as ex:
            # Its text may quote the URL, and with it a token: the type only.
            raise GiveUp(f"cannot send: {type(ex).__name__}") from ex
        status = response.status_code
        if 200 <= status < 300:
            return status
        if status >= 500 or status in RETRYABLE_STATUSES:
            raise RetryLater(f"the receiver answered {status}")
        if 300 <= status < 400:
            raise GiveUp(f"the receiver answered {status}: redirects are not followed")
        raise GiveUp(f"the receiver answered {status}")
