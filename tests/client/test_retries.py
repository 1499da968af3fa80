"""The client's retries, against a scripted loopback server (no Ferry process needed).

429/503 are sent again (honouring `Retry-After`, bounded); a connection dropped
mid-request is retried only for requests that are safe to repeat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from ferry_client import (
    AsyncFerryClient,
    BatchAccepted,
    BatchRefused,
    FerryClient,
    InputInvalid,
    Invocation,
    NotFound,
    RateLimited,
    TransportError,
    Unavailable,
)

from tests.client.stub import DROP, Answer, StubServer, invocation, problem

RETRY_NOW = {"Retry-After": "0"}


@pytest.fixture
def stub() -> Iterator[StubServer]:
    yield from StubServer().serve()


def client(stub: StubServer, **options: object) -> FerryClient:
    return FerryClient(stub.url, "fy_test", backoff=0.01, **options)  # type: ignore[arg-type]


def test_503_with_retry_after_is_sent_again_with_the_same_idempotency_key(
    stub: StubServer,
) -> None:
    stub.script = [Answer(503, problem(503), RETRY_NOW), Answer(202, invocation())]
    with client(stub) as ferry:
        accepted = ferry.invoke("echo_time", {"message": "hi"})
    assert isinstance(accepted, Invocation) and accepted.id == "inv-1"
    assert [seen.method for seen in stub.seen] == ["POST", "POST"]
    keys = {seen.headers["Idempotency-Key"] for seen in stub.seen}
    assert len(keys) == 1 and keys != {""}


def test_a_batch_is_sent_again_with_the_same_keys_and_read_item_by_item(
    stub: StubServer,
) -> None:
    answer = {
        "items": [
            {"index": 0, "id": "inv-1", "status": "queued", "replayed": False},
            {
                "index": 1,
                "status": 422,
                "type": "input-invalid",
                "errors": [{"loc": ["input", "message"], "msg": "Field required"}],
            },
        ]
    }
    stub.script = [Answer(503, problem(503), RETRY_NOW), Answer(202, answer)]
    with client(stub) as ferry:
        results = ferry.invoke_batch("echo_time", [{"message": "a"}, {}])
    assert isinstance(results[0], BatchAccepted) and results[0].ok and results[0].id == "inv-1"
    assert isinstance(results[1], BatchRefused) and not results[1].ok
    assert results[1].errors[0].loc == ["input", "message"]
    assert [seen.path for seen in stub.seen] == ["/v1/functions/echo_time/invocations/batch"] * 2
    first, again = (seen.body["items"] for seen in stub.seen)
    assert first == again and len({item["idempotency_key"] for item in first}) == 2
    with pytest.raises(ValueError):
        client(stub).invoke_batch("echo_time", [])


def test_429_on_a_read_is_sent_again(stub: StubServer) -> None:
    stub.script = [
        Answer(429, problem(429), RETRY_NOW),
        Answer(200, {**invocation(), "attempt_log": []}),
    ]
    with client(stub) as ferry:
        assert ferry.get("inv-1").id == "inv-1"
    assert len(stub.seen) == 2


def test_retries_are_bounded_and_end_in_the_typed_error(stub: StubServer) -> None:
    stub.script = [Answer(503, problem(503), {"Retry-After": "0"}) for _ in range(10)]
    with client(stub, max_retries=2) as ferry, pytest.raises(Unavailable) as raised:
        ferry.get("inv-1")
    assert raised.value.retry_after == 0
    assert len(stub.seen) == 3


def test_rate_limited_carries_retry_after(stub: StubServer) -> None:
    stub.script = [Answer(429, problem(429), {"Retry-After": "7"})]
    with client(stub, max_retries=0) as ferry, pytest.raises(RateLimited) as raised:
        ferry.get("inv-1")
    assert raised.value.retry_after == 7


def test_a_post_without_idempotency_key_is_not_sent_again_after_a_dropped_connection(
    stub: StubServer,
) -> None:
    # cancel is a POST without a key: repeating it blindly could act twice.
    stub.script = [DROP, Answer(200, invocation("cancelled"))]
    with client(stub) as ferry, pytest.raises(TransportError):
        ferry.cancel("inv-1")
    assert len(stub.seen) == 1


def test_an_invoke_is_sent_again_after_a_dropped_connection(stub: StubServer) -> None:
    stub.script = [DROP, Answer(202, invocation())]
    with client(stub) as ferry:
        assert ferry.invoke("echo_time", {"message": "hi"}, idempotency_key="mine").id == "inv-1"
    assert [seen.headers["Idempotency-Key"] for seen in stub.seen] == ["mine", "mine"]


def test_problems_map_to_typed_errors(stub: StubServer) -> None:
    errors = [{"loc": ["message"], "msg": "String should have at least 1 character"}]
    stub.script = [
        Answer(422, problem(422, errors=errors)),
        Answer(404, problem(404), {"X-Request-ID": "req-9"}),
    ]
    with client(stub) as ferry:
        with pytest.raises(InputInvalid) as invalid:
            ferry.invoke("echo_time", {"message": ""})
        with pytest.raises(NotFound) as missing:
            ferry.get("nope")
    assert [error.loc for error in invalid.value.errors] == [["message"]]
    assert missing.value.request_id == "req-9"


def test_the_async_client_retries_the_same_way(stub: StubServer) -> None:
    stub.script = [Answer(503, problem(503), RETRY_NOW), Answer(202, invocation()), DROP]

    async def run() -> None:
        async with AsyncFerryClient(stub.url, "fy_test", backoff=0.01) as ferry:
            accepted = await ferry.invoke("echo_time", {"message": "hi"})
            assert accepted.id == "inv-1"
            with pytest.raises(TransportError):
                await ferry.retry("inv-1")

    asyncio.run(run())
    assert [seen.path.split("?")[0] for seen in stub.seen] == [
        "/v1/functions/echo_time/invocations",
        "/v1/functions/echo_time/invocations",
        "/v1/invocations/inv-1/retry",
    ]
