"""Reading and operating invocations: list, one with its attempt log, cancel, retry; functions."""

from __future__ import annotations

import pytest

from tests.conftest import executions
from tests.unit.conftest import assert_problem, invoke, wait_finished
from tests.waiting import wait_for


def test_functions_are_listed_with_their_invoke_url(client, headers, runtime):
    result = client.simulate_get("/v1/functions", headers=headers)
    assert result.status_code == 200
    functions = {f["name"]: f for f in result.json["functions"]}
    assert set(functions) == {f.name for f in runtime.registry}
    echo = functions["echo"]
    assert echo == {
        **runtime.registry.get("echo").describe(),
        "invoke_url": "/v1/functions/echo/invocations",
    }
    assert set(echo) == {
        "name",
        "description",
        "queue",
        "max_retries",
        "timeout_s",
        "secrets",
        "input_schema",
        "invoke_scope",
        "internal",
        "output_schema",
        "invoke_url",
    }
    assert echo["input_schema"]["properties"]["message"]["type"] == "string"
    one = client.simulate_get("/v1/functions/echo", headers=headers)
    assert one.status_code == 200 and one.json == echo


def test_invocations_are_listed_newest_first_in_pages(client, headers):
    ids = [invoke(client, headers, "echo", {"message": str(n)}).json["id"] for n in range(5)]
    # When listed two at a time
    seen, cursor = [], None
    while True:
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.simulate_get("/v1/invocations", headers=headers, query_string=query).json
        assert len(page["invocations"]) <= 2
        seen += [i["id"] for i in page["invocations"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    # Then every one appears once, newest first
    assert seen == list(reversed(ids))
    # The default page holds them all
    everything = client.simulate_get("/v1/invocations", headers=headers).json
    assert [i["id"] for i in everything["invocations"]] == seen
    assert everything["next_cursor"] is None


def test_invocations_are_filtered_by_function_and_status(client, headers):
    echo = invoke(client, headers, "echo", {"message": "m"}).json["id"]
    flaky = invoke(client, headers, "flaky", {}).json["id"]
    client.simulate_post(f"/v1/invocations/{flaky}/cancel", headers=headers)

    def listed(query):
        result = client.simulate_get("/v1/invocations", headers=headers, query_string=query)
        assert result.status_code == 200, result.text
        return [i["id"] for i in result.json["invocations"]]

    assert listed("function=echo") == [echo]
    assert listed("status=cancelled") == [flaky]
    assert listed("function=echo&status=cancelled") == []
    assert listed("function=nothing") == []


@pytest.mark.parametrize(
    "query",
    ["status=done", "limit=0", "limit=201", "limit=ten", "limit=-1", "cursor=not-a-cursor"],
)
def test_bad_list_parameters_are_400(client, headers, query):
    result = client.simulate_get("/v1/invocations", headers=headers, query_string=query)
    assert_problem(result, 400, "bad-request")


def test_a_cursor_is_taken_only_as_the_api_wrote_it(client, headers):
    for n in range(2):
        invoke(client, headers, "echo", {"message": str(n)})
    page = client.simulate_get("/v1/invocations", headers=headers, query_string="limit=1")
    cursor = page.json["next_cursor"]

    def listed(given):
        return client.simulate_get("/v1/invocations", headers=headers, params={"cursor": given})

    assert listed(cursor).status_code == 200
    # Base64 decoding would skip the extra character; the documented pattern does not
    assert_problem(listed(cursor + "!"), 400, "bad-request")


def test_limit_bounds_are_accepted(client, headers):
    for limit in (1, 200):
        result = client.simulate_get(
            "/v1/invocations", headers=headers, query_string=f"limit={limit}"
        )
        assert result.status_code == 200


def test_an_invocation_shows_its_attempt_log(client, headers, worker):
    # Given an invocation that failed twice, then succeeded
    created = invoke(client, headers, "flaky", {"fail_times": 2}).json
    done = wait_finished(client, headers, created["id"])
    # Then its attempt log has one entry per run
    assert done["status"] == "succeeded" and done["attempts"] == 3
    log = done["attempt_log"]
    assert [(a["number"], a["outcome"]) for a in log] == [
        (1, "retrying"),
        (2, "retrying"),
        (3, "succeeded"),
    ]
    assert log[0]["error"] == {"type": "Retryable", "message": "attempt 1 fails"}
    assert all(a["started_at"].endswith("Z") and a["finished_at"] for a in log)
    assert set(log[0]) == {"number", "started_at", "finished_at", "outcome", "error"}


def test_a_missing_invocation_is_404(client, headers):
    for method, suffix in (("GET", ""), ("POST", "/cancel"), ("POST", "/retry")):
        result = client.simulate_request(method, f"/v1/invocations/nope{suffix}", headers=headers)
        assert_problem(result, 404, "invocation-not-found")


def test_a_failed_invocation_can_be_retried_with_a_fresh_budget(client, headers, runtime, worker):
    # Given an invocation that ran out of retries
    created = invoke(client, headers, "flaky", {"fail_times": 4}).json
    failed = wait_finished(client, headers, created["id"])
    assert failed["status"] == "failed" and failed["attempts"] == 4
    # When an operator retries it
    retried = client.simulate_post(f"/v1/invocations/{created['id']}/retry", headers=headers)
    # Then it is queued again and runs again (attempt 5 succeeds: it fails 4 times)
    assert retried.status_code == 202 and retried.json["status"] == "queued"
    assert retried.json["error"] is None
    done = wait_finished(client, headers, created["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 5
    assert executions(runtime, created["id"]) == 5


def test_a_running_invocation_cannot_be_cancelled(client, headers, worker):
    created = invoke(client, headers, "echo", {"message": "m", "sleep_s": 1}).json
    path = f"/v1/invocations/{created['id']}"
    wait_for(
        lambda: client.simulate_get(path, headers=headers).json["status"] != "queued",
        what="the invocation to start",
    )
    assert_problem(client.simulate_post(f"{path}/cancel", headers=headers), 409, "invalid-state")
    assert wait_finished(client, headers, created["id"])["status"] == "succeeded"
