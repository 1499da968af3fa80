"""Health, readiness, 503 with Retry-After when the store is unreachable, and a broker outage.

Once the store has committed an invocation it is accepted, whatever the broker does: the
answer is 202 and the sweep sends it when the broker is back.
"""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from falcon.testing import TestClient

from gateway.app import create_app
from runtime.app import Runtime
from runtime.errors import BrokerUnavailable
from tests.conftest import executions, require_services
from tests.unit.conftest import assert_problem, closed_port, invoke
from tests.waiting import finished, wait_for

A_KEY = {"Authorization": "Bearer fy_000000000000_" + "A" * 43}


def unreachable_store_url(backend, tmp_path):
    if backend == "production":
        return f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/ferry"
    # A SQLite file in a directory that does not exist cannot be opened.
    return f"sqlite:///{tmp_path / 'missing-dir' / 'ferry.db'}"


def test_healthz_is_200_and_readyz_200_when_all_answer(client):
    assert client.simulate_get("/healthz").json == {"status": "ok"}
    ready = client.simulate_get("/readyz")
    assert ready.status_code == 200
    assert ready.json == {"status": "ready", "checks": {"store": "ok", "broker": "ok"}}


def test_an_unreachable_store_answers_503_with_retry_after(backend, runtime_with, tmp_path):
    # Given a gateway whose store cannot be reached
    down = runtime_with(migrate=False, database_url=unreachable_store_url(backend, tmp_path))
    client = TestClient(create_app(down))
    # Then every call that needs the store answers 503 with Retry-After, as problem+json
    for result in (
        invoke(client, A_KEY, "echo", {"message": "m"}),
        client.simulate_get("/v1/invocations", headers=A_KEY),
        client.simulate_get("/v1/functions", headers=A_KEY),
    ):
        assert_problem(result, 503, "store-unavailable")
        assert int(result.headers["retry-after"]) > 0
    # /readyz names the store, /healthz still answers
    ready = client.simulate_get("/readyz")
    problem = assert_problem(ready, 503, "not-ready")
    assert problem["checks"]["store"].startswith("unavailable") and "store" in problem["detail"]
    assert int(ready.headers["retry-after"]) > 0
    assert client.simulate_get("/healthz").status_code == 200


def test_an_unreachable_broker_still_accepts_what_the_store_committed(
    runtime, runtime_with, headers, tenant
):
    # Given a gateway on the working store whose broker cannot be reached
    down = runtime_with(broker_url=f"redis://127.0.0.1:{closed_port()}/0")
    client = TestClient(create_app(down))
    # When a function is invoked
    key = {**headers, "Idempotency-Key": "k-1"}
    result = invoke(client, key, "echo", {"message": "m"})
    # Then it is accepted: 202 with the committed invocation, queued in the store
    assert result.status_code == 202, result.text
    assert result.json["status"] == "queued"
    assert [i.id for i in runtime.store.invocations.list(tenant)[0]] == [result.json["id"]]
    # and a replay of the key answers with that same invocation
    replay = invoke(client, key, "echo", {"message": "m"})
    assert replay.status_code == 202 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json["id"] == result.json["id"]
    # /readyz stays 200 (the gateway still accepts) and names the broker as down
    ready = client.simulate_get("/readyz")
    assert ready.status_code == 200
    assert ready.json["checks"]["store"] == "ok"
    assert ready.json["checks"]["broker"].startswith("unavailable")
    # And once a broker answers, the next sweep sends it at once (not only after
    # redispatch_after_s), and it runs exactly once
    assert runtime.sweep().sent == 1
    handle = runtime.start_worker()
    try:
        assert wait_for(finished(runtime, result.json["id"])).status == "succeeded"
    finally:
        handle.stop(grace_s=5)
    assert executions(runtime, result.json["id"]) == 1


def test_a_replay_while_the_first_send_fails_gets_the_invocation_that_then_runs_once(
    runtime, client, headers, tenant, monkeypatch
):
    # Given a broker whose send hangs, then fails (issue 11: the withdraw race)
    sending, release = threading.Event(), threading.Event()

    def hanging_then_failing_send(item):
        sending.set()
        release.wait(10)
        raise BrokerUnavailable("the broker is unreachable: ConnectionError")

    monkeypatch.setattr(runtime.dispatcher, "send", hanging_then_failing_send)
    key = {**headers, "Idempotency-Key": "race-1"}
    answers = {}
    first = threading.Thread(
        target=lambda: answers.setdefault("first", invoke(client, key, "echo", {"message": "m"}))
    )
    first.start()
    try:
        assert sending.wait(10), "the first request never reached the broker"
        # When a replay of the key arrives while the first request's send hangs
        replay = invoke(client, key, "echo", {"message": "m"})
    finally:
        release.set()
        first.join(10)
    # Then the replay answers 202 with the committed invocation, and so does the first
    # request once its send has failed
    assert replay.status_code == 202 and replay.headers["idempotent-replayed"] == "true"
    assert answers["first"].status_code == 202, answers["first"].text
    invocation_id = answers["first"].json["id"]
    assert replay.json["id"] == invocation_id
    # And afterwards the invocation is still there, and once the broker works it runs once
    assert runtime.store.invocations.get(invocation_id, tenant).status == "queued"
    monkeypatch.undo()
    handle = runtime.start_worker()
    try:
        assert wait_for(finished(runtime, invocation_id)).status == "succeeded"
    finally:
        handle.stop(grace_s=5)
    assert executions(runtime, invocation_id) == 1
    fetched = client.simulate_get(f"/v1/invocations/{invocation_id}", headers=headers)
    assert fetched.status_code == 200 and fetched.json["status"] == "succeeded"


@pytest.mark.integration
def test_a_store_that_stops_answering_mid_request_answers_503_and_stores_nothing(settings_for):
    require_services()
    # Given a PostgreSQL store whose invocations table another session holds locked,
    # so the gateway authenticates but cannot insert before its statement timeout
    settings = settings_for("production", db_statement_timeout_ms=300)
    runtime = Runtime(settings)
    try:
        runtime.store.migrate()
        runtime.store.tenants.create("acme")
        from runtime.store.tenants import parse_scopes

        _view, key = runtime.store.tenants.create_key("acme", parse_scopes("invoke,read"))
        client = TestClient(create_app(runtime))
        locked, release = threading.Event(), threading.Event()

        def hold_lock():
            with runtime.store.db.engine.connect() as conn, conn.begin():
                conn.execute(sa.text("SET LOCAL statement_timeout = 0"))
                conn.execute(sa.text("LOCK TABLE invocations IN ACCESS EXCLUSIVE MODE"))
                locked.set()
                release.wait(30)

        holder = threading.Thread(target=hold_lock)
        holder.start()
        try:
            assert locked.wait(10)
            # When a function is invoked
            result = invoke(client, {"Authorization": f"Bearer {key}"}, "echo", {"message": "m"})
        finally:
            release.set()
            holder.join(30)
        # Then 503 with Retry-After, and nothing was stored
        assert_problem(result, 503, "store-unavailable")
        assert int(result.headers["retry-after"]) > 0
        assert runtime.store.invocations.list("acme")[0] == []
    finally:
        runtime.close()


@pytest.mark.integration
def test_a_store_that_stalls_while_waiting_answers_202_for_what_it_accepted(settings_for):
    require_services()
    # Given an accepted invocation whose ?wait polls then find the store not answering
    settings = settings_for("production", db_statement_timeout_ms=300)
    runtime = Runtime(settings)
    try:
        runtime.store.migrate()
        runtime.store.tenants.create("acme")
        from runtime.store.tenants import parse_scopes

        _view, key = runtime.store.tenants.create_key("acme", parse_scopes("invoke,read"))
        client = TestClient(create_app(runtime))
        answer = {}

        def send():
            answer["result"] = invoke(
                client, {"Authorization": f"Bearer {key}"}, "echo", {"message": "m"}, wait=20
            )

        sender = threading.Thread(target=send)
        sender.start()
        with runtime.store.db.engine.connect() as conn:
            wait_for(
                lambda: conn.execute(sa.text("SELECT count(*) FROM invocations")).scalar_one(),
                what="the invocation to be stored",
            )
            conn.commit()
            with conn.begin():
                conn.execute(sa.text("SET LOCAL statement_timeout = 0"))
                conn.execute(sa.text("LOCK TABLE invocations IN ACCESS EXCLUSIVE MODE"))
                # Then the request ends, while the store still stalls and before its wait
                # runs out, with 202 instead of 503: the invocation was accepted
                sender.join(15)
                assert not sender.is_alive()
        result = answer["result"]
        assert result.status_code == 202, result.text
        assert result.json["status"] == "queued"
        assert [i.id for i in runtime.store.invocations.list("acme")[0]] == [result.json["id"]]
    finally:
        runtime.close()
