"""Ledger persistence: appends inside the caller's transaction, checkpoints, streaming export.

``append`` must be called inside the same transaction as the change it records; it takes the
next sequence number from the single ``ledger_head`` row (``UPDATE ... RETURNING``), whose row
lock serialises appenders until commit, so numbers are gap-free and follow commit order.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from ca.errors import CAError, ErrorCode
from ca.ledger.entries import Checkpoint, LedgerEntry, canonical, format_time
from ca.ledger.merkle import MerkleTree, StreamingRoot, leaf_hash
from ca.ledger.verify import CSV_FIELDS, EXPORT_FORMAT
from ca.store.models import AuditSigner, LedgerCheckpointRow, LedgerEntryRow, LedgerHead

_NEXT_SEQ = (
    update(LedgerHead)
    .where(LedgerHead.id == 1)
    .values(size=LedgerHead.size + 1)
    .returning(LedgerHead.size)
)
_INSERT = insert(LedgerEntryRow)


def append(
    s: Session, actor: str, event: str, body: Mapping[str, Any], now: datetime
) -> LedgerEntry:
    """Append one entry in the caller's transaction; returns it with its sequence number."""
    conn = s.connection()  # Core on the session's connection: this runs on every change
    seq_plus_one = conn.execute(_NEXT_SEQ).scalar_one()
    entry = LedgerEntry(seq_plus_one - 1, format_time(now), actor, event, dict(body))
    data = entry.canonical_bytes()
    conn.execute(
        _INSERT,
        {
            "seq": entry.seq,
            "time": entry.time,
            "actor": actor,
            "event": event,
            "agent": _text(body.get("agent")),
            "officer": _text(body.get("officer")),
            "body": canonical(entry.body).decode(),
            "leaf_hash": leaf_hash(data),
        },
    )
    return entry


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class ExportFilter:
    """Which entries a filtered export holds (all given conditions must match)."""

    since: str | None = None  # ISO time, inclusive
    until: str | None = None  # ISO time, exclusive
    agent: str | None = None
    officer: str | None = None
    event: str | None = None

    def is_empty(self) -> bool:
        return all(
            v is None for v in (self.since, self.until, self.agent, self.officer, self.event)
        )

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class LedgerStore:
    """Reads the ledger: size, checkpoints, proofs and exports."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def size(self) -> int:
        with self.sessions() as s:
            return int(s.scalar(select(LedgerHead.size).where(LedgerHead.id == 1)) or 0)

    def leaf_hashes(self, size: int) -> Iterator[bytes]:
        """The first ``size`` leaf hashes in order, streamed."""
        with self.sessions() as s:
            result = s.execute(
                select(LedgerEntryRow.leaf_hash)
                .where(LedgerEntryRow.seq < size)
                .order_by(LedgerEntryRow.seq)
                .execution_options(yield_per=10_000)
            )
            for (h,) in result:
                yield h

    def root(self, size: int) -> bytes:
        """The tree head over the first ``size`` entries, in O(log n) memory."""
        builder = StreamingRoot()
        for h in self.leaf_hashes(size):
            builder.add(h)
        if builder.size != size:
            raise CAError(ErrorCode.INTERNAL, f"the ledger has {builder.size} of {size} entries")
        return builder.root()

    def tree(self, size: int) -> MerkleTree:
        """An in-memory tree of the first ``size`` leaves (32 bytes each) for proofs."""
        buf = bytearray()
        for h in self.leaf_hashes(size):
            buf += h
        return MerkleTree(buf)

    def store_checkpoint(self, cp: Checkpoint, signer_id: int) -> None:
        with self.sessions.begin() as s:
            s.add(
                LedgerCheckpointRow(
                    tree_size=cp.tree_size,
                    root_hash=cp.root_hash,
                    timestamp=cp.timestamp,
                    signature=cp.signature,
                    signer_id=signer_id,
                )
            )

    def latest_checkpoint(self) -> Checkpoint | None:
        with self.sessions() as s:
            row = s.execute(
                select(LedgerCheckpointRow, AuditSigner.certificate_der)
                .join(AuditSigner, AuditSigner.id == LedgerCheckpointRow.signer_id)
                .order_by(LedgerCheckpointRow.id.desc())
                .limit(1)
            ).first()
        if row is None:
            return None
        cp, cert = row
        return Checkpoint(cp.tree_size, cp.root_hash, cp.timestamp, cp.signature, cert)

    def checkpoint_at(self, tree_size: int) -> Checkpoint | None:
        with self.sessions() as s:
            row = s.execute(
                select(LedgerCheckpointRow, AuditSigner.certificate_der)
                .join(AuditSigner, AuditSigner.id == LedgerCheckpointRow.signer_id)
                .where(LedgerCheckpointRow.tree_size == tree_size)
                .order_by(LedgerCheckpointRow.id.desc())
                .limit(1)
            ).first()
        if row is None:
            return None
        cp, cert = row
        return Checkpoint(cp.tree_size, cp.root_hash, cp.timestamp, cp.signature, cert)

    def entries(self, size: int, flt: ExportFilter) -> Iterator[tuple[LedgerEntry, bytes]]:
        """Entries with seq < size matching ``flt``, in order, streamed, with leaf hashes."""
        query = select(LedgerEntryRow).where(LedgerEntryRow.seq < size)
        if flt.since:
            query = query.where(LedgerEntryRow.time >= _iso(flt.since))
        if flt.until:
            query = query.where(LedgerEntryRow.time < _iso(flt.until))
        if flt.agent:
            query = query.where(LedgerEntryRow.agent == flt.agent)
        if flt.officer:
            query = query.where(LedgerEntryRow.officer == flt.officer)
        if flt.event:
            query = query.where(LedgerEntryRow.event == flt.event)
        with self.sessions() as s:
            result = s.execute(
                query.order_by(LedgerEntryRow.seq).execution_options(yield_per=5_000)
            )
            for (row,) in result:
                yield (
                    LedgerEntry(row.seq, row.time, row.actor, row.event, json.loads(row.body)),
                    row.leaf_hash,
                )
                s.expunge(row)

    def export(
        self, out: TextIO, checkpoint: Checkpoint, flt: ExportFilter, fmt: str = "jsonl"
    ) -> int:
        """Write an export covering ``checkpoint``; filtered exports carry inclusion proofs.

        Full exports stream in constant memory; filtered exports hold the leaf hashes (32 bytes
        per entry) to compute proofs.
        """
        size = checkpoint.tree_size
        filtered = not flt.is_empty()
        tree = self.tree(size) if filtered else None
        count = sum(1 for _ in self.entries(size, flt)) if filtered else size
        header = {
            "format": EXPORT_FORMAT,
            "version": 1,
            "filter": flt.to_json() if filtered else None,
            "count": count,
            "checkpoint": checkpoint.to_json(),
        }
        writer = None
        if fmt == "csv":
            out.write("#" + json.dumps(header, sort_keys=True) + "\n")
            writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
            writer.writeheader()
        elif fmt == "jsonl":
            out.write(json.dumps(header, sort_keys=True) + "\n")
        else:
            raise CAError(ErrorCode.BAD_REQUEST, "format must be jsonl or csv")
        written = 0
        for entry, stored_leaf in self.entries(size, flt):
            record: dict[str, Any] = entry.to_json()
            record["leaf_hash"] = stored_leaf.hex()
            if tree is not None:
                record["proof"] = [h.hex() for h in tree.inclusion_proof(entry.seq, size)]
            if writer is not None:
                writer.writerow(
                    {
                        **record,
                        "body": canonical(entry.body).decode(),
                        "proof": " ".join(record.get("proof", [])),
                    }
                )
            else:
                out.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
            written += 1
        return written

    def export_text(self, checkpoint: Checkpoint, flt: ExportFilter, fmt: str = "jsonl") -> str:
        buf = io.StringIO()
        self.export(buf, checkpoint, flt, fmt)
        return buf.getvalue()


def _iso(value: str) -> str:
    """Normalise an ISO time to the ledger's spelling so text comparison orders correctly."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise CAError(ErrorCode.BAD_REQUEST, f"'{value}' is not an ISO 8601 time") from exc
    if parsed.tzinfo is None:
        raise CAError(ErrorCode.BAD_REQUEST, f"'{value}' needs a time zone (e.g. Z)")
    return format_time(parsed)
