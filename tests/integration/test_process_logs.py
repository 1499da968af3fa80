"""Each production process stops with exit code 0 on SIGTERM and logs only JSON lines.

The processes run as the Procfile starts them, with `FERRY_LOG_FORMAT=json`; every line
they write (Ferry's own events, and the lines of gunicorn, Dramatiq, periodiq, Alembic
and SQLAlchemy) must be one JSON object, so a log pipeline never sees plain text.
"""

from __future__ import annotations

import json
import shlex
import signal
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.clients import Client, make_key
from tests.integration.conftest import Deployment
from tests.procs import PYTHON, REPO, Proc, Processes, free_port
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def procfile_command(kind: str) -> list[str]:
    """The Procfile's argv for a process kind, its program resolved beside this Python."""
    for line in (REPO / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == kind:
            argv = shlex.split(command)
            argv = argv[1:] if argv[0] == "exec" else argv
            beside = Path(PYTHON).parent / argv[0]
            return [str(beside) if beside.exists() else argv[0], *argv[1:]]
    raise AssertionError(f"no {kind!r} process in the Procfile")


def json_lines(proc: Proc) -> list[dict[str, Any]]:
    """Every non-empty line the process wrote, parsed; fails on the first that is not JSON."""
    parsed = []
    for number, line in enumerate(proc.output().splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            raise AssertionError(f"{proc.name} line {number} is not JSON: {line!r}") from None
        assert isinstance(event, dict) and "event" in event, (proc.name, line)
        parsed.append(event)
    return parsed


def loggers(events: list[dict[str, Any]]) -> set[str]:
    """The top-level names of the standard-library loggers among the lines."""
    return {str(e["logger"]).split(".")[0] for e in events if "logger" in e}


def test_the_scheduler_logs_json_and_exits_0_on_sigterm(
    deployment: Deployment, procs: Processes
) -> None:
    # Given the Procfile's scheduler process, with JSON logs
    env = deployment.env(log_format="json")
    scheduler = procs.start("scheduler", procfile_command("scheduler"), env)
    # It fires once at start
    scheduler.wait_for_output('"scheduler_tick"', timeout=60)

    # When it gets SIGTERM, then it exits 0
    scheduler.send(signal.SIGTERM)
    assert scheduler.wait(timeout=15) == 0, scheduler.output()[-3000:]

    # And every line it wrote is JSON: periodiq's included
    events = json_lines(scheduler)
    assert "periodiq" in loggers(events)
    names = [e["event"] for e in events]
    assert "scheduler_started" in names and "scheduler_stopped" in names


def test_gunicorn_and_the_worker_log_json_and_exit_0_on_sigterm(
    deployment: Deployment, procs: Processes
) -> None:
    # Given gunicorn and a worker with JSON logs
    env = deployment.env(log_format="json")
    port = free_port()
    web = procs.gunicorn(env, port=port, workers=2, threads=2)
    worker = procs.worker(env, threads=2)
    client = Client(f"http://127.0.0.1:{port}", make_key(deployment.database_url, "t-logs"))

    # When an invocation runs, one request fails, and both get SIGTERM
    accepted = client.invoke("echo", {"message": "log me"})
    assert accepted.status_code == 202, accepted.text
    invocation = f"{client.base_url}/v1/invocations/{accepted.json()['id']}"
    wait_for(
        lambda: (
            requests.get(invocation, headers=client.headers, timeout=5).json()["status"]
            == "succeeded"
        ),
        what="the invocation to succeed",
    )
    assert requests.get(f"{client.base_url}/v1/nowhere", timeout=5).status_code == 404
    web.send(signal.SIGTERM)
    worker.send(signal.SIGTERM)

    # Then both exit 0
    assert web.wait(timeout=60) == 0, web.output()[-3000:]
    assert worker.wait(timeout=60) == 0, worker.output()[-3000:]

    # And every line each wrote is JSON: gunicorn's and Dramatiq's included
    assert "gunicorn" in loggers(json_lines(web))
    worker_events = json_lines(worker)
    assert "dramatiq" in loggers(worker_events)
    assert {"worker_started", "worker_stopped"} <= {e["event"] for e in worker_events}
