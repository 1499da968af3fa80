"""Declaring and loading schedules: a bad one stops start-up with a message naming it."""

from __future__ import annotations

import logging
import textwrap
import uuid
from pathlib import Path

import falcon
import pytest
import structlog

from runtime.errors import ConfigurationError
from runtime.registry import Registry
from runtime.scheduling import ALL_ACTIVE, ScheduleDefinitionError, schedule
from runtime.scheduling.definition import ScheduleBook
from runtime.scheduling.scheduler import Scheduler
from runtime.settings import Settings
from tests.conftest import TEST_FUNCTIONS
from tests.fixtures.functions.probes import EchoIn, echo


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load(TEST_FUNCTIONS, Settings.from_env())


def write_package(root: Path, modules: dict[str, str]) -> str:
    """A throwaway package of schedule modules under `root`; its name."""
    name = f"sched_pkg_{uuid.uuid4().hex[:8]}"
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text('"""Test schedules."""\n')
    for module, source in modules.items():
        (package / f"{module}.py").write_text(textwrap.dedent(source))
    return name


GOOD = """
    from runtime.scheduling import ALL_ACTIVE, schedule

    nightly = schedule("nightly", cron="0 3 * * *", function="echo",
                       input={"message": "night"}, tenant=ALL_ACTIVE)
"""


def test_a_declaration_keeps_what_it_was_given():
    declared = schedule(
        "reports.weekly",
        cron="0 7 * * mon",
        timezone="Europe/Prague",
        function=echo,
        input=EchoIn(message="hi"),
        tenant="acme",
        misfire="run_once",
        jitter_s=30,
        description="Weekly.",
    )
    assert (declared.id, declared.function, declared.tenant) == ("reports.weekly", "echo", "acme")
    assert dict(declared.input) == {"message": "hi", "sleep_s": 0.0}
    assert (declared.misfire, declared.jitter_s, declared.description) == (
        "run_once",
        30.0,
        "Weekly.",
    )
    assert declared.module == __name__
    assert declared.targets("acme") and not declared.targets("other")
    everyone = schedule(
        "all", cron="@daily", function="echo", input={"message": "x"}, tenant=ALL_ACTIVE
    )
    assert everyone.each_active_tenant and everyone.targets("anyone")
    # The description defaults to the declaring module's docstring.
    assert everyone.description.startswith("Declaring and loading schedules")


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"cron": "every day"}, "5 fields"),
        ({"cron": "0 25 * * *"}, "not valid"),
        ({"timezone": "Europe/Atlantis"}, "unknown time zone 'Europe/Atlantis'"),
        ({"timezone": "CEST"}, "unknown time zone"),
        ({"tenant": "Not A Tenant"}, "tenant must be a tenant id or ALL_ACTIVE"),
        ({"misfire": "run_all"}, "misfire must be one of skip, run_once"),
        ({"jitter_s": -1}, "jitter_s"),
        ({"jitter_s": 90_000}, "jitter_s"),
        ({"misfire_grace_s": 0}, "misfire_grace_s"),
        ({"input": ["not", "a", "mapping"]}, "input must be a mapping"),
    ],
)
def test_a_bad_declaration_is_refused_naming_the_schedule_and_its_module(overrides, problem):
    values = {
        "cron": "* * * * *",
        "function": "echo",
        "tenant": "acme",
        "input": {"message": "x"},
        **overrides,
    }
    with pytest.raises(ScheduleDefinitionError, match=problem) as caught:
        schedule("broken-one", **values)
    assert "schedule 'broken-one'" in str(caught.value)
    assert __name__ in str(caught.value)
    assert isinstance(caught.value, ConfigurationError)


@pytest.mark.parametrize("bad_id", ["Upper", "-dash-first", "", "restore", "x" * 101, "a b"])
def test_bad_ids_are_refused(bad_id):
    with pytest.raises(ScheduleDefinitionError, match="the id must match"):
        schedule(bad_id, cron="* * * * *", function="echo", tenant="acme")


def test_an_unknown_function_is_refused_at_load_naming_the_schedule(registry):
    declared = schedule("ghost", cron="* * * * *", function="no_such_function", tenant="acme")
    with pytest.raises(ScheduleDefinitionError) as caught:
        ScheduleBook.of([declared], registry)
    assert "schedule 'ghost'" in str(caught.value)
    assert "no_such_function" in str(caught.value)


def test_an_input_the_function_refuses_is_refused_at_load_with_each_problem(registry):
    declared = schedule(
        "bad-input",
        cron="* * * * *",
        function="echo",
        input={"message": "", "sleep_s": "soon"},
        tenant="acme",
    )
    with pytest.raises(ScheduleDefinitionError) as caught:
        ScheduleBook.of([declared], registry)
    text = str(caught.value)
    assert "schedule 'bad-input'" in text and "not valid for echo" in text
    assert "message:" in text and "sleep_s:" in text


def test_loading_a_package_collects_every_module_and_refuses_duplicate_ids(
    tmp_path, monkeypatch, registry
):
    monkeypatch.syspath_prepend(str(tmp_path))
    # Re-exporting a schedule from another module is the same schedule, not a duplicate.
    package = write_package(tmp_path, {"a": GOOD, "b": "from .a import nightly\n"})
    book = ScheduleBook.load(package, registry)
    assert book.ids() == ["nightly"] and "nightly" in book and len(book) == 1
    clash = write_package(tmp_path, {"a": GOOD, "b": GOOD})
    with pytest.raises(ScheduleDefinitionError, match="two schedules have the id 'nightly'"):
        ScheduleBook.load(clash, registry)


def test_a_module_with_a_bad_schedule_stops_loading_with_its_name(tmp_path, monkeypatch, registry):
    monkeypatch.syspath_prepend(str(tmp_path))
    package = write_package(tmp_path, {"bad": GOOD.replace('"0 3 * * *"', '"0 3 * *"')})
    with pytest.raises(ScheduleDefinitionError, match=r"schedule 'nightly'.*5 fields"):
        ScheduleBook.load(package, registry)


def test_a_missing_package_is_a_configuration_error(registry):
    with pytest.raises(ScheduleDefinitionError, match="cannot import schedules package"):
        ScheduleBook.load("no_such_schedules_pkg", registry)


def test_the_shipped_schedules_load_against_the_shipped_functions():
    settings = Settings.from_env()
    book = ScheduleBook.load(settings.schedules_module, Registry.load("functions", settings))
    assert {d.function for d in book} == {"cleanup_expired_keys", "usage_report"}
    assert all(d.each_active_tenant for d in book)
    cleanup = book.get("cleanup-expired-keys")
    assert (cleanup.cron, cleanup.timezone, cleanup.misfire) == (
        "30 2 * * *",
        "Europe/Prague",
        "run_once",
    )


# --- start-up stops on a bad schedule --------------------------------------------------------


@pytest.fixture
def bad_package(tmp_path, monkeypatch) -> str:
    monkeypatch.syspath_prepend(str(tmp_path))
    return write_package(tmp_path, {"bad": GOOD.replace('"message": "night"', '"message": ""')})


def test_a_scheduler_does_not_start_with_a_bad_schedule(runtime_with, bad_package):
    runtime = runtime_with(schedules_module=bad_package)
    with pytest.raises(ScheduleDefinitionError, match="schedule 'nightly'"):
        Scheduler.from_runtime(runtime)


def test_the_gateway_does_not_start_with_a_bad_schedule(runtime_with, bad_package):
    from gateway.resources.schedules import add_routes

    runtime = runtime_with(schedules_module=bad_package)
    with pytest.raises(ScheduleDefinitionError, match="schedule 'nightly'"):
        add_routes(falcon.App(), runtime)


@pytest.fixture
def logging_restored():
    """`boot` configures logging for its process; put the test process's back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)


def test_the_periodiq_process_exits_2_naming_the_bad_schedule(
    runtime_with, bad_package, monkeypatch, capsys, logging_restored
):
    from runtime.scheduling import periodiq_entry

    runtime = runtime_with(schedules_module=bad_package)
    monkeypatch.setenv("FERRY_DATABASE_URL", runtime.settings.database_url)
    monkeypatch.setenv("FERRY_FUNCTIONS_MODULE", TEST_FUNCTIONS)
    monkeypatch.setenv("FERRY_SCHEDULES_MODULE", bad_package)
    with pytest.raises(SystemExit) as exited:
        periodiq_entry.boot()
    assert exited.value.code == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("ferry scheduler: schedule 'nightly'")
    assert "message: String should have at least 1 character" in last_line


def test_an_input_model_instance_is_stored_as_json():
    declared = schedule(
        "as-model",
        cron="@hourly",
        function=echo,
        input=EchoIn(message="m", sleep_s=1),
        tenant="acme",
    )
    assert dict(declared.input) == {"message": "m", "sleep_s": 1.0}
