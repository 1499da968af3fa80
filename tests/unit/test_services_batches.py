"""The batch invoke use case (`InvocationService.accept_batch`), on both backends.

Per-item errors and replays, keys within one batch and across tenants, limits that
refuse a whole batch, a store failure that stores nothing, and fair dispatch of a batch
larger than the tenant's window.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
import sqlalchemy as sa

from runtime.app import Runtime
from runtime.errors import BadRequest, LimitExceeded
from runtime.services.batches import MAX_BATCH, BatchItem
from runtime.store import batches as store_batches
from runtime.store import models
from runtime.worker.queues import queue_depths
from tests.conftest import prepare
from tests.waiting import wait_for


def batch(runtime, tenant: str, items: list[BatchItem], **options: Any):
    return runtime.invocations.accept_batch(
        tenant_id=tenant, function="echo", items=items, **options
    )


def inputs(n: int, prefix: str = "m") -> list[BatchItem]:
    return [BatchItem({"message": f"{prefix}-{i}"}) for i in range(n)]


def stored(runtime, tenant: str | None = None) -> int:
    query = sa.select(sa.func.count()).select_from(models.Invocation)
    if tenant is not None:
        query = query.where(models.Invocation.tenant_id == tenant)
    with runtime.store.db.engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def sent_flags(runtime, ids: list[str]) -> dict[str, tuple[bool, str | None]]:
    with runtime.store.db.engine.connect() as connection:
        rows = connection.execute(
            sa.select(
                models.Invocation.id,
                models.Invocation.dispatched_at,
                models.Invocation.waiting_reason,
            ).where(models.Invocation.id.in_(ids))
        ).all()
    return {r.id: (r.dispatched_at is not None, r.waiting_reason) for r in rows}


def waiting_in_broker(runtime) -> int:
    return sum(d.length for d in queue_depths(runtime.broker) if d.queue == "default")


def test_each_item_gets_its_own_answer_in_order(runtime, make_tenant):
    tenant = make_tenant()
    # Given a batch whose middle item is not valid for the function
    items = [BatchItem({"message": "a"}), BatchItem({"nope": 1}), BatchItem({"message": "c"})]
    # When it is accepted
    outcomes = batch(runtime, tenant, items)
    # Then the valid items are stored, in order, and the invalid one has its own errors
    assert [o.index for o in outcomes] == [0, 1, 2]
    assert outcomes[0].created and outcomes[2].created
    assert outcomes[1].invocation is None and outcomes[1].problem == "input-invalid"
    assert {tuple(e["loc"]) for e in outcomes[1].errors} >= {("input", "message")}
    assert stored(runtime, tenant) == 2
    first = runtime.invocations.get(outcomes[0].invocation.id, tenant).invocation
    assert first.payload["message"] == "a" and first.trigger == "http"
    assert outcomes[0].invocation.created_at < outcomes[2].invocation.created_at


def test_a_batch_sent_again_is_all_replays_and_stores_nothing(runtime, make_tenant):
    tenant = make_tenant()
    items = [BatchItem({"message": f"m{i}"}, f"key-{i}") for i in range(5)]
    first = batch(runtime, tenant, items)
    again = batch(runtime, tenant, items)
    assert all(o.created for o in first)
    assert [o.created for o in again] == [False] * 5
    assert [o.invocation.id for o in again] == [o.invocation.id for o in first]
    assert stored(runtime, tenant) == 5


def test_a_key_used_with_another_input_is_that_items_conflict(runtime, make_tenant):
    tenant = make_tenant()
    batch(runtime, tenant, [BatchItem({"message": "first"}, "k1")])
    outcomes = batch(
        runtime, tenant, [BatchItem({"message": "other"}, "k1"), BatchItem({"message": "x"}, "k2")]
    )
    assert outcomes[0].invocation is None and outcomes[0].problem == "idempotency-conflict"
    assert outcomes[0].errors[0]["loc"] == ["idempotency_key"]
    assert outcomes[1].created
    assert stored(runtime, tenant) == 2


def test_a_key_twice_in_one_batch_replays_the_first_or_conflicts(runtime, make_tenant):
    tenant = make_tenant()
    outcomes = batch(
        runtime,
        tenant,
        [
            BatchItem({"message": "same"}, "k"),
            BatchItem({"message": "same"}, "k"),
            BatchItem({"message": "different"}, "k"),
        ],
    )
    assert outcomes[0].created
    assert not outcomes[1].created and outcomes[1].invocation.id == outcomes[0].invocation.id
    assert outcomes[2].problem == "idempotency-conflict"
    assert stored(runtime, tenant) == 1


def test_another_tenants_keys_make_its_own_invocations(runtime, make_tenant):
    acme, globex = make_tenant(), make_tenant()
    items = [BatchItem({"message": f"m{i}"}, f"key-{i}") for i in range(3)]
    theirs = batch(runtime, acme, items)
    mine = batch(runtime, globex, items)
    assert all(o.created for o in mine)
    assert {o.invocation.tenant_id for o in mine} == {globex}
    assert not {o.invocation.id for o in mine} & {o.invocation.id for o in theirs}
    assert stored(runtime, acme) == 3 and stored(runtime, globex) == 3


def test_over_max_waiting_the_whole_batch_is_refused_and_nothing_stored(runtime, make_tenant):
    tenant = make_tenant()
    runtime.limits.set(tenant, {"max_waiting": 5})
    with pytest.raises(LimitExceeded) as refused:
        batch(runtime, tenant, inputs(6))
    assert refused.value.limit == "max_waiting"
    assert stored(runtime, tenant) == 0
    keyed = [BatchItem({"message": f"m{i}"}, f"k{i}") for i in range(5)]
    assert all(o.created for o in batch(runtime, tenant, keyed))
    # A batch of replays adds nothing, so the limit lets it through.
    assert not any(o.created for o in batch(runtime, tenant, keyed))


def test_the_rate_takes_a_token_per_new_item_or_refuses_the_batch(runtime, make_tenant):
    tenant = make_tenant()
    runtime.limits.wall_clock = lambda: 1_800_000_000.0
    runtime.limits.set(tenant, {"rate_per_s": 1, "burst": 4})
    with pytest.raises(LimitExceeded) as over_burst:
        batch(runtime, tenant, inputs(5))
    assert over_burst.value.limit == "rate_per_s" and "burst" in str(over_burst.value)
    assert len(batch(runtime, tenant, inputs(3, "a"))) == 3
    with pytest.raises(LimitExceeded) as refused:
        batch(runtime, tenant, inputs(2, "b"))  # one token left, two needed
    assert refused.value.retry_after_s == pytest.approx(1.0)
    assert stored(runtime, tenant) == 3
    assert len(batch(runtime, tenant, inputs(1, "c"))) == 1


def test_a_store_failure_stores_none_of_the_batch(runtime, make_tenant, monkeypatch):
    tenant = make_tenant()
    calls = []

    def fail_on_the_third(connection, *args):
        calls.append(args)
        if len(calls) == 3:
            raise RuntimeError("the store failed midway")
        original(connection, *args)

    original = store_batches.callbacks.insert_in
    monkeypatch.setattr(store_batches.callbacks, "insert_in", fail_on_the_third)
    with pytest.raises(RuntimeError):
        batch(runtime, tenant, inputs(5), callback_url="https://example.com/hook")
    assert len(calls) == 3
    assert stored(runtime, tenant) == 0
    monkeypatch.undo()
    outcomes = batch(runtime, tenant, inputs(5), callback_url="https://example.com/hook")
    assert runtime.store.callbacks.get(outcomes[4].invocation.id) is not None


def test_batch_size_is_bounded(runtime, make_tenant):
    tenant = make_tenant()
    with pytest.raises(BadRequest):
        batch(runtime, tenant, inputs(MAX_BATCH + 1))
    with pytest.raises(BadRequest):
        batch(runtime, tenant, [])
    with pytest.raises(BadRequest):  # a key only Ferry makes
        batch(runtime, tenant, [BatchItem({"message": "x"}, "schedule:nightly:1")])
    assert stored(runtime, tenant) == 0


def test_delay_applies_to_every_item(runtime, make_tenant):
    tenant = make_tenant()
    outcomes = batch(runtime, tenant, inputs(3), delay_s=3600)
    assert {o.invocation.status for o in outcomes} == {"scheduled"}
    assert not any(
        sent for sent, _ in sent_flags(runtime, [o.invocation.id for o in outcomes]).values()
    )


def test_a_batch_beyond_the_window_sends_the_window_and_holds_the_rest(runtime, make_tenant):
    tenant = make_tenant()
    window = runtime.dispatcher.policy.window(tenant)
    # When a batch of 300 is accepted with fair dispatch on (no worker yet)
    outcomes = batch(runtime, tenant, inputs(300))
    ids = [o.invocation.id for o in outcomes]
    # Then the window's worth was sent, the oldest first; the rest wait, saying why
    flags = sent_flags(runtime, ids)
    assert [flags[i][0] for i in ids] == [True] * window + [False] * (300 - window)
    assert {flags[i][1] for i in ids[window:]} == {"fair_share"}
    assert {flags[i][1] for i in ids[:window]} == {None}
    # and the answers say the same as the store
    assert [o.invocation.waiting_reason for o in outcomes] == [None] * window + ["fair_share"] * (
        300 - window
    )
    assert waiting_in_broker(runtime) == window
    # And all of them run
    handle = runtime.start_worker()
    try:
        wait_for(
            lambda: runtime.store.invocations.counts_by_status(tenant).get("succeeded") == 300,
            timeout=120,
            what="the batch to finish",
        )
    finally:
        handle.stop(grace_s=5)


def test_fairness_off_sends_the_whole_batch(settings_for, backend):
    rt = prepare(Runtime(settings_for(backend, fair_dispatch=False)))
    try:
        rt.store.tenants.create("acme")
        ids = [
            o.invocation.id
            for o in rt.invocations.accept_batch(
                tenant_id="acme", function="echo", items=inputs(100)
            )
        ]
        assert all(sent for sent, _ in sent_flags(rt, ids).values())
    finally:
        rt.close()


def test_sends_that_fail_are_left_to_the_sweep(runtime, make_tenant, monkeypatch):
    tenant = make_tenant()

    def broken(*args, **kwargs):
        raise redis.ConnectionError("down")

    monkeypatch.setattr(runtime.broker, "enqueue", broken)
    if hasattr(runtime.broker, "enqueue_many"):
        monkeypatch.setattr(runtime.broker, "enqueue_many", broken)
    outcomes = batch(runtime, tenant, inputs(3))
    ids = [o.invocation.id for o in outcomes]
    assert all(o.created for o in outcomes)
    assert not any(sent for sent, _ in sent_flags(runtime, ids).values())
    monkeypatch.undo()
    assert runtime.sweep().sent == 3


def test_a_batch_document_holds_integers_past_64_bits_and_aware_times():
    # orjson refuses such integers; the batch falls back to the standard library for them
    import json as stdlib_json
    from datetime import UTC, datetime

    from runtime.store.driver import json_text

    at = datetime(2026, 11, 30, 7, 30, tzinfo=UTC)
    document = json_text([{"payload": {"n": 2**70}, "created_at": at, "result": None}])
    assert stdlib_json.loads(document) == [
        {"payload": {"n": 2**70}, "created_at": "2026-11-30T07:30:00+00:00", "result": None}
    ]
