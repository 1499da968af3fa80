"""When a cron expression fires in a time zone, as UTC instants, across daylight-saving changes.

Cron fields describe wall-clock times. Ferry walks them with croniter on *naive* local
times (no zone arithmetic inside croniter) and maps each local time to UTC itself:

- a local time that exists once maps to its one instant;
- a local time skipped by a spring-forward change (02:30 when clocks jump from 02:00 to
  03:00) runs at the instant of the change, the first valid local time after the gap
  (03:00 local). Several skipped times of one schedule collapse into that one run;
- a local time repeated by a fall-back change (02:30 happens twice) runs once, in its
  first occurrence. A schedule whose hour field is `*` runs every hour, so it also runs
  in the second, repeated hour: both are real hours.

So a daily `30 2 * * *` in Europe/Prague runs exactly once on both change days: at
03:00 CEST on the spring-forward day and at 02:30 CEST (the first 02:30) on the
fall-back day.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterBadDateError, CroniterError

from runtime.errors import ConfigurationError

#: Local times are walked from this far before the start: a repeated hour's second copy
#: of an earlier local time can come after the start.
_FOLD_MARGIN = timedelta(hours=3)
#: The `@` shorthands croniter understands, allowed as whole expressions.
_ALIASES = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
_SECOND = timedelta(seconds=1)


class CronInvalid(ConfigurationError):
    """The cron expression or the time zone is not valid."""


def zone_of(name: str) -> ZoneInfo:
    """The IANA time zone `name`; `CronInvalid` if there is none by that name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as ex:
        raise CronInvalid(
            f"unknown time zone {name!r}; use an IANA name like Europe/Prague"
        ) from ex


def check_expression(expression: str) -> None:
    """Refuse what Ferry does not run: seconds or years fields, hashed or random fields."""
    text = expression.strip()
    if text.lower() in _ALIASES:
        return
    fields = text.split()
    if len(fields) != 5:
        raise CronInvalid(
            f"cron expression {expression!r} must have 5 fields (minute hour day month weekday)"
        )
    parts = [part.strip().upper() for field in fields for part in field.split(",")]
    # No month or weekday name starts with H or R; croniter's hashed and random ones do.
    if any(part.startswith(("H", "R")) for part in parts):
        raise CronInvalid(
            f"cron expression {expression!r} uses H or R: hashed and random fields would fire "
            "at different times in different scheduler processes"
        )
    try:
        croniter(text)
    except (CroniterError, ValueError, KeyError) as ex:
        raise CronInvalid(f"cron expression {expression!r} is not valid: {ex}") from ex


class CronTimes:
    """The UTC instants at which `expression` fires in time zone `timezone`."""

    def __init__(self, expression: str, timezone: str) -> None:
        check_expression(expression)
        self.expression = expression.strip()
        self.timezone = timezone
        self.zone = zone_of(timezone)
        hours = croniter(self.expression).expanded[1]
        #: Runs in every hour, so in both copies of a repeated hour too.
        self.every_hour = hours == ["*"] or set(hours) == set(range(24))
        try:
            next(self.after(datetime(2000, 1, 1, tzinfo=UTC)))
        except (CroniterBadDateError, StopIteration) as ex:
            raise CronInvalid(f"cron expression {expression!r} never fires") from ex

    def _local(self, instant: datetime) -> datetime:
        return instant.astimezone(self.zone).replace(tzinfo=None)

    def instants_of(self, local: datetime) -> list[datetime]:
        """The UTC instants a naive local time stands for under this schedule's rules."""
        first = local.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        second = local.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        if first == second:
            return [first]
        if first < second:  # repeated by a fall-back change: first, or both if hourly
            return [first, second] if self.every_hour else [first]
        # Skipped by a spring-forward change: `second` is before the change, `first` after.
        return [self._change_between(second, first)]

    def _change_between(self, before: datetime, after: datetime) -> datetime:
        """The instant the zone's offset changes, to the second, between two instants."""
        target = after.astimezone(self.zone).utcoffset()
        low, high = before, after
        while high - low > _SECOND:
            middle = low + (high - low) / 2
            if middle.astimezone(self.zone).utcoffset() == target:
                high = middle
            else:
                low = middle
        return high.replace(microsecond=0)

    def _offset(self, local: datetime) -> timedelta:
        return local.replace(tzinfo=self.zone).utcoffset() or timedelta(0)

    def _steady(self, local: datetime) -> bool:
        """No offset change within the margin around a local time (the common case)."""
        offset = self._offset(local)
        return (
            self._offset(local - _FOLD_MARGIN) == offset
            and self._offset(local + _FOLD_MARGIN) == offset
        )

    def after(self, start: datetime) -> Iterator[datetime]:
        """Every firing instant strictly after `start`, in increasing order (endless)."""
        start = start.astimezone(UTC)
        local_start = self._local(start)
        if not self._steady(local_start):
            # The second copy of a repeated local time before the start can come after it.
            local_start -= _FOLD_MARGIN
        walk = croniter(self.expression, local_start)
        pending: list[datetime] = []
        last: datetime | None = None
        while True:
            local: datetime = walk.get_next(datetime)
            for instant in self.instants_of(local):
                if instant > start:
                    heapq.heappush(pending, instant)
            # No later local time maps before this horizon: away from an offset change,
            # local order is UTC order; near one, offsets differ by less than the margin.
            horizon = local.replace(tzinfo=UTC) - self._offset(local)
            if not self._steady(local):
                horizon -= _FOLD_MARGIN
            while pending and pending[0] <= horizon:
                instant = heapq.heappop(pending)
                if last is None or instant > last:  # gaps collapse to one instant
                    last = instant
                    yield instant

    def between(self, after: datetime, until: datetime) -> list[datetime]:
        """The firing instants in `(after, until]`, oldest first."""
        found: list[datetime] = []
        if until <= after:
            return found
        for instant in self.after(after):
            if instant > until:
                break
            found.append(instant)
        return found

    def latest(self, after: datetime, until: datetime) -> datetime | None:
        """The last firing instant in `(after, until]`, without walking every one before it."""
        span = timedelta(hours=1)
        while True:
            low = max(after, until - span)
            found = self.between(low, until)
            if found:
                return found[-1]
            if low == after:
                return None
            span *= 24

    def upcoming(self, start: datetime, count: int) -> list[datetime]:
        """The next `count` firing instants after `start`."""
        found: list[datetime] = []
        for instant in self.after(start):
            if len(found) == count:
                break
            found.append(instant)
        return found
