"""Gateway fixtures: a Falcon test client over `create_app(runtime)`, keys and helpers."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from falcon.testing import Result, TestClient

from gateway.app import create_app
from runtime.app import Runtime
from runtime.settings import Settings
from tests.clocks import ManualClock
from tests.conftest import prepare
from tests.waiting import wait_for

PROBLEM_JSON = "application/problem+json"


@pytest.fixture
def client(runtime: Runtime) -> TestClient:
    return TestClient(create_app(runtime))


@pytest.fixture
def headers_for(make_key: Callable[..., str]) -> Callable[..., dict[str, str]]:
    """Headers with a new API key of `tenant_id` with comma-separated `scopes`."""

    def build(tenant_id: str, scopes: str = "invoke,read,manage", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {make_key(tenant_id, scopes)}", **extra}

    return build


@pytest.fixture
def tenant(make_tenant: Callable[..., str]) -> str:
    return make_tenant()


@pytest.fixture
def headers(headers_for: Callable[..., dict[str, str]], tenant: str) -> dict[str, str]:
    """An invoke, read and manage key of `tenant`."""
    return headers_for(tenant)


@pytest.fixture
def runtime_with(
    backend: str, settings_for: Callable[..., Settings]
) -> Iterator[Callable[..., Runtime]]:
    """Build more runtimes on this test's backend with setting overrides; closed afterwards.

    `migrate=False` for a runtime whose store cannot be reached.
    """
    built: list[Runtime] = []

    def build(*, migrate: bool = True, **overrides: Any) -> Runtime:
        runtime = Runtime(settings_for(backend, **overrides))
        built.append(runtime)
        return prepare(runtime) if migrate else runtime

    yield build
    for runtime in built:
        runtime.close()


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def invoke(
    client: TestClient,
    headers: dict[str, str],
    function: str,
    body: Any,
    **query: Any,
) -> Result:
    """POST an input to a function's invoke endpoint."""
    return client.simulate_post(
        f"/v1/functions/{function}/invocations",
        json=body,
        headers=headers,
        params={k: str(v) for k, v in query.items()},
    )


def assert_problem(result: Result, status: int, kind: str | None = None) -> dict[str, Any]:
    """Check an RFC 9457 problem answer; returns its document."""
    assert result.status_code == status, result.text
    assert result.headers["content-type"] == PROBLEM_JSON
    document: dict[str, Any] = result.json
    assert document["status"] == status
    assert document["title"] and document["detail"]
    if kind is not None:
        assert document["type"] == f"urn:ferry:problem:{kind}"
    assert result.headers.get("x-request-id")
    return document


def wait_finished(client: TestClient, headers: dict[str, str], invocation_id: str) -> Any:
    """Poll GET /v1/invocations/{id} until it is finished; returns the body."""

    def check() -> Any:
        body = client.simulate_get(f"/v1/invocations/{invocation_id}", headers=headers).json
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(check, what=f"invocation {invocation_id} to finish")


@pytest.fixture
def clock() -> ManualClock:
    """The store's clock, moved by the test."""
    return ManualClock()


@pytest.fixture
def clocked(settings: Settings, clock: ManualClock) -> Iterator[Runtime]:
    """A migrated runtime on this test's backend whose store reads `clock`."""
    runtime = prepare(Runtime(settings, clock=clock))
    yield runtime
    runtime.close()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The CLI and `ferry dev` configure logging for the process; restore it afterwards."""
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def sqlite_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Clear every FERRY_* setting but the test ones and point the store at a private file."""
    for name in list(os.environ):
        if name.startswith("FERRY_") and not name.startswith("FERRY_TEST_"):
            monkeypatch.delenv(name)
    url = f"sqlite:///{tmp_path / 'ferry.db'}"
    monkeypatch.setenv("FERRY_DATABASE_URL", url)
    return url
