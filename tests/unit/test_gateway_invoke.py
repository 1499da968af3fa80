"""Invoking over HTTP: Location, idempotent replay, ?wait, ?delay and ?at."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest

from runtime.settings import MAX_DELAY_LIMIT_S as MAX_DELAY_S
from runtime.store.views import rfc3339
from tests.conftest import executions
from tests.unit.conftest import assert_problem, invoke, wait_finished


def test_invoking_answers_202_with_location_and_the_invocation(client, headers, tenant):
    result = invoke(client, {**headers, "X-Request-ID": "req-1"}, "echo", {"message": "hi"})
    assert result.status_code == 202
    body = result.json
    assert result.headers["location"] == f"/v1/invocations/{body['id']}"
    assert "idempotent-replayed" not in result.headers
    assert body["function"] == "echo" and body["tenant_id"] == tenant
    assert body["status"] == "queued" and body["trigger"] == "http"
    assert body["idempotency_key"] == body["id"]  # without a key, the id is the key
    assert body["request_id"] == "req-1" and body["attempts"] == 0
    # The Location answers with the same invocation
    again = client.simulate_get(result.headers["location"], headers=headers).json
    assert again["id"] == body["id"] and again["attempt_log"] == []


def test_a_replay_answers_the_first_invocation_with_the_replayed_header(
    client, headers, runtime, tenant, worker
):
    key = {**headers, "Idempotency-Key": "order-42"}
    first = invoke(client, key, "echo", {"message": "once"})
    assert first.status_code == 202
    # When the same key and body are sent again after it finished
    done = wait_finished(client, headers, first.json["id"])
    replay = invoke(client, key, "echo", {"message": "once"})
    # Then the first invocation answers, 200 because it is finished, marked as a replay
    assert replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.headers["location"] == first.headers["location"]
    assert replay.json["id"] == first.json["id"] and replay.json["result"] == done["result"]
    assert executions(runtime, first.json["id"]) == 1
    assert len(runtime.store.invocations.list(tenant)[0]) == 1


def test_a_replay_of_an_unfinished_invocation_is_202(client, headers):
    key = {**headers, "Idempotency-Key": "k-unfinished"}
    first = invoke(client, key, "echo", {"message": "m"})
    replay = invoke(client, key, "echo", {"message": "m"})
    assert (first.status_code, replay.status_code) == (202, 202)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json["id"] == first.json["id"]


def test_the_same_key_with_another_body_is_422(client, headers, runtime, tenant):
    key = {**headers, "Idempotency-Key": "k-1"}
    first = invoke(client, key, "echo", {"message": "a"})
    result = invoke(client, key, "echo", {"message": "b"})
    assert_problem(result, 422, "idempotency-conflict")
    # Keys are per function: the same key on another function is a new invocation
    other = invoke(client, key, "flaky", {"fail_times": 0})
    assert other.status_code == 202 and other.json["id"] != first.json["id"]
    assert len(runtime.store.invocations.list(tenant)[0]) == 2


@pytest.mark.parametrize(
    "key", ["", "x" * 256, "caf\u00e9", "tab\there"], ids=["empty", "long", "non-ascii", "control"]
)
def test_an_invalid_idempotency_key_is_400(client, headers, key, runtime, tenant):
    result = invoke(client, {**headers, "Idempotency-Key": key}, "echo", {"message": "m"})
    assert_problem(result, 400, "bad-request")
    assert runtime.store.invocations.list(tenant)[0] == []


def test_a_key_of_255_printable_characters_is_accepted(client, headers):
    key = ("k-~ !" * 51)[:255]
    result = invoke(client, {**headers, "Idempotency-Key": key}, "echo", {"message": "m"})
    assert result.status_code == 202 and result.json["idempotency_key"] == key


def test_fifty_concurrent_identical_requests_give_one_invocation_and_one_execution(
    client, headers, runtime, tenant, worker
):
    # Given 50 threads ready to send the same key and body at once
    key = {**headers, "Idempotency-Key": "burst-1"}
    start = threading.Barrier(50)
    results = [None] * 50

    def send(n):
        start.wait()
        results[n] = invoke(client, key, "echo", {"message": "burst"})

    threads = [threading.Thread(target=send, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    # Then every answer is the same invocation, exactly one of them not a replay
    assert all(r is not None for r in results)
    assert {r.status_code for r in results} <= {200, 202}, [
        r.text for r in results if r.status_code >= 300
    ]
    assert len({r.json["id"] for r in results}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in results) == 1
    [stored] = runtime.store.invocations.list(tenant)[0]
    # And it ran once
    done = wait_finished(client, headers, stored.id)
    assert done["status"] == "succeeded"
    assert executions(runtime, stored.id) == 1


def test_wait_answers_200_with_the_finished_invocation(client, headers, worker):
    result = invoke(client, headers, "echo", {"message": "waited"}, wait=20)
    assert result.status_code == 200
    assert result.json["status"] == "succeeded"
    assert result.json["result"]["message"] == "waited"
    assert result.headers["location"] == f"/v1/invocations/{result.json['id']}"


def test_wait_answers_200_for_a_failed_invocation_too(client, headers, worker):
    result = invoke(client, headers, "flaky", {"permanent": True}, wait=20)
    assert result.status_code == 200
    assert result.json["status"] == "failed" and result.json["error"]["type"] == "Permanent"


def test_wait_answers_202_when_the_time_runs_out(client, headers):
    # No worker runs, so the invocation cannot finish while the request waits.
    result = invoke(client, headers, "echo", {"message": "m"}, wait=0.3)
    assert result.status_code == 202 and result.json["status"] == "queued"


@pytest.mark.parametrize("wait", ["-1", "31", "soon", "nan", "inf"])
def test_wait_outside_0_to_max_wait_is_400(client, headers, wait, runtime, tenant):
    result = invoke(client, headers, "echo", {"message": "m"}, wait=wait)
    assert_problem(result, 400, "bad-request")
    assert runtime.store.invocations.list(tenant)[0] == []


def test_delay_schedules_the_invocation_and_it_runs_when_due(client, headers, runtime, worker):
    before = runtime.store.db.clock()
    result = invoke(client, headers, "echo", {"message": "later"}, delay=0.5)
    after = runtime.store.db.clock()
    assert result.status_code == 202
    body = result.json
    assert body["status"] == "scheduled"
    due = datetime.fromisoformat(body["scheduled_for"])
    assert before + timedelta(seconds=0.499) <= due <= after + timedelta(seconds=0.501)
    done = wait_finished(client, headers, body["id"])
    assert done["status"] == "succeeded"
    assert datetime.fromisoformat(done["started_at"]) >= due


def test_at_schedules_for_that_time_in_utc(client, headers, runtime):
    # Given a time an hour from now, written with a +02:00 offset
    due = (runtime.store.db.clock() + timedelta(hours=1)).replace(microsecond=123000)
    written = due.astimezone(timezone(timedelta(hours=2))).isoformat()
    result = invoke(client, headers, "echo", {"message": "at"}, at=written)
    assert result.status_code == 202
    assert result.json["status"] == "scheduled"
    assert result.json["scheduled_for"] == rfc3339(due.astimezone(UTC))


def test_at_with_an_unencoded_plus_offset_is_understood(client, headers, runtime):
    due = (runtime.store.db.clock() + timedelta(hours=1)).replace(microsecond=0)
    written = due.astimezone(timezone(timedelta(hours=2))).strftime("%Y-%m-%dT%H:%M:%S+02:00")
    # A literal "+" in a query string means a space; clients often forget to encode it.
    result = client.simulate_post(
        "/v1/functions/echo/invocations",
        json={"message": "m"},
        headers=headers,
        query_string=f"at={written}",
    )
    assert result.status_code == 202, result.text
    assert result.json["scheduled_for"] == rfc3339(due)


@pytest.mark.parametrize(
    "query",
    [
        {"at": "2030-01-31T09:00:00"},
        {"at": "2030-01-31"},
        {"at": "tomorrow"},
        {"at": "2030-13-01T09:00:00Z"},
        {"delay": "-5"},
        {"delay": "1e400"},
        {"delay": "nan"},
        {"delay": str(MAX_DELAY_S + 1)},
        {"delay": "5", "at": "2030-01-31T09:00:00Z"},
    ],
    ids=["no-offset", "date-only", "words", "bad-month", "negative", "huge", "nan", "max", "both"],
)
def test_bad_delay_or_at_is_400_and_nothing_is_stored(client, headers, query, runtime, tenant):
    result = invoke(client, headers, "echo", {"message": "m"}, **query)
    assert_problem(result, 400, "bad-request")
    assert runtime.store.invocations.list(tenant)[0] == []


def test_the_largest_delay_is_accepted(client, headers, runtime):
    # The largest is FERRY_MAX_DELAY_S (issue 12); one more second is a 400 (test_gateway_bounds).
    result = invoke(client, headers, "echo", {"message": "m"}, delay=runtime.settings.max_delay_s)
    assert result.status_code == 202 and result.json["status"] == "scheduled"


def test_a_cancelled_delayed_invocation_can_be_retried_and_then_runs_once(
    client, headers, runtime, worker
):
    # Given an invocation delayed by an hour
    delayed = invoke(client, headers, "echo", {"message": "m"}, delay=3600).json
    path = f"/v1/invocations/{delayed['id']}"
    # When it is cancelled
    cancelled = client.simulate_post(f"{path}/cancel", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    # Then cancelling again is 409
    assert_problem(client.simulate_post(f"{path}/cancel", headers=headers), 409, "invalid-state")
    # When it is retried, it is queued at once and runs once
    retried = client.simulate_post(f"{path}/retry", headers=headers)
    assert retried.status_code == 202
    assert retried.headers["location"] == path
    assert retried.json["status"] == "queued" and retried.json["scheduled_for"] is None
    done = wait_finished(client, headers, delayed["id"])
    assert done["status"] == "succeeded"
    assert executions(runtime, delayed["id"]) == 1
    # A succeeded invocation can be neither retried nor cancelled
    assert_problem(client.simulate_post(f"{path}/retry", headers=headers), 409, "invalid-state")
    assert_problem(client.simulate_post(f"{path}/cancel", headers=headers), 409, "invalid-state")
