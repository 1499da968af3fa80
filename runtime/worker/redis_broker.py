"""A Redis broker whose idle consumers wake when a message arrives, instead of polling.

Dramatiq's Redis consumer never blocks on Redis: when a fetch comes back empty it
sleeps `compute_backoff(misses)` (5 ms doubling up to the worker timeout) and fetches
again, so a message sent to an idle worker waits on average half that cap before it is
even seen (docs/perf/README.md has the figures). It also sleeps the same way when every
prefetch slot is taken, so worker threads can run dry while the consumer sleeps.

`WakingRedisBroker` keeps Dramatiq's storage format, its script for fetch, ack, nack,
requeue and maintenance, and its delivery guarantees (fetched messages sit in the
consumer's ack set until acked), and changes how messages are announced and awaited:

- `do_enqueue` stores the message exactly as Dramatiq's script does (body in the
  `<q>.msgs` hash, id on the `<q>` list) and, in the same script, pushes a token onto a
  per-queue wake-up list (`<ns>:__wakeup__.<q>`, trimmed to `wakeup_tokens` entries, so
  a busy queue does not grow it): one round trip, as before. Unlike Dramatiq's script
  it does not refresh the sender's heartbeat nor roll for maintenance there; consumers'
  fetches still do both;
- a consumer whose fetch came back empty blocks on `BLPOP` of that list for up to its
  timeout, and fetches again as soon as a token arrives;
- a consumer whose prefetch slots are all taken waits on a condition that `ack`/`nack`
  signal, instead of sleeping; under load it fetches a quarter of its slots at a time
  (Dramatiq's fetches as soon as one is free: a script call per message);
- a closing consumer requeues what it fetched but never handed out, where Dramatiq's
  leaves it in its ack set until maintenance finds the process dead;
- under load, acks are written in batches: an ack frees its slot at once and is sent
  with the others pending before the consumer's next fetch, in one script call that does
  what Dramatiq's ack does for each (`_ACK_MANY`); an idle consumer's acks go at once.
  An ack still pending when a process dies leaves its message in the ack set, as a
  process killed just before its ack does: maintenance requeues it, and the claim skips
  the delivery of a finished invocation.

A token is a hint, never the message: a token with no message behind it costs one empty
fetch, and a message with no token (sent by a plain `RedisBroker`, or requeued by
Dramatiq's maintenance) is still fetched when the wait times out, as before.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Sequence
from typing import Any
from uuid import uuid4

import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message
from redis.exceptions import NoScriptError

#: Default longest single blocking wait, in seconds. It must stay below the Redis client's
#: `socket_timeout` (Ferry uses 5 s), or the client would give up on a healthy BLPOP.
DEFAULT_MAX_BLOCK_S = 1.0
#: Default cap on a wake-up list: how many idle consumers one burst can wake at once.
DEFAULT_WAKEUP_TOKENS = 64


#: Dramatiq's "enqueue" (the message body in `<queue>.msgs`, its id on the `<queue>`
#: list) for each message of one queue, plus a token per message on the wake-up list,
#: kept to its cap. ARGV is the cap, then each message's id and body.
_ENQUEUE_AND_WAKE = """
local cap = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
    redis.call("hset", KEYS[2], ARGV[i], ARGV[i + 1])
    redis.call("rpush", KEYS[1], ARGV[i])
end
for i = 1, math.min((#ARGV - 1) / 2, cap) do
    redis.call("lpush", KEYS[3], "1")
end
redis.call("ltrim", KEYS[3], 0, cap - 1)
"""

#: Dramatiq's "ack" for each message id in ARGV: out of the consumer's ack set (KEYS[1])
#: and, if it was there, its body out of `<queue>.msgs` (KEYS[2]).
_ACK_MANY = """
for i = 1, #ARGV do
    if redis.call("srem", KEYS[1], ARGV[i]) > 0 then
        redis.call("hdel", KEYS[2], ARGV[i])
    end
end
"""


class WakingRedisBroker(RedisBroker):
    """Dramatiq's `RedisBroker`, whose idle consumers block until a message is enqueued."""

    def __init__(
        self,
        *,
        wakeup_tokens: int = DEFAULT_WAKEUP_TOKENS,
        max_block_s: float = DEFAULT_MAX_BLOCK_S,
        **options: Any,
    ) -> None:
        if wakeup_tokens < 1:
            raise ValueError("wakeup_tokens must be at least 1")
        if max_block_s <= 0:
            raise ValueError("max_block_s must be positive")
        super().__init__(**options)  # type: ignore[no-untyped-call]
        self.wakeup_tokens = wakeup_tokens
        self.max_block_s = max_block_s
        self._enqueue_and_wake = self.client.register_script(_ENQUEUE_AND_WAKE)
        self._ack_many = self.client.register_script(_ACK_MANY)

    @property
    def consumer_class(self) -> type[WakingConsumer]:
        return WakingConsumer

    def wakeup_key(self, queue_name: str) -> str:
        return f"{self.namespace}:__wakeup__.{queue_name}"

    def _queue_keys(self, queue_name: str) -> list[str]:
        """The keys `_ENQUEUE_AND_WAKE` writes: the queue, its bodies, its wake-up list."""
        return [
            f"{self.namespace}:{queue_name}",
            f"{self.namespace}:{queue_name}.msgs",
            self.wakeup_key(queue_name),
        ]

    def do_enqueue(self, queue_name: str, message_id: str, data: bytes) -> Any:
        """Store the message as Dramatiq does and leave a wake-up token, in one round trip."""
        return self._enqueue_and_wake(
            keys=self._queue_keys(queue_name), args=[self.wakeup_tokens, message_id, data]
        )

    def enqueue_many(self, messages: Sequence[Message[Any]]) -> list[Message[Any]]:
        """Enqueue messages as `enqueue` does, all in one round trip.

        The messages of each queue are stored by one call of the script `do_enqueue` runs
        for one (each leaves its wake-up token, the list kept to its cap), in order; the calls
        of all queues go in one pipeline. The enqueue hooks run for each message, the
        "before" ones before anything is sent. A Redis error raises after the round trip:
        then any of them may or may not be stored, and the caller sends them all again (a
        message delivered twice runs once: the claim sees to that).
        """
        sent = []
        by_queue: dict[str, list[Any]] = {}
        for message in messages:
            message = message.copy(options={"redis_message_id": str(uuid4())})
            self.emit_before("enqueue", message, None)
            by_queue.setdefault(message.queue_name, []).extend(
                (message.options["redis_message_id"], message.encode())
            )
            sent.append(message)
        if by_queue:
            self._run_enqueue_scripts(
                [
                    (*self._queue_keys(q), self.wakeup_tokens, *stored)
                    for q, stored in by_queue.items()
                ]
            )
        for message in sent:
            self.emit_after("enqueue", message, None)
        return sent

    def _run_enqueue_scripts(self, calls: list[tuple[Any, ...]]) -> None:
        """Run `_ENQUEUE_AND_WAKE` once per call (its 3 keys, then its args) in one pipeline.

        By EVALSHA alone: redis-py's pipeline would first ask `SCRIPT EXISTS`, a round trip
        of its own on every send. A call refused with NOSCRIPT (Redis restarted or its
        scripts were flushed) did not run, so those calls are sent again once the script
        is loaded; the others ran, and are not.
        """
        script = self._enqueue_and_wake
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(script.sha, 3, *call)
        results = pipe.execute(raise_on_error=False)
        refused = [c for c, r in zip(calls, results, strict=True) if isinstance(r, NoScriptError)]
        failed = [
            r for r in results if isinstance(r, Exception) and not isinstance(r, NoScriptError)
        ]
        if failed:
            raise failed[0]
        if refused:
            script.sha = self.client.script_load(script.script)
            pipe = self.client.pipeline(transaction=False)
            for call in refused:
                pipe.evalsha(script.sha, 3, *call)
            pipe.execute()

    def ack_many(self, queue_name: str, redis_message_ids: Sequence[str]) -> None:
        """Acknowledge these messages of this broker's consumers of `queue_name`: one call."""
        keys = [
            f"{self.namespace}:__acks__.{self.broker_id}.{queue_name}",
            f"{self.namespace}:{queue_name}.msgs",
        ]
        self._ack_many(keys=keys, args=list(redis_message_ids))

    def wake(self, queue_name: str, count: int) -> None:
        """Leave up to `count` tokens for the consumers of `queue_name` (one round trip)."""
        key = self.wakeup_key(queue_name)
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(key, *(b"1" for _ in range(min(count, self.wakeup_tokens))))
        pipe.ltrim(key, 0, self.wakeup_tokens - 1)
        pipe.execute()

    def wait_for_wakeup(self, queue_name: str, timeout_s: float) -> bool:
        """Block until a token for `queue_name` arrives or `timeout_s` passes; whether one did."""
        timeout = max(0.001, min(timeout_s, self.max_block_s))
        return self.client.blpop([self.wakeup_key(queue_name)], timeout=timeout) is not None


class WakingConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, waiting on wake-up tokens and acks instead of sleeping."""

    broker: WakingRedisBroker

    def __init__(
        self, broker: WakingRedisBroker, queue_name: str, prefetch: int, timeout: int
    ) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        # Signalled by worker threads (they ack through this consumer) when a slot frees.
        self._slot_freed = threading.Condition()
        #: Acks of messages whose slots are free, not yet sent (redis message ids).
        self._pending_acks: list[str] = []
        #: Whether the consumer is blocked waiting for a message (its acks go at once).
        self._waiting_for_work = False
        #: While more than this many messages are out, wait for acks rather than fetch:
        #: at least a quarter of the slots' worth is then fetched in one call. The rest
        #: still out keep every thread busy (prefetch is twice the threads), so no
        #: thread waits for this.
        self._fetch_above = prefetch - max(1, prefetch // 4)

    def ack(self, message: MessageProxy) -> None:
        """Free the message's slot now; send the ack with the next fetch, or now if idle."""
        with self._slot_freed:
            self._pending_acks.append(message.options["redis_message_id"])
            self.queued_message_ids.discard(message.message_id)
            self._slot_freed.notify()
            idle = self._waiting_for_work
        if idle:
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                # Kept pending on failure: the consumer's next fetch sends them.
                self._flush_acks()

    def _flush_acks(self) -> None:
        """Send the pending acks in one call; on failure keep them for the next one."""
        with self._slot_freed:
            pending, self._pending_acks = self._pending_acks, []
        if not pending:
            return
        try:
            self.broker.ack_many(self.queue_name, pending)
        except BaseException:
            with self._slot_freed:
                self._pending_acks[:0] = pending
            raise

    def nack(self, message: MessageProxy) -> None:
        try:
            super().nack(message)  # type: ignore[no-untyped-call]
        finally:
            self._notify_slot()

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        requeued = list(messages)
        super().requeue(requeued)  # type: ignore[no-untyped-call]
        if requeued:
            # Another process's idle consumer can take them now rather than at its timeout.
            self.broker.wake(self.queue_name, len(requeued))

    def close(self) -> None:
        """Give back what was fetched but never handed to a worker thread.

        A stopping consumer thread leaves the rest of its last fetch here; Dramatiq's own
        consumer leaves those messages in its ack set, where only the maintenance of a
        dead broker (60 s without heartbeats) finds them again.
        """
        leftovers = [MessageProxy(Message.decode(d)) for d in self.message_cache if d is not None]
        self.message_cache = []
        try:
            self._flush_acks()
            self.requeue(leftovers)
        except (redis.ConnectionError, redis.TimeoutError) as ex:
            raise ConnectionClosed(ex) from None  # type: ignore[no-untyped-call]
        super().close()

    def _notify_slot(self) -> None:
        with self._slot_freed:
            self._slot_freed.notify()

    def __next__(self) -> MessageProxy | None:
        """The next message, or None after waiting up to the timeout for one."""
        try:
            if not self.message_cache:
                self._refill()
            while self.message_cache:
                data = self.message_cache.pop(0)
                if data is None:
                    # The id was in the queue but its body was gone (deleted meanwhile).
                    continue
                message = Message.decode(data)
                self.queued_message_ids.add(message.message_id)
                return MessageProxy(message)
            return None
        except (redis.ConnectionError, redis.TimeoutError) as ex:
            raise ConnectionClosed(ex) from None  # type: ignore[no-untyped-call]

    def _refill(self) -> None:
        timeout_s = self.timeout / 1000
        with self._slot_freed:
            if self.outstanding_message_count > self._fetch_above:
                # Too few slots free to fetch: wait for an ack rather than sleeping blind.
                self._slot_freed.wait(timeout=min(timeout_s, self.broker.max_block_s))
                if self.outstanding_message_count > self._fetch_above:
                    return
        self._flush_acks()
        room = self.prefetch - self.outstanding_message_count
        self.message_cache = self.broker.do_fetch(self.queue_name, room)
        if not self.message_cache:
            with self._slot_freed:
                self._waiting_for_work = True
            self._flush_acks()  # any that came in before the flag was up
            try:
                woken = self.broker.wait_for_wakeup(self.queue_name, timeout_s)
            finally:
                with self._slot_freed:
                    self._waiting_for_work = False
            if woken:
                self.message_cache = self.broker.do_fetch(self.queue_name, room)
