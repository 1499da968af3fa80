"""Start and stop real processes for tests: Ferry workers, gunicorn, private servers.

Every child writes its output to a log file (never a pipe, which would block it when
full); a failing test prints the logs of the processes it started. Private Redis and
PostgreSQL servers exist for tests that kill a server: the shared ones on 6379 and 5432
are never stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests

from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def _newest_pg_bin() -> Path:
    """The bin directory of the newest PostgreSQL installed from Debian packages."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    return found[-1] if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _newest_pg_bin()
TEST_FUNCTIONS = "functions,tests.fixtures.functions"
#: A secret production mode accepts (32+ bytes, no placeholder); for tests only.
PRODUCTION_SECRET_KEY = "tests-only-0b5e1f3c9a7d4e2b8c6f1a3d5e7b9c2f4a6d8e0b"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(**ferry: Any) -> dict[str, str]:
    """This process's environment for a child, plus `FERRY_<NAME>` for each keyword.

    The child has a secret key production mode accepts, unless a keyword names another.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONUNBUFFERED"] = "1"
    env["FERRY_FUNCTIONS_MODULE"] = TEST_FUNCTIONS
    env["FERRY_SECRET_KEY"] = PRODUCTION_SECRET_KEY
    for name, value in ferry.items():
        env[f"FERRY_{name.upper()}"] = str(value)
    return env


class Proc:
    """A child process in its own session, its output in `<log_dir>/<name>.log`."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        log = self.log_path.open("ab")
        # Own session: a signal to it does not reach the test runner, and `kill_group`
        # can end everything it started.
        self.popen = subprocess.Popen(
            self.argv,
            env=dict(env),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def send(self, signum: int) -> None:
        if self.alive():
            os.kill(self.pid, signum)

    def wait(self, timeout: float) -> int:
        """Its exit code; fail the test if it is still running after `timeout` seconds."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running after {timeout}s; its log:\n{self.output()[-4000:]}"
            ) from None

    def kill_group(self) -> None:
        """SIGKILL it and everything in its session (cleanup)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)

    def stop(self, timeout: float = 40.0) -> int:
        """SIGTERM, wait for the exit; SIGKILL whatever is left."""
        self.send(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        finally:
            self.kill_group()

    def wait_for_output(self, text: str, timeout: float = 30.0) -> None:
        def seen() -> bool:
            if not self.alive() and text not in self.output():
                raise AssertionError(
                    f"{self.name} exited ({self.popen.returncode}) before {text!r}:\n"
                    f"{self.output()[-4000:]}"
                )
            return text in self.output()

        wait_for(seen, timeout=timeout, interval=0.05, what=f"{text!r} from {self.name}")


class Processes:
    """The processes of one test: started here, all ended at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Proc] = []

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Proc:
        proc = Proc(name, argv, env, self.log_dir)
        self.started.append(proc)
        return proc

    def worker(
        self,
        env: Mapping[str, str],
        *,
        name: str = "worker",
        queues: str = "default,scheduled",
        threads: int = 4,
        ready: bool = True,
    ) -> Proc:
        """A worker process; with `ready`, wait until it consumes."""
        argv = [PYTHON, "-m", "runtime.worker", "--queues", queues, "--threads", str(threads)]
        proc = self.start(name, argv, env)
        if ready:
            proc.wait_for_output('"worker_started"')
        return proc

    def gunicorn(
        self,
        env: Mapping[str, str],
        *,
        port: int,
        workers: int = 2,
        threads: int = 8,
        name: str = "web",
    ) -> Proc:
        """Gunicorn serving the gateway with the deploy config; waits for `/healthz`."""
        env = {
            **env,
            "PORT": str(port),
            "WEB_CONCURRENCY": str(workers),
            "GUNICORN_THREADS": str(threads),
        }
        argv = [PYTHON, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "gateway.wsgi:app"]
        proc = self.start(name, argv, env)
        url = f"http://127.0.0.1:{port}/healthz"

        def healthy() -> bool:
            if not proc.alive():
                raise AssertionError(f"gunicorn exited:\n{proc.output()[-4000:]}")
            try:
                return requests.get(url, timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(healthy, timeout=60, interval=0.1, what="gunicorn /healthz")
        return proc

    def honcho(self, env: Mapping[str, str], *, port: int, workers: int) -> Honcho:
        """The README's recipe: honcho on the repository's Procfile, `worker` scaled to
        `workers`; waits until the web process is ready and every worker (and the heavy
        one) has started. Teardown stops it with SIGTERM: honcho's children each run in
        a session of their own, so a SIGKILL of honcho's group would leave them running."""
        honcho = shutil.which("honcho", path=str(Path(PYTHON).parent))
        assert honcho is not None, "honcho is a runtime dependency of ferry-runtime"
        env = {**env, "PATH": f"{Path(PYTHON).parent}:{env.get('PATH', '')}"}
        argv = [honcho, "start", "-f", "Procfile", "-p", str(port)]
        argv += ["-c", f"worker={workers}", "--no-colour"]
        runner = Honcho("honcho", argv, env, self.log_dir)
        self.started.append(runner)
        ready = f"http://127.0.0.1:{port}/readyz"

        def web_answers() -> bool:
            try:
                return requests.get(ready, timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(web_answers, timeout=60, interval=0.2, what="the web process to be ready")

        def all_started() -> dict[str, int]:
            started = runner.started_workers()
            return started if len(started) == workers + 1 else {}

        wait_for(all_started, timeout=60, what=f"{workers} workers and 1 heavy worker to start")
        return runner

    def report(self) -> str:
        parts = []
        for proc in self.started:
            parts.append(f"----- {proc.name} (pid {proc.pid}, rc {proc.popen.poll()}) -----")
            parts.append(proc.output()[-6000:])
        return "\n".join(parts)

    def close(self) -> None:
        for proc in self.started:
            if isinstance(proc, Honcho) and proc.alive():
                with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                    proc.stop(timeout=60)
            proc.kill_group()


#: `HH:MM:SS name.N | text`, honcho's prefix on every line (colours off).
HONCHO_LINE = re.compile(r"^\S+ (?P<process>[\w.-]+)\s*\| (?P<text>.*)$")


class Honcho(Proc):
    """honcho running the Procfile; its output's lines are prefixed with the process name."""

    def started_workers(self) -> dict[str, int]:
        """The honcho process name and pid of each worker that logged `worker_started`."""
        found = {}
        for line in self.output().splitlines():
            match = HONCHO_LINE.match(line)
            if match and '"worker_started"' in match["text"]:
                found[match["process"]] = json.loads(match["text"])["pid"]
        return found


# --- private servers a test may kill ------------------------------------------------------


class PrivateRedis:
    """A redis-server on a free port with no persistence: a restart comes back empty."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_dir = log_dir
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        self.proc = Proc(f"redis-{self.port}", argv, os.environ, self.log_dir)
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=1)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_for(answers, timeout=20, interval=0.05, what="private redis")
        client.close()

    def kill(self) -> None:
        """SIGKILL: the data in memory is gone."""
        if self.proc is not None:
            self.proc.kill_group()
            self.proc = None

    def close(self) -> None:
        self.kill()


class PrivatePostgres:
    """A PostgreSQL cluster (newest installed) in a temp dir on a free port, run as the `postgres` user.

    initdb and pg_ctl refuse to run as root, so as root they run through `runuser`, in
    a directory owned by `postgres`. fsync is off: the data is thrown away anyway.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="ferry-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as_postgres:
            shutil.chown(self.root, "postgres")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str) -> None:
        subprocess.run(
            [*self._as_postgres, *argv],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=120,
        )

    def init(self) -> None:
        self._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop_immediate(self) -> None:
        """Stop at once, dropping every connection (as a crash would)."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def close(self) -> None:
        if self.running():
            with contextlib.suppress(subprocess.SubprocessError):
                self.stop_immediate()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    """Measure a block's wall time into the yielded list (for reports, never assertions)."""
    box: list[float] = []
    started = time.monotonic()
    try:
        yield box
    finally:
        box.append(time.monotonic() - started)
