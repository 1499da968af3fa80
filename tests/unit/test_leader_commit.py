"""Group commit led by its callers (`runtime.store.leader_commit`): who writes, and what."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from runtime.errors import StoreUnavailable
from runtime.store.group_commit import CommitterClosed, Failed
from runtime.store.leader_commit import LeaderCommitter


class Writer:
    """Records each batch and the thread that wrote it; the first batch may be held open,
    and the batch numbered `fail_batch` (from 1) raises."""

    def __init__(self, *, hold_first: bool = False, fail_batch: int | None = None) -> None:
        self.fail_batch = fail_batch
        self.batches: list[list[int]] = []
        self.threads: list[int] = []
        self.first_started = threading.Event()
        self.release_first = threading.Event()
        if not hold_first:
            self.release_first.set()

    def __call__(self, requests: Sequence[int]) -> list[Any]:
        self.batches.append(list(requests))
        self.threads.append(threading.get_ident())
        if len(self.batches) == 1:
            self.first_started.set()
            assert self.release_first.wait(10), "the test never released the first write"
        if len(self.batches) == self.fail_batch:
            raise StoreUnavailable("the store is unreachable")
        return [Failed(ValueError(n)) if n < 0 else n * 10 for n in requests]


def wait_until(condition: Any) -> None:
    done = threading.Event()
    for _ in range(1000):
        if condition():
            return
        done.wait(0.005)
    raise AssertionError("timed out")


def queued(committer: LeaderCommitter) -> int:
    with committer._lock:
        return len(committer._queued)


def submitted_during_a_write(
    committer: LeaderCommitter, writer: Writer, pool: ThreadPoolExecutor, values: Sequence[int]
) -> tuple[Future[Any], list[Future[Any]]]:
    """Submit 1 and hold its write open; submit `values`, each queued before the next; end
    the write. The futures of 1 and of `values`."""
    first = pool.submit(committer.submit, 1)
    assert writer.first_started.wait(10)
    later = []
    for n, value in enumerate(values, start=1):
        later.append(pool.submit(committer.submit, value))
        wait_until(lambda n=n: queued(committer) >= n)
    writer.release_first.set()
    return first, later


def test_a_lone_request_is_written_by_its_own_thread():
    writer = Writer()
    committer = LeaderCommitter(writer)

    assert committer.submit(4) == 40

    assert writer.batches == [[4]]
    assert writer.threads == [threading.get_ident()]


def test_requests_that_arrive_during_a_write_share_the_next_one():
    # Given a write in flight, during which four more threads submit
    writer = Writer(hold_first=True)
    committer = LeaderCommitter(writer)
    with ThreadPoolExecutor(max_workers=5) as pool:
        first, later = submitted_during_a_write(committer, writer, pool, [2, 3, 4, 5])

        # Then each thread has its own outcome, and the four went in one batch,
        # written by one of their own threads, not the first one's
        assert first.result(10) == 10
        assert [f.result(10) for f in later] == [20, 30, 40, 50]
    assert writer.batches == [[1], [2, 3, 4, 5]]
    assert writer.threads[1] != writer.threads[0]
    assert (committer.batches, committer.requests) == (2, 5)


def test_a_refused_request_fails_alone():
    writer = Writer(hold_first=True)
    committer = LeaderCommitter(writer)
    with ThreadPoolExecutor(max_workers=3) as pool:
        first, (refused, other) = submitted_during_a_write(committer, writer, pool, [-2, 3])

        assert first.result(10) == 10
        with pytest.raises(ValueError):
            refused.result(10)
        assert other.result(10) == 30
    assert writer.batches == [[1], [-2, 3]]


def test_a_failed_batch_fails_each_of_its_requests_and_the_lead_passes_on():
    # Given a writer whose second batch raises
    writer = Writer(hold_first=True, fail_batch=2)
    committer = LeaderCommitter(writer)
    with ThreadPoolExecutor(max_workers=4) as pool:
        first, failing = submitted_during_a_write(committer, writer, pool, [2, 3])
        assert first.result(10) == 10
        for future in failing:
            with pytest.raises(StoreUnavailable):
                future.result(10)

    # Then the next request is written: nothing was left holding the lead
    assert committer.submit(7) == 70
    assert writer.batches == [[1], [2, 3], [7]]


def test_a_batch_takes_at_most_max_batch_requests():
    writer = Writer(hold_first=True)
    committer = LeaderCommitter(writer, max_batch=2)
    with ThreadPoolExecutor(max_workers=6) as pool:
        first, later = submitted_during_a_write(committer, writer, pool, [2, 3, 4, 5, 6])
        assert [f.result(10) for f in [first, *later]] == [10, 20, 30, 40, 50, 60]
    assert writer.batches == [[1], [2, 3], [4, 5], [6]]


def test_close_waits_for_the_write_in_flight_then_refuses_new_requests():
    writer = Writer(hold_first=True)
    committer = LeaderCommitter(writer)
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(committer.submit, 1)
        assert writer.first_started.wait(10)
        closing = pool.submit(committer.close)
        wait_until(lambda: not committer.open)
        assert not closing.done()  # still writing

        writer.release_first.set()
        closing.result(10)
        assert first.result(10) == 10
    with pytest.raises(CommitterClosed):
        committer.submit(2)
    assert writer.batches == [[1]]
