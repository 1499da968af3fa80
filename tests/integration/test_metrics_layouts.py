"""Metrics are whole in each production layout: every process counted once, on every scrape.

- The Procfile under honcho (README's recipe, also the systemd layout: one host, one
  `FERRY_METRICS_DIR`): the web process's `/metrics` is the sum over gunicorn's
  processes and the workers, whichever gunicorn process answers.
- A worker host without a web process: one `ferry worker --metrics-port` serves the sum
  of the host's directory.
- Worker containers or pods (compose, Kubernetes): each worker serves its own counters.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.clients import Client, make_key
from tests.integration.conftest import Deployment, Ledger, accept_echoes, worker_pid
from tests.procs import PYTHON, REPO, Proc, Processes, free_port
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

#: Consecutive scrapes that must all show the whole count.
SCRAPES = 8
#: The route of `POST /v1/functions/{name}/invocations`, as the gateway labels it.
INVOKE_ROUTE = "/v1/functions/{name}/invocations"
#: A run slow enough that both workers of a test take part.
ECHO_SLEEP_S = 0.05


def scrape(url: str) -> dict[str, float]:
    """The figures these tests follow, from one scrape of `url`."""
    text = requests.get(url, timeout=10).text
    figures = {"succeeded": 0.0, "accepted": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "ferry_invocations_total" and sample.labels["status"] == "succeeded":
                figures["succeeded"] += sample.value
            elif (
                sample.name == "ferry_http_requests_total"
                and sample.labels["route"] == INVOKE_ROUTE
                and sample.labels["status"] == "202"
            ):
                figures["accepted"] += sample.value
    return figures


def scrapes(url: str, reaching: float) -> list[dict[str, float]]:
    """`SCRAPES` consecutive scrapes, once the count has reached `reaching`."""
    # Counts are recorded just after the outcome is stored: wait for the first whole one.
    wait_for(
        lambda: scrape(url)["succeeded"] >= reaching,
        timeout=30,
        interval=0.2,
        what=f"the scrape of {url} to count {reaching} invocations",
    )
    return [scrape(url) for _ in range(SCRAPES)]


def count_in_a_dead_process(directory: Path, succeeded: int) -> None:
    """Leave counts in `directory` as a previous run's process would, then exit."""
    directory.mkdir(parents=True, exist_ok=True)
    record = textwrap.dedent(
        """
        import sys
        from runtime.metrics import Metrics
        metrics = Metrics()
        for _ in range(int(sys.argv[1])):
            metrics.count_outcome(
                function="echo", tenant_id="t", outcome="succeeded", status="succeeded"
            )
        """
    )
    subprocess.run(
        [sys.executable, "-c", record, str(succeeded)],
        cwd=REPO,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(REPO),
            "PROMETHEUS_MULTIPROC_DIR": str(directory),
        },
        check=True,
        timeout=60,
    )
    assert any(directory.glob("counter_*.db"))


def ran_on(ledger: Ledger, ids: list[str]) -> set[int]:
    """The pids of the worker processes that ran the attempts of `ids`."""
    return {worker_pid(a.worker_id or "") for i in ids for a in ledger.attempts(i)}


def ferry_worker(procs: Processes, env: dict[str, str], name: str, *flags: str) -> Proc:
    """`ferry worker` as the Procfile runs it, with `flags`; once it consumes."""
    ferry = str(Path(PYTHON).parent / "ferry")
    proc = procs.start(name, [ferry, "worker", "--threads", "4", *flags], env)
    proc.wait_for_output('"worker_started"')
    return proc


def test_the_honcho_recipe_counts_every_process_on_every_scrape(
    deployment: Deployment,
    procs: Processes,
    ledger_for: Callable[[str], Ledger],
    tmp_path: Path,
) -> None:
    # Given the README's recipe: honcho on the Procfile with FERRY_METRICS_DIR, two web
    # processes (gunicorn's WEB_CONCURRENCY=2) and two workers, on a directory where a
    # previous run left 7 invocations
    metrics_dir = tmp_path / "metrics"
    count_in_a_dead_process(metrics_dir, succeeded=7)
    port = free_port()
    client = Client(f"http://127.0.0.1:{port}", make_key(deployment.database_url, "t-metrics"))
    env = deployment.env(metrics_dir=metrics_dir)
    runner = procs.honcho({**env, "WEB_CONCURRENCY": "2"}, port=port, workers=2)
    workers = runner.started_workers()

    # When 100 invocations come in over HTTP, from 4 clients (connections spread over
    # both gunicorn processes)
    with ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(
                lambda n: client.invoke("echo", {"message": f"m{n}", "sleep_s": ECHO_SLEEP_S}),
                range(100),
            )
        )
    assert [a.status_code for a in answers] == [202] * 100
    ids = [a.json()["id"] for a in answers]
    ledger = ledger_for(deployment.database_url)
    wait_for(lambda: ledger.count_status(ids, "succeeded") == 100, timeout=60, what="100 runs")
    # and both workers ran some of them
    assert ran_on(ledger, ids) == {workers["worker.1"], workers["worker.2"]}

    # Then every scrape of /metrics counts exactly 100 succeeded and 100 accepted,
    # whichever gunicorn process answers, and nothing of the previous run
    figures = scrapes(f"{client.base_url}/metrics", reaching=100)
    print("honcho scrapes:", figures)
    assert figures == [{"succeeded": 100.0, "accepted": 100.0}] * SCRAPES


def test_a_worker_host_without_web_serves_the_sum_of_its_workers(
    deployment: Deployment,
    procs: Processes,
    ledger_for: Callable[[str], Ledger],
    tmp_path: Path,
) -> None:
    # Given two workers sharing the host's FERRY_METRICS_DIR, one serving --metrics-port
    env = deployment.env(metrics_dir=tmp_path / "metrics")
    port = free_port()
    serving = ferry_worker(procs, env, "worker-1", "--metrics-port", str(port))
    other = ferry_worker(procs, env, "worker-2")

    # When 40 invocations run
    ids = accept_echoes(deployment, "t-host", 40, sleep_s=ECHO_SLEEP_S)
    ledger = ledger_for(deployment.database_url)
    wait_for(lambda: ledger.count_status(ids, "succeeded") == 40, what="40 runs")
    assert ran_on(ledger, ids) == {serving.pid, other.pid}

    # Then every scrape of that port counts all 40, those of the other worker too
    figures = scrapes(f"http://127.0.0.1:{port}/metrics", reaching=40)
    print("worker host scrapes:", figures)
    assert [f["succeeded"] for f in figures] == [40.0] * SCRAPES


def test_worker_containers_each_serve_their_own_counts(
    deployment: Deployment,
    procs: Processes,
    ledger_for: Callable[[str], Ledger],
) -> None:
    # Given two workers as two containers or pods: no shared directory, each with its
    # own port (one from --metrics-port, one from FERRY_METRICS_PORT)
    ports = free_port(), free_port()
    first = ferry_worker(procs, deployment.env(), "worker-1", "--metrics-port", str(ports[0]))
    second = ferry_worker(procs, deployment.env(metrics_port=ports[1]), "worker-2")

    # When 40 invocations run on them
    ids = accept_echoes(deployment, "t-pods", 40, sleep_s=ECHO_SLEEP_S)
    ledger = ledger_for(deployment.database_url)
    wait_for(lambda: ledger.count_status(ids, "succeeded") == 40, what="40 runs")
    by_worker = {
        pid: sum(1 for i in ids for a in ledger.attempts(i) if worker_pid(a.worker_id or "") == pid)
        for pid in (first.pid, second.pid)
    }

    # Then each one's endpoint counts what it ran, and Prometheus's sum is all 40
    wait_for(
        lambda: sum(scrape(f"http://127.0.0.1:{p}/metrics")["succeeded"] for p in ports) == 40,
        timeout=30,
        what="both endpoints to count what their worker ran",
    )
    counted = [scrape(f"http://127.0.0.1:{p}/metrics")["succeeded"] for p in ports]
    print("per-container counts:", counted, "attempts by worker:", by_worker)
    assert counted == [float(by_worker[first.pid]), float(by_worker[second.pid])]
    assert all(counted)
