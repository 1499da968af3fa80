"""Fair dispatch and concurrency limits (docs/fairness.md), on both backends."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from runtime.app import Runtime
from runtime.dispatch import DispatchPolicy, FunctionShare, TenantShare
from runtime.settings import Settings
from runtime.store.claims import Claimed, Limits, NotClaimed
from runtime.store.fairness import WaitReason
from runtime.store.limits import WAITING_REASONS
from runtime.store.sweep import FairWindows
from runtime.worker.queues import queue_depths
from tests.conftest import prepare
from tests.waiting import wait_for

WINDOW = 3


@pytest.fixture
def settings(backend: str, settings_for: Callable[..., Settings]) -> Settings:
    return settings_for(backend, fair_window=WINDOW)


def accept(
    runtime: Runtime, tenant: str, n: int, function: str = "echo", **input: Any
) -> list[str]:
    return [
        runtime.invocations.accept(
            tenant_id=tenant, function=function, payload={"message": f"{tenant}-{i}", **input}
        ).invocation.id
        for i in range(n)
    ]


def rows(runtime: Runtime, ids: list[str]) -> list[Any]:
    """(id, tenant, dispatched, waiting_reason, status) in the order of `ids`."""
    with runtime.store.db.engine.connect() as conn:
        found = conn.execute(
            sa.text(
                "SELECT id, tenant_id, dispatched_at IS NOT NULL AS sent, waiting_reason, status"
                " FROM invocations WHERE id IN :ids"
            ).bindparams(sa.bindparam("ids", expanding=True)),
            {"ids": ids},
        ).all()
    by_id = {r.id: r for r in found}
    return [by_id[i] for i in ids]


def waiting_in_broker(runtime: Runtime) -> int:
    return sum(d.length for d in queue_depths(runtime.broker) if d.queue == "default")


def test_a_tenant_beyond_its_window_waits_in_the_store_and_says_why(runtime, make_tenant):
    tenant = make_tenant()
    ids = accept(runtime, tenant, WINDOW + 2)
    state = rows(runtime, ids)
    # The first WINDOW are sent at once; the rest are held, with the reason.
    assert [bool(r.sent) for r in state] == [True] * WINDOW + [False, False]
    assert [r.waiting_reason for r in state] == [None] * WINDOW + ["fair_share"] * 2
    assert all(r.status == "queued" for r in state)
    assert waiting_in_broker(runtime) == WINDOW
    # What the API and the CLI show of it.
    shown = runtime.invocations.get(ids[-1], tenant).invocation
    assert shown.waiting_reason == "fair_share"
    assert shown.as_dict()["waiting_reason"] == "fair_share"


def test_fairness_off_sends_everything_at_once(settings_for, backend):
    runtime = prepare(Runtime(settings_for(backend, fair_window=WINDOW, fair_dispatch=False)))
    try:
        runtime.store.tenants.create("solo")
        ids = accept(runtime, "solo", WINDOW + 2)
        assert all(r.sent and r.waiting_reason is None for r in rows(runtime, ids))
        assert waiting_in_broker(runtime) == WINDOW + 2
    finally:
        runtime.close()


def test_a_claim_releases_the_tenants_oldest_held_invocation(runtime, make_tenant):
    tenant = make_tenant()
    ids = accept(runtime, tenant, WINDOW + 2)
    assert isinstance(runtime.store.claims.claim(ids[0], "w1", lease_s=60), Claimed)
    assert runtime.dispatcher.after_claim(tenant) == 1
    state = rows(runtime, ids)
    assert [bool(r.sent) for r in state] == [True] * (WINDOW + 1) + [False]
    assert state[WINDOW].waiting_reason is None and state[WINDOW + 1].waiting_reason == "fair_share"
    # Nothing more fits until another starts.
    assert runtime.dispatcher.after_claim(tenant) == 0


def test_a_release_the_broker_refuses_is_held_again_and_sent_by_the_next(
    runtime, make_tenant, monkeypatch
):
    tenant = make_tenant()
    ids = accept(runtime, tenant, WINDOW + 3)
    for started in ids[:2]:
        assert isinstance(runtime.store.claims.claim(started, "w1", lease_s=60), Claimed)
    in_broker = waiting_in_broker(runtime)

    # When the broker fails while a release sends two (one pipeline, or one by one)
    def unreachable(*_args: Any, **_kwargs: Any) -> None:
        raise redis.ConnectionError("down")

    with monkeypatch.context() as broken:
        broken.setattr(runtime.broker, "enqueue", unreachable)
        if hasattr(runtime.broker, "enqueue_many"):
            broken.setattr(runtime.broker, "enqueue_many", unreachable)
        assert runtime.dispatcher.after_claim(tenant) == 0

    # Then both are held again with their reason, nothing new reached the broker ...
    held = rows(runtime, ids[WINDOW:])
    assert [(bool(r.sent), r.waiting_reason) for r in held] == [(False, "fair_share")] * 3
    assert waiting_in_broker(runtime) == in_broker
    # ... and the next release, with the broker back, sends the two oldest.
    assert runtime.dispatcher.after_claim(tenant) == 2
    assert [bool(r.sent) for r in rows(runtime, ids[WINDOW:])] == [True, True, False]
    assert waiting_in_broker(runtime) == in_broker + 2


def test_a_second_tenant_waits_behind_the_first_ones_window_not_its_backlog(runtime, make_tenant):
    busy, quiet = make_tenant(), make_tenant()
    accept(runtime, busy, 50)
    [mine] = accept(runtime, quiet, 1)
    assert rows(runtime, [mine])[0].sent
    # Everything waiting in the broker: the busy tenant's window, then the quiet one's.
    assert waiting_in_broker(runtime) == WINDOW + 1


def test_the_sweep_releases_held_work_round_robin_across_tenants(runtime, make_tenant):
    tenants = [make_tenant(f"rr-{n}") for n in range(3)]
    held = {t: accept(runtime, t, WINDOW + 3)[WINDOW:] for t in tenants}
    # Every sent one starts (no release on claim here): each window is free again.
    with runtime.store.db.engine.connect() as conn:
        sent = conn.execute(
            sa.text("SELECT id FROM invocations WHERE dispatched_at IS NOT NULL")
        ).scalars()
        for invocation_id in list(sent):
            assert isinstance(runtime.store.claims.claim(invocation_id, "w", 60), Claimed)
    taken = runtime.store.sweep.take_dispatchable(
        redispatch_after_s=60, limit=5, fair=FairWindows(WINDOW)
    )
    # Rank by rank: each tenant's oldest first, before anyone's second.
    assert [d.tenant_id for d in taken[:3]] == tenants
    assert [d.id for d in taken[:3]] == [held[t][0] for t in tenants]
    assert [d.id for d in taken[3:]] == [held[tenants[0]][1], held[tenants[1]][1]]
    # The rest are within the windows: 6 more fit, and only 9 - 5 = 4 are left.
    rest = runtime.store.sweep.take_dispatchable(
        redispatch_after_s=60, limit=100, fair=FairWindows(WINDOW)
    )
    assert len(rest) == 4 and all(
        r.waiting_reason is None for r in rows(runtime, [d.id for d in rest])
    )


def test_the_sweep_keeps_each_tenant_within_its_window(runtime, make_tenant):
    tenant = make_tenant()
    ids = accept(runtime, tenant, WINDOW + 4)
    # Nothing started: the window is full, so the sweep sends none of the held ones.
    assert (
        runtime.store.sweep.take_dispatchable(redispatch_after_s=60, fair=FairWindows(WINDOW)) == []
    )
    assert sum(1 for r in rows(runtime, ids) if r.sent) == WINDOW


def test_a_tenant_of_weight_two_has_twice_the_window(runtime, make_tenant):
    heavy, light = make_tenant(), make_tenant()
    runtime.limits.set(heavy, {"weight": 2})
    heavy_ids = accept(runtime, heavy, 2 * WINDOW + 2)
    light_ids = accept(runtime, light, WINDOW + 2)
    assert sum(1 for r in rows(runtime, heavy_ids) if r.sent) == 2 * WINDOW
    assert sum(1 for r in rows(runtime, light_ids) if r.sent) == WINDOW
    # The sweep reads the same windows from the tenants' rows: all start, then it refills.
    for invocation_id in heavy_ids[: 2 * WINDOW] + light_ids[:WINDOW]:
        assert isinstance(runtime.store.claims.claim(invocation_id, "w", 60), Claimed)
    fair = runtime.dispatcher.fair_windows
    taken = runtime.store.sweep.take_dispatchable(redispatch_after_s=60, fair=fair)
    assert sorted(d.tenant_id for d in taken) == sorted([heavy, heavy, light, light])


# --- concurrency limits in the claim -----------------------------------------------------------


def test_a_claim_beyond_the_tenants_limit_is_refused_and_held(runtime, make_tenant):
    tenant = make_tenant()
    first, second = accept(runtime, tenant, 2)
    limits = Limits(tenant=1)
    claims = runtime.store.claims
    assert isinstance(claims.claim(first, "w", 60, tenant_id=tenant, limits=limits), Claimed)
    refused = claims.claim(second, "w", 60, tenant_id=tenant, limits=limits)
    assert refused == NotClaimed("tenant_concurrency")
    [state] = rows(runtime, [second])
    assert state.status == "queued" and not state.sent
    assert state.waiting_reason == "tenant_concurrency"
    # Another tenant is not limited by it.
    other = make_tenant()
    [theirs] = accept(runtime, other, 1)
    assert isinstance(claims.claim(theirs, "w", 60, tenant_id=other, limits=limits), Claimed)


def test_function_and_key_limits_count_their_own_running_invocations(runtime, make_tenant):
    tenant = make_tenant()
    a1, a2 = accept(runtime, tenant, 2, function="echo")
    [b1] = accept(runtime, tenant, 1, function="unhurried")
    claims = runtime.store.claims
    one_per_function = Limits(function=1)
    assert isinstance(claims.claim(a1, "w", 60, tenant_id=tenant, limits=one_per_function), Claimed)
    assert claims.claim(a2, "w", 60, tenant_id=tenant, limits=one_per_function) == NotClaimed(
        "function_concurrency"
    )
    assert isinstance(claims.claim(b1, "w", 60, tenant_id=tenant, limits=one_per_function), Claimed)

    k1, k2, k3, unkeyed = accept(runtime, tenant, 4, function="unhurried")
    set_keys(runtime, {k1: "customer-1", k2: "customer-1", k3: "customer-2"})
    one_per_key = Limits(key=1)
    assert isinstance(claims.claim(k1, "w", 60, tenant_id=tenant, limits=one_per_key), Claimed)
    assert claims.claim(k2, "w", 60, tenant_id=tenant, limits=one_per_key) == NotClaimed(
        "key_concurrency"
    )
    assert isinstance(claims.claim(k3, "w", 60, tenant_id=tenant, limits=one_per_key), Claimed)
    # No key: not limited by key.
    assert isinstance(claims.claim(unkeyed, "w", 60, tenant_id=tenant, limits=one_per_key), Claimed)


def set_keys(runtime: Runtime, keys: dict[str, str]) -> None:
    with runtime.store.db.engine.begin() as conn:
        for invocation_id, key in keys.items():
            conn.execute(
                sa.text("UPDATE invocations SET concurrency_key = :k WHERE id = :i"),
                {"k": key, "i": invocation_id},
            )


def test_a_release_passes_over_work_a_busy_key_blocks(runtime, make_tenant):
    tenant = make_tenant()
    runtime.dispatcher.policy = DispatchPolicy(
        window=WINDOW, functions={"unhurried": FunctionShare(per_key=1)}
    )
    running, *blocked = accept(runtime, tenant, WINDOW + 1, function="unhurried")
    free = accept(runtime, tenant, 2, function="unhurried")
    set_keys(runtime, dict.fromkeys([running, *blocked], "busy"))
    # Everything is held; the busy key has one running.
    with runtime.store.db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE invocations SET dispatched_at = NULL"))
    assert isinstance(
        runtime.store.claims.claim(running, "w", 60, tenant_id=tenant, limits=Limits(key=1)),
        Claimed,
    )
    assert runtime.dispatcher.release(tenant) == 2
    assert [bool(r.sent) for r in rows(runtime, free)] == [True, True]
    assert not any(r.sent for r in rows(runtime, blocked))


def test_nothing_is_released_while_the_tenant_is_at_its_limit(runtime, make_tenant):
    tenant = make_tenant()
    runtime.dispatcher.policy = DispatchPolicy(
        window=WINDOW, tenant_share=lambda _t: TenantShare(concurrency=1)
    )
    first, *rest = accept(runtime, tenant, 3)
    limits = runtime.dispatcher.policy.limits(tenant, "echo")
    assert isinstance(
        runtime.store.claims.claim(first, "w", 60, tenant_id=tenant, limits=limits), Claimed
    )
    assert runtime.dispatcher.release(tenant) == 0
    assert not any(r.sent for r in rows(runtime, rest))


# --- with workers: sampled from the store ---------------------------------------------------


class RunningSampler:
    """Samples the store every 50 ms: the most running at once, per tenant and per key."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.most: dict[tuple[str, str | None], int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.runtime.store.db.engine.connect() as conn:
                found = conn.execute(
                    sa.text(
                        "SELECT tenant_id, concurrency_key, count(*) AS n FROM invocations"
                        " WHERE status = 'running' GROUP BY tenant_id, concurrency_key"
                    )
                ).all()
            per_tenant: dict[str, int] = {}
            for tenant, key, n in found:
                per_tenant[tenant] = per_tenant.get(tenant, 0) + n
                if key is not None:
                    self._note((tenant, key), n)
            for tenant, n in per_tenant.items():
                self._note((tenant, None), n)
            self.samples += 1
            self._stop.wait(0.05)

    def _note(self, what: tuple[str, str | None], n: int) -> None:
        self.most[what] = max(self.most.get(what, 0), n)

    def __enter__(self) -> RunningSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def limited_worker(runtime: Runtime) -> Iterator[Runtime]:
    handle = runtime.start_worker(threads=8)
    yield runtime
    handle.stop(grace_s=5)


def all_finished(runtime: Runtime, ids: list[str]) -> Callable[[], bool]:
    def check() -> bool:
        return all(r.status == "succeeded" for r in rows(runtime, ids))

    return check


def test_a_tenant_at_its_concurrency_limit_never_runs_more(runtime, make_tenant, limited_worker):
    limited, other = make_tenant(), make_tenant()
    runtime.limits.set(limited, {"concurrency": 2})
    with RunningSampler(runtime) as sampler:
        mine = accept(runtime, limited, 12, sleep_s=0.15)
        theirs = accept(runtime, other, 4, sleep_s=1.0)
        wait_for(all_finished(runtime, theirs), timeout=60, what="the other tenant's")
        wait_for(all_finished(runtime, mine), timeout=60, what="the limited tenant's")
    assert sampler.samples > 10
    assert sampler.most[(limited, None)] == 2
    # The other tenant is unaffected: its 4 ran side by side (8 threads, 2 taken at most).
    assert sampler.most[(other, None)] == 4


def test_one_invocation_per_concurrency_key_at_a_time(runtime, make_tenant, limited_worker):
    # `sync_customer`: one per customer_id at a time, two at once per tenant.
    tenant, other = make_tenant(), make_tenant()
    with RunningSampler(runtime) as sampler:
        ids = [
            runtime.invocations.accept(
                tenant_id=tenant,
                function="sync_customer",
                payload={"customer_id": "abcab"[n % 5], "sleep_s": 0.15},
                trigger="invoke",
            ).invocation.id
            for n in range(10)
        ]
        theirs = accept(runtime, other, 3, sleep_s=1.0)
        wait_for(all_finished(runtime, theirs), timeout=60, what="the other tenant's")
        wait_for(all_finished(runtime, ids), timeout=60, what="every keyed invocation")
    assert sampler.samples > 10
    assert sampler.most[(tenant, "a")] == 1 and sampler.most[(tenant, "b")] == 1
    assert sampler.most[(tenant, None)] <= 2
    assert sampler.most[(other, None)] == 3


def test_the_reasons_are_the_ones_the_dashboard_explains():
    assert {r.value for r in WaitReason} == set(WAITING_REASONS)
