"""Test a function's handler without a worker: `FunctionHarness`.

A harness runs one handler at a time in the calling thread, as one attempt of an
invocation in its tenant: no broker, no worker threads, no retries and no backoff. It
returns the handler's `Output` or lets its exception out, so a test asserts on either:

```
import pytest
from functions.send_webhook import send_webhook
from runtime import Permanent
from runtime.testing import FunctionHarness

@pytest.fixture
def harness():
    # The receivers listen on 127.0.0.1, which `ctx.http` refuses unless allowed.
    with FunctionHarness(tenant_id="acme", outbound_allow=["127.0.0.1"]) as harness:
        yield harness

def test_a_delivery_succeeds(harness, receiver):
    out = harness.run(send_webhook, {"url": receiver.url, "event": "x", "data": {}})
    assert out.status_code == 200

def test_a_refusal_is_permanent(harness, refusing_receiver):
    with pytest.raises(Permanent):
        harness.run(send_webhook, {"url": refusing_receiver.url, "event": "x", "data": {}})
```

What the handler's `ctx` does in a harness:

- `ctx.session` is a session of the harness's own store: a private SQLite file, migrated,
  with the tenant created (or `database_url`'s store). Its writes commit when the handler
  succeeds and roll back when it raises, as in a worker. Arrange rows and check them
  through `harness.store`.
- `ctx.invoke(...)` validates the child's input and stores the child queued, in the
  harness's store, as a worker would; it is never sent or run. `harness.invoked` lists the
  children created, in order. A second run with the same `idempotency_key` gets the
  children stored the first time (and creates none): how a retried parent behaves.
- `ctx.secrets` holds the values given as `secrets={"crm_token": "..."}` (or set later
  with `harness.set_secret(name, value)`), of the secrets the function declares only; a
  declared one left unset makes `run` raise `SecretMissing`, as accepting would.
- `ctx.webhook_signing_keys()` are the tenant's webhook signing keys in the harness's
  store; `harness.webhook_secret()` gives them to the test (for checking a signature),
  and `harness.rotate_webhook_secret()` rotates them.
- `ctx.http` applies the outbound rules of a worker (runtime/outbound.py): a receiver
  on loopback needs `outbound_allow=["127.0.0.1"]`.
- `ctx.log` is the usual structlog logger; `structlog.testing.capture_logs()` around
  `harness.run` captures what the handler logged.

Validation errors surface as in the runtime: an input that does not fit raises
`runtime.errors.InputInvalid` (the runtime refuses it before queuing), an output that
does not fit raises `pydantic.ValidationError` (the runtime fails the attempt with it).
Timeouts are not enforced. Retries are the test's to drive: run again with `attempt=2`
and the same `idempotency_key` and `accepted_at`, as the runtime's next attempt would.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import pydantic
from sqlalchemy.engine import Connection

from runtime.context import Context, current_context
from runtime.errors import AlreadyExists
from runtime.outbound import OutboundPolicy
from runtime.registry import Function, FunctionSpec, Registry
from runtime.secrets import SecretBox
from runtime.services.invocation_values import new_invocation
from runtime.services.secrets import SecretService, WebhookSecret, require_secrets
from runtime.settings import Settings
from runtime.store import Clock, Store, utcnow
from runtime.store.db import translate_errors
from runtime.store.views import InvocationView

#: The server secret a harness encrypts its tenant's secrets with, unless given another.
TEST_SECRET_KEY = "ferry-testing-secret-key"

__all__ = ["TEST_SECRET_KEY", "FunctionHarness", "committed_connection"]


class FunctionHarness:
    """Run function handlers as attempts of one tenant's invocations, in this thread."""

    def __init__(
        self,
        tenant_id: str = "test-tenant",
        *,
        secret_key: str = TEST_SECRET_KEY,
        database_url: str | None = None,
        functions_module: str | None = None,
        outbound_allow: Sequence[str] | None = None,
        secrets: Mapping[str, str] | None = None,
        clock: Clock = utcnow,
    ) -> None:
        """Create the store (a private SQLite file unless `database_url`) and the tenant.

        `functions_module` is where `ctx.invoke` and `run("name", ...)` look functions up
        (default: `FERRY_FUNCTIONS_MODULE`, else `functions`). `outbound_allow` is what
        `ctx.http` may reach although internal (default: `FERRY_OUTBOUND_ALLOW`), such as
        `["127.0.0.1"]` for a receiver the test runs. `secrets` are the tenant's secret
        values by name (what `ferry secrets set` would store), for `ctx.secrets`.
        """
        self.tenant_id = tenant_id
        # The environment's database is never used: a test must not touch a real store.
        # Nor its broker (the harness has none): a production env's Redis URL would ask
        # for a production secret key.
        overrides: dict[str, Any] = {
            "secret_key": secret_key,
            "database_url": database_url or "sqlite://",
            "broker_url": "memory://",
        }
        if functions_module is not None:
            overrides["functions_module"] = functions_module
        if outbound_allow is not None:
            overrides["outbound_allow"] = tuple(outbound_allow)
        settings = Settings.from_env(**overrides)  # before the folder: it may refuse the env
        self._folder: Path | None = None
        if database_url is None:
            self._folder = Path(tempfile.mkdtemp(prefix="ferry-harness-"))
            database_url = f"sqlite:///{self._folder / 'ferry.db'}"
            # A copy of a store migrated once per process: a fresh store in a millisecond.
            shutil.copy(_migrated_sqlite_template(), self._folder / "ferry.db")
        self.settings = settings.model_copy(update={"database_url": database_url})
        self.store = Store.from_settings(self.settings, clock)
        #: The tenant's secrets, stored encrypted in the harness's store as in a deployment.
        self.secrets = SecretService(
            self.store,
            SecretBox.from_settings(self.settings),
            webhook_grace_s=self.settings.webhook_secret_grace_s,
        )
        #: Child invocations the handlers created through `ctx.invoke`, in order.
        self.invoked: list[InvocationView] = []
        self._registry: Registry | None = None
        try:
            if self._folder is None:
                self.store.migrate()
            with contextlib.suppress(AlreadyExists):  # a shared `database_url` may have it
                self.store.tenants.create(tenant_id)
            for name, value in (secrets or {}).items():
                self.set_secret(name, value)
        except BaseException:
            self.close()
            raise

    def run(
        self,
        fn: FunctionSpec | str,
        payload: pydantic.BaseModel | dict[str, Any],
        *,
        attempt: int = 1,
        invocation_id: str | None = None,
        idempotency_key: str | None = None,
        request_id: str | None = None,
        accepted_at: datetime | None = None,
    ) -> Any:
        """Run `fn` (a `@function` or a name) on `payload`; return its `Output` or raise.

        The payload goes through the function's `Input` as the runtime's would (a model is
        dumped to JSON first). Without `idempotency_key` the invocation's id serves, as
        for an invocation accepted without a key.
        """
        function = self._function(fn)
        data = (
            payload.model_dump(mode="json") if isinstance(payload, pydantic.BaseModel) else payload
        )
        validated = function.validate_input(data)
        require_secrets(self.store, self.tenant_id, function.spec.secrets)
        ctx = self.context(
            function.spec,
            attempt=attempt,
            invocation_id=invocation_id,
            idempotency_key=idempotency_key,
            request_id=request_id,
            accepted_at=accepted_at,
        )
        token = current_context.set(ctx)
        try:
            try:
                output = function.spec.handler(ctx, validated)
                function.dump_output(output)
            except BaseException:
                session = ctx.close_session()
                if session is not None:
                    session.close()
                raise
            session = ctx.close_session()
            if session is not None:
                with translate_errors(), session:
                    # As the runtime does: a function that left its tenant scope fails.
                    self.store.db.leave_function_scope(session)
                    session.commit()
        finally:
            current_context.reset(token)
        model = function.spec.output_model
        if model is None or isinstance(output, model):
            return output
        return model.model_validate(output)

    def context(
        self,
        fn: FunctionSpec | str,
        *,
        attempt: int = 1,
        invocation_id: str | None = None,
        idempotency_key: str | None = None,
        request_id: str | None = None,
        accepted_at: datetime | None = None,
    ) -> Context:
        """The `Context` `run` hands to `fn`, for calling a handler or helper directly.

        Writes through its `session` are the caller's to commit.
        """
        invocation_id = invocation_id or str(uuid.uuid4())
        return Context.create(
            tenant_id=self.tenant_id,
            invocation_id=invocation_id,
            idempotency_key=idempotency_key or invocation_id,
            request_id=request_id,
            attempt=attempt,
            function=fn if isinstance(fn, str) else fn.name,
            accepted_at=accepted_at or self.store.db.clock(),
            store=self.store,
            accept=self._accept_child,
            secrets=self.secrets,
            declared_secrets=fn.secrets if isinstance(fn, FunctionSpec) else (),
            outbound=OutboundPolicy.from_settings(self.settings),
        )

    def set_secret(self, name: str, value: str) -> None:
        """Set a secret of the harness's tenant (as `ferry secrets set` would)."""
        self.secrets.set(self.tenant_id, name, value)

    def webhook_secret(self) -> WebhookSecret:
        """The tenant's webhook signing secret that `ctx.webhook_signing_keys()` signs with."""
        return self.secrets.webhook_secret(self.tenant_id)

    def rotate_webhook_secret(self) -> WebhookSecret:
        """Rotate the tenant's webhook signing secret (the old one signs through its grace)."""
        return self.secrets.rotate_webhook_secret(self.tenant_id)

    def close(self) -> None:
        """Close the store and delete its private file."""
        self.store.close()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def __enter__(self) -> FunctionHarness:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _function(self, fn: FunctionSpec | str) -> Function:
        if not isinstance(fn, str):
            return fn.resolve(self.settings)
        if self._registry is None:  # imported on first use: most tests never need it
            self._registry = Registry.load(self.settings.functions_module, self.settings)
        return self._registry.get(fn)

    def _accept_child(
        self,
        *,
        tenant_id: str,
        function: str,
        payload: Any,
        idempotency_key: str | None,
        trigger: str,
        request_id: str | None,
        parent_id: str | None,
    ) -> tuple[InvocationView, bool]:
        """`ctx.invoke`'s accept: validate and store the child queued; never send it."""
        invocation, created = self.store.invocations.insert(
            new_invocation(
                self._function(function),
                str(uuid.uuid4()),
                tenant_id=tenant_id,
                payload=payload,
                idempotency_key=idempotency_key,
                trigger=trigger,
                request_id=request_id,
                parent_id=parent_id,
            )
        )
        if created:
            self.invoked.append(invocation)
        return invocation, created


@contextlib.contextmanager
def committed_connection(ctx: Context) -> Iterator[Connection]:
    """A connection to `ctx`'s store whose writes commit at once, whatever the attempt does.

    For probes in a test suite that count executions durably (a failed attempt rolls
    back `ctx.session`'s writes, not these); a function has no use for it.
    """
    # NOTE(testing): the one reader of Context's store outside runtime.context.
    with translate_errors(), ctx._store.db.engine.begin() as connection:
        yield connection


@functools.cache
def _migrated_sqlite_template() -> Path:
    """A SQLite store migrated to the newest schema, once per process; its file."""
    folder = Path(tempfile.mkdtemp(prefix="ferry-harness-template-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "ferry.db"
    template = Settings.from_env(database_url=f"sqlite:///{path}", broker_url="memory://")
    store = Store.from_settings(template)
    try:
        store.migrate()
    finally:
        # Closing the last connection folds SQLite's write-ahead log into the file.
        store.close()
    return path
