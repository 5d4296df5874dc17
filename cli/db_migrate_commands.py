"""``agentca db migrate-to``: move the CA from the embedded SQLite file to PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import click

from ca.config import read_secret_file, redacted
from ca.errors import CAError, ErrorCode
from cli.context import settings_from
from cli.output import emit_json, note, table


def target_url(target: str) -> str:
    """The target URL from TARGET: a path to a file holding it (group/others no access), or
    a URL without a password (argv is visible to every user of the host)."""
    if "://" not in target:
        return read_secret_file(Path(target), "target database URL")
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(target)
    except ArgumentError as exc:
        raise CAError(ErrorCode.BAD_REQUEST, "TARGET is not a database URL") from exc
    if parsed.password is not None or "password" in parsed.query:
        raise CAError(
            ErrorCode.BAD_REQUEST,
            "TARGET carries a password, and argv is visible to every user of this host: put "
            "the URL in a file (chmod 600) and pass the file's path",
        )
    return target


@click.command("migrate-to")
@click.argument("target", metavar="URL_FILE_OR_URL")
@click.option(
    "--dry-run", is_flag=True, help="Check both databases and print what would be copied."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_context
def migrate_to(ctx: click.Context, target: str, dry_run: bool, as_json: bool) -> None:
    """Copy this CA's embedded SQLite database into an empty PostgreSQL database.

    URL_FILE_OR_URL is a file holding the PostgreSQL URL (chmod 600), or a URL without a
    password (peer or .pgpass authentication). The target, connected as its owner role, is
    migrated to this release's schema, then every table is copied with its ids in one
    transaction, the sequences are set past the copied ids, and row counts, certificate
    records and the ledger's hash chain are checked before the commit. A target holding
    rows is refused. Stop the CA first; afterwards point database_url at the target.
    """
    from ca.dbcopy import copy_to_postgres, report_json

    settings = settings_from(ctx)
    url = target_url(target)
    report = copy_to_postgres(settings.effective_database_url, url, dry_run)
    doc = report_json(report) | {
        "source": str(redacted("database_url", settings.effective_database_url)),
        "target": str(redacted("database_url", url)),
        "changed": not dry_run,
    }
    if as_json:
        emit_json(doc)
    else:
        table(["TABLE", "ROWS"], sorted(report.tables.items()))
        verb = "would copy" if dry_run else "copied"
        click.echo(
            f"{verb} {sum(report.tables.values())} rows to {doc['target']} "
            f"(schema {report.revision})"
        )
    if not dry_run:
        note(
            "verified: row counts, certificate records and the ledger hash chain; now set "
            "database_url to the target (docs/operations.md, 'Moving from SQLite to "
            "PostgreSQL')"
        )
