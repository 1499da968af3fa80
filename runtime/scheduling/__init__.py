"""Schedules: recurring invocations, decided by Ferry from the store, clocked by periodiq.

What a schedule author needs is exported here:

```python
from runtime.scheduling import ALL_ACTIVE, schedule
```

The parts: `definition` (declaring and loading schedules), `crontime` (cron in a time
zone, across daylight-saving changes), `ticks` (which ticks fire now: a pure function),
`scheduler` (`fire_due`, manual triggers), `loop` (the `ferry dev` thread) and
`periodiq_entry` (the `scheduler` process). Schedule state is kept by
`runtime.store.schedules`; what operators see and do is `runtime.services.schedules`;
`ferry schedules ...` lives in `runtime.cli.schedules`.
"""

from __future__ import annotations

from runtime.scheduling.definition import (
    ALL_ACTIVE,
    ScheduleDefinition,
    ScheduleDefinitionError,
    schedule,
)

__all__ = [
    # Declaring a schedule
    "ALL_ACTIVE",
    "schedule",
    # What a declaration is, and what a bad one raises
    "ScheduleDefinition",
    "ScheduleDefinitionError",
]
