"""`gateway.wsgi:app`, what gunicorn serves, is built from FERRY_* settings alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json
from falcon.testing import TestClient
from gateway.wsgi import app, runtime
runtime.store.migrate()
client = TestClient(app)
print(json.dumps([client.simulate_get(path).status_code for path in ("/healthz", "/v1/functions")]))
"""


def test_the_wsgi_module_builds_the_app_from_the_environment(tmp_path):
    # Given only FERRY_* variables, in a fresh process
    env = {
        **os.environ,
        "FERRY_DATABASE_URL": f"sqlite:///{tmp_path / 'ferry.db'}",
        "FERRY_FUNCTIONS_MODULE": "functions,tests.fixtures.functions",
        "FERRY_LOG_FORMAT": "json",
        "FERRY_LOG_LEVEL": "info",
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Then the app answers, and logs each request as a JSON line with its request id
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [200, 401]
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line["event"] == "http_request"]
    assert [(r["route"], r["status"]) for r in requests] == [
        ("/healthz", 200),
        ("/v1/functions", 401),
    ]
    assert all(len(r["request_id"]) == 32 for r in requests)
