"""Invoking from the dashboard, and function docs rendered from Markdown."""

from __future__ import annotations

import json
import re

import pytest

from gateway.dashboard.docs import render_markdown
from gateway.dashboard.invoke_pages import example_of
from tests.unit import test_dashboard as dashboard_tests
from tests.unit.test_dashboard import csrf_of

embedded_only = pytest.mark.parametrize("backend", ["embedded"])


# The signed-in client of the dashboard tests (a fixture, and a helper).
browser = dashboard_tests.browser
signed_in = dashboard_tests.signed_in


def test_the_invoke_form_creates_an_invocation_through_the_service(
    runtime, browser, make_tenant, make_key
):
    tenant = make_tenant()
    b = signed_in(browser, make_key(tenant, "read,invoke"))
    # Given the form, prefilled from the function's input schema
    form = b.get("/dashboard/functions/echo/invoke")
    assert form.status_code == 200
    prefilled = re.search(r'<textarea id="payload"[^>]*>(.*?)</textarea>', form.text, re.S)
    assert prefilled is not None
    assert json.loads(prefilled.group(1).replace("&#34;", '"')) == {"message": "", "sleep_s": 0.0}
    # And it shows the single and the batch endpoint, each with a curl line
    assert '$FERRY_URL/v1/functions/echo/invocations" ' in form.text
    assert '$FERRY_URL/v1/functions/echo/invocations/batch"' in form.text
    # When it is sent with an input and an idempotency key
    sent = {"csrf_token": csrf_of(form.text), "payload": '{"message": "from the form"}'}
    answer = b.post("/dashboard/functions/echo/invoke", {**sent, "idempotency_key": "form-1"})
    # Then the invocation exists for the key's tenant, and its page is shown
    assert answer.status_code == 303
    [created] = runtime.store.search.find(tenant, "form-1")
    assert created.payload["message"] == "from the form" and created.tenant_id == tenant
    assert created.trigger == "http"
    assert answer.headers["location"] == f"/dashboard/invocations/{created.id}?notice=invoked"
    assert "Invoked: this is the new invocation." in b.get(answer.headers["location"]).text
    # And the same key and input again is a replay of it
    again = b.post("/dashboard/functions/echo/invoke", {**sent, "idempotency_key": "form-1"})
    assert again.headers["location"] == f"/dashboard/invocations/{created.id}?notice=replayed"


def test_input_the_function_refuses_comes_back_on_the_form(runtime, browser, make_tenant, make_key):
    b = signed_in(browser, make_key(make_tenant(), "read,invoke"))
    token = csrf_of(b.get("/dashboard/functions/echo/invoke").text)
    invalid = b.post(
        "/dashboard/functions/echo/invoke", {"csrf_token": token, "payload": '{"message": ""}'}
    )
    assert invalid.status_code == 422 and "message" in invalid.text
    assert "&#34;message&#34;: &#34;&#34;" in invalid.text  # the text is kept
    not_json = b.post("/dashboard/functions/echo/invoke", {"csrf_token": token, "payload": "{oops"})
    assert not_json.status_code == 400 and "the input is not JSON" in not_json.text
    listed = b.post("/dashboard/functions/echo/invoke", {"csrf_token": token, "payload": "[1]"})
    assert listed.status_code == 400 and "must be a JSON object" in listed.text
    assert runtime.store.invocations.list(None)[0] == []


def test_invoking_needs_the_scope_the_csrf_token_and_a_tenant(
    runtime, browser, make_tenant, make_key
):
    tenant = make_tenant()
    reader = signed_in(browser, make_key(tenant, "read"))
    page = reader.get("/dashboard/functions/echo/invoke")
    assert page.status_code == 200 and "needs an API key with the 'invoke' scope" in page.text
    assert "<textarea" not in page.text
    body = {"csrf_token": csrf_of(page.text), "payload": '{"message": "x"}'}
    assert reader.post("/dashboard/functions/echo/invoke", body).status_code == 403
    invoker = signed_in(browser, make_key(tenant, "read,invoke"))
    forged = {"csrf_token": "forged", "payload": '{"message": "x"}'}
    assert invoker.post("/dashboard/functions/echo/invoke", forged).status_code == 403
    # An internal function is an operator key's alone
    token = invoker.csrf()
    internal = {"csrf_token": token, "payload": "{}"}
    assert (
        invoker.post("/dashboard/functions/cleanup_expired_keys/invoke", internal).status_code
        == 403
    )
    # An operator key invokes for the tenant it filters by, and only then
    admin = signed_in(browser, make_key(tenant, "admin"))
    token = admin.csrf()
    body = {"csrf_token": token, "payload": '{"message": "op"}', "idempotency_key": "op-1"}
    assert admin.post("/dashboard/functions/echo/invoke", body).status_code == 403
    done = admin.post(f"/dashboard/functions/echo/invoke?tenant={tenant}", body)
    assert done.status_code == 303
    assert [v.tenant_id for v in runtime.store.search.find(None, "op-1")] == [tenant]
    assert runtime.store.invocations.list(None)[0][0].idempotency_key == "op-1"
    assert invoker.get("/dashboard/functions/nope/invoke").status_code == 404


# --- the example input, and docs ------------------------------------------------------------------


@embedded_only
def test_the_example_input_follows_the_schema(backend):
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "examples": ["Ada"]},
            "count": {"type": "integer", "default": 3},
            "mode": {"enum": ["fast", "slow"]},
            "tags": {"type": "array"},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "inner": {"$ref": "#/$defs/Inner"},
        },
        "$defs": {"Inner": {"type": "object", "properties": {"on": {"type": "boolean"}}}},
    }
    assert example_of(schema) == {
        "name": "Ada",
        "count": 3,
        "mode": "fast",
        "tags": [],
        "note": "",
        "inner": {"on": False},
    }


@embedded_only
def test_docs_are_markdown_with_raw_html_and_script_links_refused(backend):
    html = str(
        render_markdown(
            """
            Sends **mail**. See [the guide](https://example.com/guide).

            <script>alert(1)</script> <img src=x onerror=alert(2)>
            [click](javascript:alert(3))
            """
        )
    )
    assert "<strong>mail</strong>" in html
    assert '<a href="https://example.com/guide">the guide</a>' in html
    assert "<script" not in html and "<img" not in html and "&lt;script&gt;" in html
    assert 'href="javascript:' not in html


def test_the_functions_page_renders_docs_and_links_the_form(
    runtime, browser, make_tenant, make_key
):
    page = signed_in(browser, make_key(make_tenant(), "read")).get("/dashboard/functions").text
    assert 'href="/dashboard/functions/echo/invoke"' in page
    assert '<div class="doc"><p>' in page
