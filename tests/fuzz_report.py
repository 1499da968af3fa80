"""The fuzzers' counts, printed at the end of the test run (so `.ci/run` shows them).

Loaded as a pytest plugin by tests/conftest.py. A fuzz test records one `FuzzRun` per
target (`wsgi`: the app in-process; `live`: gunicorn over HTTP); the terminal summary
prints a line per run:

    fuzz(live): 21 operations, 1260 cases, stateful 90 steps, 0 failures

A test records its counts whatever the outcome, then fails if any case failed or if it
sent no case at all: a line here with failures belongs to a failed test.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class FuzzRun:
    """What one fuzz test sent: operations covered, stateless cases, stateful steps."""

    target: str
    operations: int = 0
    cases: int = 0
    stateful_steps: int = 0
    failures: int = 0

    def line(self) -> str:
        stateful = f", stateful {self.stateful_steps} steps" if self.stateful_steps else ""
        return (
            f"fuzz({self.target}): {self.operations} operations, {self.cases} cases"
            f"{stateful}, {self.failures} failures"
        )


#: Runs by target, in the order they were recorded; a target run twice adds up.
runs: dict[str, FuzzRun] = {}


def record(run: FuzzRun) -> None:
    """Add a finished run's counts to the summary."""
    total = runs.setdefault(run.target, FuzzRun(run.target))
    total.operations = max(total.operations, run.operations)
    total.cases += run.cases
    total.stateful_steps += run.stateful_steps
    total.failures += run.failures


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for run in runs.values():
        terminalreporter.write_line(run.line())
