"""The WSGI entry point gunicorn serves (`gateway.wsgi:app`), built from the environment."""

from __future__ import annotations

import sys

from gateway.app import create_app
from runtime.app import Runtime
from runtime.errors import SettingsInvalid
from runtime.logs import configure_logging
from runtime.settings import Settings

#: Gunicorn's "worker failed to boot" exit code: the master stops instead of respawning.
EXIT_WORKER_BOOT_ERROR = 3

try:
    settings = Settings.from_env()
except SettingsInvalid as ex:
    # Served without deploy/gunicorn.conf.py (which refuses first): one line, no traceback.
    sys.stderr.write(f"ferry web: {ex}\n")
    sys.stderr.flush()
    sys.exit(EXIT_WORKER_BOOT_ERROR)
configure_logging(settings)
runtime = Runtime(settings)
app = create_app(runtime)
