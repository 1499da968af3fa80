"""`ferry dev`'s live reload: a new generation of code swaps in whole, or not at all."""

from __future__ import annotations

import io
import os
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.app import Runtime
from runtime.reload import (
    Generation,
    Reloader,
    ReloadProblem,
    Watcher,
    describe,
    import_afresh,
)
from runtime.settings import Settings
from tests.conftest import prepare
from tests.waiting import finished, wait_for

GREET = '''
"""Greets."""
import pydantic
from runtime import function


class Input(pydantic.BaseModel):
    name: str


class Output(pydantic.BaseModel):
    text: str


@function
def {name}(ctx, payload: Input) -> Output:
    {body}
    return Output(text="{greeting}, " + payload.name)
'''

SCHEDULE = """
from runtime.scheduling import schedule

{var} = schedule("{id}", cron="0 3 * * *", function="greet", input={{"name": "cron"}}, tenant="demo")
"""


class Project:
    """A functions package and a schedules package in a folder on `sys.path`."""

    def __init__(self, root: Path) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.functions = f"reload_fns_{suffix}"
        self.schedules = f"reload_sched_{suffix}"
        self.functions_dir = root / self.functions
        self.schedules_dir = root / self.schedules
        for folder in (self.functions_dir, self.schedules_dir):
            folder.mkdir()
            (folder / "__init__.py").write_text("")

    def function(self, name: str, greeting: str = "hello", body: str = "pass") -> Path:
        path = self.functions_dir / f"{name}.py"
        path.write_text(GREET.format(name=name, greeting=greeting, body=body))
        return path

    def schedule(self, schedule_id: str) -> Path:
        var = schedule_id.replace("-", "_")
        path = self.schedules_dir / f"{var}.py"
        path.write_text(textwrap.dedent(SCHEDULE.format(var=var, id=schedule_id)))
        return path

    def forget(self) -> None:
        for name in [n for n in sys.modules if n.startswith((self.functions, self.schedules))]:
            del sys.modules[name]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    monkeypatch.syspath_prepend(str(tmp_path))
    made = Project(tmp_path)
    made.function("greet")
    yield made
    made.forget()


@pytest.fixture
def make_runtime(
    project: Project, settings_for: Callable[..., Settings]
) -> Iterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def build(backend: str = "embedded") -> Runtime:
        settings = settings_for(
            backend, functions_module=project.functions, schedules_module=project.schedules
        )
        runtime = prepare(Runtime(settings))
        runtime.store.tenants.create("demo")
        made.append(runtime)
        return runtime

    yield build
    for runtime in made:
        runtime.close()


def reloader_of(runtime: Runtime) -> tuple[Reloader, io.StringIO]:
    out = io.StringIO()
    return Reloader(runtime, runtime.schedules.scheduler, out=out), out


def run(runtime: Runtime, function: str, name: str = "Ada") -> Any:
    accepted = runtime.invocations.accept(
        tenant_id="demo", function=function, payload={"name": name}
    )
    view = wait_for(finished(runtime, accepted.invocation.id), timeout=30, what=function)
    assert view.status == "succeeded", view
    return view.result["text"]


def test_new_and_changed_functions_are_invoked_with_the_new_code(backend, make_runtime, project):
    # Given a runtime serving `greet` with a running worker
    runtime = make_runtime(backend)
    reloader, out = reloader_of(runtime)
    worker = runtime.start_worker()
    try:
        assert run(runtime, "greet") == "hello, Ada"
        # When a new function file appears and `greet` is edited, then the code reloads
        project.function("wave", greeting="o/")
        project.function("greet", greeting="howdy")
        generation = reloader.reload()
        # Then both are invoked with the new code, through the same registry object
        assert isinstance(generation, Generation) and generation.number == 1
        assert "wave" in runtime.registry and runtime.registry.generation == 1
        assert run(runtime, "wave") == "o/, Ada"
        assert run(runtime, "greet") == "howdy, Ada"
        assert "Reloaded after a change to the code: functions: 2 (+wave), schedules: 0." in (
            out.getvalue()
        )
    finally:
        worker.stop(grace_s=5)


@pytest.mark.parametrize(
    ("broken", "line", "message"),
    [
        ("def oops(:\n", 1, "SyntaxError"),
        ("import pydantic\n\nraise RuntimeError('no config')\n", 3, "RuntimeError: no config"),
    ],
)
def test_a_broken_module_is_reported_and_the_previous_version_keeps_serving(
    make_runtime, project, broken, line, message
):
    # Given a runtime serving `greet`
    runtime = make_runtime()
    reloader, out = reloader_of(runtime)
    module = sys.modules[f"{project.functions}.greet"]
    worker = runtime.start_worker()
    try:
        # When `greet` is changed and another module is broken in the same batch
        project.function("greet", greeting="howdy")
        (project.functions_dir / "broken.py").write_text(broken)
        problem = reloader.reload()
        # Then the error names the file and line, and nothing was swapped
        assert isinstance(problem, ReloadProblem), problem
        assert problem.file is not None and problem.file.endswith("broken.py")
        assert problem.line == line and message in problem.message
        assert "still serving the previous version" in out.getvalue()
        assert str(problem) in out.getvalue()
        assert runtime.registry.generation == 0 and reloader.current.number == 0
        assert sys.modules[f"{project.functions}.greet"] is module
        assert run(runtime, "greet") == "hello, Ada"
        # And once the module is fixed, the next reload takes everything
        (project.functions_dir / "broken.py").write_text("")
        assert isinstance(reloader.reload(), Generation)
        assert run(runtime, "greet") == "howdy, Ada"
    finally:
        worker.stop(grace_s=5)


def test_a_bad_schedule_refuses_the_whole_generation(make_runtime, project):
    # Given a runtime serving `greet`
    runtime = make_runtime()
    reloader, _out = reloader_of(runtime)
    # When a function is added but a schedule names a function that does not exist
    project.function("wave")
    (project.schedules_dir / "bad.py").write_text(
        "from runtime.scheduling import schedule\n"
        "bad = schedule('bad', cron='0 3 * * *', function='nope', input={}, tenant='demo')\n"
    )
    problem = reloader.reload()
    # Then neither the function nor the schedule is taken
    assert isinstance(problem, ReloadProblem) and "nope" in problem.message
    assert "wave" not in runtime.registry
    assert len(runtime.schedules.book) == 0


def test_schedules_are_added_and_removed_with_their_state_in_the_store(make_runtime, project):
    # Given a runtime with no schedules
    runtime = make_runtime()
    reloader, out = reloader_of(runtime)
    # When a schedule file appears
    path = project.schedule("nightly-greet")
    assert isinstance(reloader.reload(), Generation)
    assert "schedules: 1 (+nightly-greet)." in out.getvalue()
    # Then the API's book and the store know it
    assert [s.definition.id for s in runtime.schedules.list(None)] == ["nightly-greet"]
    assert runtime.schedules.scheduler.book.get("nightly-greet").function == "greet"
    state = runtime.store.schedules.states()["nightly-greet"]
    assert state.removed_at is None
    # When it is removed again
    path.unlink()
    assert isinstance(reloader.reload(), Generation)
    # Then it leaves the book, and the store marks it removed
    assert "schedules: 0 (-nightly-greet)." in out.getvalue()
    assert runtime.schedules.list(None) == []
    assert runtime.store.schedules.states()["nightly-greet"].removed_at is not None


def test_a_running_attempt_finishes_on_the_code_it_started_with(make_runtime, project, tmp_path):
    # Given an attempt of `greet` v1 running (it waits for a file to appear)
    release = tmp_path / "release"
    wait = f"import time, pathlib\n    while not pathlib.Path({str(release)!r}).exists(): time.sleep(0.02)"
    project.function("greet", greeting="v1", body=wait)
    runtime = make_runtime()
    reloader, _out = reloader_of(runtime)
    worker = runtime.start_worker()
    try:
        first = runtime.invocations.accept(
            tenant_id="demo", function="greet", payload={"name": "A"}
        )
        wait_for(
            lambda: runtime.store.invocations.get(first.invocation.id).status == "running",
            timeout=30,
            what="the first attempt to run",
        )
        # When `greet` v2 is loaded while it runs, and then it is let go
        project.function("greet", greeting="v2")
        assert isinstance(reloader.reload(), Generation)
        release.touch()
        # Then it finishes with v1, and a new invocation runs v2
        view = wait_for(finished(runtime, first.invocation.id), timeout=30, what="v1")
        assert view.result["text"] == "v1, A"
        assert run(runtime, "greet") == "v2, Ada"
    finally:
        release.touch()
        worker.stop(grace_s=5)


def test_import_afresh_puts_the_previous_modules_back_when_loading_fails(project):
    # Given the package imported
    __import__(f"{project.functions}.greet")
    before = sys.modules[f"{project.functions}.greet"]

    def failing() -> None:
        __import__(f"{project.functions}.greet")
        assert sys.modules[f"{project.functions}.greet"] is not before  # imported anew
        raise ValueError("refused")

    # When a load imports it afresh and then fails
    with pytest.raises(ValueError):
        import_afresh([project.functions], failing)
    # Then the module serving before is the one imported again
    assert sys.modules[f"{project.functions}.greet"] is before
    assert sys.modules[project.functions].greet is before


def test_describe_points_at_the_users_file_not_the_runtimes(project):
    # Given an error raised by the runtime on behalf of a line of user code
    path = project.functions_dir / "bad_hint.py"
    path.write_text("from runtime import function\n\n@function\ndef bad(ctx, payload): pass\n")
    try:
        __import__(f"{project.functions}.bad_hint")
    except Exception as ex:
        problem = describe(ex, [project.functions_dir])
    else:
        raise AssertionError("a handler without a pydantic payload was accepted")
    # Then the problem names that line, in the user's file
    assert problem.file is not None and Path(problem.file).resolve() == path.resolve()
    assert problem.line == 3 or problem.line == 4
    assert "FunctionDefinitionError" in problem.message


def test_an_edit_keeping_size_and_mtime_second_is_not_hidden_by_bytecode(
    make_runtime, project, monkeypatch
):
    # Given `greet` imported from a file whose mtime is a whole second, its .pyc written
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # the tests' environment sets it
    path = project.functions_dir / "greet.py"
    os.utime(path, (1_700_000_000, 1_700_000_000))
    runtime = make_runtime()
    reloader, _out = reloader_of(runtime)
    assert reloader.reload() and _greeting(runtime) == "hello, Ada"
    assert list((project.functions_dir / "__pycache__").glob("greet.*.pyc"))
    # When it is edited within that second, to a text of the same size
    project.function("greet", greeting="howdy")
    os.utime(path, (1_700_000_000, 1_700_000_000))
    # Then the reload runs the edited text, not the cached bytecode of the old one
    assert isinstance(reloader.reload(), Generation)
    assert _greeting(runtime) == "howdy, Ada"


def _greeting(runtime: Runtime) -> str:
    function = runtime.registry.get("greet")
    return str(function.spec(None, function.spec.input_model(name="Ada")).text)


def test_the_watcher_reloads_after_a_file_is_written_and_stops(make_runtime, project):
    # Given a watcher over the runtime's packages
    runtime = make_runtime()
    reloader, out = reloader_of(runtime)
    watcher = Watcher(reloader).start()
    try:
        assert project.functions_dir in watcher.paths
        # When a new function file is written
        project.function("wave")
        # Then it is loaded without anyone calling reload
        wait_for(lambda: "wave" in runtime.registry, timeout=30, what="the watcher to reload")
        # and says so: the summary is printed just after the swap, so it may come a moment
        # after the registry has the function
        wait_for(lambda: "wave.py" in out.getvalue(), timeout=30, what="the reload's summary")
    finally:
        watcher.stop()
    assert not watcher.alive


def test_a_watcher_that_cannot_watch_says_so(make_runtime, project, tmp_path):
    # Given a watcher whose folder is gone
    runtime = make_runtime()
    reloader, out = reloader_of(runtime)
    watcher = Watcher(reloader)
    watcher.paths = [tmp_path / "gone"]
    # When it starts, then it says that live reload stopped, and the thread ends
    watcher.start()
    wait_for(lambda: not watcher.alive, timeout=30, what="the watcher to give up")
    assert "Live reload stopped" in out.getvalue()
