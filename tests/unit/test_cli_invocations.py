"""`ferry invocations list|show|cancel|retry|tail`, on both backends, through `main([...])`."""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from runtime.app import Runtime
from runtime.cli import invocations as invocations_cli
from runtime.cli.invocations import Follower, parse_since
from runtime.settings import Settings
from runtime.store.audit import AuditFilter
from tests.unit.test_cli import Ran, runner
from tests.waiting import wait_for

pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture
def ferry(
    settings: Settings,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Callable[..., Ran]:
    """Run `ferry` on the store and broker of this test's `runtime` (migrated already)."""
    for name in list(os.environ):
        if name.startswith("FERRY_") and not name.startswith("FERRY_TEST_"):
            monkeypatch.delenv(name)
    for field in ("database_url", "broker_url", "redis_namespace", "secret_key"):
        monkeypatch.setenv(f"FERRY_{field.upper()}", str(getattr(settings, field)))
    monkeypatch.setenv("FERRY_FUNCTIONS_MODULE", settings.functions_module)
    return runner(capsys)


def accept(runtime: Runtime, tenant: str, message: str = "hi", **options: object) -> str:
    accepted = runtime.invocations.accept(
        tenant_id=tenant,
        function="echo",
        payload={"message": message},
        **options,  # type: ignore[arg-type]
    )
    return accepted.invocation.id


def ids(ran: Ran) -> list[str]:
    assert ran.code == 0, ran.err
    return [i["id"] for i in ran.json()["invocations"]]


def test_list_filters_by_tenant_function_status_and_since(ferry, runtime, make_tenant):
    # Given invocations of two tenants, one of them cancelled
    acme, other = make_tenant("acme"), make_tenant("other")
    first = accept(runtime, acme, delay_s=3600)
    second = accept(runtime, acme)
    third = accept(runtime, other)
    runtime.invocations.cancel(first, acme)
    # Then the operator lists every tenant's, newest first, and each filter narrows it
    assert ids(ferry("invocations", "list", "--json")) == [third, second, first]
    assert ids(ferry("invocations", "list", "--tenant", "acme", "--json")) == [second, first]
    assert ids(ferry("invocations", "list", "--status", "cancelled", "--json")) == [first]
    assert ids(ferry("invocations", "list", "--function", "echo", "--since", "1h", "--json")) == [
        third,
        second,
        first,
    ]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert ids(ferry("invocations", "list", "--since", future, "--json")) == []
    # And pages continue with the cursor the table's note gives
    paged = ferry("invocations", "list", "--limit", "2")
    assert paged.code == 0
    assert paged.out.splitlines()[0].split()[:4] == ["ID", "FUNCTION", "TENANT", "STATUS"]
    assert third in paged.out and first not in paged.out
    cursor = paged.err.split("--cursor ")[1].strip()
    assert ids(ferry("invocations", "list", "--cursor", cursor, "--json")) == [first]


def test_list_refuses_an_unknown_tenant_and_suggests_the_closest(ferry, make_tenant):
    make_tenant("acme")
    ran = ferry("invocations", "list", "--tenant", "acmee")
    assert ran.code == 1
    assert "no tenant 'acmee'; did you mean 'acme'?" in ran.err
    noted = ferry("invocations", "list", "--function", "ecko")
    assert noted.code == 0 and "did you mean 'echo'?" in noted.err


@pytest.mark.parametrize("since", ["yesterday", "10", "2026-11-30T09:00:00"])
def test_since_refuses_what_is_neither_a_time_ago_nor_a_time_with_offset(ferry, since):
    with pytest.raises(SystemExit) as exited:
        ferry("invocations", "list", "--since", since)
    assert exited.value.code == 2


def test_parse_since_reads_times_ago_and_rfc3339():
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert parse_since("90s", now) == now - timedelta(seconds=90)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2026-11-30T09:00:00Z") == datetime(2026, 11, 30, 9, tzinfo=UTC)
    assert parse_since("2026-11-30T10:00:00+01:00") == datetime(2026, 11, 30, 9, tzinfo=UTC)


def test_show_prints_the_invocation_with_its_attempt_log(ferry, runtime, worker, make_tenant):
    acme = make_tenant("acme")
    invocation_id = accept(runtime, acme)
    wait_for(
        lambda: runtime.invocations.get(invocation_id, acme).invocation.finished,
        what="the invocation to finish",
    )
    shown = ferry("invocations", "show", invocation_id, "--json")
    assert shown.code == 0, shown.err
    record = shown.json()
    assert (record["status"], record["result"]["message"]) == ("succeeded", "hi")
    assert [a["outcome"] for a in record["attempt_log"]] == ["succeeded"]
    text = ferry("invocations", "show", invocation_id)
    assert "status: succeeded" in text.out and "#1" in text.out
    # Within another tenant it does not exist
    make_tenant("other")
    hidden = ferry("invocations", "show", invocation_id, "--tenant", "other")
    assert hidden.code == 1 and len(hidden.err.strip().splitlines()) == 1


def test_cancel_then_retry(ferry, runtime, make_tenant):
    acme = make_tenant("acme")
    invocation_id = accept(runtime, acme, delay_s=3600)
    # When the operator cancels it
    cancelled = ferry("invocations", "cancel", invocation_id)
    assert cancelled.code == 0, cancelled.err
    assert "cancelled" in cancelled.out
    assert runtime.invocations.get(invocation_id, acme).invocation.status == "cancelled"
    # A second cancel is refused in one line
    again = ferry("invocations", "cancel", invocation_id)
    assert again.code == 1 and "cancelled" in again.err
    # And a retry queues it again
    retried = ferry("invocations", "retry", invocation_id, "--json")
    assert retried.code == 0, retried.err
    assert retried.json()["status"] == "queued"
    assert runtime.invocations.get(invocation_id, acme).invocation.status == "queued"
    missing = ferry("invocations", "retry", "no-such-id")
    assert missing.code == 1 and "no-such-id" in missing.err
    # And the audit trail has one record of each change, by the OS user, none of the refusals
    views, _ = runtime.store.audit.list(None, AuditFilter(target=invocation_id), limit=10)
    assert [(v.action, v.actor_kind, v.actor_id) for v in reversed(views)] == [
        ("invocation.cancel", "cli", getpass.getuser()),
        ("invocation.retry", "cli", getpass.getuser()),
    ]


def test_the_follower_reports_new_invocations_then_their_changes(runtime, make_tenant):
    acme = make_tenant("acme")
    old = [accept(runtime, acme, message=f"m{i}", delay_s=3600) for i in range(3)]
    follower = Follower(runtime.invocations)
    # It starts with the last few, oldest first
    assert [v.id for v in follower.start(backlog=2, since=None)] == old[1:]
    assert follower.poll() == []
    # Then a new invocation is reported once
    new = accept(runtime, acme, message="new", delay_s=3600)
    assert [(v.id, v.status) for v in follower.poll()] == [(new, "scheduled")]
    assert follower.poll() == []
    # And each change of status of one it reported, once
    runtime.invocations.cancel(new, acme)
    runtime.invocations.cancel(old[2], acme)
    assert sorted((v.id, v.status) for v in follower.poll()) == sorted(
        [(new, "cancelled"), (old[2], "cancelled")]
    )
    assert follower.poll() == []
    # A finished invocation is no longer watched
    assert new not in follower.watched


def test_the_follower_filters_by_tenant_and_starts_from_since(runtime, make_tenant):
    acme, other = make_tenant("acme"), make_tenant("other")
    mine = accept(runtime, acme)
    accept(runtime, other)
    follower = Follower(runtime.invocations, tenant_id=acme)
    since = datetime.now(UTC) - timedelta(hours=1)
    assert [v.id for v in follower.start(backlog=10, since=since)] == [mine]
    accept(runtime, other)
    assert follower.poll() == []


def test_tail_prints_until_ctrl_c(ferry, runtime, make_tenant, monkeypatch):
    acme = make_tenant("acme")
    before = accept(runtime, acme, delay_s=3600)
    later: list[str] = []

    def pause(seconds: float) -> None:
        # The first pause sees a new invocation arrive; the second is Ctrl-C
        if later:
            raise KeyboardInterrupt
        later.append(accept(runtime, acme, message="later", delay_s=3600))

    monkeypatch.setattr(invocations_cli, "pause", pause)
    ran = ferry("invocations", "tail", "--json", "--tenant", "acme", "--interval", "0.1")
    assert ran.code == 0, ran.err
    lines = [json.loads(line) for line in ran.out.splitlines()]
    assert [(r["id"], r["status"]) for r in lines] == [
        (before, "scheduled"),
        (later[0], "scheduled"),
    ]


def test_tail_prints_one_line_per_event_and_filters_by_status(
    ferry, runtime, make_tenant, monkeypatch
):
    acme = make_tenant("acme")
    first = accept(runtime, acme, delay_s=3600)
    pauses = iter([lambda: runtime.invocations.cancel(first, acme)])

    def pause(seconds: float) -> None:
        step = next(pauses, None)
        if step is None:
            raise KeyboardInterrupt
        step()

    monkeypatch.setattr(invocations_cli, "pause", pause)
    ran = ferry("invocations", "tail", "--status", "cancelled")
    assert ran.code == 0, ran.err
    [line] = ran.out.splitlines()
    assert first in line and "cancelled" in line and "echo" in line and "acme" in line
