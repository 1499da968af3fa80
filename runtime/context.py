"""What a function sees of its invocation: `Context`, and the ContextVars that carry it."""

from __future__ import annotations

import concurrent.futures
import contextvars
import dataclasses
import hashlib
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from sqlalchemy.orm import Session

from runtime.outbound import OutboundClient, OutboundPolicy
from runtime.secrets.values import SecretValues

if TYPE_CHECKING:
    from runtime.registry import FunctionSpec
    from runtime.services.invocations import InvocationService
    from runtime.services.secrets import WebhookSecret
    from runtime.store import Store
    from runtime.store.claims import Claimed
    from runtime.store.views import InvocationView

#: Functions' log lines. One proxy for the process: structlog builds a proxy's logger
#: once (`CACHE_LOGGERS`), where a `get_logger` per attempt built it on every claim
#: (by timeit, 47 against 5 µs per bind).
FUNCTION_LOG = structlog.get_logger("ferry.function")

#: The claim the current worker thread is running (set by the claim middleware).
current_claim: contextvars.ContextVar[Claimed | None] = contextvars.ContextVar(
    "ferry_current_claim", default=None
)
#: What the unit of work recorded for the current attempt: (attempt outcome, invocation
#: status), so later hooks (metrics) need not read it back from the store; or, for a
#: success handed to the store's batch (`Claims.succeed_later`), the future of whether
#: it was recorded.
recorded_outcome: contextvars.ContextVar[
    tuple[str | None, str | None] | concurrent.futures.Future[bool] | None
] = contextvars.ContextVar("ferry_recorded_outcome", default=None)
#: The context of the invocation the current thread runs.
current_context: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "ferry_current_context", default=None
)

MAX_KEY = 255


class AcceptChild(Protocol):
    """Accept a child invocation (`InvocationService.accept`; `runtime.testing` keeps its own)."""

    def __call__(
        self,
        *,
        tenant_id: str,
        function: str,
        payload: Any,
        idempotency_key: str | None,
        trigger: str,
        request_id: str | None,
        parent_id: str | None,
    ) -> tuple[InvocationView, bool]: ...


#: Every child's idempotency key starts with this, which no client key may (see
#: `runtime.services.invocations.SYSTEM_KEY_PREFIXES`): a client cannot claim one first.
CHILD_KEY_PREFIX = "invoke:"


def derive_key(parent_key: str, function: str, part: str) -> str:
    """A child's idempotency key: stable for the same parent, function and part."""
    key = f"{CHILD_KEY_PREFIX}{parent_key}/{function}/{part}"
    if len(key) <= MAX_KEY:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{key[: MAX_KEY - 65]}~{digest}"


class SecretSource(Protocol):
    """Where a context reads its tenant's secrets (`runtime.services.secrets.SecretService`)."""

    def load(self, tenant_id: str, names: Collection[str]) -> dict[str, str]: ...

    def webhook_secret(self, tenant_id: str) -> WebhookSecret: ...


@dataclasses.dataclass
class Context:
    """The invocation a function is running, and the tenant's tools for it."""

    tenant_id: str
    invocation_id: str
    idempotency_key: str
    request_id: str | None
    attempt: int
    function: str
    #: When the invocation was accepted; stable across retries (a report's "now").
    accepted_at: datetime
    log: Any
    _store: Store = dataclasses.field(repr=False)
    _accept: AcceptChild = dataclasses.field(repr=False)
    _secrets: SecretSource = dataclasses.field(repr=False)
    #: The secrets the function declared: all `ctx.secrets` may hold.
    _declared_secrets: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    _secret_values: SecretValues | None = dataclasses.field(default=None, repr=False)
    _session: Session | None = dataclasses.field(default=None, repr=False)
    _outbound: OutboundPolicy = dataclasses.field(default_factory=OutboundPolicy, repr=False)
    _http: OutboundClient | None = dataclasses.field(default=None, repr=False)
    _children: int = dataclasses.field(default=0, repr=False)

    @classmethod
    def create(
        cls,
        *,
        tenant_id: str,
        invocation_id: str,
        idempotency_key: str,
        request_id: str | None,
        attempt: int,
        function: str,
        accepted_at: datetime,
        store: Store,
        accept: AcceptChild,
        secrets: SecretSource,
        declared_secrets: Sequence[str] = (),
        outbound: OutboundPolicy | None = None,
    ) -> Context:
        """A context whose `log` is bound to the invocation; `accept` takes `ctx.invoke`'s.

        `secrets` is where `ctx.secrets` (of the `declared_secrets` only) and the webhook
        signing keys come from; `outbound` is what `ctx.http` may reach (default: nothing
        internal).
        """
        log = FUNCTION_LOG.bind(
            tenant_id=tenant_id,
            invocation_id=invocation_id,
            request_id=request_id,
            function=function,
            attempt=attempt,
        )
        return cls(
            tenant_id=tenant_id,
            invocation_id=invocation_id,
            idempotency_key=idempotency_key,
            request_id=request_id,
            attempt=attempt,
            function=function,
            accepted_at=accepted_at,
            log=log,
            _store=store,
            _accept=accept,
            _secrets=secrets,
            _declared_secrets=tuple(declared_secrets),
            _outbound=outbound or OutboundPolicy(),
        )

    @classmethod
    def for_claim(
        cls,
        claimed: Claimed,
        *,
        store: Store,
        invocations: InvocationService,
        secrets: SecretSource,
        declared_secrets: Sequence[str] = (),
        outbound: OutboundPolicy | None = None,
    ) -> Context:
        """The context of the attempt a worker claimed."""
        inv = claimed.invocation
        return cls.create(
            tenant_id=inv.tenant_id,
            invocation_id=inv.id,
            idempotency_key=inv.idempotency_key,
            request_id=inv.request_id,
            attempt=claimed.attempt,
            function=inv.function,
            accepted_at=inv.created_at,
            store=store,
            accept=invocations.accept,
            secrets=secrets,
            declared_secrets=declared_secrets,
            outbound=outbound,
        )

    @property
    def http(self) -> OutboundClient:
        """An HTTP client that cannot reach internal addresses (runtime/outbound.py).

        `ctx.http.get(url)`, `.post(url, json=...)` and `.request(...)` return a
        `requests.Response` read in full. Loopback, private, link-local and other internal
        addresses, checked after DNS and on every redirect, raise `OutboundRefused` (a
        `Permanent` failure) unless `FERRY_OUTBOUND_ALLOW` permits them; timeouts are
        always set and the answer's size is capped.
        """
        if self._http is None:
            self._http = OutboundClient(self._outbound)
        return self._http

    @property
    def session(self) -> Session:
        """A SQLAlchemy session scoped to this tenant.

        On PostgreSQL the database enforces the scope: every query, ORM, Core or raw
        `text()`, sees and changes only this tenant's rows, and only of the tables a
        function may use (docs/tenancy.md). On SQLite only ORM queries of Ferry's models
        are scoped; raw SQL is not. Its writes commit together with the invocation's
        success, and roll back if the attempt fails: a retried attempt never sees half of
        a failed one's writes.
        """
        if self._session is None:
            self._session = self._store.db.open_session(self.tenant_id)
        return self._session

    def cache_key(self, *parts: Any) -> str:
        """A cache or lock key that cannot collide with another tenant's."""
        return ":".join(["ferry", "t", self.tenant_id, *(str(p) for p in parts)])

    @property
    def secrets(self) -> SecretValues:
        """The tenant's values of the secrets the function declares, by name (read-only).

        `@function(secrets=["crm_token"])` makes `ctx.secrets["crm_token"]` the tenant's
        value, read from the store (decrypted) on first use in the attempt. Only declared
        names are there. A value is never stored with the invocation: wherever it appears
        in the attempt's error message, traceback, result or log lines, it is replaced by
        `[secret:crm_token]` before they are kept.
        """
        if self._secret_values is None:
            values = (
                self._secrets.load(self.tenant_id, self._declared_secrets)
                if self._declared_secrets
                else {}
            )
            self._secret_values = SecretValues(values, self._declared_secrets)
        return self._secret_values

    def secrets_in_use(self) -> Mapping[str, str]:
        """The secret values this attempt has read so far (what must be scrubbed)."""
        return self._secret_values if self._secret_values is not None else {}

    def webhook_signing_keys(self) -> tuple[bytes, ...]:
        """The tenant's webhook signing keys, current first (`runtime.services.secrets`).

        A random secret of the tenant, made on first use and rotated on request; while a
        rotated one's grace lasts it is the second key, and deliveries carry both
        signatures.
        """
        return self._secrets.webhook_secret(self.tenant_id).signing_keys

    def invoke(
        self, fn: str | FunctionSpec, payload: Any, *, key: str | None = None
    ) -> InvocationView:
        """Start a child invocation in this tenant.

        Its idempotency key derives from this invocation's, so a retried parent does not
        start its children twice. Without `key`, children are numbered in call order.
        """
        name = fn if isinstance(fn, str) else fn.name
        if key is None:
            self._children += 1
            key = f"#{self._children}"
        data = payload.model_dump(mode="json") if hasattr(payload, "model_dump") else payload
        invocation, _created = self._accept(
            tenant_id=self.tenant_id,
            function=name,
            payload=data,
            idempotency_key=derive_key(self.idempotency_key, name, key),
            trigger="invoke",
            request_id=self.request_id,
            parent_id=self.invocation_id,
        )
        return invocation

    def close_session(self) -> Session | None:
        """Hand the session (if one was opened) to the unit of work and forget it."""
        session, self._session = self._session, None
        return session
