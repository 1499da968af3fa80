"""The gateway's short memory of authenticated API keys (runtime/keycache.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from falcon.testing import TestClient

from gateway.app import create_app
from runtime.errors import TenantSuspended
from runtime.keycache import KeyCache
from runtime.store.models import TenantStatus
from runtime.store.tenants import Principal, Tenants, parse_scopes
from tests.clocks import ManualClock
from tests.unit.conftest import assert_problem
from tests.waiting import wait_for


class CountingTenants:
    """The real store's tenants, counting the key lookups that reach the store."""

    def __init__(self, tenants: Tenants) -> None:
        self.tenants = tenants
        self.lookups = 0

    def authenticate(self, token: str) -> Principal | None:
        self.lookups += 1
        return self.tenants.authenticate(token)


@pytest.fixture
def store_tenants(runtime: Any) -> CountingTenants:
    return CountingTenants(runtime.store.tenants)


def cache(tenants: CountingTenants, ttl_s: float, clock: ManualClock) -> KeyCache:
    return KeyCache(tenants, ttl_s=ttl_s, clock=clock)  # type: ignore[arg-type]


def test_a_key_is_read_once_per_ttl_and_a_revoked_one_is_refused_after_it(
    runtime, store_tenants, make_tenant, make_key
):
    clock = ManualClock(datetime.now(UTC))
    keys = cache(store_tenants, 2.0, clock)
    key = make_key(make_tenant(), "admin")
    # Given an operator key that authenticated
    first = keys.authenticate(key)
    assert first is not None and first.scopes == frozenset({"admin"})
    # When it is used again within the TTL, Then the store is not asked again
    clock.advance(1.9)
    assert keys.authenticate(key) == first
    assert store_tenants.lookups == 1
    # When it is revoked (by another process), it still works until the TTL ends
    runtime.store.tenants.revoke_key(first.key_id)
    assert keys.authenticate(key) == first
    # and once the TTL has passed it is read again and refused, every time
    clock.advance(0.2)
    assert keys.authenticate(key) is None
    assert keys.authenticate(key) is None
    assert store_tenants.lookups == 3


def test_an_entry_never_outlives_the_key_s_expiry(runtime, store_tenants, make_tenant):
    clock = ManualClock(datetime.now(UTC))
    keys = cache(store_tenants, 3600.0, clock)
    expires_at = datetime.now(UTC) + timedelta(seconds=60)
    _view, key = runtime.store.tenants.create_key(
        None, parse_scopes("admin"), expires_at=expires_at
    )
    assert keys.authenticate(key) is not None
    clock.advance(59)
    assert keys.authenticate(key) is not None
    assert store_tenants.lookups == 1
    # Past the key's expiry the entry is stale although the TTL is an hour
    clock.advance(2)
    keys.authenticate(key)
    assert store_tenants.lookups == 2


def test_a_tenants_key_is_read_on_every_request_so_suspension_refuses_it_at_once(
    runtime, store_tenants, make_tenant, make_key
):
    # Given a cache of a minute and a tenant's key that authenticated
    keys = cache(store_tenants, 60.0, ManualClock(datetime.now(UTC)))
    tenant = make_tenant()
    key = make_key(tenant, "invoke,read,manage")
    assert keys.authenticate(key) is not None
    # When the tenant is suspended (by another process: this cache is not told)
    runtime.store.tenants.set_status(tenant, TenantStatus.SUSPENDED)
    # Then its key is refused on its next use, and was read each time
    with pytest.raises(TenantSuspended):
        keys.authenticate(key)
    assert store_tenants.lookups == 2


def test_a_tenants_key_comes_from_memory_only_for_a_write_that_checks_it_again(
    store_tenants, make_tenant, make_key
):
    keys = cache(store_tenants, 60.0, ManualClock(datetime.now(UTC)))
    key = make_key(make_tenant(), "invoke,read")
    first = keys.authenticate(key, checked_by_write="invoke")
    assert first is not None
    # An invoke (its INSERT checks the key) is served from memory ...
    assert keys.authenticate(key, checked_by_write="invoke") == first
    assert store_tenants.lookups == 1
    # ... any other request reads the key, every time.
    assert keys.authenticate(key) == first
    assert keys.authenticate(key) == first
    assert store_tenants.lookups == 3


def test_unknown_and_wrong_keys_are_never_remembered(store_tenants, make_tenant, make_key):
    clock = ManualClock(datetime.now(UTC))
    keys = cache(store_tenants, 60.0, clock)
    key = make_key(make_tenant(), "admin")
    assert keys.authenticate(key) is not None
    # The same key id with another secret is not the remembered key
    prefix, key_id, secret = key.split("_", 2)
    forged = f"{prefix}_{key_id}_{'A' * len(secret)}"
    assert keys.authenticate(forged) is None
    assert keys.authenticate(forged) is None
    assert keys.authenticate("fy_000000000000_" + "B" * 43) is None
    assert store_tenants.lookups == 4


def test_a_ttl_of_zero_reads_the_key_on_every_request(store_tenants, make_tenant, make_key):
    keys = cache(store_tenants, 0.0, ManualClock(datetime.now(UTC)))
    key = make_key(make_tenant(), "read")
    for _ in range(3):
        assert keys.authenticate(key) is not None
    assert store_tenants.lookups == 3


def test_the_memory_is_bounded(store_tenants, make_tenant, make_key):
    keys = KeyCache(store_tenants, ttl_s=60.0, clock=ManualClock(datetime.now(UTC)), max_keys=2)  # type: ignore[arg-type]
    for key in [make_key("", "admin") for _ in range(5)]:
        assert keys.authenticate(key) is not None
    assert len(keys) <= 2


def test_a_negative_ttl_is_refused(store_tenants):
    with pytest.raises(ValueError, match="ttl_s"):
        KeyCache(store_tenants, ttl_s=-1)  # type: ignore[arg-type]


def test_the_gateway_refuses_a_revoked_key_within_auth_cache_s(runtime_with, key_for_runtime):
    # Given a gateway remembering keys for 0.3 s and a key it has seen
    runtime = runtime_with(auth_cache_s=0.3)
    client = TestClient(create_app(runtime))
    key = key_for_runtime(runtime)
    headers = {"Authorization": f"Bearer {key}"}
    assert client.simulate_get("/v1/functions", headers=headers).status_code == 200
    # When the key is revoked elsewhere, Then the gateway refuses it once the entry is stale
    runtime.store.tenants.revoke_key(key.split("_")[1])
    refused = wait_for(
        lambda: (
            (r := client.simulate_get("/v1/functions", headers=headers)).status_code == 401 and r
        ),
        timeout=10,
        what="the revoked key to be refused",
    )
    assert_problem(refused, 401, "unauthenticated")


@pytest.fixture
def key_for_runtime():
    """A read key of a new tenant in `runtime`'s store."""

    def create(runtime: Any) -> str:
        runtime.store.tenants.create("t-keycache")
        _view, key = runtime.store.tenants.create_key("t-keycache", parse_scopes("read"))
        return key

    return create


def test_suspending_a_tenant_refuses_its_keys_on_the_next_request_in_every_gateway(
    runtime_with,
):
    # Given two gateways on one store, each remembering keys for a minute, that have both
    # served a tenant's key and an operator key
    gateways = [TestClient(create_app(runtime_with(auth_cache_s=60))) for _ in range(2)]
    admin = runtime_with(auth_cache_s=60)  # the `ferry tenants suspend` process
    admin.tenants.create("t-suspended")
    key = admin.tenants.create_key("t-suspended", "invoke,read,manage").secret
    operator = admin.tenants.create_operator_key("admin").secret
    tenant = {"Authorization": f"Bearer {key}"}
    acting = {"Authorization": f"Bearer {operator}", "X-Tenant-ID": "t-suspended"}
    for gateway in gateways:
        assert gateway.simulate_get("/v1/invocations", headers=tenant).status_code == 200
        assert gateway.simulate_get("/v1/invocations", headers=acting).status_code == 200
    # When another process suspends the tenant
    admin.tenants.suspend("t-suspended")
    # Then the very next request with its key is refused in each gateway
    for gateway in gateways:
        refused = gateway.simulate_get("/v1/invocations", headers=tenant)
        assert_problem(refused, 403, "tenant-suspended")
        # And an operator key still reads it (it acts for no tenant of its own)
        assert gateway.simulate_get("/v1/invocations", headers=acting).status_code == 200


def test_an_invoke_with_a_remembered_key_is_refused_once_the_key_is_revoked_or_the_tenant_suspended(
    runtime_with,
):
    # Given two gateways remembering keys for a minute, each of which has served an
    # invoke with a tenant's key, and an invocation made with an Idempotency-Key
    gateways = [TestClient(create_app(runtime_with(auth_cache_s=60))) for _ in range(2)]
    admin = runtime_with(auth_cache_s=60)  # the `ferry keys revoke` / `tenants suspend` process
    admin.tenants.create("t-write-check")
    made = admin.tenants.create_key("t-write-check", "invoke,read")
    other = admin.tenants.create_key("t-write-check", "invoke,read")

    def invoke(gateway: TestClient, secret: str, key: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {secret}"}
        if key:
            headers["Idempotency-Key"] = key
        return gateway.simulate_post(
            "/v1/functions/echo/invocations", json={"message": "hi"}, headers=headers
        )

    for n, gateway in enumerate(gateways):
        assert invoke(gateway, made.secret, f"k{n}").status_code == 202
        assert invoke(gateway, other.secret).status_code == 202
    stored = len(admin.invocations.list("t-write-check").invocations)
    # When another process revokes the first key
    admin.tenants.revoke_key(made.key.id)
    # Then each gateway refuses its next invoke, a replay of its key included, and
    # stores nothing
    for n, gateway in enumerate(gateways):
        assert_problem(invoke(gateway, made.secret), 401, "unauthenticated")
        assert_problem(invoke(gateway, made.secret, f"k{n}"), 401, "unauthenticated")
    # When the tenant is suspended, its other remembered key is refused too
    admin.tenants.suspend("t-write-check")
    for gateway in gateways:
        assert_problem(invoke(gateway, other.secret), 403, "tenant-suspended")
    assert len(admin.invocations.list("t-write-check").invocations) == stored
