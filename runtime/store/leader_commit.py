"""Group commit led by its callers: no committer thread; the first thread writes.

`GroupCommitter` (runtime/store/group_commit.py) hands every request to a committer
thread and waits for its answer: two thread wake-ups per request, even for a request
that arrives alone. The gateway's accepts mostly do arrive alone below a few hundred a
second: in-process, one at a time, an accept's INSERT took 1.05 ms p50 through the
committer thread against 0.59 ms by the single statement. In-process that was the batch
statement (a batch of one now goes by the single INSERT: `Invocations._write_accepts`);
over HTTP the hand-offs cost about as much again (docs/perf/README.md, "Issue 15, eighth
pass").

Here the callers commit. A thread that submits while no write is in flight leads: it
writes its own request with whatever has queued meanwhile (up to `max_batch`), in its
own thread, and answers the others. A thread that submits during a write queues and
waits. When a write ends, its leader passes the lead to the first request queued, whose
thread writes everything queued by then. A lone request is written with no hand-off at
all; under load, the requests that arrive during one commit share the next one, as they
did with a committer thread.

The guarantees are `GroupCommitter`'s: no thread is answered before the statement that
wrote its request committed; a request the writer refuses (`Failed`) fails alone; a
writer that raises fails its whole batch, and the next batch goes on.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Sequence
from typing import Any

from runtime.store.group_commit import MAX_BATCH, CommitterClosed, Waiter, write_batch_into


class _Request(Waiter):
    """A waiting request that may also be woken to write the next batch itself."""

    __slots__ = ("lead",)

    def __init__(self, request: Any) -> None:
        super().__init__(request)
        #: Set before `answer` wakes its thread when that thread is to write the next batch.
        self.lead = False


class LeaderCommitter:
    """Concurrent callers' requests written in batches, each batch by one of the callers.

    `write` takes a batch of requests and returns their outcomes in order (a `Failed` one
    for a request it could not write), or raises for the whole batch.
    """

    def __init__(
        self, write: Callable[[Sequence[Any]], list[Any]], *, max_batch: int = MAX_BATCH
    ) -> None:
        self.write = write
        self.max_batch = max_batch
        self._lock = threading.Lock()
        #: Signalled when the last write in flight ends with nothing queued (for `close`).
        self._idle = threading.Condition(self._lock)
        self._queued: collections.deque[_Request] = collections.deque()
        #: True from a leader's start until a write ends with nothing queued: while it is,
        #: a new request queues, and the first queued is sure to be given the lead.
        self._writing = False
        self._closed = False
        self.batches = 0
        self.requests = 0

    @property
    def open(self) -> bool:
        """False once `close` was called: requests go the single way then."""
        return not self._closed

    def submit(self, value: Any) -> Any:
        """Write `value` with the requests of the same batch; its outcome, or the batch's error.

        Raises `CommitterClosed` once `close` was called.
        """
        request = _Request(value)
        with self._lock:
            if self._closed:
                raise CommitterClosed("the group committer is closed")
            self._queued.append(request)
            leads = not self._writing
            self._writing = True
        if not leads:
            request.wait()
            if not request.lead:
                return request.result()
        self._lead()
        return request.result()

    def close(self) -> None:
        """Refuse new requests; return once the writes in flight and queued are done."""
        with self._lock:
            self._closed = True
            while self._writing:
                self._idle.wait()

    def _lead(self) -> None:
        """Write the queued requests (this thread's own first) and pass the lead on."""
        with self._lock:
            batch = [self._queued.popleft() for _ in range(min(len(self._queued), self.max_batch))]
        try:
            self._write(batch)
        finally:
            with self._lock:
                successor = self._queued[0] if self._queued else None
                if successor is None:
                    self._writing = False
                    if self._closed:
                        self._idle.notify_all()
                else:
                    successor.lead = True
            if successor is not None:
                successor.answer()  # wakes it to lead
            # The first of the batch is this thread's own request: it is not waiting.
            for request in batch[1:]:
                request.answer()

    def _write(self, batch: list[_Request]) -> None:
        write_batch_into(self.write, batch)
        self.batches += 1
        self.requests += len(batch)
