"""Invocation views built for speed (`InvocationView.from_fields`) are the views `__init__` builds."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from runtime.store.invocations import NewInvocation, insert_values, view_of
from runtime.store.views import INVOCATION_FIELDS, InvocationView

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def new(**changes: object) -> NewInvocation:
    fields: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "tenant_id": "acme",
        "function": "echo",
        "queue": "default",
        "trigger": "api",
        "idempotency_key": "k",
        "request_hash": "h",
        "request_id": "r",
        "parent_id": None,
        "payload": {"message": "x"},
        "max_retries": 3,
        **changes,
    }
    return NewInvocation(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("held", [False, True])
@pytest.mark.parametrize("scheduled_for", [None, NOW + timedelta(hours=1)])
def test_view_of_is_the_view_init_builds(held: bool, scheduled_for: datetime | None):
    view = view_of(new(scheduled_for=scheduled_for), NOW, held=held)

    # Every field is set on the instance, and it equals the view built by __init__
    assert sorted(vars(view)) == sorted(INVOCATION_FIELDS)
    assert view == InvocationView(**{name: getattr(view, name) for name in INVOCATION_FIELDS})
    due = scheduled_for is None
    assert view.status == ("queued" if due else "scheduled")
    assert view.waiting_reason == ("fair_share" if held and due else None)
    assert (view.attempts, view.budget_start, view.created_at) == (0, 0, NOW)
    # and it is as immutable and as changeable as any
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.status = "running"  # type: ignore[misc]
    assert view.evolve(status="running").status == "running"


def test_from_fields_takes_the_defaults_of_fields_left_out():
    full = view_of(new(), NOW)
    fields = {k: v for k, v in vars(full).items() if k not in ("concurrency_key", "waiting_reason")}

    view = InvocationView.from_fields(fields)

    assert (view.concurrency_key, view.waiting_reason) == (None, None)
    assert view == full


def test_insert_values_has_every_column_and_the_send_time():
    view = view_of(new(), NOW)
    values = insert_values(view, sent_at=NOW, window=4, key_id="key")
    assert {name: values[name] for name in INVOCATION_FIELDS} == vars(view)
    assert (values["dispatched_at"], values["_window"], values["_key_id"]) == (NOW, 4, "key")
    # the values are a copy: changing them leaves the view as it was
    values["status"] = "running"
    assert view.status == "queued"


def test_evolve_changes_only_what_it_is_given_and_refuses_unknown_fields():
    view = view_of(new(), NOW)

    changed = view.evolve(status="running", attempts=1)

    assert changed == dataclasses.replace(view, status="running", attempts=1)
    assert (view.status, view.attempts) == ("queued", 0)
    with pytest.raises(TypeError, match="no field colour"):
        view.evolve(colour="red")
