"""A clock that moves only when a test says so, for the store and the caches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

#: Where a `ManualClock` starts unless told otherwise: a fixed instant, so figures repeat.
DEFAULT_START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class ManualClock:
    """Called like `datetime.now(UTC)`; `advance` moves it."""

    def __init__(self, start: datetime = DEFAULT_START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
