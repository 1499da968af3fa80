"""The fuzz tests' own rules: which operations can be invalid, the tenant check, loopback."""

from __future__ import annotations

import dataclasses
import socket
from typing import Any

import pytest

from gateway.openapi import build_document
from runtime.registry import Registry
from tests.fuzzing import can_be_invalid, only_tenant
from tests.loopback_only import refuse_outside_loopback


@dataclasses.dataclass
class Answer:
    status_code: int
    body: Any

    def json(self) -> Any:
        if isinstance(self.body, ValueError):
            raise self.body
        return self.body


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_document(Registry({}), max_wait_s=1)


def test_operations_with_only_plain_strings_in_path_and_headers_cannot_be_invalid(document):
    # Given the document's operations, Then a plain path id and X-Tenant-ID cannot be broken
    assert not can_be_invalid(document, "/v1/invocations/{invocation_id}", "GET")
    assert not can_be_invalid(document, "/v1/schedules/{schedule_id}/pause", "POST")
    # but a query parameter, a constrained header or a body can
    assert can_be_invalid(document, "/v1/invocations", "GET")
    assert can_be_invalid(document, "/v1/schedules/{schedule_id}/trigger", "POST")
    assert can_be_invalid(document, "/v1/functions/{name}/invocations", "POST")


def test_the_tenant_check_refuses_an_answer_naming_another_tenant():
    check = only_tenant("a", "a's key")
    other = {"invocations": [{"tenant_id": "a"}, {"detail": {"tenant_id": "b"}}]}
    with pytest.raises(AssertionError, match=r"\['b'\]"):
        check(None, Answer(200, other), None)
    # Its own tenant, an error answer, a body that is not JSON, an operator key: nothing
    check(None, Answer(200, {"invocations": [{"tenant_id": "a"}]}), None)
    check(None, Answer(404, other), None)
    check(None, Answer(200, ValueError("not JSON")), None)
    only_tenant(None, "operator")(None, Answer(200, other), None)


def test_the_loopback_guard_refuses_lookups_and_connections_beyond_loopback():
    # Given the audit hook the live fuzz test's worker runs under
    for host in ("localhost", "127.0.0.1", "::1", "[::1]", None, b"localhost"):
        refuse_outside_loopback("socket.getaddrinfo", (host, 80, 0, 0, 0, 0))
    # Then names and addresses off this machine are refused before anything is sent
    for host in ("0.com", "example.com", "10.0.0.1", "169.254.169.254"):
        with pytest.raises(socket.gaierror):
            refuse_outside_loopback("socket.getaddrinfo", (host, 80, 0, 0, 0, 0))
    with socket.socket() as sock:
        refuse_outside_loopback("socket.connect", (sock, ("127.0.0.1", 5432)))
        with pytest.raises(ConnectionRefusedError):
            refuse_outside_loopback("socket.connect", (sock, ("93.184.216.34", 80)))
