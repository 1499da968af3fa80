"""`ferry invoke NAME --batch FILE.jsonl`: one JSON input per line, sent in batches of 1,000.

Each batch goes through the batch use case (`InvocationService.accept_batch`): one
validation pass, one commit, one broker round trip. Prints one JSON line per input line:
`{"line": n, "id": ..., "status": ..., "replayed": ...}`, or `{"line": n, "errors": [...]}`
for an input that is not JSON or not valid for the function. Blank lines are skipped.
The exit code is 1 if any line failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import IO, Any

from runtime.cli.connect import open_runtime
from runtime.cli.output import EXIT_OK, EXIT_USER_ERROR, say, warn
from runtime.errors import BadRequest
from runtime.services.batches import MAX_BATCH, BatchItem, ItemOutcome
from runtime.settings import Settings


def _lines(stream: IO[str]) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(stream, start=1):
        if line.strip():
            yield number, line


def _chunks(stream: IO[str]) -> Iterator[list[tuple[int, str]]]:
    chunk: list[tuple[int, str]] = []
    for numbered in _lines(stream):
        chunk.append(numbered)
        if len(chunk) == MAX_BATCH:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _shown(number: int, outcome: ItemOutcome) -> dict[str, Any]:
    if outcome.invocation is None:
        return {"line": number, "errors": list(outcome.errors)}
    return {
        "line": number,
        "id": outcome.invocation.id,
        "status": str(outcome.invocation.status),
        "replayed": not outcome.created,
    }


def cmd_invoke_batch(args: argparse.Namespace, settings: Settings) -> int:
    """Invoke `args.name` once per line of `args.batch` (`-`: standard input)."""
    if args.key is not None or args.wait is not None:
        raise BadRequest("--key and --wait are for one invocation; --batch takes neither")
    failed = 0
    try:
        stream = sys.stdin if args.batch == "-" else open(args.batch, encoding="utf-8")
    except OSError as ex:
        raise BadRequest(f"--batch: cannot read {args.batch}: {ex.strerror}") from ex
    with open_runtime(settings) as runtime, stream:
        for chunk in _chunks(stream):
            shown: dict[int, dict[str, Any]] = {}
            items: list[BatchItem] = []
            numbers: list[int] = []
            for number, line in chunk:
                try:
                    items.append(BatchItem(json.loads(line)))
                    numbers.append(number)
                except json.JSONDecodeError as ex:
                    shown[number] = {
                        "line": number,
                        "errors": [{"loc": [], "msg": f"not JSON: {ex}"}],
                    }
            if items:
                outcomes = runtime.invocations.accept_batch(
                    tenant_id=args.tenant, function=args.name, items=items, trigger="cli"
                )
                for number, outcome in zip(numbers, outcomes, strict=True):
                    shown[number] = _shown(number, outcome)
            for number in sorted(shown):
                failed += "errors" in shown[number]
                say(json.dumps(shown[number]))
    if failed:
        warn(f"{failed} line(s) failed")
        return EXIT_USER_ERROR
    return EXIT_OK
