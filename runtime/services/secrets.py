"""Tenants' secrets: the use cases, once for the API, the CLI and the worker.

Function secrets are values a tenant sets (`ferry secrets set`, `PUT /v1/secrets/{name}`)
for the functions that declare them (`@function(secrets=["crm_token"])`). They are sealed
before they reach the store (`runtime.secrets.crypto`), listed by name and time only,
and opened only for the attempt of a function that declared them
(`SecretService.load`, called for `ctx.secrets`).

Webhook signing secrets are Ferry's own: a random one per tenant, made on first use,
sealed like the others, shown to the tenant's `manage` keys and rotated on request. A
rotated secret keeps signing beside the new one (a second `v1=` in `Ferry-Signature`)
for `FERRY_WEBHOOK_SECRET_GRACE_S` (a day by default), so receivers can move over.

`rotate_encryption` re-encrypts every stored secret under the current `FERRY_SECRET_KEY`;
once it has run, the keys in `FERRY_SECRET_KEY_PREVIOUS` open nothing and can be dropped.
"""

from __future__ import annotations

import builtins
import dataclasses
import secrets as random
from collections.abc import Collection
from datetime import datetime, timedelta

import structlog

from runtime.errors import BadRequest, SecretMissing, SecretNotFound
from runtime.secrets.crypto import SecretBox
from runtime.secrets.values import MIN_VALUE_CHARS, SECRET_NAME, SECRET_NAME_RULE
from runtime.services.audit import SYSTEM, Actor
from runtime.store import Store
from runtime.store.access_models import SecretKind
from runtime.store.secrets import StoredSecret

log = structlog.get_logger("ferry.secrets")

#: The longest value a secret may hold, in characters (`SecretValue` in gateway/schemas.py).
MAX_VALUE_CHARS = 65_536
#: Names of a tenant's webhook signing secrets (kind `webhook`).
WEBHOOK_CURRENT, WEBHOOK_PREVIOUS = "current", "previous"
#: Every webhook signing secret starts with this, so it is recognisable where it is pasted.
WEBHOOK_SECRET_PREFIX = "whsec_"
#: Secrets `rotate_encryption` reads per page.
ROTATION_PAGE = 500


@dataclasses.dataclass(frozen=True)
class SecretInfo:
    """What may be shown of a function secret: its name and times, never its value."""

    name: str
    created_at: datetime
    updated_at: datetime


@dataclasses.dataclass(frozen=True)
class WebhookSecret:
    """A tenant's webhook signing secret, and the previous one while it still signs."""

    tenant_id: str
    #: `whsec_...`: the HMAC key is this text's UTF-8 bytes.
    secret: str
    created_at: datetime
    #: The previous secret, while its grace lasts; None when there is none.
    previous: str | None
    previous_expires_at: datetime | None

    @property
    def signing_keys(self) -> tuple[bytes, ...]:
        """The keys each delivery is signed with: the current one first."""
        keys = [self.secret] + ([self.previous] if self.previous else [])
        return tuple(key.encode() for key in keys)


@dataclasses.dataclass(frozen=True)
class Rotation:
    """What `rotate_encryption` did."""

    resealed: int
    #: Already under the current key.
    current: int
    #: Changed while the rotation ran (sealed under the current key by that change).
    changed: int


def bound_to(tenant_id: str, kind: str, name: str) -> bytes:
    """The associated data a value is sealed with: it opens only in its own row."""
    return f"ferry/{tenant_id}/{kind}/{name}".encode()


def check_name(name: str) -> str:
    if not SECRET_NAME.fullmatch(name):
        raise BadRequest(f"a secret's name is {SECRET_NAME_RULE}; got {name[:80]!r}")
    return name


def check_value(value: str) -> str:
    """The value, if it is 8 to 65536 characters of encodable text (else `BadRequest`)."""
    if not isinstance(value, str) or not MIN_VALUE_CHARS <= len(value) <= MAX_VALUE_CHARS:
        raise BadRequest(
            f"a secret's value has at least {MIN_VALUE_CHARS} and at most "
            f"{MAX_VALUE_CHARS} characters"
        )
    try:
        value.encode()
    except UnicodeEncodeError:
        raise BadRequest("a secret's value must be text (it has a lone surrogate)") from None
    return value


class SecretService:
    """Set, list, delete and load function secrets; webhook secrets; key rotation."""

    def __init__(self, store: Store, box: SecretBox, *, webhook_grace_s: float = 86_400) -> None:
        self.store = store
        self.box = box
        self.webhook_grace_s = webhook_grace_s

    # --- function secrets -------------------------------------------------------------------

    def set(self, tenant_id: str, name: str, value: str, *, actor: Actor = SYSTEM) -> SecretInfo:
        """Set (or replace) a function secret of the tenant (audited: `secret.set`)."""
        kind = SecretKind.FUNCTION
        sealed = self.box.seal(
            check_value(value).encode(), bound_to(tenant_id, kind, check_name(name))
        )
        audit = actor.entry("secret.set", tenant_id=tenant_id, target=name)
        stored = self.store.secrets.put(tenant_id, kind, name, sealed, audit=audit)
        log.info("secret_set", tenant_id=tenant_id, secret_name=name)
        return _info(stored)

    def list(self, tenant_id: str) -> builtins.list[SecretInfo]:
        """The tenant's function secrets by name: names and times, no values."""
        return [_info(s) for s in self.store.secrets.list(tenant_id, SecretKind.FUNCTION)]

    def delete(self, tenant_id: str, name: str, *, actor: Actor = SYSTEM) -> None:
        """Remove a function secret; `SecretNotFound` if the tenant has none of that name.

        Audited (`secret.delete`) only when there was one to remove.
        """
        audit = actor.entry("secret.delete", tenant_id=tenant_id, target=name)
        kind = SecretKind.FUNCTION
        if not self.store.secrets.delete(tenant_id, kind, check_name(name), audit=audit):
            raise SecretNotFound(f"tenant {tenant_id!r} has no secret {name!r}")
        log.info("secret_deleted", tenant_id=tenant_id, secret_name=name)

    def require(self, tenant_id: str, names: Collection[str]) -> None:
        """Raise `SecretMissing`, naming each, unless the tenant has set all of `names`."""
        require_secrets(self.store, tenant_id, names)

    def load(self, tenant_id: str, names: Collection[str]) -> dict[str, str]:
        """The values of `names` for the tenant (`SecretMissing` if one is not set)."""
        kind = SecretKind.FUNCTION
        stored = self.store.secrets.get(tenant_id, kind, names)
        _raise_missing(tenant_id, [n for n in names if n not in stored])
        return {
            name: self.box.open(s.ciphertext, bound_to(tenant_id, kind, name)).decode()
            for name, s in stored.items()
        }

    # --- webhook signing secrets ------------------------------------------------------------

    def webhook_secret(self, tenant_id: str) -> WebhookSecret:
        """The tenant's webhook signing secret, made (random) on first use."""
        kind = SecretKind.WEBHOOK
        stored = self.store.secrets.get(tenant_id, kind, (WEBHOOK_CURRENT, WEBHOOK_PREVIOUS))
        current = stored.get(WEBHOOK_CURRENT)
        if current is None:
            made = self._seal_webhook(tenant_id, WEBHOOK_CURRENT, _new_webhook_secret())
            current = self.store.secrets.add_if_absent(tenant_id, kind, WEBHOOK_CURRENT, made)
        return self._webhook_view(tenant_id, current, stored.get(WEBHOOK_PREVIOUS))

    def rotate_webhook_secret(self, tenant_id: str, *, actor: Actor = SYSTEM) -> WebhookSecret:
        """Make a new webhook signing secret; the old one signs too until its grace ends.

        Audited: `secret.rotate_webhook`.
        """
        old = self.webhook_secret(tenant_id)
        expires_at = self.store.db.clock() + timedelta(seconds=self.webhook_grace_s)
        keep_old = self.webhook_grace_s > 0
        new = self.store.secrets.supersede(
            tenant_id,
            SecretKind.WEBHOOK,
            current=WEBHOOK_CURRENT,
            previous=WEBHOOK_PREVIOUS,
            ciphertext=self._seal_webhook(tenant_id, WEBHOOK_CURRENT, _new_webhook_secret()),
            previous_expires_at=expires_at,
            previous_ciphertext=(
                self._seal_webhook(tenant_id, WEBHOOK_PREVIOUS, old.secret) if keep_old else None
            ),
            audit=actor.entry("secret.rotate_webhook", tenant_id=tenant_id, target="webhook"),
        )
        log.info("webhook_secret_rotated", tenant_id=tenant_id, grace_s=self.webhook_grace_s)
        previous = self.store.secrets.get(tenant_id, SecretKind.WEBHOOK, (WEBHOOK_PREVIOUS,))
        return self._webhook_view(tenant_id, new, previous.get(WEBHOOK_PREVIOUS))

    def _seal_webhook(self, tenant_id: str, name: str, secret: str) -> str:
        return self.box.seal(secret.encode(), bound_to(tenant_id, SecretKind.WEBHOOK, name))

    def _open(self, stored: StoredSecret) -> str:
        context = bound_to(stored.tenant_id, stored.kind, stored.name)
        return self.box.open(stored.ciphertext, context).decode()

    def _webhook_view(
        self, tenant_id: str, current: StoredSecret, previous: StoredSecret | None
    ) -> WebhookSecret:
        now = self.store.db.clock()
        if previous is not None and (previous.expires_at is None or previous.expires_at <= now):
            previous = None
        return WebhookSecret(
            tenant_id=tenant_id,
            secret=self._open(current),
            created_at=current.updated_at,
            previous=self._open(previous) if previous is not None else None,
            previous_expires_at=previous.expires_at if previous is not None else None,
        )

    # --- the server key ---------------------------------------------------------------------

    def rotate_encryption(self, *, actor: Actor = SYSTEM) -> Rotation:
        """Re-encrypt every stored secret that is not under the current key.

        A page at a time, each value in its own statement, so a long rotation holds no
        lock for long and can be run again after an interruption. Audited once, after it
        ends (`secret.rotate_encryption`, of no tenant, with the counts).
        """
        resealed = current = changed = 0
        after: tuple[str, str, str] | None = None
        while page := self.store.secrets.every(after=after, limit=ROTATION_PAGE):
            for stored in page:
                if self.box.is_current(stored.ciphertext):
                    current += 1
                    continue
                context = bound_to(stored.tenant_id, stored.kind, stored.name)
                sealed = self.box.seal(self.box.open(stored.ciphertext, context), context)
                if self.store.secrets.reseal(stored, sealed):
                    resealed += 1
                else:
                    changed += 1
            last = page[-1]
            after = (last.tenant_id, last.kind, last.name)
        log.info("secrets_rotated", resealed=resealed, current=current, changed=changed)
        counts = {"resealed": resealed, "current": current, "changed": changed}
        self.store.audit.append(
            actor.entry("secret.rotate_encryption", tenant_id=None, target="*", detail=counts)
        )
        return Rotation(resealed=resealed, current=current, changed=changed)


def require_secrets(store: Store, tenant_id: str, names: Collection[str]) -> None:
    """Raise `SecretMissing`, naming each, unless the tenant has set all of `names`.

    Reads names only: accepting an invocation never opens a value.
    """
    if not names:
        return
    present = store.secrets.present(tenant_id, SecretKind.FUNCTION, names)
    _raise_missing(tenant_id, [n for n in names if n not in present])


def _info(stored: StoredSecret) -> SecretInfo:
    return SecretInfo(name=stored.name, created_at=stored.created_at, updated_at=stored.updated_at)


def _new_webhook_secret() -> str:
    return WEBHOOK_SECRET_PREFIX + random.token_urlsafe(32)


def _raise_missing(tenant_id: str, missing: builtins.list[str]) -> None:
    if not missing:
        return
    raise SecretMissing(
        f"tenant {tenant_id!r} has not set the secret{'s' if len(missing) > 1 else ''} "
        f"{', '.join(missing)} that the function needs (ferry secrets set --tenant "
        f"{tenant_id} NAME, or PUT /v1/secrets/NAME)",
        errors=[{"loc": ["secrets", name], "msg": "not set for this tenant"} for name in missing],
    )
