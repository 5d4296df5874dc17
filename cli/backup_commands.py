"""``agentca backup``: create, verify and restore backups of the CA (decision 0032)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cli.context import settings_from
from cli.group import AgentcaGroup
from cli.output import emit_json, note, warn

_EXPECT = click.option(
    "--manifest-sha256",
    "expect",
    default=None,
    metavar="HEX",
    help="Also require the manifest to have this SHA-256 (as 'backup create' printed it).",
)


@click.group(cls=AgentcaGroup)
def backup() -> None:
    """Back up the CA (database dump + SoftHSM2 token files + manifest), verify, restore."""


def _summary(doc: dict[str, Any]) -> None:
    tables = doc.get("tables", {})
    ledger = doc.get("ledger", {})
    click.echo(
        f"database  {doc.get('backend') or doc['database']['backend']}, schema "
        f"{doc['schema_revision']}, {tables.get('certificates', 0)} certificates, "
        f"{ledger.get('size', 0)} ledger entries"
    )
    for issuer in doc.get("issuers", []):
        click.echo(f"{issuer['role']:<9} {issuer['name']}  sha256 {issuer['fingerprint_sha256']}")


def _token_line(kind: str | None) -> str:
    return {
        "softhsm2": "SoftHSM2 token files (encrypted under the token PINs, which are not copied)",
        "hsm": "not copied: back up the HSM's keys with its vendor's tooling",
    }.get(kind or "none", "none (software keys of dev mode are not kept)")


@backup.command("create")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="New (or empty) directory to write the backup into.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_context
def create(ctx: click.Context, out: str, as_json: bool) -> None:
    """Write a backup into OUT: a consistent database dump (pg_dump custom format, or SQLite's
    online backup), a copy of the SoftHSM2 token directory, and manifest.json with the
    SHA-256 of every file, the schema revision, the CA fingerprints and the ledger head.

    PINs and database passwords are never copied. A hardware HSM's keys are not copied
    either: back them up with the vendor's tooling. The database is read through
    migration_database_url (database_url when unset).
    """
    from importlib.metadata import version

    from ca.backup import create_backup, manifest_digest

    manifest = create_backup(settings_from(ctx), Path(out), version("agentca"))
    digest = manifest_digest(Path(out))
    if as_json:
        emit_json({"out": out, "manifest_sha256": digest, "manifest": manifest, "changed": True})
        return
    click.echo(f"backup    {out}")
    _summary(manifest)
    click.echo(f"token     {_token_line(manifest['token']['kind'])}")
    click.echo(f"manifest  sha256 {digest}")
    note("keep the manifest's SHA-256 apart from the backup: 'backup verify --manifest-sha256'")


@backup.command("verify")
@click.argument("directory", type=click.Path(file_okay=False))
@_EXPECT
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def verify(directory: str, expect: str | None, as_json: bool) -> None:
    """Check the backup in DIRECTORY offline: every file against its SHA-256 in the manifest,
    no file unlisted, and the dump readable. Needs no database, no HSM and no network."""
    from ca.backup import manifest_digest, verify_backup

    doc = verify_backup(Path(directory), expect)
    if as_json:
        emit_json(
            {
                "ok": True,
                "directory": directory,
                "manifest_sha256": manifest_digest(Path(directory)),
                "files": len(doc["files"]),
                "manifest": doc,
            }
        )
        return
    click.echo(f"OK: {len(doc['files'])} files match the manifest of {doc['created_at']}")
    _summary(doc)


@backup.command("restore")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option(
    "--force",
    is_flag=True,
    help="Restore over a database or token directory that is not empty (the SQLite file and "
    "token directory are renamed aside, not deleted).",
)
@_EXPECT
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_context
def restore(
    ctx: click.Context, directory: str, force: bool, expect: str | None, as_json: bool
) -> None:
    """Verify the backup in DIRECTORY, then restore it into the configured database and data
    directory, which must be empty (or --force). The restored database is checked against
    the manifest (rows per table, CA fingerprints, ledger head) and its ledger hash chain.

    Put the PIN files back from your secret store; on PostgreSQL with least-privilege roles,
    run 'agentca db roles' afterwards (the dump is restored without owners and grants).
    """
    from ca.backup import restore_backup

    settings = settings_from(ctx)
    done = restore_backup(Path(directory), settings, force, expect)
    if expect is None:
        warn(
            "restored without --manifest-sha256: the backup was checked only against its own "
            "manifest, which does not detect a backup rewritten as a whole"
        )
    for pin in done["missing_pin_files"]:
        warn(f"no PIN file at {pin}: copy it back from your secret store before starting the CA")
    if as_json:
        emit_json({**done, "directory": directory, "changed": True})
        return
    click.echo(f"restored  {directory}")
    _summary(done)
    click.echo(f"token     {done['token']['dir'] or _token_line(done['token']['kind'])}")
    for path in done["kept_aside"]:
        note(f"the previous {path.rsplit('.replaced-', 1)[0]} is kept as {path}")
