"""What waits in the broker's queues, read from the broker itself.

The metrics and the dashboard show it; the dispatcher's sweep uses the age of each
queue's oldest waiting message to tell a message the broker lost from one still waiting
behind a backlog.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import q_name


@dataclasses.dataclass(frozen=True)
class QueueDepth:
    """A broker queue: messages waiting, and when the oldest of them was enqueued."""

    queue: str
    length: int
    #: Epoch seconds; None for an empty queue.
    oldest_enqueued_at: float | None

    def oldest_age_s(self, now: float) -> float:
        return 0.0 if self.oldest_enqueued_at is None else max(0.0, now - self.oldest_enqueued_at)


def _enqueued_at(data: bytes | None) -> float | None:
    if not data:
        return None
    timestamp = json.loads(data).get("message_timestamp")
    return None if timestamp is None else float(timestamp) / 1000


def queue_depths(broker: dramatiq.Broker) -> list[QueueDepth]:
    """Each declared queue's waiting messages, read from the broker itself.

    Redis (Dramatiq's layout): `<namespace>:<queue>` is a list of message ids, oldest
    first, and `<namespace>:<queue>.msgs` a hash of id -> message. The in-process
    broker keeps a `queue.Queue` per queue. Messages a worker has fetched but not yet
    finished are not waiting, so they are not counted.
    """
    queues = sorted({q_name(q) for q in broker.get_declared_queues()})
    if isinstance(broker, StubBroker):
        return [_stub_depth(broker, q) for q in queues]
    client: Any = getattr(broker, "client")  # noqa: B009 - RedisBroker is not typed
    namespace: str = getattr(broker, "namespace")  # noqa: B009
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.llen(f"{namespace}:{queue}")
        pipe.lindex(f"{namespace}:{queue}", 0)
    answers = pipe.execute()
    pipe = client.pipeline(transaction=False)
    heads = list(zip(queues, answers[::2], answers[1::2], strict=True))
    for queue, _length, head in heads:
        pipe.hget(f"{namespace}:{queue}.msgs", head or b"")
    messages = pipe.execute()
    return [
        QueueDepth(queue, int(length), _enqueued_at(data) if head else None)
        for (queue, length, head), data in zip(heads, messages, strict=True)
    ]


def _stub_depth(broker: StubBroker, queue: str) -> QueueDepth:
    waiting = broker.queues[queue]
    with waiting.mutex:
        length = len(waiting.queue)
        head = waiting.queue[0] if length else None
    return QueueDepth(queue, length, _enqueued_at(head))
