"""Per-tenant limits: storage, effective values, counts, and refusals at accept.

Each test runs on the embedded store and on real PostgreSQL (the `runtime` fixture).
"""

from __future__ import annotations

import pytest

from runtime.errors import FunctionDefinitionError, LimitExceeded, RequestRejected, TenantNotFound
from runtime.function_limits import FunctionLimits
from runtime.registry import function
from runtime.store.limits import Counts, LimitDefaults, TenantLimits
from tests.fixtures.functions.probes import EchoIn

NOW = 1_800_000_000.0


@pytest.fixture
def frozen(runtime):
    """The limit service's wall clock, standing still unless a test moves it."""
    clock = {"now": NOW}
    runtime.limits.wall_clock = lambda: clock["now"]
    return clock


def stored(runtime, tenant_id):
    return runtime.invocations.list(tenant_id).invocations


def test_limits_are_stored_with_the_tenant_and_null_follows_the_default(runtime, make_tenant):
    acme = make_tenant("acme")
    assert runtime.limits.own(acme) == TenantLimits()
    assert runtime.limits.effective(acme).as_dict() == {
        "rate_per_s": 0.0, "burst": 1, "concurrency": 0, "max_waiting": 0, "weight": 1,
    }  # fmt: skip
    runtime.limits.set(acme, {"rate_per_s": 2.5, "concurrency": 4, "weight": 3})
    runtime.limits.set(acme, {"max_waiting": 10})  # the others keep their values
    own = runtime.limits.own(acme)
    assert own == TenantLimits(rate_per_s=2.5, concurrency=4, max_waiting=10, weight=3)
    effective = runtime.limits.effective(acme)
    assert (effective.rate_per_s, effective.burst, effective.concurrency) == (2.5, 3, 4)
    assert runtime.limits.customised() == {acme: effective}
    runtime.limits.reset(acme)
    assert runtime.limits.own(acme) == TenantLimits()
    assert runtime.limits.customised() == {}


def test_bad_limits_are_refused_and_unknown_tenants_not_found(runtime, make_tenant):
    acme = make_tenant("acme")
    for bad in (
        {"rate_per_s": -1},
        {"burst": 1.5},
        {"weight": 0},
        {"concurrency": 2**31},
        {"max_waiting": "ten"},
        {"speed": 3},
        {"rate_per_s": float("inf")},
    ):
        with pytest.raises(RequestRejected):
            runtime.limits.set(acme, bad)
    assert runtime.limits.own(acme) == TenantLimits()
    with pytest.raises(TenantNotFound):
        runtime.limits.set("nobody", {"burst": 3})
    with pytest.raises(TenantNotFound):
        runtime.limits.report("nobody")


def test_defaults_come_from_settings():
    defaults = LimitDefaults(rate_per_s=10, burst=0, concurrency=5, max_waiting=100, weight=2)
    effective = defaults.for_tenant(TenantLimits(concurrency=0, burst=4))
    assert effective.as_dict() == {
        "rate_per_s": 10.0, "burst": 4, "concurrency": 0, "max_waiting": 100, "weight": 2,
    }  # fmt: skip
    assert defaults.for_tenant(TenantLimits()).burst == 10  # a second's worth of the rate


def test_the_rate_refuses_past_the_burst_stores_nothing_and_refills(runtime, make_tenant, frozen):
    acme, globex = make_tenant("acme"), make_tenant("globex")
    runtime.limits.set(acme, {"rate_per_s": 2, "burst": 3})
    for n in range(3):
        runtime.invocations.accept(tenant_id=acme, function="echo", payload={"message": f"{n}"})
    with pytest.raises(LimitExceeded) as refused:
        runtime.invocations.accept(tenant_id=acme, function="echo", payload={"message": "x"})
    assert refused.value.limit == "rate_per_s"
    assert refused.value.retry_after_s == pytest.approx(0.5)
    assert len(stored(runtime, acme)) == 3
    # Another tenant has its own bucket (and no limit at all).
    for n in range(5):
        runtime.invocations.accept(tenant_id=globex, function="echo", payload={"message": f"{n}"})
    frozen["now"] += 0.5  # one token back
    runtime.invocations.accept(tenant_id=acme, function="echo", payload={"message": "y"})
    with pytest.raises(LimitExceeded):
        runtime.invocations.accept(tenant_id=acme, function="echo", payload={"message": "z"})
    assert len(stored(runtime, acme)) == 4


def test_replays_schedules_and_children_are_not_refused(runtime, make_tenant, frozen):
    acme = make_tenant("acme")
    runtime.limits.set(acme, {"rate_per_s": 1, "burst": 1, "max_waiting": 1})
    first = runtime.invocations.accept(
        tenant_id=acme, function="echo", payload={"message": "a"}, idempotency_key="k1"
    )
    replay = runtime.invocations.accept(
        tenant_id=acme, function="echo", payload={"message": "a"}, idempotency_key="k1"
    )
    assert replay == first._replace(created=False)
    for trigger in ("schedule", "invoke"):
        runtime.invocations.accept(
            tenant_id=acme, function="echo", payload={"message": trigger}, trigger=trigger
        )
    assert runtime.limits.counts(acme) == Counts(waiting=3, running=0)
    with pytest.raises(LimitExceeded) as refused:
        runtime.invocations.accept(
            tenant_id=acme, function="echo", payload={"message": "b"}, trigger="cli"
        )
    assert refused.value.limit == "max_waiting"


def test_max_waiting_of_the_tenant_and_of_the_function(runtime, make_tenant):
    acme = make_tenant("acme")
    runtime.limits.set(acme, {"max_waiting": 5})
    for n in range(3):  # sync_customer declares max_waiting=3
        runtime.invocations.accept(
            tenant_id=acme, function="sync_customer", payload={"customer_id": f"c{n}"}
        )
    with pytest.raises(LimitExceeded) as refused:
        runtime.invocations.accept(tenant_id=acme, function="sync_customer", payload={})
    assert refused.value.limit == "function.max_waiting"
    for n in range(2):
        runtime.invocations.accept(tenant_id=acme, function="echo", payload={"message": f"{n}"})
    with pytest.raises(LimitExceeded) as refused:
        runtime.invocations.accept(tenant_id=acme, function="echo", payload={"message": "x"})
    assert refused.value.limit == "max_waiting"
    assert runtime.limits.counts(acme) == Counts(waiting=5, running=0)
    assert runtime.limits.counts_by_tenant() == {acme: Counts(waiting=5, running=0)}
    # A cancelled one no longer waits: there is room again.
    runtime.invocations.cancel(stored(runtime, acme)[0].id, acme)
    runtime.invocations.accept(tenant_id=acme, function="echo", payload={"message": "y"})


def test_the_concurrency_key_is_stored_from_the_input(runtime, make_tenant):
    acme = make_tenant("acme")
    keyed = runtime.invocations.accept(
        tenant_id=acme, function="sync_customer", payload={"customer_id": "cust-7"}
    ).invocation
    unkeyed = runtime.invocations.accept(
        tenant_id=acme, function="sync_customer", payload={}
    ).invocation
    plain = runtime.invocations.accept(
        tenant_id=acme, function="echo", payload={"message": "m"}
    ).invocation
    assert [runtime.store.invocations.get(i.id, acme).concurrency_key for i in (keyed, unkeyed, plain)] == ["cust-7", None, None]  # fmt: skip


def test_waiting_reasons_are_recorded_for_claimable_invocations(runtime, make_tenant):
    acme = make_tenant("acme")
    invocation = runtime.invocations.accept(
        tenant_id=acme, function="echo", payload={"message": "m"}
    ).invocation
    assert runtime.store.limits.mark_waiting([invocation.id], "tenant_concurrency") == 1
    assert runtime.store.invocations.get(invocation.id, acme).waiting_reason == "tenant_concurrency"
    assert runtime.store.limits.mark_waiting([invocation.id], "tenant_concurrency") == 0
    assert runtime.store.limits.mark_waiting([invocation.id], None) == 1
    with pytest.raises(ValueError):
        runtime.store.limits.mark_waiting([invocation.id], "bored")


def test_function_limits_are_checked_when_declared():
    def handler(ctx, payload: EchoIn) -> None: ...

    declared = function(concurrency_key="message")(handler)
    assert declared.limits == FunctionLimits(concurrency_key="message", concurrency_per_key=1)
    assert declared.limits.key_of({"message": "x" * 300}).startswith("sha256:")
    assert declared.limits.key_of({"message": 7}) == "7"
    for bad in (
        {"concurrency": 0},
        {"max_waiting": 1.5},
        {"concurrency_key": "nope"},
        {"concurrency_per_key": 2},
    ):
        with pytest.raises(FunctionDefinitionError):
            function(**bad)(handler)
