"""Every use case once: the HTTP API, the dashboard and the CLI call these, never the store.

- `invocations`: accept (validation, idempotency replay), wait, get, list, cancel, retry
  and bulk retry;
- `tenants`: tenants and API keys;
- `schedules`: reading and controlling schedules.

A service takes plain values (ids, strings, times) and returns views; it never sees a
Falcon request or an argparse namespace, and raises `runtime.errors` errors.
"""

from __future__ import annotations
