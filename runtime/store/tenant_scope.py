"""The tenant scope of a function's `ctx.session`, enforced by PostgreSQL row-level security.

On PostgreSQL every transaction of a function's session starts with
`set_config('role', <function role>, true)` and `set_config('ferry.tenant_id', <tenant>,
true)`: both last until that transaction ends, so a pooled connection never keeps one
tenant's scope into the next use. The function role (`FERRY_FUNCTION_DB_ROLE`, default
`ferry_function`) neither owns the tables nor bypasses row-level security, and policies
named `ferry_tenant_scope` (migration 0007_rls) let it see only the rows whose tenant
column equals the setting: an ORM query, a Core `select(table)` and a raw `text()` query
alike. It has privileges on the tables below only; every other table (secrets, audit,
workers, schedules...) is refused to it outright.

The runtime's own sessions run as the login role, which owns the tables (it ran the
migrations) and so is not subject to the policies. When the function returns, the
runtime checks that its session is still in the function's scope and switches back to
the login role to record the outcome in the same transaction (`leave_scope`).

What it does not stop: code that deliberately runs `RESET ROLE` or changes
`ferry.tenant_id` itself. A function runs inside the worker process, with its settings
and credentials; the scope guards against queries that forget the tenant, not against
hostile code. `leave_scope` fails the attempt (rolling back its uncommitted writes) when
the scope is still changed as the function returns: that catches a change left behind,
not code that restores the scope before returning. See docs/tenancy.md.

On SQLite there is no database-side scope: the ORM guard of `runtime.store.db` filters
ORM queries only.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from runtime.errors import FerryError

#: The per-transaction setting the policies compare each row's tenant with.
TENANT_SETTING = "ferry.tenant_id"
#: The name of the policy on each scoped table (migration 0007_rls creates them).
POLICY = "ferry_tenant_scope"
#: Tables a function may read, and the column naming each row's tenant.
SCOPED_TABLES: dict[str, str] = {
    "tenants": "id",
    "api_keys": "tenant_id",
    "invocations": "tenant_id",
    "attempts": "tenant_id",
    "schedule_runs": "tenant_id",
}
#: What the function role may do to each table (always within its tenant's rows).
PRIVILEGES: dict[str, tuple[str, ...]] = {
    "tenants": ("SELECT",),
    "api_keys": ("SELECT", "UPDATE", "DELETE"),  # key clean-up (functions/cleanup_expired_keys)
    "invocations": ("SELECT",),
    "attempts": ("SELECT",),
    "schedule_runs": ("SELECT",),
}
ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

#: `connection.info` key marking a pooled connection a function's session has used.
_USED_BY_FUNCTION = "ferry_function_scope"


class TenantScopeUnavailable(FerryError):
    """The database is not set up to scope functions' sessions; run `ferry migrate`."""


class TenantScopeEscaped(FerryError):
    """The function changed its session's role or tenant; its writes are rolled back."""

    permanent = True


@dataclasses.dataclass(frozen=True)
class Gap:
    """One thing missing from the set-up, and the SQL that adds it."""

    problem: str
    fix: str
    #: True when it needs a role with CREATEROLE (the operator's one-time set-up);
    #: False when `ferry migrate` adds it itself once the rest is there.
    operator: bool


def check_role_name(role: str) -> str:
    if not ROLE_NAME.match(role):
        raise ValueError("must be a lower-case PostgreSQL identifier (letters, digits, _)")
    return role


def setup_sql(role: str, login_role: str) -> str:
    """The operator's one-time set-up, run by a role with CREATEROLE (or a superuser)."""
    return (
        f"CREATE ROLE {role} NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT;\n"
        f'GRANT {role} TO "{login_role}";'
    )


def grant_statements(role: str) -> list[str]:
    """What the tables' owner grants the function role (`ferry migrate` runs these)."""
    return [f"GRANT {', '.join(p)} ON {t} TO {role}" for t, p in PRIVILEGES.items()]


def _facts(connection: Connection, role: str) -> dict[str, Any]:
    row = connection.execute(
        sa.text(
            "SELECT current_user AS login, r.rolname IS NOT NULL AS exists,"
            " coalesce(r.rolsuper OR r.rolbypassrls, false) AS bypasses,"
            " me.rolsuper OR me.rolcreaterole AS can_create,"
            " me.rolsuper OR me.rolbypassrls AS login_bypasses,"
            " CASE WHEN r.rolname IS NULL THEN false"
            "      ELSE pg_has_role(current_user, r.oid, 'MEMBER') END AS member"
            " FROM pg_roles me LEFT JOIN pg_roles r ON r.rolname = :role"
            " WHERE me.rolname = current_user"
        ),
        {"role": role},
    ).one()
    tables = connection.execute(
        sa.text(
            "SELECT c.relname, c.relrowsecurity, pg_get_userbyid(c.relowner) AS owner,"
            " EXISTS (SELECT 1 FROM pg_policies p WHERE p.schemaname = n.nspname"
            "         AND p.tablename = c.relname AND p.policyname = :policy) AS policy"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relname = ANY(:tables)"
        ),
        {"policy": POLICY, "tables": list(SCOPED_TABLES)},
    ).all()
    return {"role": row._asdict(), "tables": {t.relname: t for t in tables}}


def _has_grants(connection: Connection, role: str) -> bool:
    checks = [
        f"has_table_privilege(:role, '{table}', '{privilege}')"
        for table, privileges in PRIVILEGES.items()
        for privilege in privileges
    ]
    return bool(
        connection.execute(sa.text(f"SELECT {' AND '.join(checks)}"), {"role": role}).scalar()
    )


def inspect_scope(connection: Connection, role: str) -> list[Gap]:
    """What keeps the database from scoping functions' sessions; empty when all is set."""
    facts = _facts(connection, role)
    me, tables = facts["role"], facts["tables"]
    login = me["login"]
    gaps: list[Gap] = []
    if not me["exists"]:
        gaps.append(Gap(f"the role {role} does not exist", setup_sql(role, login), True))
    else:
        if me["bypasses"]:
            gaps.append(
                Gap(
                    f"the role {role} bypasses row-level security",
                    f"ALTER ROLE {role} NOSUPERUSER NOBYPASSRLS;",
                    True,
                )
            )
        if not me["member"]:
            gaps.append(
                Gap(
                    f"the login role {login} cannot switch to {role}",
                    f'GRANT {role} TO "{login}";',
                    True,
                )
            )
    for table, column in SCOPED_TABLES.items():
        info = tables.get(table)
        if info is None:
            gaps.append(Gap(f"the table {table} is missing", "ferry migrate", False))
            continue
        if info.owner == role:
            gaps.append(
                Gap(
                    f"{role} owns {table}, so no policy applies to it",
                    f'ALTER TABLE {table} OWNER TO "{login}";',
                    True,
                )
            )
        if not info.relrowsecurity or not info.policy:
            gaps.append(
                Gap(
                    f"{table} has no row-level security policy {POLICY}",
                    f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;\n"
                    f"CREATE POLICY {POLICY} ON {table}"
                    f" USING ({column} = current_setting('{TENANT_SETTING}', true));",
                    False,
                )
            )
        elif info.owner != login and not me["login_bypasses"]:
            gaps.append(
                Gap(
                    f"the login role {login} does not own {table}: the policy would hide "
                    "its rows from the runtime too",
                    f'ALTER TABLE {table} OWNER TO "{login}";',
                    True,
                )
            )
    if me["exists"] and len(tables) == len(SCOPED_TABLES) and not _has_grants(connection, role):
        gaps.append(
            Gap(f"{role} lacks its privileges", ";\n".join(grant_statements(role)) + ";", False)
        )
    return gaps


def apply_scope(connection: Connection, role: str) -> None:
    """Add what the login role can add itself: the role (if it may create roles), grants.

    Part of `ferry migrate`, after the migrations; every statement is idempotent.
    """
    facts = _facts(connection, role)["role"]
    if not facts["exists"]:
        if not facts["can_create"]:
            return
        # Roles belong to the server: another database's `ferry migrate` may make it now too.
        connection.execute(
            sa.text(
                f"DO $$ BEGIN CREATE ROLE {role} NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT;"
                " EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
            )
        )
        if not facts["login_bypasses"]:  # a superuser may switch to any role
            connection.execute(sa.text(f'GRANT {role} TO "{facts["login"]}"'))
    for statement in grant_statements(role):
        connection.execute(sa.text(statement))


def enter_scope(connection: Connection, role: str, tenant_id: str) -> None:
    """Start a transaction of a function's session: its role and tenant, until it ends."""
    connection.info[_USED_BY_FUNCTION] = True
    connection.execute(
        sa.text("SELECT set_config('role', :role, true), set_config(:setting, :tenant, true)"),
        {"role": role, "setting": TENANT_SETTING, "tenant": tenant_id},
    )


def leave_scope(session: Session, role: str, tenant_id: str) -> None:
    """Check the function kept its scope, then act as the login role for the rest.

    Raises `TenantScopeEscaped` when the role or tenant changed: the caller rolls back.
    """
    user, tenant = session.execute(
        sa.text("SELECT current_user, current_setting(:setting, true)"),
        {"setting": TENANT_SETTING},
    ).one()
    if user != role or tenant != tenant_id:
        raise TenantScopeEscaped(
            f"the function's session ended as role {user!r} with tenant {tenant!r}, "
            f"not {role!r} with {tenant_id!r}"
        )
    session.execute(sa.text("RESET ROLE"))


def reset_pooled(dbapi_connection: Any, connection_info: dict[str, Any]) -> None:
    """Return a connection a function used to the login role before it is pooled again.

    The scope itself is transaction-local; this undoes a session-level `SET ROLE` a
    function committed, which would otherwise outlive its session.
    """
    if not connection_info.pop(_USED_BY_FUNCTION, False):
        return
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("RESET ROLE")
    finally:
        cursor.close()
    dbapi_connection.commit()
