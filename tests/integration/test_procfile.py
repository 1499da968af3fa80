"""The Procfile as a Procfile runner starts it: honcho, with the worker kind scaled to 3.

Every process kind (web, worker, heavy, scheduler) runs, stops with 0 on SIGTERM and
writes only JSON lines.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable

import pytest

from tests.integration.clients import Client, make_key
from tests.integration.conftest import Deployment, Ledger, worker_pid
from tests.procs import HONCHO_LINE, Processes, free_port
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def test_honcho_runs_web_three_workers_and_heavy_from_the_procfile(
    deployment: Deployment, procs: Processes, ledger_for: Callable[[str], Ledger]
) -> None:
    # Given `honcho start -c worker=3` on the repository's Procfile, `ferry` on the PATH
    port = free_port()
    client = Client(f"http://127.0.0.1:{port}", make_key(deployment.database_url, "t-honcho"))
    runner = procs.honcho(deployment.env(), port=port, workers=3)
    workers = runner.started_workers()
    assert sorted(workers) == ["heavy.1", "worker.1", "worker.2", "worker.3"]

    # When invocations for the default and the heavy queue come in over HTTP
    echoes = [client.invoke("echo", {"message": f"m{n}"}) for n in range(30)]
    report = client.invoke("usage_report", {})
    assert [r.status_code for r in [*echoes, report]] == [202] * 31

    # Then each runs once, heavy work on the heavy process
    ledger = ledger_for(deployment.database_url)
    ids = [r.json()["id"] for r in [*echoes, report]]
    wait_for(
        lambda: ledger.count_status(ids, "succeeded") == 31,
        timeout=60,
        what="all invocations to succeed",
    )
    assert all(ledger.executions()[i] == 1 for i in ids[:-1])
    heavy_attempts = ledger.attempts(ids[-1])
    assert len(heavy_attempts) == 1
    assert heavy_attempts[0].worker_id is not None
    assert worker_pid(heavy_attempts[0].worker_id) == workers["heavy.1"]
    echo_pids = {worker_pid(a.worker_id or "") for i in ids[:-1] for a in ledger.attempts(i)}
    assert echo_pids <= {workers["worker.1"], workers["worker.2"], workers["worker.3"]}

    # And on SIGTERM every process stops gracefully, none needing a SIGKILL
    runner.send(signal.SIGTERM)
    runner.wait(timeout=60)
    output = runner.output()
    for name in ("web.1", "worker.1", "worker.2", "worker.3", "heavy.1", "scheduler.1"):
        assert f"{name} stopped (rc=0)" in output, output[-3000:]
    assert "SIGKILL" not in output

    # And every line each process wrote, from its start to its stop, is one JSON object
    by_process: dict[str, int] = {}
    for line in output.splitlines():
        match = HONCHO_LINE.match(line)
        if match is None or match["process"] == "system" or not match["text"].strip():
            continue  # honcho's own lines
        try:
            assert "event" in json.loads(match["text"]), line
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
        kind = match["process"].split(".")[0]
        by_process[kind] = by_process.get(kind, 0) + 1
    assert set(by_process) == {"web", "worker", "heavy", "scheduler"}, by_process
