"""Weekly usage reports: every Monday at 07:00 UTC, each active tenant's last 30 days.

A report missed while the scheduler was down is not made late (`skip`): the next
Monday's report covers the same days and more.
"""

from __future__ import annotations

from runtime.scheduling import ALL_ACTIVE, schedule

weekly_usage_report = schedule(
    "usage-report-weekly",
    cron="0 7 * * mon",
    timezone="UTC",
    function="usage_report",
    input={},
    tenant=ALL_ACTIVE,
    misfire="skip",
    jitter_s=300,
)
