"""Text PostgreSQL will not convert (a NUL) is stored whole by every INSERT, or refused.

JSON allows `\\u0000` and unpaired surrogate escapes, and an input may hold them. The `json`
type stores them as they are; what converts a JSON string to text (`json_to_recordset`,
which the batch API and the group-committed accept read their rows with) fails on them.
The fuzzer found the group-committed accept answering 500 to such an input.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from runtime.app import Runtime
from runtime.errors import BadRequest
from runtime.services.batches import BatchItem

#: A NUL in a value (`echo` takes one string; a lone surrogate is refused by its model).
AWKWARD = {"message": "nul \x00 end"}


@pytest.mark.parametrize("grouped", [True, False], ids=["group-committed", "single"])
def test_a_single_accept_stores_it_whole(
    runtime_with: Callable[..., Runtime], make_tenant, grouped: bool
):
    runtime = runtime_with(accept_group_commit=grouped)
    tenant = make_tenant()

    accepted = runtime.invocations.accept(tenant_id=tenant, function="echo", payload=AWKWARD)

    assert accepted.created
    assert (
        runtime.store.invocations.get(accepted.invocation.id).payload["message"] == "nul \x00 end"
    )


def test_a_batch_accept_stores_it_whole(runtime: Runtime, make_tenant):
    tenant = make_tenant()

    outcomes = runtime.invocations.accept_batch(
        tenant_id=tenant,
        function="echo",
        items=[BatchItem(AWKWARD), BatchItem({"message": "plain"})],
    )

    assert [(o.created, o.errors) for o in outcomes] == [(True, ()), (True, ())]
    stored = [
        runtime.store.invocations.get(o.invocation.id).payload["message"]  # type: ignore[union-attr]
        for o in outcomes
    ]
    assert stored == ["nul \x00 end", "plain"]


@pytest.mark.parametrize("key", ["a\x00b", "tab\there", "ü", "k" * 256, ""])
def test_a_client_key_outside_printable_ascii_is_refused_before_anything_is_stored(
    runtime: Runtime, make_tenant, key: str
):
    # The gateway checks its header and a batch item's key; the CLI calls the service
    # directly, which holds the rule: on PostgreSQL a NUL reached the INSERT and failed it.
    tenant = make_tenant()

    with pytest.raises(BadRequest, match="printable ASCII"):
        runtime.invocations.accept(
            tenant_id=tenant, function="echo", payload={"message": "x"}, idempotency_key=key
        )
    with pytest.raises(BadRequest, match=r"item 1: .*printable ASCII"):
        runtime.invocations.accept_batch(
            tenant_id=tenant,
            function="echo",
            items=[BatchItem({"message": "x"}, "fine"), BatchItem({"message": "y"}, key)],
            trigger="cli",
        )

    assert runtime.store.invocations.find_by_key(tenant, "echo", "fine") is None
