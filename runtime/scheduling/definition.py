"""Declaring schedules, and loading the ones a deployment defines in `schedules/`.

```python
# schedules/housekeeping.py: nightly housekeeping of every tenant
from runtime.scheduling import ALL_ACTIVE, schedule

cleanup_keys = schedule(
    "cleanup-expired-keys",
    cron="30 2 * * *",
    timezone="Europe/Prague",
    function="cleanup_expired_keys",
    input={"grace_days": 7},
    tenant=ALL_ACTIVE,
    misfire="run_once",
    jitter_s=600,
)
```

`schedule(...)` checks what it can on its own (id, cron, time zone, policy) when the
module is imported; `ScheduleBook.load` then checks the function and the input against
the deployment's functions. Either raises `ScheduleDefinitionError` naming the schedule,
which stops start-up.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType, ModuleType
from typing import Any, Final, Literal

import pydantic

from runtime.errors import ConfigurationError, FunctionNotFound, InputInvalid

# Defined with the other errors (the store raises it too); importable from here as before.
from runtime.errors import ScheduleNotFound as ScheduleNotFound
from runtime.registry import FunctionSpec, Registry
from runtime.scheduling.crontime import CronInvalid, CronTimes
from runtime.store.tenants import TENANT_ID

#: `tenant=ALL_ACTIVE`: one invocation per active tenant at every tick.
ALL_ACTIVE: Final = "*"
MISFIRE_POLICIES = ("skip", "run_once")
Misfire = Literal["skip", "run_once"]
SCHEDULE_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
#: Ids that would collide with a fixed route under `/v1/schedules/`.
RESERVED_IDS = frozenset({"restore"})
#: Jitter is spread within one day at most: a longer one would overlap the next ticks.
MAX_JITTER_S = 86_400.0


class ScheduleDefinitionError(ConfigurationError):
    """A schedule is defined wrongly."""


@dataclasses.dataclass(frozen=True)
class ScheduleDefinition:
    """One schedule as its module declares it."""

    id: str
    cron: str
    timezone: str
    #: The target function's name.
    function: str
    input: Mapping[str, Any]
    #: A tenant id, or `ALL_ACTIVE`.
    tenant: str
    misfire: Misfire
    #: How late a tick may be noticed and still count as on time (seconds).
    misfire_grace_s: float
    #: Each invocation runs up to this many seconds after its tick (spread, deterministic).
    jitter_s: float
    description: str
    module: str
    times: CronTimes = dataclasses.field(repr=False, compare=False)

    @property
    def each_active_tenant(self) -> bool:
        return self.tenant == ALL_ACTIVE

    def targets(self, tenant_id: str) -> bool:
        """Whether this schedule makes invocations in `tenant_id`."""
        return self.each_active_tenant or self.tenant == tenant_id


def schedule(
    id: str,
    *,
    cron: str,
    function: str | FunctionSpec,
    tenant: str,
    input: Mapping[str, Any] | pydantic.BaseModel | None = None,
    timezone: str = "UTC",
    misfire: Misfire = "skip",
    misfire_grace_s: float = 60.0,
    jitter_s: float = 0.0,
    description: str | None = None,
) -> ScheduleDefinition:
    """Declare a schedule: run `function` with `input` in `tenant` at every `cron` tick.

    Args:
        id: Stable name, `[a-z0-9][a-z0-9._-]{0,99}`; the store keeps its state under it.
        cron: Five fields (minute hour day month weekday) or `@daily` and the like,
            read as wall-clock times in `timezone`.
        function: The target function, by name or as its `@function` object.
        tenant: A tenant id, or `ALL_ACTIVE` for one invocation per active tenant.
        input: The function's input; checked against its Input model at load.
        timezone: IANA name; daylight-saving changes are handled (see `crontime`).
        misfire: After downtime, `skip` the ticks missed, or `run_once` for all of them.
        misfire_grace_s: A tick noticed later than this is missed (Quartz's threshold).
        jitter_s: Spread each invocation up to this many seconds after its tick.
        description: Shown in listings; default: the module's docstring.
    """
    caller = sys._getframe(1).f_globals.get("__name__", "?")

    def refuse(problem: str) -> ScheduleDefinitionError:
        return ScheduleDefinitionError(f"schedule {id!r} (in {caller}): {problem}")

    if not isinstance(id, str) or not SCHEDULE_ID.fullmatch(id) or id in RESERVED_IDS:
        raise refuse("the id must match [a-z0-9][a-z0-9._-]{0,99} and not be 'restore'")
    try:
        times = CronTimes(cron, timezone)
    except CronInvalid as ex:
        raise refuse(ex.message) from ex
    if tenant != ALL_ACTIVE and not (isinstance(tenant, str) and TENANT_ID.fullmatch(tenant)):
        raise refuse(f"tenant must be a tenant id or ALL_ACTIVE, not {tenant!r}")
    if misfire not in MISFIRE_POLICIES:
        raise refuse(f"misfire must be one of {', '.join(MISFIRE_POLICIES)}, not {misfire!r}")
    if not 0 <= jitter_s <= MAX_JITTER_S:
        raise refuse(f"jitter_s must be from 0 to {MAX_JITTER_S:g} seconds")
    if not misfire_grace_s > 0:
        raise refuse("misfire_grace_s must be positive")
    if isinstance(input, pydantic.BaseModel):
        input = input.model_dump(mode="json")
    if input is not None and not isinstance(input, Mapping):
        raise refuse("input must be a mapping (the function's JSON input) or its Input model")
    module = sys.modules.get(caller)
    return ScheduleDefinition(
        id=id,
        cron=times.expression,
        timezone=timezone,
        function=function.name if isinstance(function, FunctionSpec) else function,
        input=MappingProxyType(dict(input or {})),
        tenant=tenant,
        misfire=misfire,
        misfire_grace_s=float(misfire_grace_s),
        jitter_s=float(jitter_s),
        description=(description or (inspect.getdoc(module) if module else None) or "").strip(),
        module=caller,
        times=times,
    )


class ScheduleBook:
    """The schedules of a deployment, checked against its functions; by id."""

    def __init__(self, definitions: Mapping[str, ScheduleDefinition]) -> None:
        self._definitions = dict(sorted(definitions.items()))

    @classmethod
    def load(cls, packages: str, registry: Registry) -> ScheduleBook:
        """Import every module of the comma-separated packages and check their schedules."""
        found: dict[str, ScheduleDefinition] = {}
        for package in [p.strip() for p in packages.split(",") if p.strip()]:
            for module in _walk(package):
                for value in vars(module).values():
                    if isinstance(value, ScheduleDefinition):
                        other = found.get(value.id)
                        if other is not None and other is not value:
                            raise ScheduleDefinitionError(
                                f"two schedules have the id {value.id!r}: in {other.module} "
                                f"and in {value.module}"
                            )
                        found[value.id] = value
        return cls.of(found.values(), registry)

    @classmethod
    def of(cls, definitions: Iterable[ScheduleDefinition], registry: Registry) -> ScheduleBook:
        """A book of the given definitions, each checked against `registry`."""
        book: dict[str, ScheduleDefinition] = {}
        for definition in definitions:
            if definition.id in book:
                raise ScheduleDefinitionError(f"two schedules have the id {definition.id!r}")
            check_against(definition, registry)
            book[definition.id] = definition
        return cls(book)

    def get(self, schedule_id: str) -> ScheduleDefinition:
        try:
            return self._definitions[schedule_id]
        except KeyError:
            raise ScheduleNotFound(f"no schedule {schedule_id!r}") from None

    def ids(self) -> list[str]:
        return list(self._definitions)

    def __iter__(self) -> Iterator[ScheduleDefinition]:
        return iter(self._definitions.values())

    def __len__(self) -> int:
        return len(self._definitions)

    def __contains__(self, schedule_id: object) -> bool:
        return schedule_id in self._definitions


def check_against(definition: ScheduleDefinition, registry: Registry) -> None:
    """The function must exist and the input validate; else a message naming the schedule."""
    where = f"schedule {definition.id!r} (in {definition.module})"
    try:
        function = registry.get(definition.function)
    except FunctionNotFound as ex:
        raise ScheduleDefinitionError(f"{where}: {ex.message}") from ex
    try:
        function.validate_input(dict(definition.input))
    except InputInvalid as ex:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(input)'}: {e['msg']}" for e in ex.errors
        )
        raise ScheduleDefinitionError(
            f"{where}: its input is not valid for {function.name}: {problems}"
        ) from ex


def _walk(package: str) -> Iterator[ModuleType]:
    try:
        root = importlib.import_module(package)
    except ImportError as ex:
        raise ScheduleDefinitionError(f"cannot import schedules package {package!r}: {ex}") from ex
    yield root
    for info in pkgutil.walk_packages(getattr(root, "__path__", []), prefix=f"{package}."):
        yield importlib.import_module(info.name)
