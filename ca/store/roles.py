"""Least-privilege PostgreSQL roles for an agentca database (decision 0028).

Four roles, each granted only what its processes use:

- the **owner** owns the tables and runs the migrations (``migration_database_url``);
- the **writer** is the CA API and CLI (``database_url``): it reads and writes the CA's
  tables, appends to the ledger and never updates or deletes a ledger row, deletes nothing,
  and creates nothing;
- the **ocsp** reader is the OCSP responder (``ocsp_database_url``): SELECT on the four
  tables it answers from, in read-only sessions;
- the **auditor** reads the ledger (and the certificates that sign and anchor it) only,
  in read-only sessions.

``TABLE_GRANTS`` names every table of the schema; ``tests/unit/test_db_roles.py`` fails when
a migration adds a table the catalogue does not place, so a new table is never granted by
accident, nor silently left out. The statements are generated here as plain text (pure, and
printable for a DBA with ``agentca db roles --sql``); ``apply_roles`` runs them in one
transaction.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from ca.config import Settings


class DbRole(enum.Enum):
    """The parts a deployment's processes play; values are the settings' suffixes."""

    OWNER = "owner"
    WRITER = "writer"
    OCSP = "ocsp"
    AUDITOR = "auditor"


READ = frozenset({"SELECT"})
APPEND = frozenset({"SELECT", "INSERT"})
# UPDATE on status_changes is only there because the CRL publisher's watermark takes
# LOCK TABLE ... IN SHARE MODE, which PostgreSQL grants to UPDATE, DELETE or TRUNCATE holders;
# SELECT ... FOR UPDATE (issuers, certificates, enrollment tokens) needs UPDATE as well.
WRITE = frozenset({"SELECT", "INSERT", "UPDATE"})

_W, _O, _A = DbRole.WRITER, DbRole.OCSP, DbRole.AUDITOR

#: table -> the privileges of each non-owner role on it (absent: none).
TABLE_GRANTS: Mapping[str, Mapping[DbRole, frozenset[str]]] = MappingProxyType(
    {
        "alembic_version": {_W: READ, _A: READ},  # the schema check of the CLI and API
        "issuers": {_W: WRITE, _O: READ, _A: READ},
        "certificates": {_W: WRITE, _O: READ},
        "status_changes": {_W: WRITE, _O: READ},
        "ocsp_signers": {_W: WRITE, _O: READ},
        "ocsp_responses": {_W: WRITE, _O: READ},  # written by the presigner (decision 0038)
        "agents": {_W: WRITE},
        "models": {_W: WRITE},
        "scopes": {_W: WRITE},
        "enrollment_tokens": {_W: WRITE},
        "api_tokens": {_W: WRITE},
        "console_sessions": {_W: WRITE},  # web console sign-ins (decision 0054)
        "console_verify_jobs": {_W: WRITE},  # the console's ledger verifications
        "crl_state": {_W: WRITE},
        # the ledger is append-only by privilege too (its triggers refuse UPDATE and DELETE)
        "ledger_entries": {_W: APPEND, _A: READ},
        "ledger_checkpoints": {_W: APPEND, _A: READ},
        "ledger_head": {_W: WRITE, _A: READ},
        "audit_signers": {_W: WRITE, _A: READ},
        # the action ledger (decision 0056): append-only like the issuance ledger
        "gateways": {_W: WRITE, _A: READ},
        "action_records": {_W: APPEND, _A: READ},
        "action_checkpoints": {_W: APPEND, _A: READ},
        "action_ledger_head": {_W: WRITE, _A: READ},
        "gateway_checkpoints": {_W: WRITE, _A: READ},  # status settles once (trigger)
    }
)

#: Roles whose every session is read-only (``default_transaction_read_only``): a grant left
#: behind by an old release, or CREATE on schema public (PostgreSQL 14 and older), still
#: writes nothing.
READ_ONLY_ROLES = (DbRole.OCSP, DbRole.AUDITOR)


@dataclass(frozen=True)
class RoleNames:
    """The PostgreSQL names of the four roles (settings ``db_<role>_role``)."""

    owner: str
    writer: str
    ocsp: str
    auditor: str

    @classmethod
    def from_settings(cls, settings: Settings) -> RoleNames:
        """The names the ``db_<role>_role`` settings give."""
        return cls(
            owner=settings.db_owner_role,
            writer=settings.db_writer_role,
            ocsp=settings.db_ocsp_role,
            auditor=settings.db_auditor_role,
        )

    def of(self, role: DbRole) -> str:
        """The name of ``role``."""
        name: str = getattr(self, role.value)
        return name


_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _ident(name: str) -> str:
    # role names are validated so when the settings are built (ca.config); quoting keeps a
    # reserved word such as "user" a name, and this check keeps any other text out of the SQL
    if not _IDENT.fullmatch(name):
        raise ValueError(f"{name!r} is not a plain lowercase SQL identifier")
    return '"' + name + '"'


def _create_role(name: str) -> str:
    # CREATE ROLE has no IF NOT EXISTS; the DO block makes a second run a no-op. No password
    # here: set one with psql's \password (never in argv) or use certificate or peer auth.
    return (
        "DO $$ BEGIN "
        f"CREATE ROLE {_ident(name)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )


def role_statements(
    names: RoleNames,
    tables: Sequence[str],
    database: str,
    schema: str = "public",
    existing: Collection[str] = (),
) -> list[str]:
    """The SQL that creates the roles (if missing) and sets exactly the catalogue's grants.

    ``tables`` are the schema's tables as they are now; each must be in ``TABLE_GRANTS``.
    Roles named in ``existing`` are not created again (the statement needs CREATEROLE even
    when the role exists).
    Idempotent: privileges a role should not have are revoked first, so a re-run after an
    upgrade (or after someone granted more by hand) leaves exactly the catalogue.
    """
    unknown = sorted(set(tables) - set(TABLE_GRANTS))
    if unknown:
        raise ValueError(
            f"tables without a grant in ca.store.roles.TABLE_GRANTS: {', '.join(unknown)}"
        )
    db, sch, owner = _ident(database), _ident(schema), _ident(names.owner)
    others = [DbRole.WRITER, DbRole.OCSP, DbRole.AUDITOR]
    out = [_create_role(names.of(r)) for r in DbRole if names.of(r) not in existing]
    # nobody but the owner creates objects in the schema (PUBLIC could on PostgreSQL <= 14)
    out.append(f"REVOKE CREATE ON SCHEMA {sch} FROM PUBLIC")
    out.append(f"GRANT USAGE, CREATE ON SCHEMA {sch} TO {owner}")
    out.append(f"GRANT CONNECT ON DATABASE {db} TO {owner}")
    for table in sorted(tables):
        out.append(f"ALTER TABLE {sch}.{_ident(table)} OWNER TO {owner}")
    for role in others:
        who = _ident(names.of(role))
        out.append(f"GRANT CONNECT ON DATABASE {db} TO {who}")
        out.append(f"REVOKE CREATE ON SCHEMA {sch} FROM {who}")
        out.append(f"GRANT USAGE ON SCHEMA {sch} TO {who}")
        out.append(f"REVOKE ALL ON ALL TABLES IN SCHEMA {sch} FROM {who}")
        out.append(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {sch} FROM {who}")
        for table in sorted(tables):
            privileges = TABLE_GRANTS[table].get(role)
            if privileges:
                out.append(
                    f"GRANT {', '.join(sorted(privileges))} ON {sch}.{_ident(table)} TO {who}"
                )
    # the writer's INSERTs draw ids from the tables' sequences
    out.append(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {sch} TO {_ident(names.writer)}")
    for role in READ_ONLY_ROLES:
        out.append(f"ALTER ROLE {_ident(names.of(role))} SET default_transaction_read_only = on")
    return out


@dataclass(frozen=True)
class RolesApplied:
    """What ``apply_roles`` did: roles created, tables granted on, whether anything changed."""

    created: tuple[str, ...]
    tables: tuple[str, ...]
    changed: bool


#: (table, role, privilege) rows, table owners and per-role settings: what the grants are.
Snapshot = tuple[frozenset[tuple[str, str, str]], frozenset[tuple[str, str]], frozenset[str]]


def schema_tables(engine: Engine, schema: str = "public") -> list[str]:
    """The tables of ``schema`` as the database has them."""
    from sqlalchemy import inspect

    return sorted(inspect(engine).get_table_names(schema=schema))


def grant_snapshot(conn: Connection, names: RoleNames, schema: str = "public") -> Snapshot:
    """The privileges the four roles hold in ``schema``, as PostgreSQL records them."""
    from sqlalchemy import text

    roles = [names.of(role) for role in DbRole]
    privileges = conn.execute(
        text(
            "SELECT c.relname, r.rolname, a.privilege_type FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "CROSS JOIN LATERAL aclexplode(c.relacl) a "
            "JOIN pg_roles r ON r.oid = a.grantee "
            "WHERE n.nspname = :schema AND r.rolname = ANY(:roles)"
        ),
        {"schema": schema, "roles": roles},
    ).all()
    owners = conn.execute(
        text(
            "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :schema AND c.relkind IN ('r', 'S')"
        ),
        {"schema": schema},
    ).all()
    configs = conn.execute(
        text(
            "SELECT rolname || ':' || coalesce(array_to_string(rolconfig, ','), '') "
            "FROM pg_roles WHERE rolname = ANY(:roles)"
        ),
        {"roles": roles},
    ).scalars()
    return (
        frozenset((str(t), str(r), str(p)) for t, r, p in privileges),
        frozenset((str(t), str(o)) for t, o in owners),
        frozenset(str(c) for c in configs),
    )


def apply_roles(engine: Engine, names: RoleNames, schema: str = "public") -> RolesApplied:
    """Create the missing roles and set exactly the catalogue's grants, in one transaction.

    Needs a connection as a superuser (or a role with CREATEROLE that owns the schema).
    """
    from sqlalchemy import text

    tables = schema_tables(engine, schema)
    with engine.begin() as conn:
        database = str(conn.execute(text("SELECT current_database()")).scalar_one())
        existing = set(
            conn.execute(
                text("SELECT rolname FROM pg_roles WHERE rolname = ANY(:names)"),
                {"names": [names.of(role) for role in DbRole]},
            ).scalars()
        )
        before = grant_snapshot(conn, names, schema)
        for statement in role_statements(names, tables, database, schema, existing):
            conn.exec_driver_sql(statement)
        after = grant_snapshot(conn, names, schema)
    created = tuple(names.of(r) for r in DbRole if names.of(r) not in existing)
    return RolesApplied(created, tuple(tables), changed=bool(created) or before != after)
