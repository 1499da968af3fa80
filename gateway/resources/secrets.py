"""A tenant's secrets (`/v1/secrets`) and webhook signing secret (`/v1/webhook-secret`).

Every route needs `manage` and acts on the key's own tenant (an operator key: the tenant
named by `X-Tenant-ID`). A function secret's value goes in (`PUT`) and never comes out:
listings show names and times. The webhook signing secret is Ferry's own and is shown, as
a receiver needs it to verify deliveries.
"""

from __future__ import annotations

import falcon
import pydantic

from gateway import schemas
from gateway.hooks import json_object_body, require_scope
from gateway.middleware import actor_of, caller_of
from gateway.types import WsgiApp
from runtime.app import Runtime
from runtime.errors import InputInvalid
from runtime.registry import validation_errors
from runtime.services.secrets import SecretService, WebhookSecret


class SecretCollection:
    """GET /v1/secrets: the tenant's function secrets, by name (no values)."""

    def __init__(self, secrets: SecretService) -> None:
        self.secrets = secrets

    @falcon.before(require_scope("manage"))
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        infos = self.secrets.list(caller_of(req).tenant_id)
        resp.media = schemas.SecretList(
            secrets=[schemas.SecretInfo.model_validate(i) for i in infos]
        ).media()


class SecretItem:
    """PUT and DELETE /v1/secrets/{secret_name}."""

    def __init__(self, secrets: SecretService, max_body_bytes: int) -> None:
        self.secrets = secrets
        self.max_body_bytes = max_body_bytes

    @falcon.before(require_scope("manage"))
    @falcon.before(json_object_body)
    def on_put(self, req: falcon.Request, resp: falcon.Response, secret_name: str) -> None:
        try:
            body = schemas.SecretValue.model_validate(req.context.payload)
        except pydantic.ValidationError as ex:
            # The errors name the field and the rule, never the value given.
            raise InputInvalid(
                'the body must be {"value": "<8 to 65536 characters>"}',
                errors=validation_errors(ex),
            ) from None
        info = self.secrets.set(
            caller_of(req).tenant_id, secret_name, body.value, actor=actor_of(req)
        )
        resp.media = schemas.SecretInfo.model_validate(info).media()

    @falcon.before(require_scope("manage"))
    def on_delete(self, req: falcon.Request, resp: falcon.Response, secret_name: str) -> None:
        self.secrets.delete(caller_of(req).tenant_id, secret_name, actor=actor_of(req))
        resp.status = falcon.HTTP_204


def _webhook_body(secret: WebhookSecret) -> schemas.WebhookSecret:
    return schemas.WebhookSecret(
        secret=secret.secret,
        created_at=secret.created_at,
        previous_expires_at=secret.previous_expires_at,
    )


class WebhookSecretItem:
    """GET /v1/webhook-secret and POST /v1/webhook-secret/rotate."""

    def __init__(self, secrets: SecretService) -> None:
        self.secrets = secrets

    @falcon.before(require_scope("manage"))
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = _webhook_body(self.secrets.webhook_secret(caller_of(req).tenant_id)).media()

    @falcon.before(require_scope("manage"))
    def on_post_rotate(self, req: falcon.Request, resp: falcon.Response) -> None:
        rotated = self.secrets.rotate_webhook_secret(caller_of(req).tenant_id, actor=actor_of(req))
        resp.media = _webhook_body(rotated).media()


def add_routes(app: WsgiApp, runtime: Runtime) -> None:
    secrets = runtime.secrets
    app.add_route("/v1/secrets", SecretCollection(secrets))
    app.add_route("/v1/secrets/{secret_name}", SecretItem(secrets, runtime.settings.max_body_bytes))
    webhook = WebhookSecretItem(secrets)
    app.add_route("/v1/webhook-secret", webhook)
    app.add_route("/v1/webhook-secret/rotate", webhook, suffix="rotate")
