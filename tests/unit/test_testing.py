"""`runtime.testing.FunctionHarness`: a function's handler run in the test's own thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydantic
import pytest
import sqlalchemy as sa
import structlog
from pydantic import BaseModel

from runtime import Context, Permanent, Retryable, function, testing
from runtime.errors import FunctionNotFound, InputInvalid, SecretMissing
from runtime.store.models import ApiKey
from runtime.store.tenants import parse_scopes
from runtime.testing import FunctionHarness
from tests.conftest import TEST_FUNCTIONS
from tests.fixtures.functions import probes


class Greeting(BaseModel):
    name: str = pydantic.Field(min_length=1)
    fail: bool = False


class Seen(BaseModel):
    text: str
    tenant_id: str
    invocation_id: str
    idempotency_key: str
    attempt: int
    accepted_at: datetime
    secret: str


@function(max_retries=2)
def greet(ctx: Context, payload: Greeting) -> Seen:
    ctx.log.info("greeting", name=payload.name)
    if payload.fail:
        raise Retryable("not now")
    return Seen(
        text=f"Hello, {payload.name}!",
        tenant_id=ctx.tenant_id,
        invocation_id=ctx.invocation_id,
        idempotency_key=ctx.idempotency_key,
        attempt=ctx.attempt,
        accepted_at=ctx.accepted_at,
        secret=ctx.webhook_signing_keys()[0].decode(),
    )


class Revoke(BaseModel):
    then_fail: bool = False


@function
def revoke_keys(ctx: Context, payload: Revoke) -> None:
    """Revoke every key of the tenant through ctx.session, then maybe fail."""
    for key in ctx.session.scalars(sa.select(ApiKey)):
        key.revoked_at = datetime.now(UTC)
    ctx.session.flush()
    if payload.then_fail:
        raise Permanent("changed my mind")


class Nothing(BaseModel):
    pass


@function
def bad_output(ctx: Context, payload: Nothing) -> Seen:
    result: Any = {"text": 42}
    return result  # type: ignore[no-any-return]


class Children(BaseModel):
    messages: list[str]


class ChildIds(BaseModel):
    ids: list[str]


@function
def start_children(ctx: Context, payload: Children) -> ChildIds:
    return ChildIds(ids=[ctx.invoke(probes.echo, {"message": m}).id for m in payload.messages])


@function
def invoke_a_stranger(ctx: Context, payload: Nothing) -> None:
    ctx.invoke("no_such_function", {})


@pytest.fixture
def harness() -> Iterator[FunctionHarness]:
    with FunctionHarness(tenant_id="acme", functions_module=TEST_FUNCTIONS) as harness:
        yield harness


def test_a_run_returns_the_output_of_one_attempt_in_the_tenant(harness):
    threads = set(threading.enumerate())
    # When the handler runs on a dict and on an Input model
    out = harness.run(greet, {"name": "Ada"})
    again = harness.run(greet, Greeting(name="Ada"))
    # Then it ran as attempt 1 of an invocation of the harness's tenant
    assert isinstance(out, Seen)
    assert out.text == "Hello, Ada!" and out.tenant_id == "acme" and out.attempt == 1
    # Each run is a new invocation; without a key its id is its idempotency key
    assert out.invocation_id != again.invocation_id
    assert out.idempotency_key == out.invocation_id
    # And nothing ran in another thread, nor was left running
    assert set(threading.enumerate()) == threads


def test_a_run_can_be_a_later_attempt_of_a_given_invocation(harness):
    accepted = datetime(2024, 5, 1, 12, tzinfo=UTC)
    out = harness.run(
        greet,
        {"name": "Ada"},
        attempt=3,
        invocation_id="inv-1",
        idempotency_key="order-42",
        accepted_at=accepted,
    )
    assert (out.attempt, out.invocation_id, out.idempotency_key) == (3, "inv-1", "order-42")
    assert out.accepted_at == accepted


def test_a_function_can_be_run_by_name(harness):
    assert harness.run("echo_time", {"message": "hi"}).message == "hi"
    with pytest.raises(FunctionNotFound):
        harness.run("no_such_function", {})


def test_the_handler_s_exception_comes_out_as_raised(harness):
    with pytest.raises(Retryable, match="not now"):
        harness.run(greet, {"name": "Ada", "fail": True})


def test_validation_errors_are_the_runtime_s(harness):
    # An input that does not fit: refused as the runtime refuses it before queuing
    with pytest.raises(InputInvalid) as refused:
        harness.run(greet, {"name": ""})
    assert [e["loc"] for e in refused.value.errors] == [["name"]]
    # An output that does not fit: the error the runtime fails the attempt with
    with pytest.raises(pydantic.ValidationError):
        harness.run(bad_output, {})


def test_session_writes_commit_with_success_and_roll_back_with_failure(harness):
    # Given a key of the tenant, in the harness's store
    key, _secret = harness.store.tenants.create_key("acme", parse_scopes("read"))

    def revoked() -> bool:
        [view] = harness.store.tenants.list_keys("acme")
        return view.revoked_at is not None

    # When the handler writes and then fails, Then nothing it wrote stays
    with pytest.raises(Permanent):
        harness.run(revoke_keys, {"then_fail": True})
    assert not revoked()
    # When it writes and succeeds, Then its writes are committed
    assert harness.run(revoke_keys, {}) is None
    assert revoked()
    assert key.id == harness.store.tenants.list_keys("acme")[0].id


def test_the_session_sees_only_the_harness_s_tenant(harness):
    harness.store.tenants.create("other")
    harness.store.tenants.create_key("other", parse_scopes("read"))
    harness.run(revoke_keys, {})
    [theirs] = harness.store.tenants.list_keys("other")
    assert theirs.revoked_at is None


def test_children_are_stored_queued_and_listed_but_never_run(harness):
    # When a handler starts two children
    out = harness.run(start_children, {"messages": ["a", "b"]}, idempotency_key="p-1")
    # Then they are stored, queued, with keys derived from the parent's, and listed
    assert [c.id for c in harness.invoked] == out.ids
    for child in harness.invoked:
        stored = harness.store.invocations.get(child.id)
        assert stored.status == "queued" and stored.attempts == 0
        assert stored.function == "echo" and stored.trigger == "invoke"
        assert stored.idempotency_key.startswith("invoke:p-1/echo/")
    assert [c.payload["message"] for c in harness.invoked] == ["a", "b"]
    # And a retry of the parent (same key) gets the same children and creates none
    retried = harness.run(
        start_children, {"messages": ["a", "b"]}, attempt=2, idempotency_key="p-1"
    )
    assert retried.ids == out.ids
    assert len(harness.invoked) == 2


def test_a_child_with_a_bad_input_or_an_unknown_function_fails_the_parent(harness):
    with pytest.raises(InputInvalid):
        harness.run(start_children, {"messages": [""]})
    with pytest.raises(FunctionNotFound):
        harness.run(invoke_a_stranger, {})
    assert harness.invoked == []


def test_webhook_secrets_are_random_per_tenant_and_not_derived_from_the_secret_key():
    with FunctionHarness(tenant_id="acme", secret_key="s" * 32) as harness:
        out = harness.run(greet, {"name": "Ada"})
        assert out.secret == harness.webhook_secret().secret
        assert out.secret.startswith("whsec_")
    with FunctionHarness(tenant_id="acme", secret_key="s" * 32) as again:
        # The same tenant id under the same server key gets another secret: nothing derives it.
        assert again.webhook_secret().secret != out.secret


class TokenLength(BaseModel):
    length: int


@function(secrets=["crm_token"])
def read_token(ctx: Context, payload: Revoke) -> TokenLength:
    if payload.then_fail:
        raise RuntimeError(f"the CRM refused {ctx.secrets['crm_token']}")
    return TokenLength(length=len(ctx.secrets["crm_token"]))


def test_secrets_given_to_the_harness_are_the_handlers_ctx_secrets():
    with FunctionHarness(tenant_id="acme", secrets={"crm_token": "tok-123456789"}) as harness:
        assert harness.run(read_token, {}).length == len("tok-123456789")
        harness.set_secret("crm_token", "a-longer-token-value")
        assert harness.run(read_token, {}).length == len("a-longer-token-value")


def test_a_declared_secret_left_unset_is_refused_as_accepting_would():
    with FunctionHarness(tenant_id="acme") as harness, pytest.raises(SecretMissing) as caught:
        harness.run(read_token, {})
    assert caught.value.errors == [
        {"loc": ["secrets", "crm_token"], "msg": "not set for this tenant"}
    ]


def test_the_log_is_bound_to_the_invocation_and_can_be_captured(harness):
    with structlog.testing.capture_logs() as logs:
        out = harness.run(greet, {"name": "Ada"})
    [entry] = [e for e in logs if e["event"] == "greeting"]
    assert entry["name"] == "Ada"
    assert entry["tenant_id"] == "acme" and entry["invocation_id"] == out.invocation_id
    assert entry["function"] == "greet" and entry["attempt"] == 1


def test_a_context_can_be_built_for_calling_a_handler_directly(harness):
    ctx = harness.context(greet, attempt=2)
    assert (ctx.tenant_id, ctx.function, ctx.attempt) == ("acme", "greet", 2)
    assert greet(ctx, Greeting(name="Ada")).attempt == 2


def test_a_committed_connection_keeps_its_writes_when_the_attempt_fails(harness):
    ctx = harness.context(greet)
    with testing.committed_connection(ctx) as conn:
        conn.execute(sa.text("CREATE TABLE notes (text varchar(20))"))
    with pytest.raises(RuntimeError):
        with testing.committed_connection(ctx) as conn:
            conn.execute(sa.text("INSERT INTO notes VALUES ('lost')"))
            raise RuntimeError("the block fails")
    with testing.committed_connection(ctx) as conn:
        conn.execute(sa.text("INSERT INTO notes VALUES ('kept')"))
    with harness.store.db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT text FROM notes")).scalars().all() == ["kept"]


def test_each_harness_has_its_own_store_and_removes_it_when_closed():
    with FunctionHarness() as first, FunctionHarness() as second:
        first.store.tenants.create("only-here")
        assert [t.id for t in second.store.tenants.list()] == ["test-tenant"]
        path = Path(first.settings.database_url.removeprefix("sqlite:///"))
        assert path.exists()
    assert not path.parent.exists()


@pytest.mark.integration
def test_a_harness_runs_on_a_given_database(pg_database):
    # Given a PostgreSQL store a suite already uses
    with FunctionHarness(tenant_id="acme", database_url=pg_database) as harness:
        harness.store.tenants.create_key("acme", parse_scopes("read"))
        harness.run(revoke_keys, {})
        assert harness.store.tenants.list_keys("acme")[0].revoked_at is not None
    # A second harness on it finds the tenant there already
    with FunctionHarness(tenant_id="acme", database_url=pg_database) as again:
        assert again.store.tenants.list_keys("acme")[0].revoked_at is not None
