"""The batch invoke API through gunicorn, a worker process, PostgreSQL and Redis."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from tests.integration.clients import make_key
from tests.integration.conftest import Deployment, Ledger
from tests.procs import Processes, free_port
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def test_a_batch_of_200_runs_to_completion_each_once_and_replays_as_a_whole(
    deployment: Deployment, procs: Processes, ledger_for: Callable[[str], Ledger]
) -> None:
    # Given gunicorn and a worker, fair dispatch on (its window is 64)
    env = deployment.env(redispatch_after_s=60, sweep_interval_s=1)
    ledger = ledger_for(deployment.database_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {make_key(deployment.database_url, 't-batch')}"}
    procs.gunicorn(env, port=port, workers=2, threads=4)
    procs.worker(env, name="worker-0", threads=8)
    items = [{"input": {"message": f"batch {n}"}, "idempotency_key": f"k{n}"} for n in range(200)]
    items[7] = {"input": {"no_message": True}, "idempotency_key": "bad"}

    # When the batch is POSTed
    url = f"{base}/v1/functions/echo/invocations/batch"
    answer = requests.post(url, json={"items": items}, headers=headers, timeout=60)

    # Then each item has its answer, in order: 199 queued, the invalid one its errors
    assert answer.status_code == 202, answer.text
    results = answer.json()["items"]
    assert [r["index"] for r in results] == list(range(200))
    assert results[7]["status"] == 422 and results[7]["type"] == "input-invalid"
    ids = [r["id"] for r in results if "id" in r]
    assert len(set(ids)) == 199 and not any(r.get("replayed") for r in results)
    # And every one succeeds, each executed exactly once
    wait_for(
        lambda: ledger.count_status(ids, "succeeded") == 199,
        timeout=180,
        interval=0.25,
        what="the batch to succeed",
    )
    executions = ledger.executions()
    assert {i: executions.get(i) for i in ids} == dict.fromkeys(ids, 1)

    # When the same batch is sent again, it is all replays: 200, nothing new stored
    valid = [item for n, item in enumerate(items) if n != 7]
    again = requests.post(url, json={"items": valid}, headers=headers, timeout=60)
    assert again.status_code == 200, again.text
    assert [r["id"] for r in again.json()["items"]] == ids
    assert ledger.total() == 199
