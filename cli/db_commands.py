"""``agentca db``: the database schema (Alembic migrations shipped in ``migrations/``)."""

from __future__ import annotations

import click

from ca.config import redacted
from ca.store.db import (
    current_revision,
    head_revision,
    make_engine,
    require_database_file,
    upgrade,
)
from cli.context import settings_from
from cli.db_migrate_commands import migrate_to
from cli.db_roles_commands import roles
from cli.group import AgentcaGroup
from cli.heartbeat_commands import heartbeat
from cli.output import emit_json, unchanged


@click.group(cls=AgentcaGroup)
def db() -> None:
    """The database schema: show its revision, migrate it to this release's, move to
    PostgreSQL."""


def _state(url: str) -> dict[str, object]:
    engine = make_engine(url)
    try:
        current = current_revision(engine)
    finally:
        engine.dispose()
    head = head_revision(url)
    return {
        "database": redacted("database_url", url),
        "current": current,
        "head": head,
        "up_to_date": current == head,
    }


def _echo(doc: dict[str, object], as_json: bool) -> None:
    if as_json:
        emit_json(doc)
        return
    click.echo(f"database  {doc['database']}")
    click.echo(f"current   {doc['current'] or '(no agentca schema)'}")
    click.echo(f"head      {doc['head']}{'' if doc['up_to_date'] else '  (upgrade needed)'}")


@db.command("current")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_context
def current(ctx: click.Context, as_json: bool) -> None:
    """Print the schema revision of the database and the newest one this release ships.

    Reads only: a SQLite database that does not exist is an error, not created.
    """
    url = settings_from(ctx).effective_database_url
    require_database_file(url)
    _echo(_state(url), as_json)


@db.command("upgrade")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_context
def upgrade_command(ctx: click.Context, as_json: bool) -> None:
    """Migrate the database to this release's schema (a no-op when it is already there).

    Back up the database first; migrations run in a transaction where the database allows.
    Connects through migration_database_url (database_url when unset): on PostgreSQL, the
    owner role of 'agentca db roles'.
    """
    settings = settings_from(ctx)
    url = settings.effective_migration_database_url  # the owner role (decision 0028)
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    before = _state(url)["current"]
    upgrade(url)
    doc = _state(url) | {"previous": before}
    doc["changed"] = doc["current"] != before
    if not doc["changed"]:
        unchanged(f"the schema is already at {before}")
    _echo(doc, as_json)


db.add_command(roles)
db.add_command(heartbeat)
db.add_command(migrate_to)
