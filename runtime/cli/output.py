"""What `ferry` commands print and return: exit codes, tables, JSON and one-line errors.

Results go to stdout and notes to stderr, so a command's output can be piped.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from runtime.errors import FerryError, InputInvalid

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_BAD_SETTINGS = 2
EXIT_STILL_RUNNING = 3
#: Standard output was closed by its reader (128 + SIGPIPE, as a shell reports it).
EXIT_BROKEN_PIPE = 141


def say(text: str = "") -> None:
    """Print a line of the command's result on stdout."""
    print(text, file=sys.stdout, flush=True)


def warn(text: str) -> None:
    """Print a note or an error on stderr."""
    print(text, file=sys.stderr, flush=True)


def print_json(value: Any) -> None:
    """Print `value` as indented JSON, keys in their given order."""
    say(json.dumps(value, indent=2, sort_keys=False))


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """Give a listing command `--json`."""
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def cell(value: Any) -> str:
    """A table cell: lists comma-joined, text cut to its first line."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    lines = str(value).splitlines()
    return lines[0] if lines else ""


def table(rows: list[list[str]]) -> None:
    """Print rows (the first is the header) as left-aligned columns two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        say(
            "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        )


def show(as_json: bool, kind: str, records: list[dict[str, Any]], columns: list[str]) -> None:
    """Print records as `{kind: [...]}` JSON, or as a table of some of their fields."""
    if as_json:
        print_json({kind: records})
        return
    table([[c.upper() for c in columns]] + [[cell(r[c]) for c in columns] for r in records])


def describe_error(ex: FerryError) -> str:
    """One line: the message, and for invalid input each problem's location and message."""
    text = ex.message
    if isinstance(ex, InputInvalid) and ex.errors:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(input)'}: {e['msg']}" for e in ex.errors
        )
        text = f"{text}: {problems}"
    return " ".join(text.split())
