"""`ferry dev` reloads edited functions and schedules while it runs, as a user edits them.

A real `ferry dev` process serves the project's `functions` plus a package of the test's
own (`devfns`, in the working directory, on `PYTHONPATH`), and the test edits that
package's files while it runs.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.test_dev import DevServer, servers, start, workdir  # noqa: F401
from tests.unit.test_reload import GREET
from tests.waiting import wait_for

pytestmark = pytest.mark.acceptance


SCHEDULE = """from runtime.scheduling import schedule

nightly_wave = schedule(
    "nightly-wave", cron="0 3 * * *", function="wave", input={"name": "cron"}, tenant="demo"
)
"""


def write(path: Path, text: str) -> None:
    # Written whole and renamed in, as editors save, so the watcher never sees half a file.
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    partial.replace(path)


def invoke(dev: DevServer, function: str) -> tuple[int, Any]:
    answer = dev.api("POST", f"/v1/functions/{function}/invocations?wait=10", json={"name": "Ada"})
    body = answer.json()
    if answer.status_code < 300 and body["status"] == "succeeded":
        return answer.status_code, body["result"]["text"]
    return answer.status_code, body


def wait_until_answers(dev: DevServer, function: str, text: str) -> None:
    """Invoke `function` until it answers `text` (bounded: 30 s); its logs if it never does."""
    try:
        wait_for(
            lambda: invoke(dev, function) == (200, text),
            timeout=30,
            interval=0.05,
            what=f"{function} to answer {text!r}",
        )
    except AssertionError as ex:
        raise AssertionError(f"{ex}\n{dev.logs()}") from None


def test_edits_to_functions_and_schedules_reload_without_a_restart(servers, workdir):  # noqa: F811
    # Given `ferry dev` serving the project's functions plus `devfns.hello`
    package = workdir / "devfns"
    package.mkdir()
    (package / "__init__.py").write_text("")
    write(package / "hello.py", GREET.format(name="hello", greeting="hello", body="pass"))
    (workdir / "devsched").mkdir()
    (workdir / "devsched" / "__init__.py").write_text("")
    env = {
        "PYTHONPATH": str(workdir),
        "FERRY_FUNCTIONS_MODULE": "functions,devfns",
        "FERRY_SCHEDULES_MODULE": "schedules,devsched",
    }
    dev = start(servers, workdir, env)
    wait_for(lambda: "reload_watching" in dev.err.read_text(), timeout=30, what="the watcher")
    assert invoke(dev, "hello") == (200, "hello, Ada")
    assert invoke(dev, "wave")[0] == 404

    # When a new function file is written
    started = time.monotonic()
    write(package / "wave.py", GREET.format(name="wave", greeting="o/", body="pass"))
    # Then it is invocable over HTTP, with the same key, without a restart
    wait_until_answers(dev, "wave", "o/, Ada")
    print(
        f"\nferry dev reload: a new function answered {time.monotonic() - started:.2f} s after its file was written"
    )
    document = dev.api("GET", "/openapi.json").json()
    assert "/v1/functions/wave/invocations" in document["paths"]

    # When an edit breaks `hello`
    write(package / "hello.py", "import pydantic\n\ndef hello(ctx, payload:\n")
    # Then the error is printed with its file and line, and the previous version answers
    wait_for(lambda: "Reload failed" in dev.out.read_text(), timeout=30, what="the reload error")
    printed = dev.out.read_text()
    assert re.search(r"devfns/hello\.py:3: SyntaxError", printed), printed
    assert invoke(dev, "hello") == (200, "hello, Ada")
    assert invoke(dev, "wave") == (200, "o/, Ada")

    # When the edit is fixed and changes the output
    write(package / "hello.py", GREET.format(name="hello", greeting="howdy", body="pass"))
    # Then new invocations run the new code
    wait_until_answers(dev, "hello", "howdy, Ada")

    # When a schedule file is added
    write(workdir / "devsched" / "nightly.py", SCHEDULE)
    # Then the schedule is listed by the API
    wait_for(
        lambda: "nightly-wave" in dev.api("GET", "/v1/schedules").text,
        timeout=30,
        what="the new schedule",
    )
    assert dev.stop() == 0, dev.logs()
