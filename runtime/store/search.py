"""Finding invocations by what a person pastes: an invocation id or an idempotency key.

Matches are exact (no patterns, so a search is an indexed lookup or a bounded scan, and
nothing typed is interpreted). With `tenant_id`, only that tenant's invocations match (the
tenant-scoped session enforces it, and the query says it too); None searches every tenant.
"""

from __future__ import annotations

import sqlalchemy as sa

from runtime.store import models
from runtime.store.db import Database
from runtime.store.views import InvocationView

I = models.Invocation  # noqa: E741 - the table searched
#: Longest text searched: an idempotency key's column width.
MAX_SEARCH_LENGTH = 255


class InvocationSearch:
    """Exact lookups of invocations by id or idempotency key."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def find(self, tenant_id: str | None, text: str, *, limit: int = 50) -> list[InvocationView]:
        """Invocations whose id or idempotency key is exactly `text`, newest first.

        One idempotency key may name several invocations (one per function and tenant).
        """
        if not text or len(text) > MAX_SEARCH_LENGTH:
            return []
        query = (
            sa.select(I)
            .where(sa.or_(I.id == text, I.idempotency_key == text))
            .order_by(I.created_at.desc(), I.id.desc())
            .limit(limit)
        )
        if tenant_id is not None:
            query = query.where(I.tenant_id == tenant_id)
        with self.db.session(tenant_id) as s:
            return [InvocationView.from_row(row) for row in s.scalars(query)]
