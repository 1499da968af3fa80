"""`ferry schedules ...` on the shipped schedules, and the `ferry dev` scheduler thread."""

from __future__ import annotations

import argparse
import json

import pytest

from runtime.cli.schedules import add_commands as add_schedule_commands
from runtime.errors import ConfigurationError, ScheduleNotFound
from runtime.scheduling.loop import start_scheduler_thread
from runtime.settings import Settings
from tests.conftest import TEST_FUNCTIONS
from tests.waiting import wait_for

SHIPPED = ["cleanup-expired-keys", "usage-report-weekly"]


def printed_json(capsys) -> dict:
    """The JSON a command printed (log lines of the unconfigured test logger come before)."""
    out = capsys.readouterr().out
    return json.loads(out[out.index("{\n") :])


def ferry(settings: Settings, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ferry")
    add_schedule_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.run(args, settings))


def test_schedules_alone_lists_them(runtime, capsys):
    assert ferry(runtime.settings, "schedules") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["ID", "STATE", "CRON"]
    assert [line.split()[0] for line in lines[1:]] == SHIPPED
    assert all(line.split()[1] == "active" for line in lines[1:])


def test_pause_show_resume_delete_restore(runtime, capsys):
    settings = runtime.settings
    assert ferry(settings, "schedules", "pause", "cleanup-expired-keys") == 0
    assert "is paused" in capsys.readouterr().out
    assert ferry(settings, "schedules", "show", "cleanup-expired-keys", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["paused"] is True and shown["next_run_times"] == []
    assert ferry(settings, "schedules", "show", "cleanup-expired-keys") == 0
    text = capsys.readouterr().out
    assert "state: paused" in text and "next runs: none (paused)" in text

    assert ferry(settings, "schedules", "resume", "cleanup-expired-keys") == 0
    assert "is active; next run at 20" in capsys.readouterr().out

    assert ferry(settings, "schedules", "delete", "usage-report-weekly") == 0
    capsys.readouterr()
    assert ferry(settings, "schedules", "list", "--json") == 0
    assert [s["id"] for s in json.loads(capsys.readouterr().out)["schedules"]] == SHIPPED[:1]
    assert ferry(settings, "schedules", "list", "--deleted") == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()}
    assert rows["usage-report-weekly"] == "deleted"

    assert ferry(settings, "schedules", "restore") == 0
    assert capsys.readouterr().out.strip() == "restored: usage-report-weekly"
    assert ferry(settings, "schedules", "restore") == 0
    assert capsys.readouterr().out.strip() == "no schedule was deleted"


def test_trigger_runs_it_now_in_each_targeted_tenant(runtime, make_tenant, capsys):
    one, two = make_tenant(), make_tenant()
    assert ferry(runtime.settings, "schedules", "trigger", "cleanup-expired-keys") == 0
    triggered = printed_json(capsys)
    assert sorted(i["tenant_id"] for i in triggered["invocations"]) == sorted([one, two])
    assert {i["trigger"] for i in triggered["invocations"]} == {"schedule"}
    assert (
        ferry(
            runtime.settings,
            "schedules",
            "trigger",
            "cleanup-expired-keys",
            "--tenant",
            one,
            "--key",
            "once",
        )
        == 0
    )
    first = printed_json(capsys)["invocations"]
    assert (
        ferry(
            runtime.settings,
            "schedules",
            "trigger",
            "cleanup-expired-keys",
            "--tenant",
            one,
            "--key",
            "once",
        )
        == 0
    )
    again = printed_json(capsys)["invocations"]
    assert [i["id"] for i in first] == [i["id"] for i in again] and first[0]["tenant_id"] == one


def test_unknown_schedules_and_an_old_schema_are_errors(runtime, tmp_path):
    with pytest.raises(ScheduleNotFound, match="no schedule 'nope'"):
        ferry(runtime.settings, "schedules", "pause", "nope")
    with pytest.raises(ScheduleNotFound):
        ferry(runtime.settings, "schedules", "show", "nope")
    fresh = Settings.from_env(
        database_url=f"sqlite:///{tmp_path / 'never-migrated.db'}", functions_module=TEST_FUNCTIONS
    )
    with pytest.raises(ConfigurationError, match="ferry migrate"):
        ferry(fresh, "schedules", "list")


def test_the_dev_scheduler_thread_registers_the_shipped_schedules_and_fires(runtime):
    thread = start_scheduler_thread(runtime)
    try:
        wait_for(lambda: thread.rounds >= 1, what="the first round")
        states = runtime.store.schedules.states()
        assert sorted(states) == SHIPPED
        assert thread.alive
    finally:
        thread.stop()
    assert not thread.alive
