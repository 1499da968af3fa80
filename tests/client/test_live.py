"""The client against a real `ferry dev` process (embedded defaults, its own temp dir).

One server for the module; each test uses its own idempotency keys and inputs, so the
tests do not depend on one another.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from ferry_client import (
    AsyncFerryClient,
    BatchAccepted,
    BatchRefused,
    Conflict,
    FerryClient,
    InputInvalid,
    Invocation,
    NotFound,
    Unauthorized,
)

from tests.acceptance.test_dev import DevServer

pytestmark = pytest.mark.acceptance


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    workdir: Path = tmp_path_factory.mktemp("client-dev")
    server = DevServer(workdir, workdir, "dev")
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def ferry(dev: DevServer) -> Iterator[FerryClient]:
    with FerryClient(dev.url, dev.key) as client:
        yield client


def test_invoke_then_wait_gives_the_result(ferry: FerryClient) -> None:
    accepted = ferry.invoke("echo_time", {"message": "hello", "uppercase": True})
    assert isinstance(accepted, Invocation)
    done = ferry.wait(accepted.id, timeout=60)
    assert done.status == "succeeded", done
    assert done.result["message"] == "HELLO"
    assert done.attempt_log and done.attempt_log[0].outcome == "succeeded"


def test_invoke_with_wait_answers_the_finished_invocation(ferry: FerryClient) -> None:
    done = ferry.invoke("echo_time", {"message": "waited"}, wait=30)
    assert isinstance(done, Invocation)
    if not done.finished:  # the server may answer 202 when its wait slots are taken
        done = ferry.wait(done.id, timeout=60)
    assert done.result["message"] == "waited"


def test_the_same_idempotency_key_returns_the_same_invocation(ferry: FerryClient) -> None:
    key = f"client-{uuid.uuid4()}"
    first = ferry.invoke("echo_time", {"message": "once"}, idempotency_key=key)
    again = ferry.invoke("echo_time", {"message": "once"}, idempotency_key=key)
    other = ferry.invoke("echo_time", {"message": "once"})
    assert again.id == first.id
    assert other.id != first.id


def test_get_cancel_and_retry(ferry: FerryClient) -> None:
    later = ferry.invoke("echo_time", {"message": "later"}, delay=3600)
    assert later.status == "scheduled"
    assert ferry.get(later.id).id == later.id
    cancelled = ferry.cancel(later.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(Conflict):
        ferry.cancel(later.id)
    again = ferry.retry(later.id)
    assert again.id == later.id and again.status not in ("cancelled", "failed")
    assert ferry.wait(later.id, timeout=60).status == "succeeded"


def test_list_goes_over_every_page(ferry: FerryClient) -> None:
    marker = uuid.uuid4().hex
    ours = {ferry.invoke("echo_time", {"message": f"{marker}-{n}"}).id for n in range(5)}
    first_page = ferry.list_page(function="echo_time", limit=2)
    assert len(first_page.invocations) == 2 and first_page.next_cursor is not None
    listed = [invocation.id for invocation in ferry.list(function="echo_time", page_size=2)]
    assert len(listed) == len(set(listed)), "a page repeated an invocation"
    assert ours <= set(listed)


def test_problems_are_typed_errors(dev: DevServer, ferry: FerryClient) -> None:
    with pytest.raises(NotFound):
        ferry.invoke("no_such_function", {})
    with pytest.raises(NotFound):
        ferry.get(str(uuid.uuid4()))
    with pytest.raises(InputInvalid) as invalid:
        ferry.invoke("echo_time", {"message": ""})
    assert any(error.loc[-1] == "message" for error in invalid.value.errors), invalid.value.errors
    with FerryClient(dev.url, "fy_not_a_key") as stranger, pytest.raises(Unauthorized):
        stranger.get(str(uuid.uuid4()))


def test_a_batch_gives_each_input_its_result_and_replays_per_item(ferry: FerryClient) -> None:
    keys = [f"batch-{uuid.uuid4()}" for _ in range(3)]
    inputs = [{"message": "one"}, {"message": ""}, {"message": "three"}]
    results = ferry.invoke_batch("echo_time", inputs, idempotency_keys=keys)
    assert [r.ok for r in results] == [True, False, True]
    assert isinstance(results[1], BatchRefused) and results[1].status == 422
    again = ferry.invoke_batch("echo_time", inputs, idempotency_keys=keys)
    assert [r.replayed for r in again if isinstance(r, BatchAccepted)] == [True, True]
    assert isinstance(results[2], BatchAccepted)
    assert ferry.wait(results[2].id, timeout=60).status == "succeeded"


def test_the_async_client_does_the_same(dev: DevServer) -> None:
    async def run() -> None:
        async with AsyncFerryClient(dev.url, dev.key) as ferry:
            key = f"async-{uuid.uuid4()}"
            accepted = await ferry.invoke("echo_time", {"message": "async"}, idempotency_key=key)
            replayed = await ferry.invoke("echo_time", {"message": "async"}, idempotency_key=key)
            assert replayed.id == accepted.id
            done = await ferry.wait(accepted.id, timeout=60)
            assert done.result["message"] == "async"
            later = await ferry.invoke("echo_time", {"message": "later"}, delay=3600)
            assert (await ferry.cancel(later.id)).status == "cancelled"
            assert (await ferry.retry(later.id)).id == later.id
            for _ in range(3):
                await ferry.invoke("echo_time", {"message": "page"})
            listed = [i.id async for i in ferry.list(function="echo_time", page_size=2)]
            assert len(listed) >= 4 and len(listed) == len(set(listed))
            assert accepted.id in listed
            with pytest.raises(InputInvalid) as invalid:
                await ferry.invoke("echo_time", {"message": ""})
            assert any(error.loc[-1] == "message" for error in invalid.value.errors)
            with pytest.raises(NotFound):
                await ferry.invoke("no_such_function", {})
            batch = await ferry.invoke_batch("echo_time", [{"message": "b1"}, {"message": "b2"}])
            assert all(isinstance(r, BatchAccepted) and not r.replayed for r in batch)

    asyncio.run(run())
