"""The test tools themselves: `scripts/test`, and what a run says when servers are missing."""

from __future__ import annotations

import os
from pathlib import Path

from tests.unit.test_cli import run_pytest

REPO = Path(__file__).resolve().parents[2]


def test_tests_that_need_servers_say_so_in_one_line_per_run(tmp_path):
    # Given a run where PostgreSQL and Redis are not reachable (a plugin says so), not in CI
    plugin = tmp_path / "servers_unreachable.py"
    plugin.write_text(
        "import tests.conftest as conftest\nconftest._reachable = lambda host, port: False\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO)])
    # When the tests that need them run, on both backends
    result = run_pytest(
        "-p",
        "servers_unreachable",
        "tests/unit/test_inputs_strict.py",
        "-k",
        "api",
        cwd=REPO,
        env=env,
    )
    # Then the embedded ones pass, the others skip, and one line says why and what to do
    assert result.returncode == 0, result.stdout + result.stderr
    said = [line for line in result.stdout.splitlines() if "reachable" in line]
    assert said == [
        "SKIPPED [2] tests/conftest.py: PostgreSQL and Redis not reachable on 127.0.0.1: the "
        "tests that need PostgreSQL (user postgres, trust auth) and Redis skipped (.ci/run "
        "sets both up)"
    ]
    assert "2 passed, 2 skipped" in result.stdout.splitlines()[-1]


def test_scripts_test_installs_its_tools_and_passes_q_once():
    script = (REPO / "scripts" / "test").read_text()
    # It sets up .venv with the `test` group, as .ci/run does, and no servers
    assert '["dependency-groups"]["test"]' in script and "pip install" in script
    assert "apt-get install" not in script.replace("apt-get install python3-venv", "")
    # .ci/run reads the one summary line that a single -q gives
    assert script.count(" -q") == 1
