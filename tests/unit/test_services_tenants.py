"""The tenants service: tenants, and API keys from creation to revocation.

Each test runs on the embedded store and on real PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from runtime.errors import AlreadyExists, NotFound, RequestRejected, TenantNotFound
from runtime.services.tenants import TenantService


def test_tenants_are_created_listed_suspended_and_resumed(runtime):
    tenants = runtime.tenants
    created = tenants.create("acme", "Acme Inc.")
    tenants.create("globex")
    assert (created.id, created.name, created.active) == ("acme", "Acme Inc.", True)
    assert tenants.create("initech").name == "initech"  # the name defaults to the id
    assert [t.id for t in tenants.list()] == ["acme", "globex", "initech"]
    assert tenants.suspend("globex").status == "suspended"
    assert not tenants.get("globex").active
    assert [t.id for t in tenants.list(status="active")] == ["acme", "initech"]
    assert tenants.resume("globex").active


def test_tenant_ids_are_checked_and_unique(runtime):
    runtime.tenants.create("acme")
    with pytest.raises(AlreadyExists):
        runtime.tenants.create("acme")
    for bad in ("", "Acme", "-acme", "a" * 64, "acme_1"):
        with pytest.raises(RequestRejected):
            runtime.tenants.create(bad)
    for missing in (runtime.tenants.get, runtime.tenants.suspend, runtime.tenants.resume):
        with pytest.raises(TenantNotFound):
            missing("nobody")


def test_a_key_is_shown_once_and_authenticates_as_its_tenant_with_its_scopes(runtime):
    runtime.tenants.create("acme")
    new = runtime.tenants.create_key("acme", "invoke,read", name="ci")
    assert new.key.scopes == {"invoke", "read"} and new.key.name == "ci"
    assert new.secret not in repr(new.key)
    principal = runtime.tenants.authenticate(new.secret)
    assert principal is not None
    assert (principal.key_id, principal.tenant_id) == (new.key.id, "acme")
    assert principal.has("read") and not principal.has("manage")
    # Scopes may also be given as names; an operator key belongs to no tenant, has every scope
    admin = runtime.tenants.create_operator_key(["admin"])
    operator = runtime.tenants.authenticate(admin.secret)
    assert operator.tenant_id is None and admin.key.tenant_id is None
    assert operator.has("manage") and operator.is_admin
    assert runtime.tenants.authenticate("fy_000000000000_" + "A" * 43) is None
    assert runtime.tenants.authenticate("not a key") is None


def test_keys_need_known_scopes_and_a_known_tenant(runtime):
    runtime.tenants.create("acme")
    for scopes in ("", "read,fly", ["root"]):
        with pytest.raises(RequestRejected):
            runtime.tenants.create_key("acme", scopes)
    with pytest.raises(TenantNotFound):
        runtime.tenants.create_key("nobody", "read")
    with pytest.raises(TenantNotFound):
        runtime.tenants.list_keys("nobody")
    with pytest.raises(NotFound):
        runtime.tenants.revoke_key("000000000000")


def test_keys_are_listed_with_their_state(runtime):
    runtime.tenants.create("acme")
    runtime.tenants.create("globex")
    live = runtime.tenants.create_key("acme", "read").key
    revoked = runtime.tenants.create_key("acme", "read").key
    yesterday = runtime.store.db.clock() - timedelta(days=1)
    expired = runtime.tenants.create_key("acme", "read", expires_at=yesterday).key
    theirs = runtime.tenants.create_key("globex", "read").key
    runtime.tenants.revoke_key(revoked.id)
    states = {k.id: runtime.tenants.key_state(k) for k in runtime.tenants.list_keys("acme")}
    assert states == {live.id: "active", revoked.id: "revoked", expired.id: "expired"}
    assert {k.id for k in runtime.tenants.list_keys()} == {*states, theirs.id}


def test_a_revoked_or_expired_key_no_longer_authenticates(runtime):
    # Given a service that remembers keys for a minute, and a key it has seen
    tenants = TenantService(runtime.store, auth_cache_s=60)
    tenants.create("acme")
    new = tenants.create_key("acme", "read")
    assert tenants.authenticate(new.secret) is not None
    # When the key is revoked through the service, it is refused at once
    tenants.revoke_key(new.key.id)
    assert tenants.authenticate(new.secret) is None
    # And a key past its expiry is refused
    soon = runtime.store.db.clock() - timedelta(seconds=1)
    expired = tenants.create_key("acme", "read", expires_at=soon)
    assert tenants.authenticate(expired.secret) is None
