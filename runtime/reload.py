"""Live reload for `ferry dev`: new function and schedule code without a restart.

A `Watcher` thread follows the `.py` files of the functions and schedules packages
(`FERRY_FUNCTIONS_MODULE`, `FERRY_SCHEDULES_MODULE`). On a change, `Reloader.reload`
imports those packages afresh, builds a new registry and schedule book beside the ones
serving, and swaps them in only when both load and check cleanly:

- each function's Dramatiq actor is declared again on the broker (a declaration
  replaces the actor of the same name), so messages taken from then on run the new
  code, while an attempt already running finishes on the code it started with. The
  actor of a removed function stays, so its queued work still runs;
- the runtime's `Registry` takes the new functions in place (`Registry.replace`), so
  the gateway, the services and the dispatcher, which hold that registry, see them;
- the scheduler (shared by the `ferry dev` thread, the API and the dashboard) takes
  the new book, and the store's list of schedules is made to agree with it.

A module that fails to import or check leaves everything as it was (the previous
modules go back into `sys.modules`), and the error is printed with its file and line.
Nothing touches the store's data, the dev key or the worker.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TextIO, TypeVar, cast

import dramatiq
import structlog
import watchfiles

from runtime.registry import Registry
from runtime.scheduling.definition import ScheduleBook
from runtime.worker.broker import declare_actors

if TYPE_CHECKING:
    from runtime.app import Runtime
    from runtime.scheduling.scheduler import Scheduler

log = structlog.get_logger("ferry.reload")

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class ReloadProblem:
    """Why a reload was refused: the message, and where in the user's code if known."""

    message: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        if self.file is None:
            return self.message
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


@dataclasses.dataclass(frozen=True)
class Generation:
    """One loaded version of the code: its functions and its schedules."""

    number: int
    registry: Registry
    book: ScheduleBook


def packages_of(*dotted: str) -> list[str]:
    """The package names of comma-separated settings such as `functions,more_functions`."""
    return [name.strip() for value in dotted for name in value.split(",") if name.strip()]


def _within(name: str, packages: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _forget_bytecode(module: ModuleType) -> None:
    # A `.pyc` is trusted when the source's mtime (in whole seconds) and size match, so an
    # edit within a second of the last import, keeping the size, would load stale code.
    source = getattr(module, "__file__", None)
    if source and source.endswith(".py"):
        try:
            os.remove(importlib.util.cache_from_source(source))
        except OSError:
            pass  # never written, or not ours to remove: the import compiles anew either way


def import_afresh(packages: Sequence[str], load: Callable[[], T]) -> T:
    """Run `load` with the packages' modules imported anew.

    If `load` raises, the modules it imported are dropped and the previous ones are put
    back, so later imports (a function's lazy `import functions.x`) find the code serving.
    """
    previous = {name: m for name, m in list(sys.modules.items()) if _within(name, packages)}
    for name, module in previous.items():
        del sys.modules[name]
        _forget_bytecode(module)
    importlib.invalidate_caches()  # a file created since the last import must be found
    try:
        return load()
    except BaseException:
        for name in [n for n in list(sys.modules) if _within(n, packages)]:
            del sys.modules[name]
        sys.modules.update(previous)
        for name, module in previous.items():
            parent, _, child = name.rpartition(".")
            if parent in sys.modules:  # the parent package's attribute names the old one
                setattr(sys.modules[parent], child, module)
        raise


def _chain(ex: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = ex
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _shown(path: str) -> str:
    """A path as the user typed it: relative to the working folder when it is inside it."""
    absolute = Path(path).resolve()
    cwd = Path.cwd()
    return str(absolute.relative_to(cwd)) if absolute.is_relative_to(cwd) else str(absolute)


def describe(ex: BaseException, roots: Sequence[Path]) -> ReloadProblem:
    """The error as a user reads it: where in their code (under `roots`) and what."""

    message = f"{type(ex).__name__}: {ex}"
    for error in _chain(ex):
        if isinstance(error, SyntaxError) and error.filename:
            return ReloadProblem(
                f"{type(error).__name__}: {error.msg}", _shown(error.filename), error.lineno
            )
    resolved = [root.resolve() for root in roots]
    for error in _chain(ex):
        frames = [
            frame
            for frame in traceback.extract_tb(error.__traceback__)
            if any(Path(frame.filename).resolve().is_relative_to(r) for r in resolved)
        ]
        if frames:
            return ReloadProblem(message, _shown(frames[-1].filename), frames[-1].lineno)
    return ReloadProblem(message)


class _Redeclaring:
    """The broker as a new `dramatiq.Actor` sees it while a function is declared again.

    `Actor()` refuses a name the broker already has, but `Broker.declare_actor` replaces
    an actor by name in one assignment: messages find the old actor or the new one, never
    none. This stand-in shows the actor an empty list of names and hands it the real broker.
    """

    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker
        self.actors: dict[str, dramatiq.Actor[Any, Any]] = {}

    def declare_actor(self, actor: dramatiq.Actor[Any, Any]) -> None:
        actor.broker = self.broker
        self.broker.declare_actor(actor)

    def declare_queue(self, queue_name: str) -> None:
        self.broker.declare_queue(queue_name)


class Reloader:
    """Loads a new generation of functions and schedules and swaps it in, or refuses it."""

    def __init__(self, runtime: Runtime, scheduler: Scheduler, *, out: TextIO) -> None:
        self.runtime = runtime
        self.scheduler = scheduler
        self.out = out
        self.packages = packages_of(
            runtime.settings.functions_module, runtime.settings.schedules_module
        )
        self._lock = threading.Lock()
        # A copy: the runtime's registry object itself takes each new generation's functions.
        serving = Registry({function.name: function for function in runtime.registry})
        self.current = Generation(0, serving, scheduler.book)

    def watched_paths(self) -> list[Path]:
        """The folders (or files) of the packages, as they are imported now."""
        paths: list[Path] = []
        for name in self.packages:
            module = sys.modules.get(name)
            if module is None:
                continue
            folders = getattr(module, "__path__", None)
            if folders is not None:
                paths.extend(Path(folder) for folder in folders)
            elif getattr(module, "__file__", None):
                paths.append(Path(str(module.__file__)))
        return sorted(set(paths))

    def reload(self, changed: Sequence[str] = ()) -> Generation | ReloadProblem:
        """Load the code anew; swap it in if it loads cleanly, else keep what serves."""
        with self._lock:  # two batches of changes must not interleave their swaps
            roots = self.watched_paths()
            try:
                registry, book = import_afresh(self.packages, self._load)
            except Exception as ex:
                problem = describe(ex, roots)
                log.error(
                    "reload_failed", file=problem.file, line=problem.line, error=problem.message
                )
                print(
                    f"Reload failed; still serving the previous version.\n  {problem}",
                    file=self.out,
                    flush=True,
                )
                return problem
            before = self.current
            self._swap(registry, book)
            generation = self.current = Generation(before.number + 1, registry, book)
        print(_summary(before, generation, changed), file=self.out, flush=True)
        log.info(
            "reloaded",
            generation=generation.number,
            functions=[function.name for function in registry],
            schedules=book.ids(),
        )
        return generation

    def _load(self) -> tuple[Registry, ScheduleBook]:
        settings = self.runtime.settings
        registry = Registry.load(settings.functions_module, settings)
        return registry, ScheduleBook.load(settings.schedules_module, registry)

    def _swap(self, registry: Registry, book: ScheduleBook) -> None:
        runtime = self.runtime
        # Actors first: a request that finds a new function in the registry must find its
        # actor on the broker too. Declaring again replaces the actor of that name.
        stand_in = cast(dramatiq.Broker, _Redeclaring(runtime.broker))
        actors = declare_actors(stand_in, registry, runtime.executor.actor_body)
        runtime.actors = {**runtime.actors, **actors}
        runtime.registry.replace(registry)
        self.scheduler.book = book
        self.scheduler.register()


def _summary(before: Generation, after: Generation, changed: Sequence[str]) -> str:
    """One line for the terminal: what changed, and what came and went."""

    def difference(label: str, old: set[str], new: set[str]) -> str:
        parts = [f"+{name}" for name in sorted(new - old)]
        parts += [f"-{name}" for name in sorted(old - new)]
        return f"{label}: {len(new)}" + (f" ({', '.join(parts)})" if parts else "")

    files = ", ".join(_shown(path) for path in changed) or "the code"
    functions = difference(
        "functions",
        {f.name for f in before.registry},
        {f.name for f in after.registry},
    )
    schedules = difference("schedules", set(before.book.ids()), set(after.book.ids()))
    return f"Reloaded after a change to {files}: {functions}, {schedules}."


class Watcher:
    """A thread that calls `reloader.reload` after each batch of changes to `.py` files."""

    def __init__(self, reloader: Reloader, *, name: str = "ferry-reload") -> None:
        self.reloader = reloader
        self.paths = reloader.watched_paths()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        log.info("reload_watching", paths=[str(path) for path in self.paths])
        return self

    def _loop(self) -> None:
        changes_of = watchfiles.watch(
            *self.paths,
            watch_filter=watchfiles.PythonFilter(),
            stop_event=self._stop,
            # Changes 50 ms apart are one batch (an editor's save is several events).
            step=50,
            rust_timeout=500,
            raise_interrupt=False,
        )
        try:
            for changes in changes_of:
                changed = sorted({path for _change, path in changes})
                try:
                    self.reloader.reload(changed)
                except Exception as ex:  # the watcher must outlive any one reload
                    log.exception("reload_crashed", error_type=type(ex).__name__)
        except Exception as ex:  # no watching at all (inotify's limit, say): say so, go on
            log.error("reload_unavailable", error_type=type(ex).__name__, error=str(ex))
            print(
                f"Live reload stopped ({type(ex).__name__}: {ex}); restart to load edits.",
                file=self.reloader.out,
                flush=True,
            )

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
