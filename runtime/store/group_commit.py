"""Group commit: the worker threads of a process share one commit per batch.

A thread that claims an invocation or records a success puts its request in a queue and
waits. One committer thread per process takes the first request, then whatever else
arrives within the window (`FERRY_GROUP_COMMIT_MS`), writes them all with one commit
(`runtime.store.claim_batches.write_batch`) and answers each thread with its own outcome.
On PostgreSQL the commit, not the row, is what costs: about 2,000 commits/s against some
30,000 rows/s in batches on the benchmark's machine (docs/perf/README.md).

The guarantees of the single statements hold (docs/architecture.md, "Group commit"):

- a request that loses (the invocation already running or finished, the lease lost) is
  refused on its own; the batch's other rows are written;
- no thread is answered before the statement that wrote its request committed: a process
  killed with a batch in flight leaves its invocations claimable (sent again by the
  sweep) or its attempts running under a lease that lapses (reclaimed by the sweep);
- a statement that fails gives each thread whose request it held the error
  (`StoreUnavailable` for an outage; the writer returns it as `Failed`), which the thread
  raises as the single path would; a writer that raises fails the whole batch.

A request may also be handed over without waiting (`submit_later`): the thread gets a
future and goes on, and the committer answers the future once the batch is written. The
worker's successes go this way (`Claims.succeed_later`): a thread that ran its handler
has nothing left to wait for, so it takes its next message while its success waits for
the window. Such a committer sleeps through the window and then takes what came
(`sleep_through_window`), rather than waking for every request as it arrives.

The committer starts with the first request of the process (a forked child starts its
own) and stops with `close`, after writing what it holds.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

#: Requests one batch takes at most; the rest wait for the next one.
MAX_BATCH = 256


class CommitterClosed(RuntimeError):
    """The committer was closed (the process is stopping): write the request the single way."""


@dataclasses.dataclass(frozen=True)
class Failed:
    """An outcome of `write`: this request was not written; its thread raises `error`."""

    error: BaseException


class Waiter:
    """A request and, once its batch is written, its outcome or error."""

    __slots__ = ("_unanswered", "error", "future", "outcome", "request")

    def __init__(self, request: Any, future: concurrent.futures.Future[Any] | None = None) -> None:
        self.request = request
        self.outcome: Any = None
        self.error: BaseException | None = None
        #: Answered instead of `wait` for a request handed over without waiting.
        self.future = future
        #: Held until the request is answered, for a thread that waits: a lock taken here
        #: and released by the committer is the cheapest one-shot signal (an `Event` is a
        #: `Condition` and two locks, some 4 µs to build, once per invocation).
        self._unanswered: threading.Lock | None = None
        if future is None:
            self._unanswered = threading.Lock()
            self._unanswered.acquire()

    def wait(self) -> None:
        """Block until `answer` (a waiting request's thread)."""
        assert self._unanswered is not None, "a request handed over without waiting"
        self._unanswered.acquire()

    def result(self) -> Any:
        """The outcome, or the error raised (a waiting request's thread, once answered)."""
        if self.error is not None:
            raise self.error
        return self.outcome

    def answer(self) -> None:
        if self.future is None:
            if self._unanswered is not None:
                self._unanswered.release()
        elif self.error is not None:
            self.future.set_exception(self.error)
        else:
            self.future.set_result(self.outcome)


class GroupCommitter:
    """One thread that writes the requests of this process's threads in batches.

    `write` takes a batch of requests and returns their outcomes in order (a `Failed` one
    for a request it could not write), or raises for the whole batch.
    """

    def __init__(
        self,
        write: Callable[[Sequence[Any]], list[Any]],
        window_s: float,
        *,
        max_batch: int = MAX_BATCH,
        sleep_through_window: bool = False,
    ) -> None:
        self.write = write
        self.window_s = window_s
        self.max_batch = max_batch
        self.sleep_through_window = sleep_through_window
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Waiter | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._closed = False
        #: Batches written and requests answered, for tests and diagnostics.
        self.batches = 0
        self.requests = 0

    def submit(self, request: Any) -> Any:
        """Wait for the batch that writes `request`; its outcome, or the batch's error.

        Raises `CommitterClosed` once `close` was called, as `submit_later` does.
        """
        waiter = Waiter(request)
        self._put(waiter)
        waiter.wait()
        return waiter.result()

    def submit_later(self, request: Any) -> concurrent.futures.Future[Any]:
        """Hand `request` over and return at once: a future of its outcome (or error)."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._put(Waiter(request, future))
        return future

    def _put(self, waiter: Waiter) -> None:
        with self._lock:
            if self._closed:
                raise CommitterClosed("the group committer is closed")
            if self._thread is None or self._pid != os.getpid():
                self._start()
            self._queue.put(waiter)

    @property
    def open(self) -> bool:
        """False once `close` was called: requests go the single way then."""
        return not self._closed

    def close(self) -> None:
        """Stop the committer once the requests already queued are written."""
        with self._lock:
            self._closed = True
            thread = self._thread
            if thread is None or self._pid != os.getpid():
                return
            self._queue.put(None)
        thread.join()

    def _start(self) -> None:
        # A forked child has the parent's queue but not its thread: it starts its own.
        self._queue = queue.SimpleQueue()
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="ferry-group-commit", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._collect(first)
            self._write(batch)
            if stop:
                return

    def _collect(self, first: Waiter) -> tuple[list[Waiter], bool]:
        """`first`, whatever arrives within the window, then whatever is queued (up to
        `max_batch`); and whether the committer is to stop after this batch.
        """
        batch = [first]
        deadline = time.monotonic() + self.window_s
        if self.sleep_through_window:
            # One wake-up per batch, not one per request: nobody waits for the answer.
            time.sleep(self.window_s)
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                if remaining > 0 and not self.sleep_through_window:
                    waiter = self._queue.get(timeout=remaining)
                else:
                    waiter = self._queue.get_nowait()
            except queue.Empty:
                break
            if waiter is None:
                return batch, True
            batch.append(waiter)
        return batch, False

    def _write(self, batch: list[Waiter]) -> None:
        # The committer goes on with the next batch whatever happened to this one.
        write_batch_into(self.write, batch)
        self.batches += 1
        self.requests += len(batch)
        for waiter in batch:
            waiter.answer()


def write_batch_into(write: Callable[[Sequence[Any]], list[Any]], batch: Sequence[Any]) -> None:
    """Run `write` over the batch's requests; set each one's `outcome` or `error`.

    Each item has `request`, `outcome` and `error`. A `Failed` outcome is that request's
    error; a `write` that raises gives every request its error, since nothing of the
    batch is known to be written.
    """
    try:
        outcomes = write([item.request for item in batch])
        for item, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Failed):
                item.error = outcome.error
            else:
                item.outcome = outcome
    except BaseException as ex:
        for item in batch:
            item.error = ex
