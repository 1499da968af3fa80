"""The `ferry` command line, through `main([...])` on a temporary SQLite store."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from runtime.app import Runtime
from runtime.cli import build_parser, main
from runtime.settings import Settings
from runtime.store import Store
from tests.conftest import PROBE_TABLE, TEST_FUNCTIONS

REPO = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> dict:
        return json.loads(self.out)


pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture
def db_url(sqlite_env: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point every FERRY_* setting the CLI reads at a private store and the test functions."""
    monkeypatch.setenv("FERRY_FUNCTIONS_MODULE", TEST_FUNCTIONS)
    return sqlite_env


def run_pytest(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m pytest -q ARGS` in another process, without a cache; what it printed."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def runner(capsys: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    """`ferry ARGV...` in this process: its exit code and what it printed."""

    def run(*argv: str) -> Ran:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        return Ran(code, captured.out, captured.err)

    return run


@pytest.fixture
def ferry(db_url: str, capsys: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    return runner(capsys)


@pytest.fixture
def migrated(ferry: Callable[..., Ran], db_url: str) -> Iterator[Store]:
    assert ferry("migrate").code == 0
    store = Store.from_settings(Settings.from_env(database_url=db_url))
    with store.db.engine.begin() as conn:
        conn.execute(sa.text(PROBE_TABLE))
    yield store
    store.close()


# --- settings, migrate -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FERRY_WORKER_THREADS", "0"),
        ("FERRY_DATABASE_URL", "mysql://db/ferry"),
        ("FERRY_LOG_LEVEL", "loud"),
    ],
)
@pytest.mark.parametrize(
    "argv",
    [
        ["migrate"],
        ["tenants", "list"],
        ["functions"],
        ["invoke", "echo", "--tenant", "a", "--data", "{}"],
    ],
)
def test_a_bad_setting_stops_every_command_with_exit_2_naming_it(
    ferry, monkeypatch, variable, value, argv
):
    # Given a bad FERRY_* value
    monkeypatch.setenv(variable, value)
    # When any command runs
    ran = ferry(*argv)
    # Then it stops with exit 2 and one line naming the variable
    assert ran.code == 2
    assert variable in ran.err
    assert len(ran.err.strip().splitlines()) == 1
    assert ran.out == ""


def test_commands_on_a_store_that_was_never_migrated_say_to_migrate(ferry):
    for argv in (
        ["tenants", "list"],
        ["keys", "list"],
        ["invoke", "echo", "--tenant", "a", "--data", '{"message": "x"}'],
    ):
        ran = ferry(*argv)
        assert ran.code == 1, argv
        assert "ferry migrate" in ran.err


def test_migrate_is_safe_to_run_again(ferry, migrated):
    ran = ferry("migrate")
    assert ran.code == 0
    assert "newest schema" in ran.out
    assert migrated.is_current()


def test_usage_errors_exit_2(ferry):
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    with pytest.raises(SystemExit) as exited:
        main(["keys", "create", "--tenant", "acme"])  # --scopes missing
    assert exited.value.code == 2


# --- tenants ----------------------------------------------------------------------------------


def test_a_tenant_is_created_listed_suspended_and_resumed(ferry, migrated):
    # When a tenant is created
    created = ferry("tenants", "create", "acme", "--name", "Acme Inc")
    # Then it is listed, active, in the table and in JSON
    assert created.code == 0 and "acme" in created.out
    table = ferry("tenants", "list")
    assert table.code == 0
    assert table.out.splitlines()[0].split() == ["ID", "NAME", "STATUS", "CREATED_AT"]
    assert "acme" in table.out and "Acme Inc" in table.out
    listed = ferry("tenants", "list", "--json").json()["tenants"]
    assert [(t["id"], t["name"], t["status"]) for t in listed] == [("acme", "Acme Inc", "active")]
    # When it is suspended, and resumed
    assert ferry("tenants", "suspend", "acme").code == 0
    assert migrated.tenants.get("acme").status == "suspended"
    assert ferry("tenants", "resume", "acme").code == 0
    assert migrated.tenants.get("acme").status == "active"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tenants", "create", "Acme_Inc"], "must match"),
        (["tenants", "create", "--", "-acme"], "must match"),
        (["tenants", "create", "a" * 64], "must match"),
        (["tenants", "suspend", "nobody"], "no tenant"),
        (["tenants", "resume", "nobody"], "no tenant"),
    ],
)
def test_tenant_commands_refuse_bad_ids_with_one_line(ferry, migrated, argv, message):
    ran = ferry(*argv)
    assert ran.code == 1
    assert message in ran.err and len(ran.err.strip().splitlines()) == 1
    assert migrated.tenants.list() == []


def test_a_duplicate_tenant_is_refused(ferry, migrated):
    assert ferry("tenants", "create", "acme").code == 0
    ran = ferry("tenants", "create", "acme", "--name", "Other")
    assert ran.code == 1
    assert "exists already" in ran.err
    assert migrated.tenants.get("acme").name == "acme"


def test_a_tenants_retention_is_set_shown_and_reset(ferry, migrated, monkeypatch):
    monkeypatch.setenv("FERRY_RETENTION_FAILED_S", "3600")
    assert ferry("tenants", "create", "acme").code == 0
    # When some statuses get their own retention
    ran = ferry("tenants", "set-retention", "acme", "--succeeded", "60", "--cancelled", "0")
    # Then those are stored and shown, and the rest follow the settings
    assert ran.code == 0, ran.err
    assert "succeeded: 60 s (tenant)" in ran.out
    assert "failed: 3600 s (default)" in ran.out
    assert "cancelled: 0 s (tenant)" in ran.out
    own = migrated.tenants.retention("acme")
    assert (own.succeeded_s, own.failed_s, own.cancelled_s) == (60, None, 0)
    # When one goes back to the default and no other is named, the others stay
    assert ferry("tenants", "set-retention", "acme", "--succeeded", "default").code == 0
    shown = ferry("tenants", "set-retention", "acme", "--json").json()
    assert shown["retention"] == [
        {"status": "succeeded", "seconds": 86400, "source": "default"},
        {"status": "failed", "seconds": 3600, "source": "default"},
        {"status": "cancelled", "seconds": 0, "source": "tenant"},
    ]


def test_set_retention_refuses_bad_values(ferry, migrated):
    assert ferry("tenants", "create", "acme").code == 0
    for value in ("-1", "soon"):
        with pytest.raises(SystemExit) as exited:
            main(["tenants", "set-retention", "acme", "--failed", value])
        assert exited.value.code == 2
    ran = ferry("tenants", "set-retention", "nobody", "--failed", "60")
    assert ran.code == 1 and "no tenant" in ran.err
    assert migrated.tenants.retention("acme").failed_s is None


# --- keys -----------------------------------------------------------------------------------


def test_a_key_is_printed_once_alone_on_the_last_line_and_works(ferry, migrated):
    # Given a tenant
    ferry("tenants", "create", "acme")
    # When a key is created
    ran = ferry("keys", "create", "--tenant", "acme", "--scopes", "invoke,read", "--name", "ci")
    # Then its last line is the key alone, and the key authenticates with those scopes
    assert ran.code == 0
    key = ran.out.splitlines()[-1]
    principal = migrated.tenants.authenticate(key)
    assert principal is not None
    assert (principal.tenant_id, principal.scopes) == ("acme", frozenset({"invoke", "read"}))
    # And listing keys shows it without its secret
    listed = ferry("keys", "list", "--json")
    assert key not in listed.out
    [shown] = listed.json()["keys"]
    assert (shown["id"], shown["tenant_id"], shown["name"], shown["scopes"], shown["state"]) == (
        principal.key_id,
        "acme",
        "ci",
        ["invoke", "read"],
        "active",
    )
    table = ferry("keys", "list", "--tenant", "acme")
    assert principal.key_id in table.out and key.split("_", 2)[2] not in table.out


def test_a_revoked_key_no_longer_authenticates(ferry, migrated):
    key = ferry("keys", "create", "--operator", "--scopes", "admin").out.splitlines()[-1]
    key_id = migrated.tenants.authenticate(key).key_id
    # When it is revoked
    ran = ferry("keys", "revoke", key_id)
    # Then it is listed as revoked and refused
    assert ran.code == 0
    assert migrated.tenants.authenticate(key) is None
    assert ferry("keys", "list", "--json").json()["keys"][0]["state"] == "revoked"


def test_admin_belongs_to_operator_keys_which_have_no_tenant(ferry, migrated):
    ferry("tenants", "create", "acme")
    # A tenant's key with admin is refused, with what to do instead
    refused = ferry("keys", "create", "--tenant", "acme", "--scopes", "read,admin")
    assert refused.code != 0 and "--operator" in refused.err
    # An operator key has admin and no tenant; its last line is the key alone
    made = ferry("keys", "create", "--operator", "--scopes", "admin", "--name", "ops")
    assert made.code == 0 and "operator" in made.out
    principal = migrated.tenants.authenticate(made.out.splitlines()[-1])
    assert principal.tenant_id is None and principal.is_admin
    [shown] = ferry("keys", "list", "--json").json()["keys"]
    assert (shown["tenant_id"], shown["scopes"], shown["state"]) == (None, ["admin"], "active")
    # --tenant and --operator are exclusive, and one of them is needed
    for argv in (["--scopes", "admin"], ["--operator", "--tenant", "acme", "--scopes", "admin"]):
        with pytest.raises(SystemExit) as exited:
            ferry("keys", "create", *argv)
        assert exited.value.code == 2


def test_keys_are_listed_per_tenant(ferry, migrated):
    for tenant in ("acme", "globex"):
        ferry("tenants", "create", tenant)
        ferry("keys", "create", "--tenant", tenant, "--scopes", "read")
    acme = ferry("keys", "list", "--tenant", "acme", "--json").json()["keys"]
    assert [k["tenant_id"] for k in acme] == ["acme"]
    assert len(ferry("keys", "list", "--json").json()["keys"]) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["keys", "create", "--tenant", "acme", "--scopes", "invoke,superuser"], "scopes"),
        (["keys", "create", "--tenant", "acme", "--scopes", ","], "scopes"),
        (["keys", "create", "--tenant", "nobody", "--scopes", "read"], "no tenant"),
        (["keys", "list", "--tenant", "nobody"], "no tenant"),
        (["keys", "revoke", "000000000000"], "no key"),
    ],
)
def test_key_commands_refuse_bad_input_with_one_line(ferry, migrated, argv, message):
    ferry("tenants", "create", "acme")
    ran = ferry(*argv)
    assert ran.code == 1
    assert message in ran.err and len(ran.err.strip().splitlines()) == 1
    assert migrated.tenants.list_keys() == []


# --- functions --------------------------------------------------------------------------------


def test_functions_are_listed_as_a_table_and_as_json(ferry):
    table = ferry("functions")
    assert table.code == 0
    names = [line.split()[0] for line in table.out.splitlines()[1:]]
    assert {"echo", "echo_time", "flaky"} <= set(names)
    described = {f["name"]: f for f in ferry("functions", "--json").json()["functions"]}
    assert described["echo"]["input_schema"]["required"] == ["message"]
    assert described["echo"]["max_retries"] == 2


def test_functions_reports_a_package_that_cannot_be_imported(ferry, monkeypatch):
    monkeypatch.setenv("FERRY_FUNCTIONS_MODULE", "no_such_package_here")
    ran = ferry("functions")
    assert ran.code == 1
    assert "no_such_package_here" in ran.err


# --- invoke -----------------------------------------------------------------------------------


@pytest.fixture
def worker_runtime(migrated, settings_for) -> Iterator[Runtime]:
    """A worker over the CLI's store: it runs what the CLI queued once its sweep re-sends it."""
    runtime = Runtime(settings_for("embedded", redispatch_after_s=0.2))
    handle = runtime.start_worker()
    yield runtime
    handle.stop(grace_s=5)
    runtime.close()


def test_invoke_queues_an_invocation_in_the_store_and_says_who_will_run_it(ferry, migrated):
    ferry("tenants", "create", "acme")
    ran = ferry("invoke", "echo", "--tenant", "acme", "--data", '{"message": "hi"}')
    assert ran.code == 0
    shown = ran.json()
    assert (shown["function"], shown["tenant_id"], shown["status"], shown["trigger"]) == (
        "echo",
        "acme",
        "queued",
        "cli",
    )
    assert shown["attempt_log"] == []
    stored = migrated.invocations.get(shown["id"])
    assert stored.payload == {"message": "hi", "sleep_s": 0.0}
    assert "ferry dev" in ran.err  # the in-process broker of this command carries nothing


def test_invoke_wait_prints_the_finished_invocation(ferry, worker_runtime):
    worker_runtime.store.tenants.create("acme")
    ran = ferry("invoke", "echo", "--tenant", "acme", "--data", '{"message": "hi"}', "--wait", "30")
    assert ran.code == 0, ran.err
    shown = ran.json()
    assert shown["status"] == "succeeded"
    assert shown["result"] == {"message": "hi", "tenant_id": "acme", "attempt": 1}
    assert [a["outcome"] for a in shown["attempt_log"]] == ["succeeded"]


def test_invoke_wait_exits_1_when_the_invocation_failed(ferry, worker_runtime):
    worker_runtime.store.tenants.create("acme")
    ran = ferry(
        "invoke", "flaky", "--tenant", "acme", "--data", '{"permanent": true}', "--wait", "30"
    )
    assert ran.code == 1
    assert ran.json()["status"] == "failed"
    assert ran.json()["error"]["type"] == "Permanent"


def test_invoke_wait_exits_3_when_nothing_finished_it(ferry, migrated):
    # No worker runs on this store, so the invocation cannot finish.
    ferry("tenants", "create", "acme")
    ran = ferry(
        "invoke", "echo", "--tenant", "acme", "--data", '{"message": "hi"}', "--wait", "0.3"
    )
    assert ran.code == 3
    assert ran.json()["status"] == "queued"
    assert "still queued" in ran.err


def test_invoke_with_a_key_replays_and_refuses_another_body(ferry, migrated):
    ferry("tenants", "create", "acme")
    argv = ["invoke", "echo", "--tenant", "acme", "--key", "order-1"]
    first = ferry(*argv, "--data", '{"message": "hi"}')
    again = ferry(*argv, "--data", '{"message": "hi"}')
    assert first.code == again.code == 0
    assert first.json()["id"] == again.json()["id"]
    assert first.json()["idempotency_key"] == "order-1"
    assert "replayed" in again.err
    conflict = ferry(*argv, "--data", '{"message": "other"}')
    assert conflict.code == 1
    assert "different --data" in conflict.err and "Idempotency-Key" not in conflict.err
    assert migrated.invocations.counts_by_status() == {"queued": 1}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["echo", "--tenant", "acme", "--data", "{not json"], "not valid JSON"),
        (["echo", "--tenant", "acme", "--data", "{}"], "message: Field required"),
        (["echo", "--tenant", "acme", "--data", '{"message": ""}'], "message:"),
        (["no_such_function", "--tenant", "acme", "--data", "{}"], "no function named"),
        (["echo", "--tenant", "nobody", "--data", '{"message": "x"}'], "no tenant"),
        (["echo", "--tenant", "acme", "--data", '{"message": "x"}', "--key", "é"], "--key"),
        (["echo", "--tenant", "acme", "--data", '{"message": "x"}', "--wait", "-1"], "--wait"),
    ],
)
def test_invoke_refuses_bad_input_with_one_line_and_stores_nothing(ferry, migrated, argv, message):
    ferry("tenants", "create", "acme")
    ran = ferry("invoke", *argv)
    assert ran.code == 1
    assert message in ran.err and len(ran.err.strip().splitlines()) == 1
    assert ran.out == ""
    assert migrated.invocations.counts_by_status() == {}


def test_invoke_refuses_a_suspended_tenant(ferry, migrated):
    ferry("tenants", "create", "acme")
    ferry("tenants", "suspend", "acme")
    ran = ferry("invoke", "echo", "--tenant", "acme", "--data", '{"message": "x"}')
    assert ran.code == 1
    assert "suspended" in ran.err
    assert migrated.invocations.counts_by_status() == {}


# --- worker -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv", [["--queues", "default,urgent"], ["--queues", ","], ["--threads", "0"]]
)
def test_worker_refuses_bad_queues_and_threads(ferry, argv):
    ran = ferry("worker", *argv)
    assert ran.code == 1
    assert len(ran.err.strip().splitlines()) == 1


# --- new ----------------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project's functions and tests, as the working directory."""
    root = tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "functions", root / "functions", ignore=ignore)
    shutil.copytree(REPO / "tests", root / "tests", ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    monkeypatch.chdir(root)
    return root


def test_new_writes_a_function_and_a_test_that_passes(ferry, project):
    # When a function is created
    ran = ferry("new", "greet")
    # Then its module and its test are written
    assert ran.code == 0, ran.err
    module = project / "functions" / "greet.py"
    test = project / "tests" / "unit" / "test_fn_greet.py"
    assert "functions/greet.py" in ran.out and "tests/unit/test_fn_greet.py" in ran.out
    source = module.read_text()
    assert "class Input(BaseModel)" in source and "class Output(BaseModel)" in source
    assert "def greet(ctx: Context, payload: Input) -> Output:" in source
    # And both pass the project's linters as if they were in the repository
    for path in (module, test):
        in_repo = str(path.relative_to(project))
        for linter in (["check"], ["format", "--check"]):
            lint = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "ruff",
                    *linter,
                    "--no-cache",
                    "--stdin-filename",
                    in_repo,
                    "-",
                ],
                cwd=REPO,
                input=path.read_text(),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert lint.returncode == 0, (linter, in_repo, lint.stdout, lint.stderr)
    # And the generated test passes, running the handler with runtime.testing, without
    # any server: every database and broker the environment could name points nowhere
    nowhere = "127.0.0.1:1"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    env.update(
        FERRY_DATABASE_URL=f"postgresql+psycopg://postgres@{nowhere}/ferry",
        FERRY_BROKER_URL=f"redis://{nowhere}/0",
        FERRY_TEST_PG_URL=f"postgresql+psycopg://postgres@{nowhere}/postgres",
        FERRY_TEST_REDIS_URL=f"redis://{nowhere}/0",
    )
    result = run_pytest(str(test.relative_to(project)), cwd=project, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_new_refuses_to_overwrite(ferry, project):
    assert ferry("new", "greet").code == 0
    module = project / "functions" / "greet.py"
    module.write_text("# my own work\n")
    ran = ferry("new", "greet")
    assert ran.code == 1
    assert "exists already" in ran.err
    assert module.read_text() == "# my own work\n"


def test_new_refuses_when_only_the_test_exists(ferry, project):
    test = project / "tests" / "unit" / "test_fn_greet.py"
    test.write_text("# keep\n")
    ran = ferry("new", "greet")
    assert ran.code == 1
    assert not (project / "functions" / "greet.py").exists()
    assert test.read_text() == "# keep\n"


@pytest.mark.parametrize(
    "name",
    ["1st", "class", "send-webhook", "_private", "Input", "naïve", "x" * 41, "echo_time", "echo"],
)
def test_new_refuses_a_bad_or_taken_name_and_writes_nothing(ferry, project, name):
    before = sorted(p.name for p in (project / "functions").iterdir())
    ran = ferry("new", name)
    assert ran.code == 1
    assert len(ran.err.strip().splitlines()) == 1
    assert sorted(p.name for p in (project / "functions").iterdir()) == before


def test_new_outside_a_project_says_where_to_run_it(ferry, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ran = ferry("new", "greet")
    assert ran.code == 1
    assert "project's root" in ran.err
    assert list(tmp_path.iterdir()) == []


# --- schedules ------------------------------------------------------------------------------


def test_schedules_are_listed_through_the_ferry_command(ferry, migrated):
    ran = ferry("schedules", "list", "--json")
    assert ran.code == 0, ran.err
    assert {"cleanup-expired-keys", "usage-report-weekly"} <= {
        s["id"] for s in ran.json()["schedules"]
    }
    unknown = ferry("schedules", "pause", "no-such-schedule")
    assert unknown.code == 1
    assert len(unknown.err.strip().splitlines()) == 1


# --- the README documents what exists ------------------------------------------------------------


def test_the_readme_lists_every_setting_with_its_default():
    readme = (REPO / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(FERRY_[A-Z0-9_]+)` \| ([^|]+) \|", readme, re.MULTILINE))
    assert set(rows) == {f"FERRY_{name.upper()}" for name in Settings.model_fields}
    for name, field in Settings.model_fields.items():
        if name != "secret_key":  # documented as "a development value", on purpose
            assert f"`{field.default}`" in rows[f"FERRY_{name.upper()}"], name


def test_the_readme_test_command_is_what_ci_runs():
    ci = (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    assert re.search(r"^scripts/test\b", ci, re.MULTILINE), "the tests are run by scripts/test"
    assert "`scripts/test`" in readme and ".ci/run" in readme
    assert "python -m pytest" in (REPO / "scripts" / "test").read_text()
    for script in (".ci/run", "scripts/test", "scripts/dev"):
        assert os.access(REPO / script, os.X_OK), script


# --- names that do not exist, misread arguments -------------------------------------------------


def one_line(ran) -> str:
    assert ran.code == 1, ran.out
    assert len(ran.err.strip().splitlines()) == 1, ran.err
    return ran.err


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["invoke", "ecko", "--tenant", "acme", "--data", '{"message": "x"}'], "'echo'"),
        (["invoke", "echo", "--tenant", "acmee", "--data", '{"message": "x"}'], "'acme'"),
        (["tenants", "suspend", "acme-inc"], "'acme'"),
        (["keys", "list", "--tenant", "acmi"], "'acme'"),
        (["schedules", "pause", "cleanup-expired-key"], "'cleanup-expired-keys'"),
        (["schedules", "show", "usage-report-weekli"], "'usage-report-weekly'"),
    ],
)
def test_an_unknown_name_gets_the_closest_known_ones(ferry, migrated, argv, hint):
    ferry("tenants", "create", "acme")
    assert f"did you mean {hint}?" in one_line(ferry(*argv))


def test_a_name_like_none_gets_no_suggestion(ferry, migrated):
    ferry("tenants", "create", "acme")
    err = one_line(ferry("tenants", "suspend", "zzzzzzzz"))
    assert "no tenant 'zzzzzzzz'" in err and "did you mean" not in err


def test_revoking_a_whole_key_asks_for_its_id_and_revokes_nothing(ferry, migrated):
    ferry("tenants", "create", "acme")
    key = ferry("keys", "create", "--tenant", "acme", "--scopes", "read").out.splitlines()[-1]
    key_id = migrated.tenants.authenticate(key).key_id
    err = one_line(ferry("keys", "revoke", key))
    # It names the id, and never echoes the secret
    assert f"ferry keys revoke {key_id}" in err
    assert key not in err and key.split("_")[-1] not in err
    assert migrated.tenants.authenticate(key) is not None
    assert ferry("keys", "revoke", key_id).code == 0


def test_new_says_a_keyword_is_a_keyword(ferry, project):
    err = one_line(ferry("new", "class"))
    assert "'class' is a Python keyword" in err
    assert "identifier" not in err


def test_new_points_at_scripts_test_for_the_generated_test(ferry, project):
    (project / "scripts").mkdir()
    (project / "scripts" / "test").write_text("#!/bin/sh\n")
    ran = ferry("new", "greet")
    assert ran.code == 0, ran.err
    assert "scripts/test tests/unit/test_fn_greet.py" in ran.out


# --- .env ----------------------------------------------------------------------------------------


@pytest.fixture
def environ_restored() -> Iterator[None]:
    """`ferry` sets variables from `.env` in os.environ; put it back as it was."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def in_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, environ_restored) -> Path:
    """A working folder with no FERRY_* variable in the environment."""
    for name in list(os.environ):
        if name.startswith("FERRY_") and not name.startswith("FERRY_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_ferry_reads_the_dotenv_of_the_current_folder(ferry, in_folder):
    # Given a .env naming a store, as the production recipe writes one
    store = in_folder / "from-dotenv.db"
    (in_folder / ".env").write_text(
        f"# settings\nFERRY_DATABASE_URL=sqlite:///{store}\nFERRY_LOG_LEVEL='warning'\n"
    )
    # When a command runs there
    assert ferry("migrate").code == 0
    assert ferry("tenants", "create", "acme").code == 0
    # Then it used that store, not ./ferry.db
    assert store.exists() and not (in_folder / "ferry.db").exists()
    opened = Store.from_settings(Settings.from_env(database_url=f"sqlite:///{store}"))
    assert [t.id for t in opened.tenants.list()] == ["acme"]
    opened.close()


def test_a_variable_already_in_the_environment_wins_over_dotenv(ferry, in_folder, monkeypatch):
    (in_folder / ".env").write_text(f"FERRY_DATABASE_URL=sqlite:///{in_folder / 'file.db'}\n")
    monkeypatch.setenv("FERRY_DATABASE_URL", f"sqlite:///{in_folder / 'env.db'}")
    assert ferry("migrate").code == 0
    assert (in_folder / "env.db").exists() and not (in_folder / "file.db").exists()


def test_a_bad_value_in_dotenv_is_named_like_any_setting(ferry, in_folder):
    (in_folder / ".env").write_text("FERRY_WORKER_THREADS=0\n")
    ran = ferry("tenants", "list")
    assert ran.code == 2 and "FERRY_WORKER_THREADS" in ran.err


def test_help_says_that_ferry_reads_dotenv():
    assert ".env" in build_parser().format_help()


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    # Given a command whose reader has gone before it writes (`| true` exits at once)
    env = {**os.environ, "FERRY_DATABASE_URL": f"sqlite:///{tmp_path / 'ferry.db'}"}
    command = f"{sys.executable} -m runtime.cli functions | true"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], env=env, capture_output=True, text=True
    )
    # Then it stops with the shell's code for SIGPIPE and without a traceback
    assert done.returncode == 141, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr
