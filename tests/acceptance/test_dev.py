"""`ferry dev` as a user runs it: a real process in an empty directory, driven over HTTP.

Nothing is configured: the process runs on the embedded defaults (SQLite `./ferry.db`,
the in-process broker) and the project's own `functions/`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.waiting import wait_for

pytestmark = pytest.mark.acceptance

BIN = Path(sys.executable).parent
FERRY = str(BIN / "ferry") if (BIN / "ferry").exists() else shutil.which("ferry") or "ferry"


def user_env() -> dict[str, str]:
    """The environment of a user who configured nothing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class DevServer:
    """One `ferry dev` process in `workdir`; its output in files beside it."""

    def __init__(
        self, workdir: Path, logs: Path, name: str, env: dict[str, str] | None = None
    ) -> None:
        self.workdir = workdir
        self.out = logs / f"{name}.out"
        self.err = logs / f"{name}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.popen = subprocess.Popen(
                [FERRY, "dev", "--port", "0"],
                cwd=workdir,
                env={**user_env(), **(env or {})},
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        wait_for(self._started, timeout=90, interval=0.1, what="ferry dev to print its banner")
        banner = self.out.read_text()
        url = re.search(r"running at (http://\S+)", banner)
        assert url is not None, banner
        self.url = url.group(1)
        self.curl_line = next(
            line for line in banner.splitlines() if line.startswith("curl ") and "?wait=" in line
        )
        key = re.search(r"Bearer (fy_\S+?)'", self.curl_line)
        assert key is not None, self.curl_line
        self.key = key.group(1)

    def _started(self) -> bool:
        if self.popen.poll() is not None:
            raise AssertionError(f"ferry dev exited with {self.popen.returncode}:\n{self.logs()}")
        return "Press Ctrl-C to stop." in self.out.read_text()

    def logs(self) -> str:
        return f"--- stdout\n{self.out.read_text()}\n--- stderr\n{self.err.read_text()[-6000:]}"

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.key}"}
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def invocation(self, invocation_id: str) -> dict:
        answer = self.api("GET", f"/v1/invocations/{invocation_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()

    def stop(self, signum: int = signal.SIGTERM) -> int:
        os.kill(self.popen.pid, signum)
        try:
            return self.popen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"ferry dev did not stop:\n{self.logs()}") from None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


@pytest.fixture
def servers() -> Iterator[list[DevServer]]:
    """Start `ferry dev` processes with `start()`; all are killed at the end."""
    started: list[DevServer] = []
    yield started
    for server in started:
        server.kill()


def start(servers: list[DevServer], workdir: Path, env: dict[str, str] | None = None) -> DevServer:
    server = DevServer(workdir, workdir.parent, f"dev-{len(servers) + 1}", env)
    servers.append(server)
    return server


def run_curl_line(line: str, workdir: Path) -> tuple[int, dict]:
    """Run a printed curl line exactly as pasted into a shell; its HTTP status and body."""
    assert shutil.which("curl"), "curl is needed: the README's tour uses it"
    headers = workdir.parent / "curl-headers.txt"
    done = subprocess.run(
        ["bash", "-c", f"{line} -D {shlex.quote(str(headers))}"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    status = int(headers.read_text().split()[1])
    return status, json.loads(done.stdout)


def test_the_printed_curl_line_works_and_its_result_can_be_read(servers, workdir):
    # Given `ferry dev` started in an empty directory
    dev = start(servers, workdir)
    # And it fires the schedules of `schedules/` from a thread
    assert re.search(r"^Schedules: [1-9]\d* ", dev.out.read_text(), re.MULTILINE)
    wait_for(
        lambda: "scheduler_started" in dev.err.read_text(),
        timeout=30,
        what="the scheduler thread to start",
    )
    # When the printed curl line is run as pasted
    status, answer = run_curl_line(dev.curl_line, workdir)
    # Then the invocation is accepted, and reading it back shows it succeeded with its result
    assert 200 <= status < 300, answer
    assert answer["function"] == "echo_time" and answer["tenant_id"] == "demo"
    shown = wait_for(
        lambda: (i := dev.invocation(answer["id"]))["status"] == "succeeded" and i,
        timeout=60,
        what="the curl line's invocation to succeed",
    )
    assert shown["result"]["message"] == "hello from ferry dev"
    assert shown["result"]["invocation_id"] == answer["id"]
    assert [a["outcome"] for a in shown["attempt_log"]] == ["succeeded"]

    # And the key is kept only in a file of mode 0600, never in the store in plaintext
    key_file = workdir / ".ferry" / "dev-key"
    assert key_file.read_text().strip() == dev.key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    secret = dev.key.split("_", 2)[2].encode()  # the whole secret; it may hold "_"
    for stored in workdir.glob("ferry.db*"):
        assert secret not in stored.read_bytes(), stored

    # When it gets SIGTERM, it stops gracefully with exit code 0
    assert dev.stop(signal.SIGTERM) == 0, dev.logs()

    # And a second start on the same directory prints a curl line that works, with the same key
    again = start(servers, workdir)
    assert again.key == dev.key
    assert "from .ferry/dev-key" in again.out.read_text()
    status, answer = run_curl_line(again.curl_line, workdir)
    assert 200 <= status < 300, answer
    assert again.stop(signal.SIGINT) == 0, again.logs()


def test_invocations_queued_in_the_store_run_after_a_restart(servers, workdir):
    # Given `ferry dev` holding accepted work: some delayed, some just queued
    dev = start(servers, workdir)
    delayed = [
        dev.api(
            "POST", "/v1/functions/echo_time/invocations?delay=3", json={"message": f"delayed {n}"}
        )
        for n in range(3)
    ]
    burst = [
        dev.api("POST", "/v1/functions/echo_time/invocations", json={"message": f"burst {n}"})
        for n in range(10)
    ]
    assert all(r.status_code == 202 for r in delayed + burst), [r.text for r in delayed + burst]
    ids = [r.json()["id"] for r in delayed + burst]
    # When it is killed outright
    dev.kill()
    # And more is queued in its store while it is down, by the CLI (whose in-process
    # broker carries nothing once that command exits)
    for n in range(2):
        queued = subprocess.run(
            [
                FERRY,
                "invoke",
                "echo_time",
                "--tenant",
                "demo",
                "--data",
                json.dumps({"message": f"while stopped {n}"}),
            ],
            cwd=workdir,
            env=user_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert queued.returncode == 0, queued.stderr
        shown = json.loads(queued.stdout)
        assert shown["status"] == "queued" and shown["trigger"] == "cli"
        ids.append(shown["id"])
    # Then, started again on the same directory, it runs every one of them
    again = start(servers, workdir)

    def all_succeeded() -> bool:
        return all(again.invocation(i)["status"] == "succeeded" for i in ids)

    wait_for(all_succeeded, timeout=120, interval=0.25, what="every invocation to succeed")
    results = [again.invocation(i)["result"]["message"] for i in ids]
    assert sorted(results) == sorted(
        [f"delayed {n}" for n in range(3)]
        + [f"burst {n}" for n in range(10)]
        + [f"while stopped {n}" for n in range(2)]
    )
    assert again.stop() == 0, again.logs()


def test_ferry_worker_runs_until_sigterm_and_exits_0(workdir):
    # Given a migrated store
    migrate = subprocess.run(
        [FERRY, "migrate"], cwd=workdir, env=user_env(), capture_output=True, text=True, timeout=120
    )
    assert migrate.returncode == 0, migrate.stderr
    # When `ferry worker` starts on some queues
    log = workdir / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [FERRY, "worker", "--queues", "default,heavy", "--threads", "2"],
            cwd=workdir,
            env=user_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: "worker_started" in log.read_text() or worker.poll() is not None,
            timeout=90,
            what="the worker to start",
        )
        assert worker.poll() is None, log.read_text()
        started = next(line for line in log.read_text().splitlines() if "worker_started" in line)
        assert "default" in started and "heavy" in started and "scheduled" not in started
        # Then SIGTERM stops it with exit code 0
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, log.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)


def test_a_burst_of_200_concurrent_connections_is_answered_in_full(servers, workdir):
    # Given `ferry dev` on loopback
    dev = start(servers, workdir)
    burst = 200
    opened = threading.Barrier(burst, timeout=60)

    def one(n: int) -> int | str:
        # Each client opens its own connection at the same moment as the others.
        opened.wait()
        try:
            if n % 4 == 0:
                return requests.get(f"{dev.url}/healthz", timeout=60).status_code
            answer = requests.post(
                f"{dev.url}/v1/functions/echo_time/invocations",
                json={"message": f"burst {n}"},
                headers={"Authorization": f"Bearer {dev.key}"},
                timeout=60,
            )
            return answer.status_code
        except requests.RequestException as ex:
            return repr(ex)

    # When 200 clients connect at once: a quarter ask /healthz, the rest invoke
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=burst) as pool:
        answers = list(pool.map(one, range(burst)))
    print(f"\nferry dev burst: {burst} connections answered in {time.monotonic() - started:.2f} s")

    # Then every connection is answered, and every answer is a success
    failures = [a for a in answers if not (isinstance(a, int) and 200 <= a < 300)]
    assert failures == [], f"{len(failures)} of {burst} failed: {sorted(set(map(str, failures)))}"
    assert dev.stop() == 0, dev.logs()
