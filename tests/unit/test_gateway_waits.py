"""`?wait` never holds a gateway thread hostage (issue 12, item 7).

Waits are held in a sleep that blocks until the test releases it, so which requests
answered while the others were still held is known without measuring any time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import falcon.testing
import pytest

from gateway.app import create_app
from runtime.app import Runtime
from runtime.services.waits import WaitSlots
from runtime.settings import Settings
from runtime.store.tenants import parse_scopes
from tests.unit.conftest import invoke
from tests.waiting import wait_for


class HeldSleep:
    """`sleep` and `monotonic` for the service: every sleep blocks until `release()`.

    After the release, sleeping moves a shared fake clock on, so held waits run out at once.
    """

    def __init__(self) -> None:
        self.released = threading.Event()
        self._lock = threading.Lock()
        self.entered = 0
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        with self._lock:
            if not self.released.is_set():
                self.entered += 1
        if not self.released.wait(timeout=30):
            raise AssertionError("a held wait was never released")
        with self._lock:
            self.now += seconds

    def monotonic(self) -> float:
        with self._lock:
            return self.now

    def wait_entered(self, count: int) -> None:
        wait_for(lambda: self.entered >= count, what=f"{count} held waits")


@pytest.fixture
def held(runtime_with: Callable[..., Runtime]) -> Callable[..., tuple[Any, HeldSleep]]:
    """A client of a runtime built with `overrides` whose waits are held, and the sleep."""

    def build(**overrides: Any) -> tuple[Any, HeldSleep]:
        runtime = runtime_with(**overrides)
        sleep = HeldSleep()
        runtime.invocations.sleep = sleep.sleep
        runtime.invocations.monotonic = sleep.monotonic
        client = falcon.testing.TestClient(create_app(runtime))
        client.runtime = runtime  # type: ignore[attr-defined]
        return client, sleep

    return build


def key_of(runtime: Runtime, tenant_id: str) -> dict[str, str]:
    runtime.store.tenants.create(tenant_id)
    _view, plaintext = runtime.store.tenants.create_key(tenant_id, parse_scopes("invoke,read"))
    return {"Authorization": f"Bearer {plaintext}"}


class Requests:
    """POSTs with `?wait` in threads; `answers` holds each one's result once it returned."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.answers: dict[str, falcon.testing.Result] = {}
        self.threads: list[threading.Thread] = []

    def start(self, name: str, headers: dict[str, str]) -> None:
        def run() -> None:
            self.answers[name] = invoke(self.client, headers, "echo", {"message": name}, wait=5)

        thread = threading.Thread(target=run, name=f"wait-{name}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=30)
            assert not thread.is_alive()


@pytest.fixture
def requests_of() -> Iterator[Callable[[Any, HeldSleep], Requests]]:
    """Threads of requests; a failed test releases its held waits and joins them."""
    made: list[tuple[Requests, HeldSleep]] = []

    def make(client: Any, sleep: HeldSleep) -> Requests:
        requests = Requests(client)
        made.append((requests, sleep))
        return requests

    yield make
    for requests, sleep in made:
        sleep.released.set()
        for thread in requests.threads:
            thread.join(timeout=30)


def assert_answered_at_once(result: falcon.testing.Result) -> None:
    assert result.status_code == 202, result.text
    assert result.json["status"] == "queued"
    assert result.headers["location"] == f"/v1/invocations/{result.json['id']}"


def test_past_the_tenant_cap_a_wait_is_answered_at_once_and_other_tenants_still_wait(
    held, requests_of
):
    # Given a cap of 2 waits per tenant, and no worker (nothing finishes)
    client, sleep = held(max_waits_per_tenant=2, max_waits_per_process=8)
    runtime: Runtime = client.runtime
    acme, globex = key_of(runtime, "acme"), key_of(runtime, "globex")
    requests = requests_of(client, sleep)
    # When acme holds two waits
    requests.start("acme-1", acme)
    requests.start("acme-2", acme)
    sleep.wait_entered(2)
    # Then acme's third is answered at once with 202 and Location, the two still held
    third = invoke(client, acme, "echo", {"message": "acme-3"}, wait=5)
    assert_answered_at_once(third)
    assert requests.answers == {}
    # and globex's waits still wait
    requests.start("globex-1", globex)
    requests.start("globex-2", globex)
    sleep.wait_entered(4)
    assert requests.answers == {}
    assert runtime.invocations.wait_slots.held("acme") == 2
    assert runtime.invocations.wait_slots.held("globex") == 2
    # When the held waits are released, each answers 202 as a wait that ran out
    sleep.released.set()
    requests.join()
    assert sorted(requests.answers) == ["acme-1", "acme-2", "globex-1", "globex-2"]
    assert {r.status_code for r in requests.answers.values()} == {202}
    # and every slot is free again
    assert runtime.invocations.wait_slots.held() == 0


def test_past_the_process_cap_any_tenants_wait_is_answered_at_once(held, requests_of):
    client, sleep = held(max_waits_per_tenant=4, max_waits_per_process=2)
    runtime: Runtime = client.runtime
    acme, globex = key_of(runtime, "acme"), key_of(runtime, "globex")
    requests = requests_of(client, sleep)
    requests.start("acme-1", acme)
    requests.start("acme-2", acme)
    sleep.wait_entered(2)
    assert_answered_at_once(invoke(client, globex, "echo", {"message": "g"}, wait=5))
    assert_answered_at_once(invoke(client, acme, "echo", {"message": "a"}, wait=5))
    assert requests.answers == {}
    sleep.released.set()
    requests.join()
    assert {r.status_code for r in requests.answers.values()} == {202}


def test_a_request_without_wait_needs_no_slot(held):
    client, sleep = held(max_waits_per_tenant=0)
    acme = key_of(client.runtime, "acme")
    assert_answered_at_once(invoke(client, acme, "echo", {"message": "a"}, wait=5))
    assert_answered_at_once(invoke(client, acme, "echo", {"message": "a"}))
    assert sleep.entered == 0


# --- the slots themselves ---------------------------------------------------------------------


def test_wait_slots_count_per_tenant_and_in_all():
    slots = WaitSlots(per_tenant=2, per_process=3)
    assert slots.try_acquire("a") and slots.try_acquire("a")
    assert not slots.try_acquire("a")
    assert slots.try_acquire("b")
    assert not slots.try_acquire("c")  # the process is full
    slots.release("a")
    assert slots.try_acquire("c")
    assert slots.held() == 3 and slots.held("a") == 1
    with slots.hold("d") as got:
        assert not got
    for tenant in ("a", "b", "c"):
        slots.release(tenant)
    assert slots.held() == 0 and slots._held == {}
    with pytest.raises(RuntimeError):
        slots.release("a")


def test_wait_slots_are_thread_safe():
    slots = WaitSlots(per_tenant=1000, per_process=1000)

    def churn() -> None:
        for _ in range(2000):
            if slots.try_acquire("t"):
                slots.release("t")

    threads = [threading.Thread(target=churn) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert slots.held() == 0


def test_the_process_cap_defaults_to_half_the_threads(monkeypatch):
    monkeypatch.delenv("FERRY_MAX_WAITS_PER_PROCESS", raising=False)
    monkeypatch.delenv("GUNICORN_THREADS", raising=False)
    assert Settings.from_env().waits_per_process == 4
    monkeypatch.setenv("GUNICORN_THREADS", "16")
    assert Settings.from_env().waits_per_process == 8
    monkeypatch.setenv("GUNICORN_THREADS", "1")
    assert Settings.from_env().waits_per_process == 1
    monkeypatch.setenv("FERRY_MAX_WAITS_PER_PROCESS", "3")
    assert Settings.from_env().waits_per_process == 3
    assert Settings.from_env().max_waits_per_tenant == 4
