"""Ferry over HTTP through gunicorn, with separate worker processes, on real servers."""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from tests.conftest import REDIS_URL
from tests.integration.clients import Client, make_key
from tests.integration.conftest import FAST_RECOVERY, Deployment, Ledger
from tests.procs import PrivatePostgres, Processes, free_port
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def succeeded_count(ledger: Ledger) -> int:
    with ledger.store.db.engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM invocations WHERE status = 'succeeded'")
            ).scalar_one()
        )


def test_2000_invocations_over_http_each_succeed_exactly_once(
    deployment: Deployment,
    procs: Processes,
    ledger_for: Callable[[str], Ledger],
    tmp_path: Path,
) -> None:
    # Given gunicorn and 3 worker processes. The sweep re-sends only what waited a
    # minute: a backlog of 2,000 is not a lost message.
    total = 2000
    env = deployment.env(redispatch_after_s=60, sweep_interval_s=1)
    ledger = ledger_for(deployment.database_url)
    client = Client(f"http://127.0.0.1:{free_port()}", make_key(deployment.database_url, "t-load"))
    procs.gunicorn(env, port=int(client.base_url.rsplit(":", 1)[1]), workers=2, threads=8)
    for n in range(3):
        procs.worker(env, name=f"worker-{n}", threads=8)

    # When 16 clients POST 2,000 invocations
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(
            pool.map(lambda n: client.invoke("echo", {"message": f"load {n}"}), range(total))
        )
    accepted_s = time.monotonic() - started
    assert [r.status_code for r in responses] == [202] * total, {
        r.status_code: r.text for r in responses if r.status_code != 202
    }
    ids = [r.json()["id"] for r in responses]
    assert len(set(ids)) == total

    # Then every one succeeds, each executed exactly once
    wait_for(
        lambda: succeeded_count(ledger) == total,
        timeout=300,
        interval=0.25,
        what="all 2,000 invocations to succeed",
    )
    completed_s = time.monotonic() - started
    assert ledger.statuses(ids) == dict.fromkeys(ids, "succeeded")
    executions = ledger.executions()
    assert {i: executions.get(i) for i in ids} == dict.fromkeys(ids, 1)
    assert ledger.succeeded_attempts() == dict.fromkeys(ids, 1)

    # The measured rates: a figure for the record, not an assertion.
    figures = {
        "invocations": total,
        "http_clients": 16,
        "gunicorn": "2 processes x 8 threads (gthread)",
        "workers": "3 processes x 8 threads",
        "accepted_per_s": round(total / accepted_s, 1),
        "completed_per_s": round(total / completed_s, 1),
        "accept_seconds": round(accepted_s, 2),
        "complete_seconds": round(completed_s, 2),
    }
    (tmp_path / "throughput.json").write_text(json.dumps(figures, indent=2))
    print(f"\nthroughput: {json.dumps(figures)}")


@dataclasses.dataclass
class Answer:
    status: int
    invocation_id: str | None
    retry_after: str | None
    content_type: str
    phase: str


class Burst:
    """Clients POSTing invocations at a steady rate until stopped, recording every answer.

    The clients share one schedule of `rate_per_s` requests a second (a slow answer
    delays only its own client), and stop after `max_requests` in any case.
    """

    def __init__(self, client: Client, threads: int, rate_per_s: float, max_requests: int) -> None:
        self.client = client
        self.rate_per_s = rate_per_s
        self.max_requests = max_requests
        self.answers: list[Answer] = []
        self.errors: list[str] = []
        self.phase = "up"
        self._sent = 0
        self._started = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop) for _ in range(threads)]

    def _next_slot(self) -> float | None:
        """When this client's next request is due, or None when the burst is over."""
        with self._lock:
            if self._stop.is_set() or self._sent >= self.max_requests:
                return None
            self._sent += 1
            return self._started + (self._sent - 1) / self.rate_per_s

    def _loop(self) -> None:
        while (due := self._next_slot()) is not None:
            time.sleep(max(0.0, due - time.monotonic()))
            phase = self.phase
            try:
                response = self.client.invoke("echo", {"message": f"burst {due}"})
            except requests.RequestException as ex:  # gunicorn must always answer
                with self._lock:
                    self.errors.append(repr(ex))
                continue
            invocation_id = response.json().get("id") if response.status_code < 300 else None
            answer = Answer(
                response.status_code,
                invocation_id,
                response.headers.get("Retry-After"),
                response.headers.get("Content-Type", ""),
                phase,
            )
            with self._lock:
                self.answers.append(answer)

    def count(self, status: int, phase: str | None = None) -> int:
        with self._lock:
            return sum(
                1
                for a in self.answers
                if a.status == status and (phase is None or a.phase == phase)
            )

    def rate(self) -> float:
        """Answers a second since the start (a figure for the report)."""
        with self._lock:
            return len(self.answers) / max(0.001, time.monotonic() - self._started)

    def start(self) -> None:
        self._started = time.monotonic()
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


#: How long PostgreSQL stays down, and the rate and bound of the requests meanwhile.
PG_DOWN_S = 10
BURST_RATE_PER_S = 100
BURST_MAX_REQUESTS = 5000


def test_postgres_down_for_10_s_at_100_requests_a_second_answers_202_or_503_and_loses_nothing(
    private_pg: PrivatePostgres,
    redis_namespace: str,
    procs: Processes,
    ledger_for: Callable[[str], Ledger],
) -> None:
    # Given gunicorn and a worker on a private PostgreSQL, under 100 invocations a second
    overrides = {**FAST_RECOVERY, "db_connect_timeout_s": 1, "db_pool_timeout_s": 2}
    deployment = Deployment(private_pg.url(), REDIS_URL, redis_namespace, overrides)
    env = deployment.env()
    port = free_port()
    client = Client(f"http://127.0.0.1:{port}", make_key(deployment.database_url, "t-pg"))
    web = procs.gunicorn(env, port=port, workers=2, threads=8)
    worker = procs.worker(env, threads=4)
    burst = Burst(client, threads=24, rate_per_s=BURST_RATE_PER_S, max_requests=BURST_MAX_REQUESTS)
    burst.start()
    try:
        wait_for(lambda: burst.count(202) >= 100, timeout=60, what="accepted invocations")

        # When PostgreSQL stops at once, for 10 s
        burst.phase = "down"
        private_pg.stop_immediate()
        down_at = time.monotonic()

        # Then the gateway answers 503 with Retry-After, and /readyz says the store failed
        wait_for(lambda: burst.count(503, "down") >= 20, timeout=60, what="503 answers")

        def readiness_failing() -> dict[str, Any] | None:
            response = client.readyz()
            return response.json() if response.status_code == 503 else None

        down = wait_for(readiness_failing, timeout=30, what="/readyz 503")
        assert down is not None
        assert down["checks"]["store"] != "ok"
        time.sleep(max(0.0, PG_DOWN_S - (time.monotonic() - down_at)))

        # When PostgreSQL is back, the same gunicorn accepts again
        private_pg.start()
        burst.phase = "back"
        wait_for(
            lambda: burst.count(202, "back") >= 100,
            timeout=60,
            what="accepted invocations after PostgreSQL returned",
        )
        wait_for(lambda: client.readyz().status_code == 200, timeout=30, what="/readyz 200")
    finally:
        burst.stop()
    assert web.alive()
    figures = {
        phase: {
            status: sum(1 for a in burst.answers if a.phase == phase and a.status == status)
            for status in sorted({a.status for a in burst.answers})
        }
        for phase in ("up", "down", "back")
    }
    print(f"\npostgres outage: {json.dumps(figures)}, {burst.rate():.0f} answers/s")

    # Never a 500 or a dropped connection: only 202, or 503 with Retry-After as problem+json
    assert burst.errors == []
    assert {a.status for a in burst.answers} <= {202, 503}, sorted(
        {a.status for a in burst.answers}
    )
    refused = [a for a in burst.answers if a.status == 503]
    assert all(a.retry_after and int(a.retry_after) > 0 for a in refused)
    assert all(a.content_type.startswith("application/problem+json") for a in refused)
    # Every 2xx was stored, and each succeeds exactly once (the worker survived the outage)
    accepted = [a.invocation_id for a in burst.answers if a.status == 202]
    assert all(accepted)
    ids = [i for i in accepted if i is not None]
    assert len(set(ids)) == len(ids)
    ledger = ledger_for(deployment.database_url)
    assert len(ledger.statuses(ids)) == len(ids)
    wait_for(
        lambda: ledger.count_status(ids, "succeeded") == len(ids),
        timeout=120,
        interval=0.5,
        what="every accepted invocation to succeed",
    )
    succeeded = ledger.succeeded_attempts()
    assert {i: succeeded.get(i) for i in ids} == dict.fromkeys(ids, 1)
    # And nothing ran without a claimed attempt. (An attempt the outage caught mid-run,
    # its outcome unrecordable, runs again: at most one run succeeds, as the contract says.)
    executions = ledger.executions()
    assert all(executions.get(i, 0) <= len(ledger.attempts(i)) for i in ids)
    again = sum(1 for i in ids if executions.get(i, 0) > 1)
    print(f"postgres outage: {len(ids)} accepted, {again} ran again after the outage")
    # Deliveries during the outage were skipped, never run without a claim.
    assert "ran without its claim" not in worker.output()
    assert "Unexpected failure" not in worker.output()
    web.send(signal.SIGTERM)
    assert web.wait(timeout=60) == 0
