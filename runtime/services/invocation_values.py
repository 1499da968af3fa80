"""What the invocation use cases take and give: the row a new invocation is stored as,
an accepted invocation, a page, an invocation with its attempts, a bulk retry's outcome.

`runtime.services.invocations` (the use cases) and `runtime.testing` (the harness's
children) build new invocations the same way, here.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from runtime.registry import Function
from runtime.store.callbacks import CallbackView
from runtime.store.invocations import NewInvocation
from runtime.store.views import AttemptView, InvocationView

#: A client's idempotency key (the contract's `Idempotency-Key`, a batch item's key, the
#: CLI's): 1 to 255 printable ASCII characters. The store's text columns hold no NUL.
IDEMPOTENCY_KEY_PATTERN = r"^[\x20-\x7e]{1,255}$"
IDEMPOTENCY_KEY_RULE = "1 to 255 printable ASCII characters"


def key_is_well_formed(key: str) -> bool:
    """Whether `key` keeps to `IDEMPOTENCY_KEY_PATTERN`."""
    return re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key) is not None


def request_hash(payload: Mapping[str, Any]) -> str:
    """Hash of the canonical JSON of an input: equal inputs, equal hashes."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def new_invocation_id() -> str:
    """A new invocation id: a random UUID."""
    return str(uuid.uuid4())


class Accepted(NamedTuple):
    """An accepted invocation, and whether this call created it (else: a replay)."""

    invocation: InvocationView
    created: bool

    def shows_details_to(self, *, can_read: bool) -> bool:
        """Whether the answer may show the invocation, or only its id and status.

        The call that created it shows it; a replay shows it only to a caller allowed to
        read invocations, so a key of `invoke` alone cannot read a result (or test a guess
        about another caller's input) by replaying that caller's idempotency key.
        """
        return self.created or can_read


class InvocationPage(NamedTuple):
    """One page of a newest-first listing; `next_cursor` is None on the last page."""

    invocations: builtins.list[InvocationView]
    next_cursor: str | None


@dataclasses.dataclass(frozen=True)
class InvocationWithAttempts:
    """An invocation and its attempt log, oldest attempt first."""

    invocation: InvocationView
    attempts: tuple[AttemptView, ...]
    #: Its completion callback and how delivering it went; None: it has none.
    callback: CallbackView | None = None


@dataclasses.dataclass(frozen=True)
class BulkRetry:
    """What a bulk retry did: the invocations queued again and the ids passed over."""

    retried: tuple[InvocationView, ...]
    #: No longer failed, missing, another tenant's, or of a suspended tenant.
    skipped: tuple[str, ...]


def new_invocation(
    fn: Function,
    new_id: str,
    *,
    tenant_id: str,
    payload: Any,
    idempotency_key: str | None,
    trigger: str,
    request_id: str | None,
    parent_id: str | None,
    scheduled_for: datetime | None = None,
    callback_url: str | None = None,
) -> NewInvocation:
    """The row to insert for `payload`, validated by `fn`'s Input (`InputInvalid` if not).

    `callback_url`, else the function's own, is where the finished invocation is reported.
    """
    data = fn.validate_input(payload).model_dump(mode="json")
    return NewInvocation(
        id=new_id,
        tenant_id=tenant_id,
        function=fn.name,
        queue=fn.queue,
        trigger=trigger,
        idempotency_key=idempotency_key or new_id,
        request_hash=request_hash(data),
        request_id=request_id,
        parent_id=parent_id,
        payload=data,
        max_retries=fn.max_retries,
        scheduled_for=scheduled_for,
        concurrency_key=fn.limits.key_of(data),
        callback_url=callback_url or fn.spec.callback_url,
    )
