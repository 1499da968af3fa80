"""`cleanup_expired_keys`: retention of expired and revoked API keys, per tenant."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from runtime.errors import InputInvalid
from runtime.store.models import ApiKey
from tests.waiting import finished, wait_for


def make_keys(runtime, tenant):
    """One key of each kind for `tenant`: {kind: (key id, plaintext)}."""
    now = runtime.store.db.clock()

    def create(kind, **extra):
        view, plaintext = runtime.store.tenants.create_key(
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
    runtime.store.tenants.revoke_key(keys["revoked_recently"][0])
    with runtime.store.db.session() as s:
        s.get(ApiKey, keys["revoked_long_ago"][0]).revoked_at = now - timedelta(days=30)
    return keys


def key_ids(runtime, tenant):
    return {key.id for key in runtime.store.tenants.list_keys(tenant)}


def run_cleanup(runtime, tenant, payload):
    inv, _ = runtime.invocations.accept(
        tenant_id=tenant, function="cleanup_expired_keys", payload=payload
    )
    done = wait_for(finished(runtime, inv.id), what="the cleanup")
    assert done.status == "succeeded", done.error
    return done


def test_keys_past_the_grace_period_are_deleted_for_the_calling_tenant_only(
    runtime, worker, make_tenant
):
    # Given two tenants with keys live, expiring, expired and revoked, long ago and lately
    ours, theirs = make_tenant(), make_tenant()
    our_keys, their_keys = make_keys(runtime, ours), make_keys(runtime, theirs)
    theirs_before = key_ids(runtime, theirs)
    before = datetime.now(UTC)
    # When the first tenant runs the cleanup with the default week of grace
    done = run_cleanup(runtime, ours, {})
    # Then its keys expired or revoked a month ago are gone, and only those
    gone = sorted([our_keys["expired_long_ago"][0], our_keys["revoked_long_ago"][0]])
    assert done.result["deleted"] == 2
    assert done.result["key_ids"] == gone
    assert done.result["dry_run"] is False
    assert key_ids(runtime, ours) == {
        our_keys[kind][0]
        for kind in ("live", "expires_later", "expired_recently", "revoked_recently")
    }
    # And the other tenant's keys, as old as they are, are all still there
    assert key_ids(runtime, theirs) == theirs_before == {key for key, _ in their_keys.values()}
    # And the cutoff is a week before the run
    cutoff = datetime.fromisoformat(done.result["cutoff"])
    assert before - timedelta(days=7) <= cutoff <= datetime.now(UTC) - timedelta(days=7)
    # And nothing secret is in the output
    stored = json.dumps(done.result)
    assert not any(plaintext in stored for _, plaintext in our_keys.values())
    assert "secret" not in stored


def test_a_dry_run_lists_the_keys_and_deletes_nothing(runtime, worker, make_tenant):
    tenant = make_tenant()
    keys = make_keys(runtime, tenant)
    before = key_ids(runtime, tenant)
    done = run_cleanup(runtime, tenant, {"dry_run": True})
    assert done.result["dry_run"] is True
    assert done.result["deleted"] == 2
    assert done.result["key_ids"] == sorted(
        [keys["expired_long_ago"][0], keys["revoked_long_ago"][0]]
    )
    assert key_ids(runtime, tenant) == before


def test_no_grace_deletes_every_expired_or_revoked_key(runtime, worker, make_tenant):
    tenant = make_tenant()
    keys = make_keys(runtime, tenant)
    done = run_cleanup(runtime, tenant, {"grace_days": 0})
    assert done.result["deleted"] == 4
    assert key_ids(runtime, tenant) == {keys["live"][0], keys["expires_later"][0]}
    # A second run finds nothing left to do
    again = run_cleanup(runtime, tenant, {"grace_days": 0})
    assert again.result == again.result | {"deleted": 0, "key_ids": []}


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
