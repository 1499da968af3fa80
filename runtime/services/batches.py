"""The batch invoke use case: up to `MAX_BATCH` inputs of one function in one call.

The rules are the single invoke's (`InvocationService.accept`), applied per item, with
one validation pass, one secrets check, one limits check, one commit and one broker
round trip for the whole batch:

- An item whose input is not valid gets its own errors (422) and is not stored; the
  valid ones are.
- Idempotency per item: a key stored before with the same input is a replay (its
  stored invocation, `created` False); with another input, that item alone is a
  conflict (422). Keys are per tenant and function, as for single invokes.
- The same key twice in one batch: the first occurrence is stored (or replayed); each
  later one is a replay of the invocation under that key if its input is the same,
  else a conflict.
- Limits refuse the whole batch or none of it (`LimitService.check_accept_batch`):
  `max_waiting` counts every new invocation the batch would add, and the accept rate
  takes one token per new invocation.
- Stored whole or not at all (`Batches.insert_many`). With fair dispatch the new rows
  are stored held (`fair_share`), and one statement admits those the tenant's window
  has room for (`Batches.admit_many`); they go to the broker in one round trip
  (`Dispatcher.send_many`), the rest wait their turn.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from runtime.callbacks.urls import callback_url_problem
from runtime.errors import BadRequest, InputInvalid, Unavailable
from runtime.services.invocation_values import (
    IDEMPOTENCY_KEY_RULE,
    key_is_well_formed,
    new_invocation,
)
from runtime.services.secrets import require_secrets
from runtime.store.invocations import NewInvocation
from runtime.store.models import Status
from runtime.store.sweep import Dispatch
from runtime.store.views import InvocationView

if TYPE_CHECKING:
    from runtime.services.invocations import InvocationService

log = structlog.get_logger("ferry.invocations")

#: The most items one batch may carry.
MAX_BATCH = 1000
CONFLICT_MESSAGE = "this idempotency key was used with a different input for this function"


@dataclasses.dataclass(frozen=True)
class BatchItem:
    """One input of a batch, with its optional idempotency key."""

    payload: Any
    idempotency_key: str | None = None


@dataclasses.dataclass(frozen=True)
class ItemOutcome:
    """What became of one item: its invocation (new or replayed), or its errors."""

    index: int
    invocation: InvocationView | None = None
    #: True: this batch stored it; False: a replay of one stored before.
    created: bool = False
    #: `{loc, msg}` for each problem, when the item was refused (422); `loc` is within the
    #: item: `["input", ...]` for the input's problems, `["idempotency_key"]` for a conflict.
    errors: tuple[dict[str, Any], ...] = ()
    #: Why it was refused: `input-invalid` or `idempotency-conflict`.
    problem: str | None = None


def accept_batch(
    service: InvocationService,
    *,
    tenant_id: str,
    function: str,
    items: Sequence[BatchItem],
    trigger: str = "http",
    request_id: str | None = None,
    at: datetime | None = None,
    delay_s: float | None = None,
    callback_url: str | None = None,
) -> list[ItemOutcome]:
    """Validate, store and send a batch; one outcome per item, in the items' order."""
    from runtime.services.invocations import CLIENT_TRIGGERS, SYSTEM_KEY_PREFIXES, TRIGGERS

    if trigger not in TRIGGERS:
        raise ValueError(f"trigger must be one of {', '.join(TRIGGERS)}; got {trigger!r}")
    if not 1 <= len(items) <= MAX_BATCH:
        raise BadRequest(f"a batch has from 1 to {MAX_BATCH} items; got {len(items)}")
    if trigger in CLIENT_TRIGGERS:
        for index, item in enumerate(items):
            if item.idempotency_key is not None and not key_is_well_formed(item.idempotency_key):
                raise BadRequest(f"item {index}: an idempotency key must be {IDEMPOTENCY_KEY_RULE}")
            if (item.idempotency_key or "").startswith(SYSTEM_KEY_PREFIXES):
                raise BadRequest(
                    f"item {index}: an idempotency key may not start with "
                    f"{' or '.join(repr(p) for p in SYSTEM_KEY_PREFIXES)}: Ferry makes those"
                )
    if callback_url is not None and (problem := callback_url_problem(callback_url)):
        raise BadRequest(problem)
    scheduled_for = service._due_at(at, delay_s)
    fn = service.registry.get(function)
    outcomes: dict[int, ItemOutcome] = {}
    rows: list[NewInvocation] = []
    row_items: list[int] = []
    first_of_key: dict[str, int] = {}
    repeats: list[tuple[int, NewInvocation]] = []
    for index, item in enumerate(items):
        try:
            row = new_invocation(
                fn,
                service.id_factory(),
                tenant_id=tenant_id,
                payload=item.payload,
                idempotency_key=item.idempotency_key,
                trigger=trigger,
                request_id=request_id,
                parent_id=None,
                scheduled_for=scheduled_for,
                callback_url=callback_url,
            )
        except InputInvalid as ex:
            errors = tuple({**e, "loc": ["input", *e.get("loc", [])]} for e in ex.errors)
            outcomes[index] = ItemOutcome(index, errors=errors, problem="input-invalid")
            continue
        if row.idempotency_key in first_of_key:
            repeats.append((index, row))
            continue
        first_of_key[row.idempotency_key] = index
        rows.append(row)
        row_items.append(index)
    by_key: dict[str, InvocationView] = {}
    if rows:
        require_secrets(service.store, tenant_id, fn.spec.secrets)
        if service.limits is not None:
            service.limits.check_accept_batch(
                tenant_id, fn, trigger=trigger, count_new=lambda: _count_new(service, rows)
            )
        fair = service.dispatcher.policy.fair
        stored = service.store.batches.insert_many(rows, held=fair)
        new_views = _dispatch_new(service, tenant_id, list(stored.created.values()))
        by_key = {**stored.existing, **{v.idempotency_key: v for v in new_views}}
        for index, row in zip(row_items, rows, strict=True):
            created = row.id in stored.created
            outcomes[index] = _outcome(index, row, by_key[row.idempotency_key], created=created)
        log.info(
            "batch_accepted",
            tenant_id=tenant_id,
            function=fn.name,
            trigger=trigger,
            request_id=request_id,
            items=len(items),
            created=len(stored.created),
        )
    for index, row in repeats:
        outcomes[index] = _outcome(index, row, by_key[row.idempotency_key], created=False)
    return [outcomes[index] for index in range(len(items))]


def _outcome(index: int, row: NewInvocation, held: InvocationView, *, created: bool) -> ItemOutcome:
    if created:
        return ItemOutcome(index, held, created=True)
    if held.request_hash != row.request_hash:
        errors = ({"loc": ["idempotency_key"], "msg": CONFLICT_MESSAGE},)
        return ItemOutcome(index, errors=errors, problem="idempotency-conflict")
    return ItemOutcome(index, held, created=False)


def _count_new(service: InvocationService, rows: Sequence[NewInvocation]) -> int:
    """How many of the rows no stored invocation holds the key of (one statement)."""
    first = rows[0]
    taken = service.store.batches.find_by_keys(
        first.tenant_id, first.function, [row.idempotency_key for row in rows]
    )
    return len(rows) - len(taken)


def _dispatch_new(
    service: InvocationService, tenant_id: str, created: list[InvocationView]
) -> list[InvocationView]:
    """Send the batch's new due invocations, or as many as fair dispatch admits now.

    Returns the created views as they now stand: with fair dispatch they were stored held
    (`fair_share`), and those admitted are no longer waiting for their share.
    """
    due = [v for v in created if v.status == Status.QUEUED]
    if not due:
        return created
    dispatcher = service.dispatcher
    if dispatcher.policy.fair:
        try:
            admitted = set(
                service.store.batches.admit_many(
                    tenant_id, [v.id for v in due], dispatcher.policy.window(tenant_id)
                )
            )
        except Unavailable:
            # Stored and unsent: the sweep sends them (`dispatched_at` is NULL).
            log.warning("batch_admit_failed", tenant_id=tenant_id, count=len(due))
            return created
        due = [v for v in due if v.id in admitted]
        created = [v.evolve(waiting_reason=None) if v.id in admitted else v for v in created]
    dispatcher.send_many([Dispatch(v.id, v.tenant_id, v.function, v.queue) for v in due])
    return created
