"""The client's models keep up with the API's: every field the gateway answers with is
read by the client, with the same requiredness, so a new or renamed field fails here
rather than disappearing silently for applications."""

from __future__ import annotations

from typing import get_args

import ferry_client
import pytest
from pydantic import BaseModel

from gateway import batch_schemas, schemas
from runtime.store.models import Status

PAIRS = [
    (schemas.Invocation, ferry_client.Invocation),
    (schemas.InvocationDetail, ferry_client.InvocationDetail),
    (schemas.InvocationReceipt, ferry_client.InvocationReceipt),
    (schemas.InvocationList, ferry_client.InvocationPage),
    (schemas.Attempt, ferry_client.Attempt),
    (schemas.InvocationError, ferry_client.InvocationError),
    (schemas.FieldError, ferry_client.FieldError),
    (batch_schemas.BatchItemAccepted, ferry_client.BatchAccepted),
    (batch_schemas.BatchItemRefused, ferry_client.BatchRefused),
]


@pytest.mark.parametrize(("server", "client"), PAIRS, ids=[p[1].__name__ for p in PAIRS])
def test_the_client_reads_every_field_the_server_sends(
    server: type[BaseModel], client: type[BaseModel]
) -> None:
    assert set(client.model_fields) == set(server.model_fields)


def test_a_problem_reads_every_member_the_server_sends() -> None:
    assert set(schemas.Problem.model_fields) <= set(ferry_client.Problem.model_fields)


def test_the_statuses_are_the_server_s() -> None:
    assert set(get_args(ferry_client.Status)) == {status.value for status in Status}
