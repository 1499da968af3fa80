"""The accept rate is one bucket per tenant, whichever gateway process takes the request.

Two gunicorn servers (one process each, on their own ports) against one PostgreSQL:
a burst sent to both, alternately, is accepted up to the tenant's bucket and no
further. With a bucket per process, each would accept a full burst (twice as many).
Counts only: no timing is asserted.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from runtime.settings import Settings
from runtime.store import Store
from tests.integration.clients import Client, make_key
from tests.integration.conftest import Deployment
from tests.procs import Processes, free_port

pytestmark = pytest.mark.integration

BURST = 30
SENT = 120


def stored(database_url: str, tenant_id: str) -> int:
    store = Store.from_settings(Settings.from_env(database_url=database_url))
    try:
        with store.db.engine.connect() as conn:
            query = sa.text("SELECT count(*) FROM invocations WHERE tenant_id = :t")
            return int(conn.execute(query, {"t": tenant_id}).scalar_one())
    finally:
        store.close()


def test_the_rate_limit_holds_across_two_gateway_processes(
    deployment: Deployment, procs: Processes
) -> None:
    tenant = "t-rate"
    key = make_key(deployment.database_url, tenant)
    store = Store.from_settings(Settings.from_env(database_url=deployment.database_url))
    try:
        # A bucket of 30 that refills one token an hour: nothing refills during the test.
        store.limits.set(tenant, {"rate_per_s": 1 / 3600, "burst": BURST})
    finally:
        store.close()
    env = deployment.env(limits_cache_s=0)
    clients = []
    for name in ("web-a", "web-b"):
        port = free_port()
        procs.gunicorn(env, port=port, workers=1, threads=4, name=name)
        clients.append(Client(f"http://127.0.0.1:{port}", key))

    def send(n: int) -> tuple[int, int, str | None]:
        gateway = n % 2
        response = clients[gateway].invoke("echo", {"message": f"burst {n}"})
        return gateway, response.status_code, response.headers.get("Retry-After")

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(send, range(SENT)))

    by_status = Counter(status for _gateway, status, _retry in answers)
    assert by_status == {202: BURST, 429: SENT - BURST}, by_status
    assert {gateway for gateway, _status, _retry in answers} == {0, 1}
    assert all(int(retry) >= 1 for _g, status, retry in answers if status == 429 and retry)
    assert all(retry for _g, status, retry in answers if status == 429)
    assert stored(deployment.database_url, tenant) == BURST
    figures = {g: Counter(s for gw, s, _r in answers if gw == g) for g in (0, 1)}
    print(f"accepted/refused per gateway: {figures}")
