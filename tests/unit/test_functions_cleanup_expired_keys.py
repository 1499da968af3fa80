"""`cleanup_expired_keys`: retention of expired and revoked API keys, per tenant."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from functions.cleanup_expired_keys import cleanup_expired_keys
from runtime.errors import InputInvalid
from runtime.store.models import ApiKey
from runtime.testing import FunctionHarness
from tests.waiting import finished, wait_for


@pytest.fixture
def harness(backend, request) -> Iterator[FunctionHarness]:
    """A harness of tenant "ours" on SQLite, or on PostgreSQL for the production backend."""
    url = request.getfixturevalue("pg_database") if backend == "production" else None
    with FunctionHarness(tenant_id="ours", database_url=url) as harness:
        harness.store.tenants.create("theirs")
        yield harness


def make_keys(store, tenant):
    """One key of each kind for `tenant`: {kind: (key id, plaintext)}."""
    now = store.db.clock()

    def create(kind, **extra):
        view, plaintext = store.tenants.create_key(
            tenant, frozenset({"invoke", "read"}), name=kind, **extra
        )
        return view.id, plaintext

    keys = {
        "live": create("live"),
        "expires_later": create("expires_later", expires_at=now + timedelta(days=30)),
        "expired_long_ago": create("expired_long_ago", expires_at=now - timedelta(days=30)),
        "expired_recently": create("expired_recently", expires_at=now - timedelta(days=1)),
        "revoked_long_ago": create("revoked_long_ago"),
        "revoked_recently": create("revoked_recently"),
    }
    store.tenants.revoke_key(keys["revoked_recently"][0])
    with store.db.session() as s:
        s.get(ApiKey, keys["revoked_long_ago"][0]).revoked_at = now - timedelta(days=30)
    return keys


def key_ids(store, tenant):
    return {key.id for key in store.tenants.list_keys(tenant)}


def test_keys_past_the_grace_period_are_deleted_for_the_calling_tenant_only(harness):
    # Given two tenants with keys live, expiring, expired and revoked, long ago and lately
    store = harness.store
    our_keys, their_keys = make_keys(store, "ours"), make_keys(store, "theirs")
    theirs_before = key_ids(store, "theirs")
    before = datetime.now(UTC)
    # When the first tenant runs the cleanup with the default week of grace
    out = harness.run(cleanup_expired_keys, {})
    # Then its keys expired or revoked a month ago are gone, and only those
    gone = sorted([our_keys["expired_long_ago"][0], our_keys["revoked_long_ago"][0]])
    assert out.deleted == 2
    assert out.key_ids == gone
    assert out.dry_run is False
    assert key_ids(store, "ours") == {
        our_keys[kind][0]
        for kind in ("live", "expires_later", "expired_recently", "revoked_recently")
    }
    # And the other tenant's keys, as old as they are, are all still there
    assert key_ids(store, "theirs") == theirs_before == {key for key, _ in their_keys.values()}
    # And the cutoff is a week before the run
    assert before - timedelta(days=7) <= out.cutoff <= datetime.now(UTC) - timedelta(days=7)
    # And nothing secret is in the output
    stored = out.model_dump_json()
    assert not any(plaintext in stored for _, plaintext in our_keys.values())
    assert "secret" not in stored


def test_a_dry_run_lists_the_keys_and_deletes_nothing(harness):
    keys = make_keys(harness.store, "ours")
    before = key_ids(harness.store, "ours")
    out = harness.run(cleanup_expired_keys, {"dry_run": True})
    assert out.dry_run is True
    assert out.deleted == 2
    assert out.key_ids == sorted([keys["expired_long_ago"][0], keys["revoked_long_ago"][0]])
    assert key_ids(harness.store, "ours") == before


def test_no_grace_deletes_every_expired_or_revoked_key(harness):
    keys = make_keys(harness.store, "ours")
    out = harness.run(cleanup_expired_keys, {"grace_days": 0})
    assert out.deleted == 4
    assert key_ids(harness.store, "ours") == {keys["live"][0], keys["expires_later"][0]}
    # A second run finds nothing left to do
    again = harness.run(cleanup_expired_keys, {"grace_days": 0})
    assert (again.deleted, again.key_ids) == (0, [])


def test_the_cleanup_runs_through_the_runtime(runtime, worker, make_tenant):
    tenant = make_tenant()
    make_keys(runtime.store, tenant)
    inv, _ = runtime.invocations.accept(
        tenant_id=tenant, function="cleanup_expired_keys", payload={"grace_days": 0}
    )
    done = wait_for(finished(runtime, inv.id), what="the cleanup")
    assert done.status == "succeeded", done.error
    assert done.result["deleted"] == 4 and len(key_ids(runtime.store, tenant)) == 2


@pytest.mark.parametrize(
    "payload", [{"grace_days": -1}, {"grace_days": "a week"}, {"grace_days": 100_000}]
)
def test_bad_input_is_refused_before_anything_is_stored(runtime, make_tenant, payload):
    tenant = make_tenant()
    with pytest.raises(InputInvalid):
        runtime.invocations.accept(
            tenant_id=tenant, function="cleanup_expired_keys", payload=payload
        )
    assert runtime.store.invocations.list(tenant)[0] == []
