"""The `ferry` command line: one entry point for operators, developers and servers.

Each command group is one module here with `add_commands(subparsers)`; a command is
`run(args, settings) -> exit code` and raises Ferry errors for `main` to print.

Every command reads the same `Settings.from_env()` as the servers, after the `.env` of the
current directory (parsed as honcho does; a variable already set wins). Exit codes: 0 done,
1 a user error (one line on stderr, never a traceback), 2 bad usage or a bad `FERRY_*`
setting, 3 `invoke --wait` ran out before the invocation finished.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from runtime.cli import (
    audit,
    functions,
    invocations,
    invoke,
    keys,
    processes,
    schedules,
    secrets,
    tenants,
)
from runtime.cli.dotenv import load_dotenv
from runtime.cli.output import (
    EXIT_BAD_SETTINGS,
    EXIT_BROKEN_PIPE,
    EXIT_USER_ERROR,
    describe_error,
    warn,
)
from runtime.cli.suggest import suggestion
from runtime.errors import FerryError, SettingsInvalid
from runtime.logs import configure_logging
from runtime.settings import Settings

#: Each adds its commands to the `ferry` parser; a new family of commands brings its own.
COMMAND_GROUPS: list[Callable[[Any], None]] = [
    processes.add_commands,
    tenants.add_commands,
    keys.add_commands,
    functions.add_commands,
    invoke.add_commands,
    invocations.add_commands,
    schedules.add_commands,
    audit.add_commands,
    secrets.add_commands,
]


def build_parser() -> argparse.ArgumentParser:
    """The `ferry` parser with every command group's commands."""
    parser = argparse.ArgumentParser(
        prog="ferry",
        description="Ferry: a function runtime for multi-tenant background work.",
        epilog="Every command reads the FERRY_* environment variables, like the servers, "
        "after reading the .env file of the current directory, parsed as honcho parses it "
        "(a variable already in the environment wins over the file).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_commands in COMMAND_GROUPS:
        add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `ferry` command; returns its exit code."""
    args = build_parser().parse_args(argv)
    try:
        load_dotenv()
    except OSError as ex:
        warn(f"ferry: {ex}")
        return EXIT_BAD_SETTINGS
    settings: Settings | None = None
    try:
        settings = Settings.from_env()
        if not getattr(args, "own_logging", False):
            _configure_quiet_logging(settings)
        return int(args.run(args, settings))
    except SettingsInvalid as ex:
        warn(f"ferry: bad setting: {ex.message}")
        return EXIT_BAD_SETTINGS
    except FerryError as ex:
        hint = suggestion(ex, args, settings) if settings is not None else ""
        warn(f"ferry: {describe_error(ex)}{hint}")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`ferry invocations list | head`): stop quietly, as `ls` does.
        # Python would print a second error flushing stdout at exit; point it at devnull.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is at the time (pytest swaps it between tests)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _configure_quiet_logging(settings: Settings) -> None:
    """Logs go to stderr, so stdout stays what the command prints; warnings only by default."""
    if "log_level" not in settings.model_fields_set:
        settings = settings.model_copy(update={"log_level": "warning"})
    configure_logging(settings, stream=_CurrentStderr())
