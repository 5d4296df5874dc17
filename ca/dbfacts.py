"""What a database holds, read so two copies can be compared: rows per table, the schema
revision, the CA fingerprints, the ledger head, and a full check of the ledger's hash chain.

Backups record these facts in their manifest and restores compare against them
(``ca.backup``); ``agentca db migrate-to`` compares source and target (``ca.dbcopy``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import Connection, func, inspect, select, text

from ca.ledger.entries import LedgerEntry
from ca.store.models import (
    Base,
    Certificate,
    Issuer,
    LedgerCheckpointRow,
    LedgerEntryRow,
    LedgerHead,
)
from wire.merkle import StreamingRoot

#: Tables that are not the CA's data: Alembic's own, SQLite's internal ones.
NOT_DATA = frozenset({"alembic_version", "sqlite_sequence"})


def data_tables(conn: Connection) -> list[str]:
    """The model tables present in the database, parents before children (copy order)."""
    present = set(inspect(conn).get_table_names())
    return [t.name for t in Base.metadata.sorted_tables if t.name in present]


def unknown_tables(conn: Connection) -> list[str]:
    """Tables in the database that this release's models do not know (never silently lost)."""
    known = {t.name for t in Base.metadata.sorted_tables} | NOT_DATA
    return sorted(t for t in inspect(conn).get_table_names() if t not in known)


def row_counts(conn: Connection) -> dict[str, int]:
    """Rows in each model table of the database."""
    tables = Base.metadata.tables
    return {
        name: int(conn.scalar(select(func.count()).select_from(tables[name])) or 0)
        for name in data_tables(conn)
    }


def revision(conn: Connection) -> str | None:
    """The Alembic revision the schema is at (None: never migrated)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    value = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return None if value is None else str(value)


def issuers(conn: Connection) -> list[dict[str, str]]:
    """Every CA certificate: name, role and SHA-256 fingerprint (lowercase hex)."""
    rows = conn.execute(
        select(Issuer.name, Issuer.role, Issuer.certificate_der).order_by(Issuer.id)
    )
    return [
        {"name": n, "role": r, "fingerprint_sha256": hashlib.sha256(der).hexdigest()}
        for n, r, der in rows
    ]


def ledger_head(conn: Connection) -> dict[str, Any]:
    """The ledger size and its newest checkpoint (tree size and root hash)."""
    size = conn.scalar(select(LedgerHead.size).where(LedgerHead.id == 1))
    cp = conn.execute(
        select(LedgerCheckpointRow.tree_size, LedgerCheckpointRow.root_hash)
        .order_by(LedgerCheckpointRow.tree_size.desc(), LedgerCheckpointRow.id.desc())
        .limit(1)
    ).first()
    return {
        "size": int(size or 0),
        "checkpoint": None if cp is None else {"tree_size": cp[0], "root_hash": cp[1].hex()},
    }


def certificate_digests(conn: Connection) -> dict[str, dict[str, Any]]:
    """Per certificate record (issuer id and serial): its status and the SHA-256 of its DER."""
    rows = conn.execute(
        select(
            Certificate.issuer_id,
            Certificate.serial_hex,
            Certificate.status,
            Certificate.certificate_der,
        ).order_by(Certificate.id)
    )
    return {
        f"{issuer}:{serial}": {
            "status": getattr(status, "value", status),
            "der_sha256": None if der is None else hashlib.sha256(der).hexdigest(),
        }
        for issuer, serial, status, der in rows
    }


def facts(conn: Connection) -> dict[str, Any]:
    """Everything above but the per-certificate digests, as one JSON-ready document."""
    return {
        "schema_revision": revision(conn),
        "tables": row_counts(conn),
        "issuers": issuers(conn),
        "ledger": ledger_head(conn),
    }


def ledger_problem(conn: Connection) -> str | None:
    """Check the stored ledger end to end: sequence numbers gap-free from 0, every stored leaf
    hash recomputed from its entry, the head's size, and every checkpoint's root over its
    first ``tree_size`` leaves. Returns the first problem, or None."""
    checkpoints = sorted(
        (int(n), bytes(h))
        for n, h in conn.execute(
            select(LedgerCheckpointRow.tree_size, LedgerCheckpointRow.root_hash)
        )
    )
    builder = StreamingRoot()
    pending = iter(checkpoints)
    want = next(pending, None)
    while want is not None and want[0] == 0:
        if want[1] != builder.root():
            return "the checkpoint of size 0 does not match the empty tree"
        want = next(pending, None)
    rows = conn.execute(
        select(
            LedgerEntryRow.seq,
            LedgerEntryRow.time,
            LedgerEntryRow.actor,
            LedgerEntryRow.event,
            LedgerEntryRow.body,
            LedgerEntryRow.leaf_hash,
        )
        .order_by(LedgerEntryRow.seq)
        .execution_options(yield_per=5000)
    )
    for seq, time, actor, event, body, stored in rows:
        if seq != builder.size:
            return f"ledger entry {builder.size} is missing (next is {seq})"
        entry = LedgerEntry(seq, time, actor, event, json.loads(body))
        if entry.leaf_hash(check=False) != bytes(stored):
            return f"ledger entry {seq}: its stored leaf hash does not match its contents"
        builder.add(bytes(stored))
        while want is not None and want[0] == builder.size:
            if want[1] != builder.root():
                return f"the checkpoint of size {want[0]} does not match the ledger's root"
            want = next(pending, None)
    if want is not None:
        return f"a checkpoint of size {want[0]} exceeds the ledger's {builder.size} entries"
    head = int(conn.scalar(select(LedgerHead.size).where(LedgerHead.id == 1)) or 0)
    if head != builder.size:
        return f"the ledger head says {head} entries, the ledger holds {builder.size}"
    return None
