"""`notify_chat`: a function whose credential (the chat's webhook URL) is a tenant secret."""

from __future__ import annotations

import json

import pytest

from functions.notify_chat import notify_chat
from runtime import Permanent, Retryable
from runtime.errors import SecretMissing
from runtime.testing import FunctionHarness
from tests.unit.test_functions_send_webhook import Answer, receiver  # noqa: F401


def test_it_posts_the_text_to_the_tenants_chat_url(receiver):  # noqa: F811
    chat = receiver(Answer(200))
    url = chat.url.replace("/hooks/ferry?token=abc", "/services/T000/B000/XXXXXXXX")
    with FunctionHarness(
        tenant_id="acme", outbound_allow=["127.0.0.1"], secrets={"chat_webhook_url": url}
    ) as harness:
        out = harness.run(notify_chat, {"text": "deploy finished"})
    assert out.status_code == 200
    [request] = chat.requests
    assert request.path == "/services/T000/B000/XXXXXXXX"
    assert json.loads(request.body) == {"text": "deploy finished"}


def test_errors_name_the_host_and_status_never_the_url(receiver):  # noqa: F811
    chat = receiver(Answer(503), Answer(404))
    url = chat.url.replace("/hooks/ferry?token=abc", "/services/SECRET-PATH")
    with FunctionHarness(
        tenant_id="acme", outbound_allow=["127.0.0.1"], secrets={"chat_webhook_url": url}
    ) as harness:
        with pytest.raises(Retryable) as busy:
            harness.run(notify_chat, {"text": "x"})
        with pytest.raises(Permanent) as gone:
            harness.run(notify_chat, {"text": "x"})
    for error in (busy.value, gone.value):
        assert "SECRET-PATH" not in str(error) and "127.0.0.1" in str(error)


def test_it_needs_the_tenants_chat_url():
    with FunctionHarness(tenant_id="acme") as harness, pytest.raises(SecretMissing):
        harness.run(notify_chat, {"text": "x"})
