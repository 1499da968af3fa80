"""The metrics directory the Ferry processes of one host or pod share, from start to exit.

prometheus-client adds up the counters of several processes when each one writes its
`<type>_<pid>.db` files into one directory (`PROMETHEUS_MULTIPROC_DIR`) and a scrape reads
them all. Ferry takes that directory from `FERRY_METRICS_DIR` and runs its life cycle:

- **Join** (`use_metrics_dir`, before the process builds its first metric; gunicorn's
  master joins at start too): create the directory, export it as PROMETHEUS_MULTIPROC_DIR
  (children inherit it) and make prometheus-client store values there, whatever imported
  it first. Each member leaves a `ferry_<pid>.pid` marker.
- **Wipe at start**: the first process of a new group (no other member alive) removes
  the previous group's files, under a lock, so counts start from zero and files of dead
  processes do not pile up. A process joining a running group (a restarted worker, a new
  gunicorn worker) keeps them: the sums must not drop while the group runs.
- **Leave** (`leave_metrics_dir(pid)`, when a process exits): its live gauges and its
  marker go; its counts stay until the next group starts.

Members are told apart by pid, so one directory serves processes of one PID namespace:
a host, or one container. Containers with PID namespaces of their own each need their
own directory (prometheus-client would mix their files up: both have a pid 1).
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

import structlog

from runtime.errors import ConfigurationError
from runtime.settings import Settings

log = structlog.get_logger("ferry.metrics")

#: prometheus-client's own variable: where multi-process values live.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LOCK_NAME = ".lock"
#: A member's files: prometheus-client's `<type>_<pid>.db` and Ferry's `ferry_<pid>.pid`.
#: Nothing else is ever removed, whatever directory is configured.
MEMBER_FILE = re.compile(r"^[a-z_]+_(?P<pid>\d+)\.(?:db|pid)$")

#: The pid that joined in this process's memory (a forked child must join on its own).
_joined_by: int | None = None


def metrics_dir_of(settings: Settings) -> str | None:
    """The shared directory: `FERRY_METRICS_DIR`, else a PROMETHEUS_MULTIPROC_DIR set by hand."""
    inherited = os.environ.get(MULTIPROC_ENV) or None
    if settings.metrics_dir is None:
        return inherited
    if inherited is not None and inherited != settings.metrics_dir:
        raise ConfigurationError(
            f"FERRY_METRICS_DIR={settings.metrics_dir} but {MULTIPROC_ENV}={inherited}: "
            "set only FERRY_METRICS_DIR"
        )
    return settings.metrics_dir


def use_metrics_dir(settings: Settings) -> str | None:
    """Record this process's metrics in the shared directory, if one is set; its path.

    Call it before the process builds its first metric (`process_metrics` does). Once per
    process; a forked child joins again as itself.
    """
    global _joined_by
    path = metrics_dir_of(settings)
    if path is None or _joined_by == os.getpid():
        return path
    try:
        removed = join(Path(path), os.getpid())
    except OSError as ex:
        raise ConfigurationError(f"FERRY_METRICS_DIR={path}: {ex.strerror or ex}") from ex
    os.environ[MULTIPROC_ENV] = path
    _store_values_in_files()
    _joined_by = os.getpid()
    log.info("metrics_dir_joined", path=path, pid=os.getpid(), removed_files=removed)
    return path


def join(directory: Path, pid: int) -> int:
    """Make `pid` a member of `directory`; how many files of a previous group it removed."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / LOCK_NAME).open("a") as lock:
        # Held until the file closes: two processes starting at once see each other.
        fcntl.flock(lock, fcntl.LOCK_EX)
        files = member_files(directory)
        # Files under this very pid come from an earlier process that had it (a container's
        # restarted pid 1): this one has written nothing yet.
        others = set(files.values()) - {pid}
        removed = 0
        if not any(_alive(other) for other in others):
            for path in files:
                path.unlink(missing_ok=True)
                removed += 1
        (directory / f"ferry_{pid}.pid").write_text(f"{pid}\n")
    return removed


def member_files(directory: Path) -> dict[Path, int]:
    """Each member file in `directory` and the pid it belongs to."""
    found = {}
    for path in directory.iterdir():
        match = MEMBER_FILE.match(path.name)
        if match and path.is_file():
            found[path] = int(match["pid"])
    return found


def leave_metrics_dir(pid: int) -> None:
    """Process `pid` exited: its live gauges and its marker go, its counts stay."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
    Path(path, f"ferry_{pid}.pid").unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _store_values_in_files() -> None:
    # prometheus-client chooses where values live (`values.ValueClass`) from
    # PROMETHEUS_MULTIPROC_DIR when it is first imported, and every metric built later
    # uses that choice. Ferry's modules import it before settings are read, so choose
    # again now that the variable is set; this process has built no metric yet.
    from prometheus_client import values

    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
