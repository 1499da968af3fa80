"""The dashboard's limits: a tenant's limits and counts, the busiest tenants, why one waits."""

from __future__ import annotations

import re

from tests.unit.test_dashboard import browser, signed_in  # noqa: F401 - the fixture


def text_of(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}">([^<]*)<', html)
    assert match, f"no #{element_id} in the page"
    return match.group(1)


def test_a_tenant_sees_its_limits_and_counts(runtime, browser, make_tenant, make_key):  # noqa: F811
    tenant = make_tenant()
    runtime.limits.set(tenant, {"concurrency": 3, "rate_per_s": 5})
    for n in range(2):
        runtime.invocations.accept(tenant_id=tenant, function="echo", payload={"message": f"{n}"})
    page = signed_in(browser, make_key(tenant, "read")).get("/dashboard").text
    assert text_of(page, "limits-waiting") == "2" and text_of(page, "limits-running") == "0"
    rows = dict(re.findall(r'<th scope="row">(\w+)</th><td class="num">([^<]+)</td>', page))
    assert (rows["concurrency"], rows["rate_per_s"], rows["max_waiting"]) == (
        "3",
        "5.0",
        "unlimited",
    )


def test_an_admin_sees_the_busiest_tenants_and_one_tenants_limits(
    runtime,
    browser,  # noqa: F811
    make_tenant,
    make_key,
):
    busy, idle = make_tenant(), make_tenant()
    runtime.limits.set(busy, {"max_waiting": 50})
    for n in range(3):
        runtime.invocations.accept(tenant_id=busy, function="echo", payload={"message": f"{n}"})
    admin = signed_in(browser, make_key(busy, "admin"))
    page = admin.get("/dashboard").text
    assert f'>{busy}</a></td><td class="num">3</td>' in page
    assert f">{idle}</a></td>" not in page  # no work in flight: not listed
    one = admin.get(f"/dashboard?tenant={busy}").text
    assert text_of(one, "limits-waiting") == "3"


def test_an_invocation_held_back_says_why(runtime, browser, make_tenant, make_key):  # noqa: F811
    tenant = make_tenant()
    held = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "m"}
    ).invocation
    runtime.store.limits.mark_waiting([held.id], "tenant_concurrency")
    page = signed_in(browser, make_key(tenant, "read")).get(f"/dashboard/invocations/{held.id}")
    assert "concurrency limit" in text_of(page.text, "waiting-reason")
