"""The WSGI entry point gunicorn serves (`gateway.wsgi:app`), built from the environment."""

from __future__ import annotations

from gateway.app import create_app
from runtime.app import Runtime
from runtime.logs import configure_logging
from runtime.settings import Settings

settings = Settings.from_env()
configure_logging(settings)
runtime = Runtime(settings)
app = create_app(runtime)
