"""Tenants' function secrets end to end: the API, accepting, running, scrubbing, rotation.

Both backends: the production one runs the worker on Redis and the store on PostgreSQL,
so "found nowhere" looks through Redis too.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Callable
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from falcon.testing import TestClient

from runtime.app import Runtime
from runtime.errors import SecretMissing, SecretUndecryptable
from runtime.logs import configure_logging
from runtime.secrets import SecretBox
from runtime.services.secrets import bound_to
from runtime.store.access_models import SecretKind
from tests.conftest import REDIS_URL
from tests.fixtures.functions.secret_probes import digest
from tests.unit.conftest import assert_problem, invoke, wait_finished
from tests.unit.test_dashboard import Browser, invocation_ids

pytestmark = pytest.mark.usefixtures("restore_logging")


def new_value() -> str:
    return "crm-" + secrets.token_hex(16)


def put_secret(client: TestClient, headers: dict[str, str], name: str, value: str) -> Any:
    return client.simulate_put(f"/v1/secrets/{name}", json={"value": value}, headers=headers)


# --- the API ---------------------------------------------------------------------------------


def test_a_manage_key_sets_lists_and_deletes_secrets_without_ever_seeing_a_value(
    client, headers, tenant
):
    value = new_value()
    put = put_secret(client, headers, "crm_token", value)
    assert put.status_code == 200, put.text
    assert put.json["name"] == "crm_token" and value not in put.text
    listing = client.simulate_get("/v1/secrets", headers=headers)
    assert [s["name"] for s in listing.json["secrets"]] == ["crm_token"]
    assert set(listing.json["secrets"][0]) == {"name", "created_at", "updated_at"}
    assert value not in listing.text
    assert client.simulate_delete("/v1/secrets/crm_token", headers=headers).status_code == 204
    assert client.simulate_get("/v1/secrets", headers=headers).json == {"secrets": []}
    assert_problem(client.simulate_delete("/v1/secrets/crm_token", headers=headers), 404)


def test_secrets_need_manage_and_a_sound_name_and_value(client, headers_for, tenant):
    reader = headers_for(tenant, "invoke,read")
    assert_problem(client.simulate_get("/v1/secrets", headers=reader), 403, "scope-missing")
    assert_problem(put_secret(client, reader, "crm_token", new_value()), 403, "scope-missing")
    manager = headers_for(tenant, "manage")
    assert_problem(put_secret(client, manager, "Bad-Name", new_value()), 400, "bad-request")
    short = assert_problem(put_secret(client, manager, "crm_token", "short"), 422)
    assert "short" not in short["detail"] and "short" not in str(short["errors"])
    body = client.simulate_put("/v1/secrets/crm_token", json={"value": 1}, headers=manager)
    assert_problem(body, 422)
    assert client.simulate_get("/v1/secrets", headers=manager).json == {"secrets": []}


def test_an_operator_key_acts_on_the_tenant_it_names_only(client, headers_for, make_tenant):
    a, b = make_tenant(), make_tenant()
    operator = headers_for(a, "admin")
    assert_problem(client.simulate_get("/v1/secrets", headers=operator), 403, "tenant-required")
    assert (
        put_secret(client, {**operator, "X-Tenant-ID": a}, "crm_token", new_value()).status_code
        == 200
    )
    of_a = client.simulate_get("/v1/secrets", headers=headers_for(a, "manage")).json
    of_b = client.simulate_get("/v1/secrets", headers=headers_for(b, "manage")).json
    assert [s["name"] for s in of_a["secrets"]] == ["crm_token"] and of_b == {"secrets": []}


# --- accepting -------------------------------------------------------------------------------


def test_a_missing_secret_is_a_422_naming_it_and_nothing_is_stored(runtime, client, headers):
    answer = invoke(client, headers, "use_crm_token", {})
    problem = assert_problem(answer, 422, "secret-missing")
    assert "crm_token" in problem["detail"]
    assert problem["errors"] == [
        {"loc": ["secrets", "crm_token"], "msg": "not set for this tenant"}
    ]
    with runtime.store.db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM invocations")).scalar_one() == 0
    # A function's description names the secrets it needs.
    described = client.simulate_get("/v1/functions/use_crm_token", headers=headers).json
    assert described["secrets"] == ["crm_token"]


def test_ctx_invoke_of_a_function_missing_its_secret_fails_the_parent(runtime, tenant):
    with pytest.raises(SecretMissing):
        runtime.invocations.accept(tenant_id=tenant, function="use_crm_token", payload={})


# --- running ---------------------------------------------------------------------------------


def test_a_tenants_secret_is_not_readable_by_another_tenants_function_or_key(
    runtime, worker, client, headers_for, make_tenant
):
    a, b = make_tenant(), make_tenant()
    value_a, value_b = new_value(), new_value()
    keys_a, keys_b = headers_for(a), headers_for(b)
    assert put_secret(client, keys_a, "crm_token", value_a).status_code == 200
    # B has not set its own: its invocation is refused, A's value does not stand in.
    assert_problem(invoke(client, keys_b, "use_crm_token", {}), 422, "secret-missing")
    # B's key sees none of A's secrets and cannot delete them.
    assert client.simulate_get("/v1/secrets", headers=keys_b).json == {"secrets": []}
    assert_problem(client.simulate_delete("/v1/secrets/crm_token", headers=keys_b), 404)
    assert put_secret(client, keys_b, "crm_token", value_b).status_code == 200
    results = {}
    for tenant, keys in ((a, keys_a), (b, keys_b)):
        accepted = invoke(client, keys, "use_crm_token", {})
        results[tenant] = wait_finished(client, keys, accepted.json["id"])
    assert results[a]["result"]["digest"] == digest(value_a)
    assert results[b]["result"]["digest"] == digest(value_b)
    # A value returned by a function is scrubbed before the result is stored.
    assert results[a]["result"]["echoed"] == "[secret:crm_token]"
    # A function that declares no secret sees none, even with the tenant's set.
    undeclared = invoke(client, keys_a, "read_undeclared", {})
    failed = wait_finished(client, keys_a, undeclared.json["id"])
    assert failed["status"] == "failed" and failed["error"]["type"] == "KeyError"
    assert "not among the secrets this function declares" in failed["error"]["message"]


def _store_dump(runtime: Runtime) -> str:
    """Every row of every table of the store, as text."""
    metadata = sa.MetaData()
    metadata.reflect(runtime.store.db.engine)
    lines = []
    with runtime.store.db.engine.connect() as conn:
        for table in metadata.sorted_tables:
            lines += [f"{table.name}: {tuple(row)}" for row in conn.execute(sa.select(table))]
    assert any(line.startswith("tenant_secrets:") for line in lines)
    return "\n".join(lines)


#: How to read a Redis key's whole value, by its type.
READERS: dict[str, Callable[[Any, bytes], Any]] = {
    "string": lambda c, k: c.get(k),
    "list": lambda c, k: c.lrange(k, 0, -1),
    "hash": lambda c, k: c.hgetall(k),
    "set": lambda c, k: c.smembers(k),
    "zset": lambda c, k: c.zrange(k, 0, -1),
    "stream": lambda c, k: c.xrange(k),
}


def _redis_dump(runtime: Runtime) -> str:
    """Every key and value in the Redis database the runtime uses (all of it, any namespace)."""
    client = redis.Redis.from_url(REDIS_URL)
    parts = []
    try:
        for key in client.scan_iter(count=1000):
            kind = client.type(key).decode()
            value: Any = READERS.get(kind, lambda _c, _k: b"")(client, key)
            parts.append(f"{key!r} {value!r}")
    finally:
        client.close()
    assert any(runtime.settings.redis_namespace in part for part in parts)
    return "\n".join(parts)


def test_a_secret_value_is_found_nowhere_after_a_run_that_failed_with_it(
    backend, runtime, client, headers_for, tenant, make_key
):
    value = new_value()
    log = io.StringIO()
    configure_logging(runtime.settings.model_copy(update={"log_level": "debug"}), stream=log)
    handle = runtime.start_worker()
    try:
        keys = headers_for(tenant, "invoke,read,manage")
        answers = [put_secret(client, keys, "crm_token", value)]
        accepted = invoke(client, keys, "use_crm_token", {"fail_first": True})
        answers.append(accepted)
        finished = wait_finished(client, keys, accepted.json["id"])
        assert finished["status"] == "succeeded" and finished["attempts"] == 2
        if backend == "production":
            redis_text = _redis_dump(runtime)
    finally:
        handle.stop(grace_s=5)
    invocation_id = accepted.json["id"]
    for path in (
        f"/v1/invocations/{invocation_id}",
        "/v1/invocations",
        "/v1/secrets",
        "/v1/functions/use_crm_token",
        "/metrics",
    ):
        answers.append(client.simulate_get(path, headers=keys))
    browser = Browser(client)
    assert browser.login(make_key(tenant, "admin")).status_code == 303
    pages = [
        browser.get(path).text
        for path in (
            "/dashboard",
            "/dashboard/invocations",
            f"/dashboard/invocations/{invocation_id}",
            "/dashboard/failed",
            "/dashboard/functions",
        )
    ]
    assert invocation_id in invocation_ids(pages[1])
    detail = client.simulate_get(f"/v1/invocations/{invocation_id}", headers=keys).json
    # The first attempt's error is kept, its value replaced by the secret's name.
    first = detail["attempt_log"][0]["error"]
    assert first["message"] == "the CRM refused the token '[secret:crm_token]'"
    assert "[secret:crm_token]" in pages[2]
    logged = log.getvalue()
    assert '"crm_call"' in logged and "[secret:crm_token]" in logged
    places = {
        "API answers": "\n".join(a.text for a in answers),
        "dashboard pages": "\n".join(pages),
        "logs at debug level": logged,
        "store tables": _store_dump(runtime),
    }
    if backend == "production":
        places["Redis keys and values"] = redis_text
    found = [where for where, text in places.items() if value in text]
    assert found == [], f"the secret's value is in the {', '.join(found)}"


# --- rotation --------------------------------------------------------------------------------


def test_rotating_the_server_key_keeps_every_secret_and_the_old_key_opens_none(
    runtime, runtime_with, make_tenant
):
    a, b = make_tenant(), make_tenant()
    values = {
        (a, "crm_token"): new_value(),
        (a, "erp_key"): new_value(),
        (b, "crm_token"): new_value(),
    }
    for (tenant, name), value in values.items():
        runtime.secrets.set(tenant, name, value)
    webhook_a = runtime.secrets.rotate_webhook_secret(a)  # a current and a previous one
    old_key, new_key = runtime.settings.secret_key, secrets.token_urlsafe(48)

    # The new key alone cannot read what the old one sealed ...
    with pytest.raises(SecretUndecryptable):
        runtime_with(secret_key=new_key).secrets.load(a, ["crm_token"])
    # ... with the old one listed as previous it can, before and after the rotation.
    rotating = runtime_with(secret_key=new_key, secret_key_previous=f"{old_key}")
    assert rotating.secrets.load(a, ["crm_token"]) == {"crm_token": values[(a, "crm_token")]}
    done = rotating.secrets.rotate_encryption()
    assert (done.resealed, done.current, done.changed) == (5, 0, 0)
    assert rotating.secrets.rotate_encryption().resealed == 0

    rotated = runtime_with(secret_key=new_key)
    for (tenant, name), value in values.items():
        assert rotated.secrets.load(tenant, [name]) == {name: value}
    again = rotated.secrets.webhook_secret(a)
    assert (again.secret, again.previous) == (webhook_a.secret, webhook_a.previous)
    old_box = SecretBox(old_key)
    stored = runtime.store.secrets.every()
    assert len(stored) == 5
    for row in stored:
        with pytest.raises(SecretUndecryptable):
            old_box.open(row.ciphertext, bound_to(row.tenant_id, row.kind, row.name))


def test_a_sealed_value_opens_only_in_its_own_row(runtime, make_tenant):
    a, b = make_tenant(), make_tenant()
    runtime.secrets.set(a, "crm_token", new_value())
    [row] = runtime.store.secrets.every()
    # Copied into tenant B's row (say, by someone with write access to the table).
    runtime.store.secrets.put(b, SecretKind.FUNCTION, "crm_token", row.ciphertext)
    with pytest.raises(SecretUndecryptable):
        runtime.secrets.load(b, ["crm_token"])


def test_each_tenant_has_its_own_random_webhook_secret_shown_to_manage_keys(
    client, headers_for, make_tenant
):
    a, b = make_tenant(), make_tenant()
    first = client.simulate_get("/v1/webhook-secret", headers=headers_for(a, "manage"))
    assert first.status_code == 200 and first.json["secret"].startswith("whsec_")
    assert first.json["previous_expires_at"] is None
    again = client.simulate_get("/v1/webhook-secret", headers=headers_for(a, "manage"))
    assert again.json["secret"] == first.json["secret"]
    other = client.simulate_get("/v1/webhook-secret", headers=headers_for(b, "manage"))
    assert other.json["secret"] != first.json["secret"]
    reader = headers_for(a, "invoke,read")
    assert_problem(client.simulate_get("/v1/webhook-secret", headers=reader), 403)
    rotated = client.simulate_post("/v1/webhook-secret/rotate", headers=headers_for(a, "manage"))
    assert rotated.status_code == 200
    assert rotated.json["secret"] not in (first.json["secret"], other.json["secret"])
    assert rotated.json["previous_expires_at"] is not None
