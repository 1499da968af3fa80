"""An HTTP client of Ferry's API for tests, and the key it authenticates with."""

from __future__ import annotations

import threading
from typing import Any

import requests

from runtime.settings import Settings
from runtime.store import Store
from runtime.store.tenants import parse_scopes


def make_key(database_url: str, tenant_id: str) -> str:
    store = Store.from_settings(Settings.from_env(database_url=database_url))
    try:
        store.tenants.create(tenant_id)
        _view, key = store.tenants.create_key(tenant_id, parse_scopes("invoke,read"))
        return key
    finally:
        store.close()


class Client:
    """One HTTP session per thread, all against one base URL with one key."""

    def __init__(self, base_url: str, key: str) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {key}"}
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def invoke(
        self, function: str, payload: dict[str, Any], params: dict[str, str] | None = None
    ) -> requests.Response:
        return self._session().post(
            f"{self.base_url}/v1/functions/{function}/invocations",
            json=payload,
            params=params,
            headers=self.headers,
            timeout=30,
        )

    def readyz(self) -> requests.Response:
        return self._session().get(f"{self.base_url}/readyz", timeout=30)
