"""Schedule time: cron in a time zone across daylight-saving changes, and tick planning.

Pure functions, no servers: the clock is a parameter.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pendulum
import pytest
from periodiq import cron as periodiq_cron

from runtime.scheduling.crontime import CronInvalid, CronTimes
from runtime.scheduling.ticks import jitter, manual_key, plan_ticks, tick_key
from tests.unit.test_schedules_support import every_minute, utc

PRAGUE = ZoneInfo("Europe/Prague")
#: 2026's daylight-saving changes in Europe/Prague.
SPRING_FORWARD = (2026, 3, 29)  # 02:00 CET -> 03:00 CEST
FALL_BACK = (2026, 10, 25)  # 03:00 CEST -> 02:00 CET


def local_days(instants: list[datetime]) -> dict[str, list[str]]:
    days: dict[str, list[str]] = {}
    for instant in instants:
        local = instant.astimezone(PRAGUE)
        days.setdefault(local.date().isoformat(), []).append(local.strftime("%H:%M%z"))
    return days


# --- daylight saving -------------------------------------------------------------------------


def test_a_daily_0230_in_prague_runs_once_on_the_spring_forward_day_at_0300():
    times = CronTimes("30 2 * * *", "Europe/Prague")
    runs = times.between(utc(2026, 3, 27), utc(2026, 3, 31))
    assert local_days(runs) == {
        "2026-03-27": ["02:30+0100"],
        "2026-03-28": ["02:30+0100"],
        # 02:30 does not exist that night: it runs once, at the first valid time after.
        "2026-03-29": ["03:00+0200"],
        "2026-03-30": ["02:30+0200"],
    }
    assert runs[2] == utc(2026, 3, 29, 1, 0)


def test_a_daily_0230_in_prague_runs_once_on_the_fall_back_day_at_the_first_0230():
    times = CronTimes("30 2 * * *", "Europe/Prague")
    runs = times.between(utc(2026, 10, 23), utc(2026, 10, 27))
    assert local_days(runs) == {
        "2026-10-23": ["02:30+0200"],
        "2026-10-24": ["02:30+0200"],
        # 02:30 happens twice that night: it runs in the first one only.
        "2026-10-25": ["02:30+0200"],
        "2026-10-26": ["02:30+0100"],
    }


def test_periodiq_alone_in_prague_local_time_skips_one_change_day_and_doubles_the_other():
    # periodiq wakes every minute and fires the actors whose spec matches the local time
    # (pendulum, the process's zone). Walk those minutes in Prague time across both days.
    spec = periodiq_cron("30 2 * * *")
    fired: dict[str, int] = {}
    for day in (SPRING_FORWARD, FALL_BACK):
        start = pendulum.datetime(*day, tz="UTC").subtract(hours=2)
        for minute in range(6 * 60):
            local = start.add(minutes=minute).in_timezone("Europe/Prague")
            if spec.validate(local):
                fired[local.date().isoformat()] = fired.get(local.date().isoformat(), 0) + 1
    assert fired == {"2026-10-25": 2}
    # Ferry's reading of the same expression: once on each day.
    ferry = CronTimes("30 2 * * *", "Europe/Prague")
    for day in (SPRING_FORWARD, FALL_BACK):
        start = datetime(*day, tzinfo=UTC) - timedelta(hours=2)
        assert len(ferry.between(start, start + timedelta(hours=6))) == 1


def test_an_hourly_schedule_runs_in_both_copies_of_the_repeated_hour():
    times = CronTimes("0 * * * *", "Europe/Prague")
    runs = times.between(utc(2026, 10, 24, 23), utc(2026, 10, 25, 3))
    assert [r.astimezone(PRAGUE).strftime("%H:%M%z") for r in runs] == [
        "02:00+0200",
        "02:00+0100",
        "03:00+0100",
        "04:00+0100",
    ]
    # Every real hour once: they are one hour apart in UTC.
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(runs))


@pytest.mark.parametrize("day", [SPRING_FORWARD, FALL_BACK], ids=["spring", "fall"])
def test_every_minute_in_a_zone_is_every_real_minute_once_across_a_change(day):
    times = CronTimes("* * * * *", "Europe/Prague")
    start = datetime(*day, tzinfo=UTC) - timedelta(hours=3)
    runs = times.between(start, start + timedelta(hours=6))
    assert runs == [start + timedelta(minutes=n) for n in range(1, 6 * 60 + 1)]


def test_several_skipped_times_collapse_into_one_run_at_the_change():
    times = CronTimes("*/15 2 * * *", "Europe/Prague")
    runs = times.between(utc(2026, 3, 28, 12), utc(2026, 3, 29, 12))
    assert local_days(runs) == {"2026-03-29": ["03:00+0200"]}


def test_a_walk_starting_inside_the_repeated_hour_finds_the_second_copies_after_it():
    times = CronTimes("*/30 * * * *", "Europe/Prague")
    # 00:45 UTC is 02:45 CEST, in the first copy of the repeated hour.
    runs = times.between(utc(2026, 10, 25, 0, 45), utc(2026, 10, 25, 2))
    assert [r.astimezone(PRAGUE).strftime("%H:%M%z") for r in runs] == [
        "02:00+0100",
        "02:30+0100",
        "03:00+0100",
    ]


def test_upcoming_and_latest():
    times = CronTimes("0 9 * * mon-fri", "America/New_York")
    friday_noon = utc(2026, 11, 20, 17)
    assert times.upcoming(friday_noon, 2) == [utc(2026, 11, 23, 14), utc(2026, 11, 24, 14)]
    assert times.latest(utc(2026, 11, 1), friday_noon) == utc(2026, 11, 20, 14)
    assert times.latest(utc(2026, 11, 21), utc(2026, 11, 22)) is None  # a weekend
    leap = CronTimes("0 0 29 2 *", "UTC")
    assert leap.latest(utc(2001, 1, 1), utc(2026, 1, 1)) == utc(2024, 2, 29)


@pytest.mark.parametrize(
    ("expression", "zone", "problem"),
    [
        ("61 * * * *", "UTC", "not valid"),
        ("* * * *", "UTC", "5 fields"),
        ("0 * * * * *", "UTC", "5 fields"),
        ("H * * * *", "UTC", "H or R"),
        ("0 0 30 2 *", "UTC", "never fires"),
        ("* * * * *", "Mars/Olympus", "unknown time zone"),
        ("* * * * *", "", "unknown time zone"),
    ],
)
def test_bad_expressions_and_zones_are_refused(expression, zone, problem):
    with pytest.raises(CronInvalid, match=problem):
        CronTimes(expression, zone)


# --- planning ticks --------------------------------------------------------------------------


def test_a_tick_noticed_on_time_fires():
    definition = every_minute()
    plan = plan_ticks(
        definition,
        cursor=utc(2026, 5, 1, 9, 59),
        paused=False,
        deleted=False,
        now=utc(2026, 5, 1, 10, 0, 0) + timedelta(milliseconds=3),
    )
    assert plan.fire == (utc(2026, 5, 1, 10, 0),)
    assert plan.advance_to == utc(2026, 5, 1, 10, 0)
    assert plan.passed_over is None


def test_nothing_is_due_in_the_minute_already_done():
    plan = plan_ticks(
        every_minute(),
        cursor=utc(2026, 5, 1, 10, 0),
        paused=False,
        deleted=False,
        now=utc(2026, 5, 1, 10, 0, 30),
    )
    assert plan.fire == () and plan.advance_to is None


@pytest.mark.parametrize(
    ("policy", "fired"),
    [("skip", ()), ("run_once", (utc(2026, 5, 1, 10, 3),))],
)
def test_after_three_missed_ticks_skip_fires_none_and_run_once_fires_the_last(policy, fired):
    # Given the last tick done at 10:00 and no scheduler for 10:01, 10:02, 10:03
    definition = every_minute(misfire=policy, misfire_grace_s=30)
    # When a scheduler looks at 10:03:40 (the 10:03 tick is 40 s late: missed)
    plan = plan_ticks(
        definition,
        cursor=utc(2026, 5, 1, 10, 0),
        paused=False,
        deleted=False,
        now=utc(2026, 5, 1, 10, 3, 40),
    )
    # Then
    assert plan.fire == fired
    assert plan.passed_over == "missed"
    assert plan.missed_until == utc(2026, 5, 1, 10, 3)
    assert plan.advance_to == utc(2026, 5, 1, 10, 3)


def test_run_once_also_fires_the_on_time_tick_after_the_missed_ones():
    definition = every_minute(misfire="run_once", misfire_grace_s=30)
    plan = plan_ticks(
        definition,
        cursor=utc(2026, 5, 1, 10, 0),
        paused=False,
        deleted=False,
        now=utc(2026, 5, 1, 10, 4, 10),
    )
    assert plan.fire == (utc(2026, 5, 1, 10, 3), utc(2026, 5, 1, 10, 4))


def test_a_tick_late_within_the_grace_still_fires():
    definition = every_minute(misfire="skip", misfire_grace_s=60)
    plan = plan_ticks(
        definition,
        cursor=utc(2026, 5, 1, 9, 59),
        paused=False,
        deleted=False,
        now=utc(2026, 5, 1, 10, 0, 59),
    )
    assert plan.fire == (utc(2026, 5, 1, 10, 0),)


@pytest.mark.parametrize("stopped", ["paused", "deleted"])
def test_a_stopped_schedule_fires_nothing_and_passes_over_what_is_due(stopped):
    plan = plan_ticks(
        every_minute(misfire="run_once"),
        cursor=utc(2026, 5, 1, 10, 0),
        paused=stopped == "paused",
        deleted=stopped == "deleted",
        now=utc(2026, 5, 1, 10, 5, 1),
    )
    assert plan.fire == ()
    assert plan.passed_over == stopped
    assert plan.advance_to == utc(2026, 5, 1, 10, 5)


def test_a_long_downtime_is_planned_without_walking_every_missed_tick():
    # A month of minutes is 43,200 ticks; run_once needs only the last one.
    definition = every_minute(misfire="run_once")
    plan = plan_ticks(
        definition,
        cursor=utc(2026, 4, 1),
        paused=False,
        deleted=False,
        now=utc(2026, 5, 1, 0, 0, 5),
    )
    assert plan.fire == (utc(2026, 4, 30, 23, 59), utc(2026, 5, 1))


def test_tick_keys_name_the_schedule_and_the_tick_in_utc():
    assert tick_key("nightly", utc(2026, 3, 29, 1)) == "schedule:nightly:2026-03-29T01:00:00.000Z"
    assert manual_key("nightly", "abc") == "schedule:nightly:manual:abc"
    long_key = manual_key("nightly", "k" * 255)
    assert len(long_key) <= 255 and long_key.startswith("schedule:nightly:manual:#")
    assert manual_key("nightly", "k" * 255) == long_key


def test_jitter_is_within_bounds_spread_and_the_same_in_every_scheduler():
    definition = every_minute(jitter_s=300)
    tick = utc(2026, 5, 1, 10)
    delays = {t: jitter(definition, tick, t) for t in (f"t-{n}" for n in range(50))}
    assert all(timedelta(0) <= d < timedelta(seconds=300) for d in delays.values())
    assert len(set(delays.values())) > 40  # spread across tenants
    assert jitter(definition, tick, "t-1") == delays["t-1"]  # deterministic
    assert jitter(every_minute(), tick, "t-1") == timedelta(0)
