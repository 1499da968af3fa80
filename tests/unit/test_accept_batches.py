"""Group commit of single accepts: concurrent INSERTs of one process in one statement."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from runtime.app import Runtime
from runtime.errors import IdempotencyConflict, StoreUnavailable, TenantSuspended
from runtime.settings import Settings
from runtime.store import invocations as invocations_module
from runtime.store.accept_batches import write_accepts
from runtime.store.invocations import NewInvocation, insert_values, view_of
from runtime.store.models import TenantStatus
from runtime.store.tenants import parse_scopes


@pytest.fixture(autouse=True)
def _postgresql_only(backend: str) -> None:
    if backend != "production":
        pytest.skip("accepts are group-committed on PostgreSQL only")


@pytest.fixture
def settings(backend: str, settings_for: Callable[..., Settings]) -> Settings:
    """Group commit of accepts on (as it ships), whatever the default becomes."""
    return settings_for(backend, accept_group_commit=True)


def new_row(
    runtime: Runtime,
    tenant: str,
    key: str | None = None,
    *,
    window: int | None = None,
    key_id: str | None = None,
) -> dict[str, Any]:
    new = NewInvocation(
        id=str(uuid.uuid4()),
        tenant_id=tenant,
        function="echo",
        queue="default",
        trigger="api",
        idempotency_key=key or uuid.uuid4().hex,
        request_hash="h",
        request_id=None,
        parent_id=None,
        payload={"message": "x"},
        max_retries=3,
    )
    view = view_of(new, runtime.store.db.clock())
    return insert_values(view, sent_at=view.created_at, window=window, key_id=key_id)


def test_a_batch_inserts_only_what_the_single_insert_would(runtime: Runtime, make_tenant):
    # Given an active tenant with a revoked key, a suspended tenant, and a key already taken
    active, suspended = make_tenant(), make_tenant()
    runtime.store.tenants.set_status(suspended, TenantStatus.SUSPENDED)
    revoked, _ = runtime.store.tenants.create_key(active, parse_scopes("invoke"))
    runtime.store.tenants.revoke_key(revoked.id)
    taken = new_row(runtime, active, "taken")
    assert write_accepts(runtime.store.db, [taken])[0] is not None

    # When one batch holds a free row, a row of the suspended tenant, one with the revoked
    # key, one under the taken key, and two rows with the same new key
    rows = [
        new_row(runtime, active),
        new_row(runtime, suspended),
        new_row(runtime, active, key_id=revoked.id),
        new_row(runtime, active, "taken"),
        new_row(runtime, active, "twice"),
        new_row(runtime, active, "twice"),
    ]
    outcomes = write_accepts(runtime.store.db, rows)

    # Then only the free row and the first of the pair are stored
    assert [o is not None for o in outcomes] == [True, False, False, False, True, False]
    assert runtime.store.invocations.get(rows[0]["id"]).status == "queued"
    holder = runtime.store.invocations.find_by_key(active, "echo", "twice")
    assert holder is not None and holder.id == rows[4]["id"]


def test_a_batch_sends_no_more_than_the_window_admits(runtime: Runtime, make_tenant):
    # Given a tenant with one invocation sent, and a window of three
    tenant = make_tenant()
    assert write_accepts(runtime.store.db, [new_row(runtime, tenant, window=3)])[0] is not None

    # When a batch of three due invocations of the tenant comes, and one of another tenant
    other = make_tenant()
    rows = [new_row(runtime, tenant, window=3) for _ in range(3)]
    rows.insert(1, new_row(runtime, other, window=3))
    outcomes = write_accepts(runtime.store.db, rows)

    # Then the first two of the tenant's fill its window and the third is held, in order;
    # the other tenant's window is its own
    sent = [o is not None and o["dispatched_at"] is not None for o in outcomes]
    assert sent == [True, True, True, False]
    held = runtime.store.invocations.get(rows[3]["id"])
    assert held.waiting_reason == "fair_share"


def test_a_batch_of_one_goes_by_the_single_insert_with_the_same_answers(
    runtime: Runtime, make_tenant, monkeypatch: pytest.MonkeyPatch
):
    # Given the batch statement out of reach (a lone accept must not need it), an active
    # tenant with a revoked key, a suspended tenant and a key already taken
    def no_batch_statement(*_args: Any) -> Any:
        raise AssertionError("a batch of one went by the batch statement")

    monkeypatch.setattr(invocations_module, "write_accepts", no_batch_statement)
    write = runtime.store.invocations._write_accepts
    active, suspended = make_tenant(), make_tenant()
    runtime.store.tenants.set_status(suspended, TenantStatus.SUSPENDED)
    revoked, _ = runtime.store.tenants.create_key(active, parse_scopes("invoke"))
    runtime.store.tenants.revoke_key(revoked.id)
    [taken] = write([new_row(runtime, active, "taken", window=1)])

    # When each comes alone, as the group commit hands a lone accept over
    [held] = write([new_row(runtime, active, window=1)])
    refused = [
        write([new_row(runtime, suspended)]),
        write([new_row(runtime, active, key_id=revoked.id)]),
        write([new_row(runtime, active, "taken")]),
    ]

    # Then the answers are the batch statement's: sent, held by the full window, refused
    assert taken is not None and taken["dispatched_at"] is not None
    assert held is not None and held["dispatched_at"] is None
    assert refused == [[None], [None], [None]]


@pytest.mark.parametrize("grouped", [True, False], ids=["group-committed", "single"])
def test_concurrent_accepts_keep_their_own_answers(
    runtime_with: Callable[..., Runtime], make_tenant, grouped: bool
):
    # Given accepts group-committed or each on its own (FERRY_ACCEPT_GROUP_COMMIT), a
    # tenant, one key already used, and a suspended tenant
    runtime = runtime_with(accept_group_commit=grouped)
    tenant, suspended = make_tenant(), make_tenant()
    runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "first"}, idempotency_key="k"
    )
    runtime.store.tenants.set_status(suspended, TenantStatus.SUSPENDED)
    start = threading.Barrier(12)

    def accept(n: int) -> Any:
        start.wait()
        try:
            if n == 0:  # the key again, with the same body: a replay
                return runtime.invocations.accept(
                    tenant_id=tenant,
                    function="echo",
                    payload={"message": "first"},
                    idempotency_key="k",
                )
            if n == 1:  # the key again, with another body: a conflict
                return runtime.invocations.accept(
                    tenant_id=tenant,
                    function="echo",
                    payload={"message": "other"},
                    idempotency_key="k",
                )
            if n == 2:
                return runtime.invocations.accept(
                    tenant_id=suspended, function="echo", payload={"message": "x"}
                )
            return runtime.invocations.accept(
                tenant_id=tenant, function="echo", payload={"message": f"m{n}"}
            )
        except Exception as ex:
            return ex

    # When twelve threads accept at once
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(accept, range(12)))

    # Then each gets its own answer, as on the single path
    assert answers[0].created is False
    assert isinstance(answers[1], IdempotencyConflict)
    assert isinstance(answers[2], TenantSuspended)
    created = answers[3:]
    assert all(a.created for a in created), created
    assert len({a.invocation.id for a in created}) == 9
    for answer in created:
        assert runtime.store.invocations.get(answer.invocation.id).status == "queued"
    # and group-committed ones went through the committer, the others each on its own
    committer = runtime.store.invocations._accepts
    if grouped:
        assert committer is not None and committer.requests >= 11
    else:
        assert committer is None


def test_a_store_error_reaches_every_waiting_accept(runtime_with: Callable[..., Runtime]):
    from tests.unit.conftest import closed_port

    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/ferry"
    down = runtime_with(
        migrate=False, database_url=url, db_connect_timeout_s=1, accept_group_commit=True
    )
    rows = [new_row(down, "t")]
    with pytest.raises(StoreUnavailable):
        down.store.invocations._accepts.submit(rows[0])  # type: ignore[union-attr]
