"""`ferry functions` lists the deployment's functions; `ferry new` writes a new one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from runtime import scaffold
from runtime.cli.output import EXIT_OK, add_json_flag, say, show
from runtime.registry import Registry
from runtime.settings import Settings


def cmd_functions(args: argparse.Namespace, settings: Settings) -> int:
    registry = Registry.load(settings.functions_module, settings)
    records = [fn.describe() for fn in registry]
    show(
        args.json,
        "functions",
        records,
        ["name", "queue", "max_retries", "timeout_s", "description"],
    )
    return EXIT_OK


def cmd_new(args: argparse.Namespace, settings: Settings) -> int:
    package = settings.functions_module.split(",")[0].strip()
    written = scaffold.write_function(args.name, package=package, settings=settings)
    for path in written:
        say(f"created {path}")
    # scripts/test installs the test tools on first use; plain pytest may not be there yet.
    runner = "scripts/test" if Path("scripts", "test").is_file() else "python -m pytest -q"
    say(f"run its test:   {runner} {written[1]}")
    say(
        f"invoke it:      ferry invoke {args.name} --tenant demo --data "
        f"'{json.dumps(scaffold.EXAMPLE_INPUT)}' (a running `ferry dev` loads it by itself)"
    )
    return EXIT_OK


def add_commands(sub: Any) -> None:
    """Add `ferry functions` and `ferry new`."""
    functions = sub.add_parser("functions", help="list the deployment's functions")
    add_json_flag(functions)
    functions.set_defaults(run=cmd_functions)

    new = sub.add_parser("new", help="write a new function module and its test")
    new.add_argument("name", metavar="NAME", help="a Python identifier, e.g. resize_image")
    new.set_defaults(run=cmd_new)
