"""Dashboard pages added for finding and following work: error pages, search, charts on
the overview, relative times and short ids, and auto-refresh of lists."""

from __future__ import annotations

import re

from tests.unit import test_dashboard as dashboard_tests
from tests.unit.test_dashboard import invocation_ids

CSP = "default-src 'none'; style-src 'self'"


# The signed-in client of the dashboard tests (a fixture, and a helper).
browser = dashboard_tests.browser
signed_in = dashboard_tests.signed_in


# --- error pages -----------------------------------------------------------------------------------


def test_a_missing_dashboard_page_is_an_html_page_and_the_api_keeps_problem_json(
    runtime, browser, make_tenant, make_key
):
    b = signed_in(browser, make_key(make_tenant(), "read"))
    for path in ("/dashboard/functions/greet", "/dashboard/nothing/here"):
        page = b.get(path)
        assert page.status_code == 404
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"].startswith(CSP)
        assert "<h1>Not Found</h1>" in page.text and f"nothing is at {path}" in page.text
    # A method a page lacks is a page too
    wrong = b.request("DELETE", "/dashboard/functions")
    assert wrong.status_code == 405 and wrong.headers["content-type"].startswith("text/html")
    # Outside the dashboard, errors stay problem+json
    api = b.get("/v1/nothing-here")
    assert api.status_code == 404 and api.headers["content-type"] == "application/problem+json"
    assert api.json["status"] == 404


# --- search ----------------------------------------------------------------------------------------


def test_search_finds_by_id_and_by_idempotency_key_within_the_tenant(
    runtime, browser, make_tenant, make_key
):
    mine, theirs = make_tenant(), make_tenant()
    own, _ = runtime.invocations.accept(
        tenant_id=mine, function="echo", payload={"message": "a"}, idempotency_key="order-77"
    )
    other, _ = runtime.invocations.accept(
        tenant_id=theirs, function="echo", payload={"message": "b"}, idempotency_key="order-77"
    )
    b = signed_in(browser, make_key(mine, "read"))
    # An exact id goes straight to its page
    found = b.get(f"/dashboard/search?q={own.id}")
    assert found.status_code == 303
    assert found.headers["location"] == f"/dashboard/invocations/{own.id}"
    # An idempotency key lists its invocations: this tenant's only
    listed = b.get("/dashboard/search?q=order-77")
    assert listed.status_code == 200 and invocation_ids(listed.text) == {own.id}
    # Another tenant's id is not found, and a prefix matches nothing (exact matches only)
    assert invocation_ids(b.get(f"/dashboard/search?q={other.id}").text) == set()
    assert invocation_ids(b.get(f"/dashboard/search?q={own.id[:8]}").text) == set()
    assert b.get("/dashboard/search?q=" + "x" * 256).status_code == 400
    # An operator key finds both tenants' invocations under the key
    admin = signed_in(browser, make_key(mine, "admin"))
    assert invocation_ids(admin.get("/dashboard/search?q=order-77").text) == {own.id, other.id}
    assert invocation_ids(admin.get(f"/dashboard/search?q=order-77&tenant={theirs}").text) == {
        other.id
    }


def test_every_page_has_the_search_box(runtime, browser, make_tenant, make_key):
    b = signed_in(browser, make_key(make_tenant(), "read"))
    assert 'action="/dashboard/search"' in b.get("/dashboard/invocations").text


# --- charts, times and ids -------------------------------------------------------------------------


def test_the_overview_draws_its_charts_as_inline_svg(runtime, browser, make_tenant, make_key):
    tenant = make_tenant()
    runtime.invocations.accept(tenant_id=tenant, function="echo", payload={"message": "w"})
    b = signed_in(browser, make_key(tenant, "read"))
    for window in ("hour", "day"):
        page = b.get(f"/dashboard?window={window}")
        assert page.status_code == 200
        assert page.text.count('<svg class="chart') == 3
        assert f"last {window}" in page.text
        # The waiting invocation shows in the queue-depth chart of the last bucket
        assert re.search(r"<title>[^<]*UTC: 1 waiting</title>", page.text)
        assert "<script" not in page.text and "style=" not in page.text
    assert b.get("/dashboard?window=week").status_code == 400


def test_listings_show_short_ids_and_relative_times_with_the_exact_ones_on_hover(
    runtime, browser, make_tenant, make_key
):
    tenant = make_tenant()
    inv, _ = runtime.invocations.accept(tenant_id=tenant, function="echo", payload={"message": "w"})
    page = signed_in(browser, make_key(tenant, "read")).get("/dashboard/invocations").text
    link = (
        f'<a href="/dashboard/invocations/{inv.id}" title="{inv.id}"><code>{inv.id[:8]}</code></a>'
    )
    assert link in page
    assert re.search(
        r'<time datetime="[0-9T:.-]+Z" title="[0-9T:.-]+Z">(just now|\d+ s ago)</time>', page
    )


def test_lists_refresh_themselves_only_when_asked(runtime, browser, make_tenant, make_key):
    b = signed_in(browser, make_key(make_tenant(), "read"))
    off = b.get("/dashboard/invocations?status=queued").text
    assert 'http-equiv="refresh"' not in off
    assert 'href="/dashboard/invocations?status=queued&amp;refresh=on"' in off
    on = b.get("/dashboard/invocations?status=queued&refresh=on").text
    assert '<meta http-equiv="refresh" content="15">' in on
    # The filter form keeps it on, and the toggle turns it off keeping the filter
    assert '<input type="hidden" name="refresh" value="on">' in on
    assert 'href="/dashboard/invocations?status=queued"' in on
    assert 'http-equiv="refresh"' in b.get("/dashboard/failed?refresh=on").text
