"""The waking Redis broker on real Redis: nothing lost, nothing run twice, idle consumers wake.

"Wakes" is shown without timing: the consumer's longest wait is set to a minute, so a
consumer that did not wake on the token would still be blocked when `wait_for` gives up.
"""

from __future__ import annotations

import collections
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.message import Message

from runtime.worker.redis_broker import WakingRedisBroker
from tests.conftest import REDIS_URL
from tests.procs import PRODUCTION_SECRET_KEY
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

QUEUE = "work"
#: Long enough that only a wake-up (never a timeout) can end a wait within a test.
LONG_WAIT_S = 60.0


@pytest.fixture
def make_broker(redis_namespace: str) -> Iterator[Callable[..., WakingRedisBroker]]:
    """Brokers on the test's namespace, each with its own named Redis client."""
    brokers: list[WakingRedisBroker] = []

    def build(**options: Any) -> WakingRedisBroker:
        name = f"{redis_namespace}-{uuid.uuid4().hex[:6]}"
        client = redis.Redis.from_url(REDIS_URL, client_name=name)
        broker = WakingRedisBroker(
            client=client, namespace=redis_namespace, middleware=[], **options
        )
        broker.declare_queue(QUEUE)
        brokers.append(broker)
        return broker

    yield build
    for broker in brokers:
        broker.close()


class Runs:
    """Which messages an actor ran, and how often (thread-safe)."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()

    def record(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1

    def total(self) -> int:
        with self.lock:
            return sum(self.counts.values())


def declare_recorder(broker: dramatiq.Broker, runs: Runs, sleep_s: float = 0.0) -> Any:
    def record(key: str) -> None:
        if sleep_s:
            threading.Event().wait(sleep_s)
        runs.record(key)

    return dramatiq.Actor(
        record, broker=broker, actor_name="record", queue_name=QUEUE, priority=0, options={}
    )


def stored_args(broker: WakingRedisBroker, queue_name: str) -> list[Any]:
    """The first argument of each message waiting on `queue_name`, in queue order."""
    ids = broker.client.lrange(f"{broker.namespace}:{queue_name}", 0, -1)
    bodies = broker.client.hmget(f"{broker.namespace}:{queue_name}.msgs", ids)
    return [Message.decode(body).args[0] for body in bodies]


def blocked_in_blpop(client: redis.Redis, name: str) -> bool:
    """Whether the Redis client named `name` is waiting in BLPOP right now."""
    return any(c.get("name") == name and c.get("cmd") == "blpop" for c in client.client_list())


def leftovers(client: redis.Redis, namespace: str) -> dict[str, int]:
    """Messages still stored, queued or held unacknowledged under the namespace."""
    acks = [k for k in client.scan_iter(f"{namespace}:__acks__.*")]
    return {
        "stored": int(client.hlen(f"{namespace}:{QUEUE}.msgs")),
        "queued": int(client.llen(f"{namespace}:{QUEUE}")),
        "unacked": sum(int(client.scard(k)) for k in acks),
    }


def test_two_worker_processes_run_every_message_exactly_once(
    make_broker: Callable[..., WakingRedisBroker], redis_namespace: str
) -> None:
    # Given two brokers (as two worker processes would have) consuming one queue
    producer = make_broker()
    sender = declare_recorder(producer, Runs())
    runs = Runs()
    workers = []
    for _ in range(2):
        broker = make_broker()
        declare_recorder(broker, runs)
        worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=1000)
        worker.start()
        workers.append(worker)

    # When 600 messages are sent, in bursts, to idle and to busy consumers
    keys = [f"m{n}" for n in range(600)]
    for n, key in enumerate(keys):
        sender.send(key)
        if n % 150 == 0:
            wait_for(lambda n=n: runs.total() > n, what=f"message {n} to run")

    # Then each ran exactly once, and Redis holds none of them any more
    wait_for(lambda: runs.total() >= len(keys), timeout=60, what="all messages to run")
    for worker in workers:
        worker.stop()
    assert set(runs.counts) == set(keys)
    assert set(runs.counts.values()) == {1}
    assert leftovers(producer.client, redis_namespace) == {"stored": 0, "queued": 0, "unacked": 0}


def test_an_idle_consumer_wakes_when_a_message_is_enqueued(
    make_broker: Callable[..., WakingRedisBroker],
) -> None:
    # Given a consumer blocked on an empty queue, its longest wait a minute
    broker = make_broker(max_block_s=LONG_WAIT_S)
    sender = declare_recorder(make_broker(), Runs())
    consumer = broker.consume(QUEUE, prefetch=1, timeout=int(LONG_WAIT_S * 1000))
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(next(consumer)), daemon=True)
    waiter.start()
    name = broker.client.client_getname()
    wait_for(lambda: blocked_in_blpop(broker.client, name), what="the consumer to block")

    # When a message is enqueued
    message = sender.send("hello")

    # Then the consumer returns it well before its wait would have ended
    wait_for(lambda: not waiter.is_alive(), timeout=20, what="the consumer to wake")
    assert got[0] is not None
    assert got[0].message_id == message.message_id
    consumer.ack(got[0])


def test_a_consumer_with_every_slot_taken_takes_the_next_message_on_ack(
    make_broker: Callable[..., WakingRedisBroker],
) -> None:
    # Given a consumer (prefetch 1) holding one unacknowledged message, a second one queued
    broker = make_broker(max_block_s=LONG_WAIT_S)
    sender = declare_recorder(make_broker(), Runs())
    first, second = sender.send("first"), sender.send("second")
    consumer = broker.consume(QUEUE, prefetch=1, timeout=int(LONG_WAIT_S * 1000))
    held = next(consumer)
    assert held.message_id == first.message_id
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(next(consumer)), daemon=True)
    waiter.start()

    # When the held message is acknowledged
    consumer.ack(held)

    # Then the waiting consumer takes the second one at once
    wait_for(lambda: not waiter.is_alive(), timeout=20, what="the consumer to take the next")
    assert got[0].message_id == second.message_id
    consumer.ack(got[0])


def test_under_load_a_consumer_fetches_a_quarter_of_its_slots_at_a_time(
    make_broker: Callable[..., WakingRedisBroker],
) -> None:
    # Given a consumer (prefetch 8) holding 8 unacknowledged messages, 12 more queued
    broker = make_broker(max_block_s=0.05)
    sender = declare_recorder(make_broker(), Runs())
    sent = [sender.send(f"m{n}") for n in range(20)]
    consumer = broker.consume(QUEUE, prefetch=8, timeout=50)
    held = [next(consumer) for _ in range(8)]
    assert [m.message_id for m in held] == [m.message_id for m in sent[:8]]

    # When one is acknowledged, the consumer fetches nothing: one slot is not a batch
    consumer.ack(held[0])
    assert next(consumer) is None
    assert consumer.message_cache == []

    # When a second is acknowledged, it fetches two messages in one call
    consumer.ack(held[1])
    taken = [next(consumer), next(consumer)]
    assert [m.message_id for m in taken] == [m.message_id for m in sent[8:10]]
    for message in held[2:] + taken:
        consumer.ack(message)


def test_under_load_acks_go_together_with_the_next_fetch_and_an_idle_consumers_at_once(
    make_broker: Callable[..., WakingRedisBroker], redis_namespace: str
) -> None:
    # Given a consumer (prefetch 4) holding 4 messages of 6
    broker = make_broker(max_block_s=LONG_WAIT_S)
    sender = declare_recorder(make_broker(), Runs())
    for n in range(6):
        sender.send(f"m{n}")
    consumer = broker.consume(QUEUE, prefetch=4, timeout=int(LONG_WAIT_S * 1000))
    held = [next(consumer) for _ in range(4)]

    # When two are acknowledged, their slots are free but the acks not yet sent
    consumer.ack(held[0])
    consumer.ack(held[1])
    assert leftovers(broker.client, redis_namespace) == {"stored": 6, "queued": 2, "unacked": 4}

    # Then the next fetch sends both acks and takes the last two messages
    taken = [next(consumer), next(consumer)]
    assert all(m is not None for m in taken)
    assert leftovers(broker.client, redis_namespace) == {"stored": 4, "queued": 0, "unacked": 4}

    # When the consumer waits for work, an ack is sent at once
    for message in held[2:] + taken[:1]:
        consumer.ack(message)
    broker.client.delete(broker.wakeup_key(QUEUE))  # the sends' tokens would wake it
    waiter = threading.Thread(target=lambda: next(consumer), daemon=True)
    waiter.start()
    name = broker.client.client_getname()
    wait_for(lambda: blocked_in_blpop(broker.client, name), what="the consumer to block")
    consumer.ack(taken[1])
    assert leftovers(broker.client, redis_namespace) == {"stored": 0, "queued": 0, "unacked": 0}
    sender.send("wake")
    waiter.join(20)


def test_a_closing_consumer_sends_its_pending_acks(
    make_broker: Callable[..., WakingRedisBroker], redis_namespace: str
) -> None:
    broker = make_broker(max_block_s=LONG_WAIT_S)
    sender = declare_recorder(make_broker(), Runs())
    for n in range(3):
        sender.send(f"m{n}")
    consumer = broker.consume(QUEUE, prefetch=8, timeout=int(LONG_WAIT_S * 1000))
    held = [next(consumer) for _ in range(3)]
    for message in held:
        consumer.ack(message)
    consumer.close()
    assert leftovers(broker.client, redis_namespace) == {"stored": 0, "queued": 0, "unacked": 0}


def test_a_message_sent_without_a_token_is_still_delivered(
    make_broker: Callable[..., WakingRedisBroker], redis_namespace: str
) -> None:
    # Given a waking consumer with a short wait, and a plain Dramatiq producer
    broker = make_broker()
    plain = RedisBroker(url=REDIS_URL, namespace=redis_namespace, middleware=[])
    plain.declare_queue(QUEUE)
    sent = declare_recorder(plain, Runs()).send("no token")
    consumer = broker.consume(QUEUE, prefetch=1, timeout=50)

    # When the consumer keeps asking
    got = wait_for(lambda: next(consumer), what="the message without a token")

    # Then it gets the message the producer sent without waking anyone
    assert got.message_id == sent.message_id
    assert broker.client.llen(broker.wakeup_key(QUEUE)) == 0
    consumer.ack(got)
    plain.close()


def test_what_it_enqueues_a_plain_dramatiq_consumer_runs(
    make_broker: Callable[..., WakingRedisBroker], redis_namespace: str
) -> None:
    # Given a message enqueued by the waking broker
    sent = declare_recorder(make_broker(), Runs()).send("stored as dramatiq stores it")

    # When Dramatiq's own Redis consumer fetches and acknowledges it
    plain = RedisBroker(url=REDIS_URL, namespace=redis_namespace, middleware=[])
    plain.declare_queue(QUEUE)
    consumer = plain.consume(QUEUE, prefetch=1, timeout=50)
    got = wait_for(lambda: next(consumer), what="the message in Dramatiq's format")
    consumer.ack(got)

    # Then it is the same message, and nothing of it is left in Redis
    assert got.message_id == sent.message_id
    assert got.args == ("stored as dramatiq stores it",)
    assert leftovers(plain.client, redis_namespace) == {"stored": 0, "queued": 0, "unacked": 0}
    plain.close()


def test_a_token_without_a_message_costs_one_empty_fetch(
    make_broker: Callable[..., WakingRedisBroker],
) -> None:
    # Given a token left on an empty queue
    broker = make_broker(max_block_s=LONG_WAIT_S)
    broker.wake(QUEUE, 1)
    consumer = broker.consume(QUEUE, prefetch=1, timeout=int(LONG_WAIT_S * 1000))

    # When the consumer looks for a message
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(next(consumer)), daemon=True)
    waiter.start()

    # Then it takes the token, finds nothing and says so instead of blocking
    wait_for(lambda: not waiter.is_alive(), timeout=20, what="the consumer to give up")
    assert got == [None]
    assert broker.client.llen(broker.wakeup_key(QUEUE)) == 0


def test_a_busy_queue_keeps_at_most_the_configured_tokens(
    make_broker: Callable[..., WakingRedisBroker],
) -> None:
    # Given a broker keeping at most 5 tokens per queue
    broker = make_broker(wakeup_tokens=5)
    sender = declare_recorder(broker, Runs())

    # When 50 messages are sent with nobody consuming
    for n in range(50):
        sender.send(f"m{n}")

    # Then the wake-up list stays at 5 while all 50 messages wait in the queue
    assert broker.client.llen(broker.wakeup_key(QUEUE)) == 5
    assert broker.client.llen(f"{broker.namespace}:{QUEUE}") == 50


def test_a_stopped_worker_hands_over_and_every_message_runs_once(
    make_broker: Callable[..., WakingRedisBroker], redis_namespace: str
) -> None:
    # Given a worker in the middle of 200 slow messages
    sender = declare_recorder(make_broker(), Runs())
    keys = [f"m{n}" for n in range(200)]
    for key in keys:
        sender.send(key)
    runs = Runs()
    first = make_broker()
    declare_recorder(first, runs, sleep_s=0.05)
    worker = dramatiq.Worker(first, worker_threads=4, worker_timeout=100)
    worker.start()
    wait_for(lambda: runs.total() >= 8, what="the first worker to run some")

    # When it stops gracefully, and another worker takes over
    worker.stop()
    assert runs.total() < len(keys)
    second = make_broker()
    declare_recorder(second, runs)
    successor = dramatiq.Worker(second, worker_threads=4, worker_timeout=100)
    successor.start()

    # Then every message ran exactly once, and none is left in Redis
    wait_for(lambda: runs.total() >= len(keys), timeout=60, what="the rest to run")
    successor.stop()
    assert set(runs.counts) == set(keys)
    assert set(runs.counts.values()) == {1}
    assert leftovers(sender.broker.client, redis_namespace) == {
        "stored": 0,
        "queued": 0,
        "unacked": 0,
    }


def test_closing_a_consumer_gives_back_what_it_fetched_but_never_handed_out(
    make_broker: Callable[..., WakingRedisBroker], redis_namespace: str
) -> None:
    # Given a consumer that fetched three messages and handed out one
    broker = make_broker()
    sender = declare_recorder(broker, Runs())
    sent = [sender.send(f"m{n}") for n in range(3)]
    consumer = broker.consume(QUEUE, prefetch=3, timeout=100)
    taken = next(consumer)
    assert taken.message_id == sent[0].message_id

    # When it is closed (a stopping worker closes its consumers)
    consumer.close()

    # Then the two it never handed out are queued again; only the one taken stays unacked
    assert leftovers(broker.client, redis_namespace) == {"stored": 3, "queued": 2, "unacked": 1}
    successor = broker.consume(QUEUE, prefetch=3, timeout=100)
    again = [wait_for(lambda: next(successor), what="a requeued message") for _ in range(2)]
    assert {m.message_id for m in again} == {m.message_id for m in sent[1:]}


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="wakeup_tokens"):
        WakingRedisBroker(url=REDIS_URL, wakeup_tokens=0)
    with pytest.raises(ValueError, match="max_block_s"):
        WakingRedisBroker(url=REDIS_URL, max_block_s=0)


def test_the_waking_broker_is_the_default_and_the_setting_turns_it_off(redis_namespace):
    from runtime.settings import Settings
    from runtime.worker.broker import build_broker

    url, secret = "redis://127.0.0.1:6379/0", PRODUCTION_SECRET_KEY
    on = build_broker(
        Settings.from_env(broker_url=url, redis_namespace=redis_namespace, secret_key=secret)
    )
    off = build_broker(
        Settings.from_env(
            broker_url=url,
            redis_namespace=redis_namespace,
            redis_consumer_wakeup=False,
            secret_key=secret,
        )
    )
    try:
        assert isinstance(on, WakingRedisBroker)
        assert type(off).__name__ == "RedisBroker"
    finally:
        on.close()
        off.close()


def test_enqueue_many_keeps_each_queues_messages_in_order_one_script_call_per_queue(
    make_broker: Callable[..., WakingRedisBroker],
) -> None:
    # Given messages of two queues, interleaved, and a wake-up cap of 3
    broker = make_broker(wakeup_tokens=3)
    broker.declare_queue("other")
    sender = declare_recorder(broker, Runs())
    messages = [
        sender.message(f"m{n}").copy(queue_name=QUEUE if n % 2 else "other") for n in range(10)
    ]
    executed: list[int] = []
    original = redis.client.Pipeline.execute
    asked_first: list[Any] = []

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        executed.append(len(self.command_stack))
        return original(self, *args, **kwargs)

    def immediate(self: Any, *args: Any, **options: Any) -> Any:
        asked_first.append(args)
        return original_immediate(self, *args, **options)

    original_immediate = redis.client.Pipeline.immediate_execute_command

    # When they are enqueued at once
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(redis.client.Pipeline, "execute", counted)
        patch.setattr(redis.client.Pipeline, "immediate_execute_command", immediate)
        broker.enqueue_many(messages)

    # Then one round trip held one script call per queue, with no SCRIPT EXISTS before it
    assert executed == [2]
    assert asked_first == []
    # and each queue holds its own messages, in the order they were given, bodies stored
    for queue_name, expected in ((QUEUE, [1, 3, 5, 7, 9]), ("other", [0, 2, 4, 6, 8])):
        assert stored_args(broker, queue_name) == [f"m{n}" for n in expected]
        # and its wake-up list got a token per message, kept to the cap
        assert broker.client.llen(broker.wakeup_key(queue_name)) == 3


def test_enqueue_many_stores_every_message_in_order_in_one_script_call_and_wakes(
    make_broker: Callable[..., WakingRedisBroker], redis_namespace: str
) -> None:
    # Given a consumer blocked on an empty queue, and a producer whose round trips are counted
    broker = make_broker(max_block_s=LONG_WAIT_S, wakeup_tokens=8)
    producer = make_broker(wakeup_tokens=8)
    sender = declare_recorder(producer, Runs())
    consumer = broker.consume(QUEUE, prefetch=300, timeout=int(LONG_WAIT_S * 1000))
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(next(consumer)), daemon=True)
    waiter.start()
    name = broker.client.client_getname()
    wait_for(lambda: blocked_in_blpop(broker.client, name), what="the consumer to block")
    executed: list[int] = []
    original = redis.client.Pipeline.execute

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        executed.append(len(self.command_stack))
        return original(self, *args, **kwargs)

    # When 250 messages are enqueued at once
    messages = [sender.message(f"m{n}") for n in range(250)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(redis.client.Pipeline, "execute", counted)
        sent = producer.enqueue_many(messages)

    # Then they went in one round trip, one script call, the consumer woke, and they come
    # out in order
    assert executed == [1]
    assert [m.message_id for m in sent] == [m.message_id for m in messages]
    assert len({m.options["redis_message_id"] for m in sent}) == 250
    wait_for(lambda: not waiter.is_alive(), timeout=20, what="the consumer to wake")
    received = [got[0]]
    while len(received) < 250:
        message = next(consumer)
        if message is not None:
            received.append(message)
    assert [m.args[0] for m in received] == [f"m{n}" for n in range(250)]
    # The wake-up list stays within its cap however many were sent
    assert producer.client.llen(producer.wakeup_key(QUEUE)) <= 8
    for message in received:
        consumer.ack(message)


def test_enqueue_many_after_the_scripts_were_flushed_stores_each_message_once(
    make_broker: Callable[..., WakingRedisBroker],
) -> None:
    # Given a broker that has sent before, and Redis losing its scripts (a restart, a flush)
    broker = make_broker(wakeup_tokens=3)
    broker.declare_queue("other")
    sender = declare_recorder(broker, Runs())
    broker.enqueue_many([sender.message("before")])
    broker.client.script_flush()
    messages = [
        sender.message(f"m{n}").copy(queue_name=QUEUE if n % 2 else "other") for n in range(6)
    ]

    # When messages of two queues are enqueued at once
    broker.enqueue_many(messages)

    # Then each queue holds each of its messages once, in order: the refused calls were
    # sent again after the script was loaded, and only those
    for queue_name, expected in (
        (QUEUE, ["before", "m1", "m3", "m5"]),
        ("other", ["m0", "m2", "m4"]),
    ):
        assert stored_args(broker, queue_name) == expected


def test_enqueue_many_raises_when_redis_refuses_a_call(
    make_broker: Callable[..., WakingRedisBroker], redis_namespace: str
) -> None:
    # Given a queue's bodies key holding a string, so the script's HSET fails there
    broker = make_broker()
    sender = declare_recorder(broker, Runs())
    broker.client.set(f"{broker.namespace}:{QUEUE}.msgs", "not a hash")

    # When a message is enqueued, Then the error reaches the caller (who sends again)
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        broker.enqueue_many([sender.message("m")])
