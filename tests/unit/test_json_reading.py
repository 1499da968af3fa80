"""JSON columns are read by orjson, and what orjson refuses comes back as it was stored."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from psycopg.pq import Format

from runtime.app import Runtime
from runtime.store.claims import Claimed
from runtime.store.driver import json_value
from runtime.store.invocations import NewInvocation


@pytest.mark.parametrize(
    "document",
    [
        '{"n": 1180591620717411303425}',  # 2**70 + 1: past 64 bits, a float to orjson
        '{"n": -9223372036854775809, "m": 18446744073709551616}',  # just past each end
        '{"n": 9223372036854775807, "f": 0.12345678901234567891}',  # 19 digits
        '{"s": "\\ud800"}',  # a lone surrogate
        '{"big": 1e400}',  # past a double: infinity to `json`
        '{"ok": [1, 2.5, "ü", null, true]}',  # orjson reads it
    ],
)
def test_a_document_reads_as_json_reads_it(document: str):
    expected = json.loads(document)
    for text in (document, document.encode(), memoryview(document.encode())):
        value = json_value(text)
        assert value == expected
        assert [type(v) for v in value.values()] == [type(v) for v in expected.values()]


def test_nan_reads_as_json_reads_it():
    assert math.isnan(json_value('{"x": NaN}')["x"])


def test_an_integer_past_64_bits_is_stored_and_comes_back_exact(runtime: Runtime, make_tenant):
    # Given a stored invocation whose payload holds an integer orjson refuses (an input
    # model may allow any JSON; the store's insert is given it here directly)
    tenant = make_tenant()
    accepted, _ = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "x"}
    )
    fields = {f.name for f in dataclasses.fields(NewInvocation)}
    new = NewInvocation(
        **{
            **{name: getattr(accepted, name) for name in fields if hasattr(accepted, name)},
            "id": "big-int-invocation",
            "idempotency_key": "big-int",
            "payload": {"n": 2**70 + 1},
        }
    )
    runtime.store.invocations.insert(new)

    # When a worker claims it (on PostgreSQL through the driver) and it is read back
    claimed = runtime.store.claims.claim(new.id, "w1", 30)

    # Then both give the payload whole
    assert isinstance(claimed, Claimed)
    assert claimed.invocation.payload == {"n": 2**70 + 1}
    assert runtime.store.invocations.get(new.id).payload == {"n": 2**70 + 1}


def test_the_drivers_connections_read_json_with_json_value(runtime: Runtime, backend: str):
    if backend != "production":
        pytest.skip("psycopg's loaders: PostgreSQL")
    with runtime.store.db.driver_connection() as connection:
        for name in ("json", "jsonb"):
            oid = connection.adapters.types[name].oid
            loader = connection.adapters.get_loader(oid, Format.TEXT)
            assert loader is not None
            assert loader._loads is json_value  # type: ignore[attr-defined]
