"""`echo_time`: the function `ferry dev`'s curl line invokes on a fresh machine."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from runtime.errors import InputInvalid
from tests.waiting import finished, wait_for


def test_echo_time_answers_with_the_message_its_tenant_invocation_and_time(
    runtime, worker, make_tenant
):
    # Given a tenant
    tenant = make_tenant()
    before = datetime.now(UTC)
    # When it invokes echo_time
    inv, _ = runtime.invocations.accept(
        tenant_id=tenant, function="echo_time", payload={"message": "hello, ferry"}
    )
    # Then it succeeds with the message, the tenant and invocation it ran as, and the time
    done = wait_for(finished(runtime, inv.id), what="echo_time to finish")
    after = datetime.now(UTC)
    assert done.status == "succeeded" and done.attempts == 1
    assert done.result["message"] == "hello, ferry"
    assert done.result["tenant_id"] == tenant
    assert done.result["invocation_id"] == inv.id
    server_time = datetime.fromisoformat(done.result["server_time"].replace("Z", "+00:00"))
    assert server_time.tzinfo is not None
    assert before <= server_time <= after


def test_echo_time_upper_cases_on_request(runtime, worker, make_tenant):
    tenant = make_tenant()
    inv, _ = runtime.invocations.accept(
        tenant_id=tenant, function="echo_time", payload={"message": "Quiet", "uppercase": True}
    )
    done = wait_for(finished(runtime, inv.id))
    assert done.status == "succeeded"
    assert done.result["message"] == "QUIET"


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
