"""The constants a driver statement writes into its SQL text (`runtime.store.driver._inline`)."""

from __future__ import annotations

import sqlalchemy as sa

from runtime.store import models, statements
from runtime.store.driver import DriverStatement

#: Compiles for PostgreSQL; never connects.
ENGINE = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
I = models.Invocation.__table__  # noqa: E741


def test_a_claims_states_and_nulls_are_in_its_text_and_only_the_callers_values_are_sent():
    claim = DriverStatement(statements.CLAIM_WITH_ATTEMPT, ENGINE)

    assert "status='running'::VARCHAR" in claim.sql
    assert "finished_at=NULL::TIMESTAMP WITH TIME ZONE" in claim.sql
    assert "tenants.status = 'active'::VARCHAR" in claim.sql
    # no constant is left to send, and the caller's parameters are still placeholders
    assert claim.constants == {}
    for name in ("_id", "_now", "_lease", "_worker"):
        assert f"%({name})s" in claim.sql


def test_a_constant_that_is_not_a_plain_word_stays_a_parameter():
    # Given an update whose constants are a quote, a number, a flag and a word
    statement = (
        sa.update(I)
        .where(I.c.id == sa.bindparam("_id"))
        .values(waiting_reason="it's", attempts=3, function="report.daily-v2")
        .returning(I.c.id)
    )

    compiled = DriverStatement(statement, ENGINE)

    # Then the text with a quote is sent as a parameter, the rest are written in
    assert list(compiled.constants.values()) == ["it's"]
    assert "'report.daily-v2'" in compiled.sql and "attempts=3" in compiled.sql
    assert "it's" not in compiled.sql
    assert "%(_id)s" in compiled.sql
