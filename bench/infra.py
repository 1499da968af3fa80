"""What one benchmark run owns: a PostgreSQL database, a Redis namespace, child processes.

Everything is created fresh for the run and removed at the end, on the shared servers,
without touching anything else on them (no FLUSHALL, no server restarts).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import redis
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], T], *, timeout: float, interval: float = 0.05, what: str) -> T:
    """Poll `check` until it is truthy; raise after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def busy_cpus(seconds: float = 1.0) -> float:
    """How many CPUs other programs kept busy over `seconds` (from /proc/stat; 0 elsewhere)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields) - idle, sum(fields)

    try:
        busy0, total0 = sample()
        time.sleep(seconds)
        busy1, total1 = sample()
    except OSError:
        return 0.0
    return (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1)


class BenchError(RuntimeError):
    """The benchmark could not run a step (a server missing, a process that died)."""


class Proc:
    """A child process in its own session, its output in `<log_dir>/<name>.log`."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with self.log_path.open("ab") as log:
            # Own session: `stop` can end the process and everything it forked.
            self.popen = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self, tail: int | None = 3000) -> str:
        """The end of its log (all of it with `tail=None`)."""
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace")
        return text if tail is None else text[-tail:]

    def wait_for_output(self, text: str, timeout: float = 60.0) -> None:
        def seen() -> bool:
            found = text in self.output(tail=None)
            if not found and not self.alive():
                raise BenchError(f"{self.name} exited before {text!r}:\n{self.output()}")
            return found

        wait_for(seen, timeout=timeout, what=f"{text!r} from {self.name}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM its process group, then SIGKILL whatever is left."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)


class Processes:
    """Children of one phase; all stopped when the phase ends."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Proc] = []

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Proc:
        proc = Proc(name, argv, env, self.log_dir)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()
        self.started.clear()


def start_gunicorn(
    procs: Processes, name: str, app: str, env: Mapping[str, str], port: int
) -> Proc:
    """`app` under gunicorn with Ferry's production config on `port`, once /healthz answers."""
    argv = [PYTHON, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", app]
    proc = procs.start(name, argv, {**env, "PORT": str(port)})

    def healthy() -> bool:
        if not proc.alive():
            raise BenchError(f"{name} exited:\n{proc.output()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    wait_for(healthy, timeout=60, what=f"{name} /healthz")
    return proc


@contextlib.contextmanager
def processes(log_dir: Path) -> Iterator[Processes]:
    procs = Processes(log_dir)
    try:
        yield procs
    finally:
        procs.stop_all()


def child_env(**extra: Any) -> dict[str, str]:
    """This environment without `FERRY_*`, plus the repository on the path and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


# --- the servers' side -----------------------------------------------------------------------


def pg_url(admin_url: str, database: str) -> str:
    return admin_url.rsplit("/", 1)[0] + "/" + database


@contextlib.contextmanager
def pg_database(admin_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database of this run; its URL. Dropped at the end."""
    name = f"ferry_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as ex:
        raise BenchError(f"PostgreSQL is not reachable at {admin_url}: {ex}") from ex
    try:
        yield pg_url(admin_url, name)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def redis_namespace(url: str, prefix: str = "ferry-bench") -> Iterator[str]:
    """A Redis key prefix of this run; every key under it is deleted at the end."""
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError as ex:
        raise BenchError(f"Redis is not reachable at {url}: {ex}") from ex
    namespace = f"{prefix}-{uuid.uuid4().hex[:10]}"
    try:
        yield namespace
    finally:
        delete_keys(client, f"{namespace}*")
        client.close()


def delete_keys(client: redis.Redis, pattern: str) -> None:
    batch: list[bytes] = []
    for key in client.scan_iter(pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            client.delete(*batch)
            batch.clear()
    if batch:
        client.delete(*batch)


# --- where the CPU went ----------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command name, CPU seconds used so far), from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                raw = stat.read()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), name, (int(fields[11]) + int(fields[12])) / _TICKS)
    return table


def _machine_busy_seconds() -> float:
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / _TICKS


def _finished_children_seconds() -> float:
    """CPU seconds of this process's children that exited and were waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU seconds used during a block, by group: given process trees, servers, the rest.

    Groups: each named tree of pids (a process and its descendants), `postgres` and
    `redis` (every server process, whoever it serves), `load generator` (wrk, or this
    process), and `other` (everything else on the machine: other users' work).
    Children of this process that exit during the block (wrk, client processes) count
    as load generator; other processes that exit during it fall under `other`.
    """

    def __init__(self, trees: dict[str, list[int]]) -> None:
        self.trees = trees
        self.used: dict[str, float] = {}

    def _snapshot(self) -> tuple[dict[str, dict[int, float]], float]:
        table = _process_table()
        children: dict[int, list[int]] = {}
        for pid, (parent, _name, _cpu) in table.items():
            children.setdefault(parent, []).append(pid)
        groups: dict[str, dict[int, float]] = {}
        claimed: set[int] = set()
        for label, roots in self.trees.items():
            stack, members = list(roots), {}
            while stack:
                pid = stack.pop()
                if pid in table and pid not in claimed:
                    members[pid] = table[pid][2]
                    claimed.add(pid)
                    stack.extend(children.get(pid, []))
            groups[label] = members
        by_name = {"postgres": "postgres", "redis-server": "redis", "wrk": "load generator"}
        for pid, (_parent, name, cpu) in table.items():
            label = by_name.get(name)
            if pid == os.getpid() or (_parent == os.getpid() and name.startswith("python")):
                label = "load generator"
            if label and pid not in claimed:
                groups.setdefault(label, {})[pid] = cpu
        return groups, _machine_busy_seconds()

    def __enter__(self) -> CpuMeter:
        self._before, self._busy_before = self._snapshot()
        self._children_before = _finished_children_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        after, busy_after = self._snapshot()
        used = {}
        for label, members in after.items():
            before = self._before.get(label, {})
            used[label] = sum(cpu - before.get(pid, 0.0) for pid, cpu in members.items())
        # Load generators that exited meanwhile (wrk, client processes) are in no snapshot.
        used["load generator"] = used.get("load generator", 0.0) + (
            _finished_children_seconds() - self._children_before
        )
        total = busy_after - self._busy_before
        used["other"] = max(0.0, total - sum(used.values()))
        used["machine"] = total
        self.used = {k: round(v, 2) for k, v in used.items()}

    def per_item_ms(self, items: int) -> dict[str, float]:
        """Milliseconds of CPU per item (request, invocation), by group."""
        return {k: round(v * 1000 / max(1, items), 3) for k, v in self.used.items()}
