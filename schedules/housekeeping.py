"""Nightly housekeeping of every active tenant: expired and revoked API keys are removed.

Runs at 02:30 Prague time, which daylight saving moves twice a year: on the
spring-forward day (02:30 does not exist) it runs once at 03:00, on the fall-back day
(02:30 happens twice) once, at the first 02:30. Missed nights (the scheduler was down)
are caught up by one run; each tenant's run starts within ten minutes of the tick, so
a thousand tenants do not all hit the store in the same second.
"""

from __future__ import annotations

from runtime.scheduling import ALL_ACTIVE, schedule

cleanup_expired_keys = schedule(
    "cleanup-expired-keys",
    cron="30 2 * * *",
    timezone="Europe/Prague",
    function="cleanup_expired_keys",
    input={"grace_days": 7, "dry_run": False},
    tenant=ALL_ACTIVE,
    misfire="run_once",
    jitter_s=600,
)
