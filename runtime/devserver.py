"""`ferry dev`: the gateway, the workers, the sweep and the scheduler in one process.

On the embedded defaults (SQLite `./ferry.db`, the in-process broker) this needs no
configuration and no other service. It migrates the store, makes sure a `demo` tenant
and an admin key exist, serves the gateway with a threaded WSGI server (a `?wait`
request holds its thread while others are served), runs the in-process worker with the
dispatcher's sweep, which also re-sends what a previous run left queued in the store, and
fires the schedules from a thread (periodiq needs a process of its own). It reloads the
functions and schedules when their files change (`runtime.reload`), keeping the store,
the key and the invocations running.

The admin key is created once and kept in `.ferry/dev-key` (mode 0600, git-ignored), so
every later start can print a curl line that works; the store keeps only its hash. A
key that no longer authenticates (the store was deleted, the key revoked) is replaced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import signal
import socket
import socketserver
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TextIO
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from sqlalchemy.engine import make_url

from runtime.app import Runtime
from runtime.errors import AlreadyExists, ConfigurationError, TenantSuspended
from runtime.logs import configure_logging
from runtime.reload import Reloader, Watcher
from runtime.scheduling.loop import start_scheduler_thread
from runtime.services.audit import Actor
from runtime.services.tenants import TenantService
from runtime.settings import Settings
from runtime.store import Store
from runtime.store.tenants import Principal

log = structlog.get_logger("ferry.dev")

AppFactory = Callable[[Runtime], Any]

DEV_TENANT = "demo"
STATE_DIR = Path(".ferry")
KEY_FILE = "dev-key"
OPERATOR_KEY_FILE = "dev-operator-key"
#: The demo tenant's key: everything a tenant may do, nothing across tenants.
DEV_SCOPES = frozenset({"invoke", "read", "manage"})
#: The example the printed curl line invokes: it needs no network and always succeeds.
EXAMPLE_FUNCTION = "echo_time"
EXAMPLE_INPUT = {"message": "hello from ferry dev"}
EXAMPLE_WAIT_S = 5


class CannotListen(ConfigurationError):
    """The dev server cannot listen on the address it was given."""


@dataclasses.dataclass(frozen=True)
class DevCredentials:
    tenant_id: str
    #: The demo tenant's key (invoke, read, manage): the one the curl lines use.
    key: str
    key_file: Path
    #: True when the tenant's key was made by this start.
    created: bool
    #: An operator key (admin, no tenant): the dashboard's every-tenant views and controls.
    operator_key: str = ""
    operator_key_file: Path | None = None


def ensure_credentials(store: Store, state_dir: Path = STATE_DIR) -> DevCredentials:
    """The saved dev keys if they still work; else the `demo` tenant and new keys.

    The curl lines use a key of the `demo` tenant; `admin` belongs to operator keys,
    so the dashboard's every-tenant views get an operator key of their own.
    """
    key_file = state_dir / KEY_FILE
    operator_file = state_dir / OPERATOR_KEY_FILE
    key = _saved_key(store, key_file, lambda p: p.tenant_id == DEV_TENANT and p.has("manage"))
    created = key is None
    # Made through the service, so the audit trail shows who ran `ferry dev`.
    tenants, actor = TenantService(store), Actor.cli()
    if key is None:
        try:
            tenants.create(DEV_TENANT, "Demo tenant of ferry dev", actor=actor)
        except AlreadyExists:
            pass
        _view, key = tenants.create_key(DEV_TENANT, DEV_SCOPES, name="ferry dev", actor=actor)
        _write_private(key_file, key + "\n")
    operator_key = _saved_key(store, operator_file, lambda p: p.is_admin)
    if operator_key is None:
        _view, operator_key = tenants.create_operator_key(
            "admin", name="ferry dev operator", actor=actor
        )
        _write_private(operator_file, operator_key + "\n")
    return DevCredentials(DEV_TENANT, key, key_file, created, operator_key, operator_file)


def _saved_key(store: Store, path: Path, usable: Callable[[Principal], bool]) -> str | None:
    """The key saved in `path` if it still authenticates and is `usable`; else None."""
    if not path.is_file():
        return None
    saved = path.read_text(encoding="utf-8").strip()
    try:
        principal = store.tenants.authenticate(saved)
    except TenantSuspended:
        return None
    return saved if principal is not None and usable(principal) else None


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, in a folder only its owner can enter."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # the file may have existed with a looser mode
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


# --- the HTTP server ---------------------------------------------------------------------------


#: Connections the kernel holds until the server accepts them. socketserver's default of 5
#: reset or dropped connections of a burst; the kernel caps this at `net.core.somaxconn`.
LISTEN_BACKLOG = 1024


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """One thread per connection: a `?wait` request must not hold up the others."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG


class _ThreadingWSGIServer6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _RequestHandler(WSGIRequestHandler):
    """The gateway logs every request itself; wsgiref's own lines would repeat them."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log_message(self, format: str, *args: Any) -> None:
        log.warning("http_server_problem", client=self.client_address[0], problem=format % args)


def _make_server(host: str, port: int, app: Any) -> WSGIServer:
    server_class = _ThreadingWSGIServer6 if ":" in host else _ThreadingWSGIServer
    try:
        return make_server(
            host, port, app, server_class=server_class, handler_class=_RequestHandler
        )
    except OSError as ex:
        raise CannotListen(f"cannot listen on {host}:{port}: {ex.strerror or ex}") from ex


def base_url(host: str, port: int) -> str:
    """The URL a local client reaches the server at (a wildcard address becomes loopback)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


# --- what it prints ------------------------------------------------------------------------


def curl_invoke(url: str, key: str, function: str, payload: Any, wait_s: int) -> str:
    """A curl command line, quoted for a POSIX shell, that invokes `function`."""
    return shlex.join(
        [
            "curl",
            "-sS",
            "-w",
            "\\n",
            "-X",
            "POST",
            f"{url}/v1/functions/{function}/invocations?wait={wait_s}",
            "-H",
            f"Authorization: Bearer {key}",
            "-H",
            "Content-Type: application/json",
            "-d",
            json.dumps(payload),
        ]
    )


def banner(runtime: Runtime, credentials: DevCredentials, url: str, schedules: int) -> str:
    settings = runtime.settings
    store = make_url(settings.database_url).render_as_string(hide_password=True)
    broker = "in-process" if settings.embedded_broker else "Redis"
    if credentials.created:
        where = f"created now, saved in {credentials.key_file}, readable only by you"
    else:
        where = f"from {credentials.key_file}"
    auth = shlex.join(["-H", f"Authorization: Bearer {credentials.key}"])
    lines = [
        f"Ferry dev is running at {url}",
        f"  store: {store}; broker: {broker}; worker threads: {settings.worker_threads}",
        f"  tenant: {credentials.tenant_id}; its API key, scopes invoke,read,manage ({where}):",
        f"  {credentials.key}",
    ]
    if credentials.operator_key_file is not None:
        lines += [
            f"  operator key (admin, every tenant; from {credentials.operator_key_file}):",
            f"  {credentials.operator_key}",
        ]
    lines.append("")
    if EXAMPLE_FUNCTION in runtime.registry:
        lines += [
            f"Invoke the example function {EXAMPLE_FUNCTION}; the answer is the invocation,",
            f'with "status": "succeeded" and its "result" once it has run (up to {EXAMPLE_WAIT_S} s):',
            "",
            curl_invoke(url, credentials.key, EXAMPLE_FUNCTION, EXAMPLE_INPUT, EXAMPLE_WAIT_S),
            "",
            'Read an invocation again later by the "id" in that answer:',
            "",
            f"curl -sS -w '\\n' {url}/v1/invocations/ID {auth}",
        ]
    else:
        lines += ["List the functions:", "", f"curl -sS -w '\\n' {url}/v1/functions {auth}"]
    lines += [
        "",
        f"Functions: {', '.join(fn.name for fn in runtime.registry) or 'none'}.",
        f"Schedules: {schedules} (`ferry schedules` lists them).",
        "Edits to the functions and schedules reload by themselves. Press Ctrl-C to stop.",
    ]
    return "\n".join(lines)


def _shut_down(server: WSGIServer, http: threading.Thread) -> None:
    server.shutdown()
    http.join(timeout=10)


# --- the process ---------------------------------------------------------------------------


def run(
    settings: Settings,
    *,
    host: str,
    port: int,
    app_factory: AppFactory,
    state_dir: Path = STATE_DIR,
    out: TextIO | None = None,
) -> int:
    """Serve until SIGINT or SIGTERM, then stop gracefully; returns the exit code."""
    out = out or sys.stdout
    configure_logging(settings)
    runtime = Runtime(settings)
    try:
        runtime.store.migrate()
        credentials = ensure_credentials(runtime.store, state_dir)
        server = _make_server(host, port, app_factory(runtime))
        try:
            return _serve(runtime, server, credentials, out, base_url(host, server.server_port))
        finally:
            server.server_close()
    finally:
        runtime.close()


def _serve(
    runtime: Runtime, server: WSGIServer, credentials: DevCredentials, out: TextIO, url: str
) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("dev_stopping", signal=signal.Signals(signum).name)
        stop.set()
        # A second Ctrl-C or SIGTERM ends the process at once.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    http = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="ferry-http", daemon=True
    )
    # Cleanups run in reverse: stop taking requests, stop firing schedules, then let the
    # worker finish what it holds (up to the grace), then restore the signal handlers.
    with contextlib.ExitStack() as running:
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig, handler in previous.items():
            running.callback(signal.signal, sig, handler)
        worker = runtime.start_worker()
        running.callback(worker.stop, grace_s=runtime.settings.shutdown_grace_s)
        # periodiq needs a process of its own; `ferry dev` fires schedules from a thread.
        scheduler = start_scheduler_thread(runtime)
        running.callback(scheduler.stop)
        # Edits to functions/ and schedules/ take effect without a restart.
        watcher = Watcher(Reloader(runtime, scheduler.scheduler, out=out)).start()
        running.callback(watcher.stop)
        http.start()
        running.callback(_shut_down, server, http)
        log.info("dev_started", url=url, worker_id=runtime.worker_id)
        schedules = len(scheduler.scheduler.book)
        print(banner(runtime, credentials, url, schedules), file=out, flush=True)
        while not stop.wait(0.5):
            pass
    log.info("dev_stopped")
    return 0
