"""Group commit of single accepts: a gateway process's concurrent INSERTs share one statement.

Each accept's INSERT (`statements.insert_for_active_tenant`) is one statement and one
commit, and on PostgreSQL the commit is what costs (docs/perf/README.md). With
`FERRY_ACCEPT_GROUP_COMMIT` on, `Invocations.insert` hands its row to one committer
thread per process (`runtime.store.group_commit`, with no window: it takes whatever
accepts are waiting when it is free, so a lone accept is written at once) and waits for
the commit, as before: a 202 still means committed. The rows go as one JSON document
(`json_to_recordset`, as the batch API's), in one autocommitted statement that checks
each row as the single INSERT does:

- only for an active tenant, and, where the accept names its API key, only while that
  key is neither revoked nor expired;
- a taken idempotency key inserts nothing for that row (`ON CONFLICT DO NOTHING`, which
  also settles two rows of one batch with the same key: the first wins); its caller then
  reads the holder, as on the single path;
- fair dispatch's admission: a due row is marked sent only while fewer than its window
  of the tenant's invocations are sent, counting the due rows of the same tenant before
  it in the batch, so a batch never sends past the window.

A row not inserted comes back None, and its caller learns why on the single path
(`Invocations.insert`). An accept with a callback keeps the single path (its callback row
is written in the same transaction).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from runtime.store import models
from runtime.store.db import Database
from runtime.store.driver import json_text
from runtime.store.models import CLAIMABLE
from runtime.store.statements import invocation_record, recordset_column, recordset_row

_T: sa.Table = models.Invocation.__table__  # type: ignore[assignment]


def write_accepts(db: Database, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """Insert the rows (each the single INSERT's parameters, `invocations.insert_values`)
    in one statement; per row its `id` and `dispatched_at`, or None."""
    document = []
    for order, row in enumerate(rows):
        values = recordset_row(
            {name: value for name, value in row.items() if not name.startswith("_")}
        )
        values["_ord"] = order
        values["_window"] = row.get("_window")
        values["_key_id"] = row.get("_key_id")
        document.append(values)
    with db.driver_connection() as connection:
        cursor = connection.execute(_statement(), {"rows": json_text(document)}, prepare=True)
        inserted = {row[0]: row[1] for row in cursor.fetchall()}
    return [
        {"id": row["id"], "dispatched_at": inserted[row["id"]]} if row["id"] in inserted else None
        for row in rows
    ]


@functools.cache
def _statement() -> str:
    names = [c.name for c in _T.columns]
    claimable = ", ".join(f"'{state.value}'" for state in CLAIMABLE)
    # Sent and waiting invocations of the row's tenant, counted up to its window (as
    # `statements.sent_of_tenant`, through the partial index of sent ones).
    sent = (
        "(SELECT count(*) FROM (SELECT 1 FROM invocations AS sent_first "
        "WHERE sent_first.tenant_id = rows.tenant_id "
        f"AND sent_first.status IN ({claimable}) "
        "AND sent_first.dispatched_at IS NOT NULL LIMIT rows._window) AS sent_window)"
    )
    # No room: the window is full with the rows already sent and the due rows of the
    # same tenant before this one in the batch.
    full = (
        "batch._window IS NOT NULL AND batch.dispatched_at IS NOT NULL "
        "AND batch._sent + batch._due_before >= batch._window"
    )
    selected = []
    for name in names:
        if name == "dispatched_at":
            selected.append(f"CASE WHEN {full} THEN NULL ELSE batch.dispatched_at END")
        elif name == "waiting_reason":
            selected.append(f"CASE WHEN {full} THEN 'fair_share' ELSE batch.waiting_reason END")
        else:
            selected.append(recordset_column("batch", name))
    columns = ", ".join(f'"{name}"' for name in names)
    return (
        f"WITH batch AS (SELECT *, CASE WHEN _window IS NOT NULL THEN {sent} END AS _sent, "
        "count(dispatched_at) OVER (PARTITION BY tenant_id ORDER BY _ord "
        "ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS _due_before "
        f"FROM json_to_recordset(%(rows)s::json) AS rows({invocation_record()}, "
        "_ord integer, _window integer, _key_id text)) "
        f"INSERT INTO invocations ({columns}) SELECT {', '.join(selected)} FROM batch "
        "WHERE EXISTS (SELECT 1 FROM tenants WHERE tenants.id = batch.tenant_id "
        f"AND tenants.status = '{models.TenantStatus.ACTIVE.value}') "
        "AND (batch._key_id IS NULL OR EXISTS (SELECT 1 FROM api_keys "
        "WHERE api_keys.id = batch._key_id AND api_keys.revoked_at IS NULL "
        "AND (api_keys.expires_at IS NULL OR api_keys.expires_at > batch.created_at))) "
        "ORDER BY batch._ord "
        'ON CONFLICT DO NOTHING RETURNING "id", "dispatched_at"'
    )
