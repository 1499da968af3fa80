"""Production refuses a secret key anyone could know: unset, the default, a placeholder, short.

Issue 12: the published default `FERRY_SECRET_KEY` was accepted in production, and the
deploy examples shipped a placeholder that passed the length check. Outside embedded mode
(`memory://`) every process refuses such a key at start, with one line naming the variable
and how to make one.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.errors import SettingsInvalid
from runtime.settings import DEV_SECRET_KEY, MAKE_SECRET_COMMAND, Settings

ROOT = Path(__file__).resolve().parents[2]
REDIS = "redis://127.0.0.1:6379/0"
BAD_SECRETS = {
    "default": DEV_SECRET_KEY,
    "systemd and k8s examples": "replace-with-a-long-random-string",
    "old README recipe": "change-me-to-32-random-characters",
    "changeme": "changeme-changeme-changeme-changeme-42",
    "placeholder": "placeholder-secret-key-of-plenty-of-length",
    "example": "an-example-secret-key-that-is-long-enough-0",
    "short": "q8Zr1xWm3Lk9Tb2Vn7Yc",
    "31 bytes": "x7" * 15 + "y",
}


def refusal(**overrides: object) -> str:
    with pytest.raises(SettingsInvalid) as refused:
        Settings.from_env(**overrides)
    return str(refused.value)


@pytest.fixture(autouse=True)
def _no_secret_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FERRY_SECRET_KEY", "FERRY_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("secret", BAD_SECRETS.values(), ids=BAD_SECRETS.keys())
def test_production_refuses_a_known_or_short_secret(secret: str) -> None:
    message = refusal(broker_url=REDIS, secret_key=secret)
    # One line that names the variable and says how to make a good one
    assert message.startswith("FERRY_SECRET_KEY:")
    assert "\n" not in message
    assert MAKE_SECRET_COMMAND in message
    assert secret not in message  # the refused value is not echoed into logs


def test_production_refuses_a_missing_secret() -> None:
    message = refusal(broker_url="rediss://redis.internal:6379/0")
    assert message.startswith("FERRY_SECRET_KEY:") and "unset" in message


def test_production_accepts_a_made_secret() -> None:
    made = secrets.token_urlsafe(48)
    assert Settings.from_env(broker_url=REDIS, secret_key=made).secret_key == made
    assert Settings.from_env(broker_url=REDIS, secret_key="k" * 32).secret_key == "k" * 32


def test_embedded_mode_accepts_the_development_default() -> None:
    assert Settings.from_env().secret_key == DEV_SECRET_KEY
    assert Settings.from_env(broker_url="memory://").embedded_broker


def test_a_bad_broker_is_reported_without_a_secret_complaint() -> None:
    assert refusal(broker_url="amqp://x").startswith("FERRY_BROKER_URL:")


def production_env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    # Nothing listens there: a process that got past its settings would fail differently.
    return env | {"PYTHONPATH": str(ROOT), "FERRY_BROKER_URL": "redis://127.0.0.1:9/0"} | more


def ferry_command() -> list[str]:
    return [sys.executable, "-c", "import sys; from runtime.cli import main; sys.exit(main())"]


@pytest.mark.parametrize("argv", [["worker"], ["scheduler"], ["migrate"]])
def test_ferry_processes_refuse_the_default_secret_in_one_line(argv: list[str], tmp_path) -> None:
    # Given production settings with the secret key left unset (the published default)
    env = production_env(FERRY_DATABASE_URL=f"sqlite:///{tmp_path / 'ferry.db'}")
    done = subprocess.run(
        ferry_command() + argv, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    # Then the process exits non-zero with one line naming FERRY_SECRET_KEY
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "FERRY_SECRET_KEY" in lines[0] and "token_urlsafe" in lines[0]


def test_gunicorn_refuses_the_default_secret_in_one_line(tmp_path) -> None:
    # Given the production gunicorn configuration with the default secret key
    gunicorn = Path(sys.executable).parent / "gunicorn"
    assert gunicorn.exists() or shutil.which("gunicorn")
    env = production_env(
        FERRY_DATABASE_URL=f"sqlite:///{tmp_path / 'ferry.db'}",
        FERRY_SECRET_KEY=DEV_SECRET_KEY,
        PORT="0",
    )
    argv = [str(gunicorn), "-c", "deploy/gunicorn.conf.py", "gateway.wsgi:app"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    # Then it exits non-zero before serving, with one line naming FERRY_SECRET_KEY
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ferry web: FERRY_SECRET_KEY:")


def test_the_wsgi_module_alone_refuses_the_default_secret(tmp_path) -> None:
    # Given `gateway.wsgi` imported without gunicorn.conf.py (its own check comes first)
    env = production_env(FERRY_DATABASE_URL=f"sqlite:///{tmp_path / 'ferry.db'}")
    done = subprocess.run(
        [sys.executable, "-c", "import gateway.wsgi"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    # Then it stops with gunicorn's boot-error code and one line, no traceback
    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("ferry web: FERRY_SECRET_KEY:")


def test_the_function_harness_ignores_a_production_broker_in_the_environment(monkeypatch):
    # Given a developer's shell with production's broker (the harness runs none)
    monkeypatch.setenv("FERRY_BROKER_URL", REDIS)
    from runtime.testing import FunctionHarness

    # Then the harness still starts with its own test secret
    with FunctionHarness(tenant_id="acme") as harness:
        assert harness.settings.embedded_broker
