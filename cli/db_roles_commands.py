"""``agentca db roles``: the least-privilege PostgreSQL roles of decision 0028."""

from __future__ import annotations

import click

from ca.config import redacted
from ca.errors import CAError, ErrorCode
from cli.context import settings_from
from cli.output import emit_json, note


@click.command("roles")
@click.option(
    "--sql",
    "as_sql",
    is_flag=True,
    help="Print the SQL for this release's schema (for psql as a superuser); connect to "
    "nothing and change nothing.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_context
def roles(ctx: click.Context, as_sql: bool, as_json: bool) -> None:
    """Create the database roles (owner, CA writer, OCSP reader, auditor) and grant each only
    what its processes use.

    Connects through migration_database_url (database_url when unset) as a superuser or a
    role with CREATEROLE. Run it after 'agentca db upgrade', every time: the grants follow the
    tables of the schema's revision. Roles get no password here: set one with psql's
    \\password, or use peer or certificate authentication.
    """
    from sqlalchemy.engine import make_url

    from ca.store.db import current_revision, head_revision, make_engine
    from ca.store.roles import RoleNames, apply_roles, role_statements

    if as_sql and as_json:
        raise click.UsageError("--sql and --json are two different outputs: choose one")
    settings = settings_from(ctx)
    url = settings.effective_migration_database_url
    names = RoleNames.from_settings(settings)
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise CAError(
            ErrorCode.CONFIG,
            "database roles need PostgreSQL; this CA's database is "
            f"{parsed.get_backend_name()} (set database_url and migration_database_url)",
        )
    if as_sql:
        from ca.store.models import Base

        tables = sorted([*Base.metadata.tables, "alembic_version"])
        for statement in role_statements(names, tables, parsed.database or "agentca"):
            click.echo(statement + ";")
        return
    engine = make_engine(url)
    try:
        current = current_revision(engine)
        head = head_revision(url)
        if current is not None and current != head:
            raise CAError(
                ErrorCode.CONFLICT,
                f"the schema is at {current} and this release's is {head}: run "
                "'agentca db upgrade' first, then 'agentca db roles' again",
            )
        done = apply_roles(engine, names)
    finally:
        engine.dispose()
    role_table = {
        "owner": names.owner,
        "writer": names.writer,
        "ocsp": names.ocsp,
        "auditor": names.auditor,
    }
    doc = {
        "database": redacted("migration_database_url", url),
        "revision": current,
        "roles": role_table,
        "created": list(done.created),
        "tables": len(done.tables),
        "changed": done.changed,
    }
    if as_json:
        emit_json(doc)
    else:
        for part, name in role_table.items():
            made = "created" if name in done.created else "exists"
            click.echo(f"{part:8}  {name:24}  {made}")
        click.echo(f"grants on {len(done.tables)} tables at revision {current or '(none)'}")
    if current is None:
        note(
            "the database has no agentca schema yet: run 'agentca db upgrade' as the owner "
            f"role ({names.owner}), then 'agentca db roles' again to grant on its tables"
        )
    elif not done.changed:
        note("no change: the roles and grants were already as this release sets them")
