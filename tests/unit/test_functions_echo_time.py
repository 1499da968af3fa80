"""`echo_time`: the function `ferry dev`'s curl line invokes on a fresh machine."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from functions.echo_time import echo_time
from runtime.errors import InputInvalid
from runtime.testing import FunctionHarness
from tests.waiting import finished, wait_for


@pytest.fixture
def harness() -> Iterator[FunctionHarness]:
    with FunctionHarness(tenant_id="acme") as harness:
        yield harness


def test_echo_time_answers_with_the_message_its_tenant_invocation_and_time(harness):
    before = datetime.now(UTC)
    # When the tenant's invocation runs echo_time
    out = harness.run(echo_time, {"message": "hello, ferry"}, invocation_id="inv-1")
    # Then it answers with the message, the tenant and invocation it ran as, and the time
    after = datetime.now(UTC)
    assert out.message == "hello, ferry"
    assert out.tenant_id == "acme"
    assert out.invocation_id == "inv-1"
    server_time = datetime.fromisoformat(out.model_dump(mode="json")["server_time"])
    assert server_time.tzinfo is not None
    assert before <= server_time <= after


def test_echo_time_upper_cases_on_request(harness):
    assert harness.run(echo_time, {"message": "Quiet", "uppercase": True}).message == "QUIET"


def test_echo_time_runs_through_the_runtime(runtime, worker, make_tenant):
    tenant = make_tenant()
    inv, _ = runtime.invocations.accept(
        tenant_id=tenant, function="echo_time", payload={"message": "hello, ferry"}
    )
    done = wait_for(finished(runtime, inv.id), what="echo_time to finish")
    assert done.status == "succeeded" and done.attempts == 1
    assert done.result["tenant_id"] == tenant and done.result["invocation_id"] == inv.id


@pytest.mark.parametrize(
    "payload",
    [{}, {"message": ""}, {"message": "x" * 1001}, {"message": "x", "uppercase": "maybe"}],
)
def test_echo_time_refuses_bad_input_before_storing_anything(runtime, make_tenant, payload):
    tenant = make_tenant()
    with pytest.raises(InputInvalid):
        runtime.invocations.accept(tenant_id=tenant, function="echo_time", payload=payload)
    assert runtime.store.invocations.list(tenant)[0] == []


def test_echo_time_is_described_by_its_module_docstring(runtime):
    described = runtime.registry.get("echo_time").describe()
    assert described["description"].startswith("Echo a message back with the server's time")
    assert described["queue"] == "default"
    assert described["input_schema"]["required"] == ["message"]
    assert set(described["output_schema"]["properties"]) == {
        "message",
        "tenant_id",
        "invocation_id",
        "server_time",
    }
