"""Copy the CA's database from the embedded SQLite file into an empty PostgreSQL database
(``agentca db migrate-to``, decision 0032).

The target is migrated to the same Alembic head as the source, then every model table is
copied parents first in ONE transaction, ids as they are; PostgreSQL's sequences are then set
past the highest copied id (``setval``), so the next insert gets a fresh id, and before the
commit the target is checked: the same rows per table, the same certificate records (status
and DER digest per serial), and a ledger whose hash chain and checkpoints verify. Any failure
rolls the whole copy back: the target stays empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, inspect, select, text
from sqlalchemy.engine import make_url

from ca import dbfacts
from ca.errors import CAError, ErrorCode
from ca.store.db import head_revision, make_engine, upgrade
from ca.store.models import Base

BATCH = 1000
#: The rows the migrations themselves insert (an empty ledger's head), per table: a target
#: holding only these is empty, and the copy replaces them.
SEEDED = {
    "ledger_head": "id = 1 AND size = 0",
    "action_ledger_head": "id = 1 AND size = 0",  # migration 0017
}


@dataclass
class CopyReport:
    """What a migration copied (or, with ``dry_run``, would copy)."""

    revision: str
    tables: dict[str, int]
    dry_run: bool
    target_migrated: bool = False  # the target had no schema and was migrated to the head
    sequences: dict[str, int] = field(default_factory=dict)  # table -> next id
    ledger_entries: int = 0
    checkpoints: int = 0


def _require_sqlite(url: str) -> None:
    if make_url(url).get_backend_name() != "sqlite":
        raise CAError(
            ErrorCode.CONFIG,
            "'db migrate-to' copies from the embedded SQLite database, and this CA's "
            "database_url is not SQLite",
        )


def _require_postgres(url: str) -> None:
    if make_url(url).get_backend_name() != "postgresql":
        raise CAError(ErrorCode.BAD_REQUEST, "the target of 'db migrate-to' must be PostgreSQL")


def _source_state(conn: Connection) -> tuple[str, dict[str, int]]:
    current, head = dbfacts.revision(conn), head_revision("sqlite://")
    if current is None:
        raise CAError(ErrorCode.NOT_INITIALISED, "the SQLite database has no agentca schema")
    if current != head:
        raise CAError(
            ErrorCode.CONFIG,
            f"the SQLite database is at schema {current}, this release's is {head}: run "
            "'agentca db upgrade' first",
        )
    unknown = dbfacts.unknown_tables(conn)
    if unknown:
        raise CAError(
            ErrorCode.CONFIG,
            f"the SQLite database has tables this release does not know: {', '.join(unknown)}",
        )
    problem = dbfacts.ledger_problem(conn)
    if problem:
        raise CAError(ErrorCode.CONFIG, f"the SQLite database's ledger does not verify: {problem}")
    return current, dbfacts.row_counts(conn)


def _target_problem(conn: Connection, head: str) -> str | None:
    """Why the target cannot take the copy (None: it can)."""
    current = dbfacts.revision(conn)
    names = set(inspect(conn).get_table_names()) - {"alembic_version"}
    if current is None:
        return (
            f"it has tables ({', '.join(sorted(names))}) but no agentca schema" if names else None
        )
    if current != head:
        return f"its schema is at {current}, not this release's {head}"
    counts = dbfacts.row_counts(conn)
    for name, seeded in SEEDED.items():
        counts[name] -= int(conn.scalar(text(f"SELECT count(*) FROM {name} WHERE {seeded}")) or 0)
    full = {t: n for t, n in counts.items() if n}
    if full:
        shown = ", ".join(f"{t} ({n} rows)" for t, n in sorted(full.items()))
        return f"it is not empty: {shown}"
    return None


def _copy_table(source: Connection, target: Connection, name: str) -> None:
    table = Base.metadata.tables[name]
    rows = source.execute(
        select(table).order_by(*table.primary_key.columns).execution_options(yield_per=BATCH)
    )
    for batch in rows.mappings().partitions(BATCH):
        target.execute(table.insert(), [dict(r) for r in batch])


def _fix_sequences(target: Connection, tables: list[str]) -> dict[str, int]:
    """``setval`` every serial primary key past its highest id; returns each table's next id."""
    out: dict[str, int] = {}
    for name in tables:
        for col in Base.metadata.tables[name].primary_key.columns:
            seq = target.scalar(
                text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": name, "c": col.name}
            )
            if seq is None:
                continue
            top = target.scalar(text(f'SELECT max("{col.name}") FROM "{name}"'))
            nxt = int(top or 0) + 1
            target.execute(text("SELECT setval(:s, :v, false)"), {"s": seq, "v": nxt})
            out[name] = nxt
    return out


def _check_copy(source: Connection, target: Connection, counts: dict[str, int]) -> None:
    copied = dbfacts.row_counts(target)
    if copied != counts:
        wrong = sorted(t for t in counts if copied.get(t) != counts[t])
        raise CAError(ErrorCode.INTERNAL, f"row counts differ after the copy: {', '.join(wrong)}")
    if dbfacts.certificate_digests(target) != dbfacts.certificate_digests(source):
        raise CAError(ErrorCode.INTERNAL, "certificate records differ after the copy")
    if dbfacts.issuers(target) != dbfacts.issuers(source):
        raise CAError(ErrorCode.INTERNAL, "the CA certificates differ after the copy")
    problem = dbfacts.ledger_problem(target)
    if problem:
        raise CAError(ErrorCode.INTERNAL, f"the copied ledger does not verify: {problem}")


def copy_to_postgres(source_url: str, target_url: str, dry_run: bool = False) -> CopyReport:
    """Copy the SQLite database at ``source_url`` into the empty PostgreSQL ``target_url``."""
    _require_sqlite(source_url)
    _require_postgres(target_url)
    source_engine = make_engine(source_url)
    target_engine: Engine = make_engine(target_url, pool_size=1)
    try:
        with source_engine.connect() as source:
            source.exec_driver_sql("BEGIN")  # one read snapshot of the whole file
            revision, counts = _source_state(source)
            with target_engine.connect() as probe:
                migrated_before = dbfacts.revision(probe) is not None
                problem = _target_problem(probe, revision)
            if problem:
                raise CAError(
                    ErrorCode.CONFLICT, f"the target database refuses the copy: {problem}"
                )
            report = CopyReport(revision, counts, dry_run)
            report.ledger_entries = counts.get("ledger_entries", 0)
            report.checkpoints = counts.get("ledger_checkpoints", 0)
            if dry_run:
                return report
            if not migrated_before:
                upgrade(target_url)
                report.target_migrated = True
            with target_engine.begin() as target:
                problem = _target_problem(target, revision)  # re-checked under the transaction
                if problem:
                    raise CAError(
                        ErrorCode.CONFLICT, f"the target database refuses the copy: {problem}"
                    )
                for name, seeded in SEEDED.items():
                    target.execute(text(f"DELETE FROM {name} WHERE {seeded}"))
                tables = dbfacts.data_tables(source)
                for name in tables:
                    _copy_table(source, target, name)
                report.sequences = _fix_sequences(target, tables)
                _check_copy(source, target, counts)
            return report
    finally:
        source_engine.dispose()
        target_engine.dispose()


def report_json(report: CopyReport) -> dict[str, Any]:
    """The report as the CLI's JSON."""
    return {
        "schema_revision": report.revision,
        "tables": report.tables,
        "dry_run": report.dry_run,
        "target_migrated": report.target_migrated,
        "sequences": report.sequences,
        "ledger": {"entries": report.ledger_entries, "checkpoints": report.checkpoints},
    }
