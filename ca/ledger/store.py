"""Ledger persistence: appends inside the caller's transaction, checkpoints, streaming export.

``append`` must be called inside the same transaction as the change it records; it takes the
next sequence number from the single ``ledger_head`` row (``UPDATE ... RETURNING``), whose row
lock serialises appenders until commit, so numbers are gap-free and follow commit order.
Inside :func:`batched`, appends are held and written together at the end of the block (one
``UPDATE`` for all their numbers, one multi-row ``INSERT``), so the lock is taken only just
before the commit (decision 0039).

The sequence-number head, the block-hash cache behind roots and proofs, and checkpoint
storage are shared with the action ledger (:mod:`ca.ledger.actions`, decision 0056) through
:class:`LedgerTables`, :func:`take_seqs` and :class:`LeafTreeCache`.
"""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from sqlalchemy import BigInteger, bindparam, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from ca.errors import CAError, ErrorCode
from ca.ledger.audit import audit_block
from ca.ledger.entries import LEDGER_NAME, Checkpoint, LedgerEntry, format_time
from ca.ledger.verify import CSV_FIELDS, EXPORT_FORMAT
from ca.store.models import AuditSigner, LedgerCheckpointRow, LedgerEntryRow, LedgerHead
from wire.canonical import canonical
from wire.merkle import (
    BLOCK,
    BLOCK_BITS,
    HASH_SIZE,
    BlockedTree,
    MerkleTree,
    block_hashes,
    leaf_hash,
)


@dataclass(frozen=True)
class LedgerTables:
    """One Merkle ledger's tables: ``head`` (one row, ``id`` 1, ``size``), ``leaves`` (``seq``
    and ``leaf_hash``) and ``checkpoints``, and the ledger's name in its signed checkpoints."""

    name: str
    head: Any
    leaves: Any
    checkpoints: Any


ISSUANCE = LedgerTables(LEDGER_NAME, LedgerHead, LedgerEntryRow, LedgerCheckpointRow)


def _next_seq(head: Any) -> Any:
    return (
        update(head)
        .where(head.id == 1)
        .values(size=head.size + bindparam("n", type_=BigInteger))
        .returning(head.size)
    )


_NEXT_SEQ = {ISSUANCE.head: _next_seq(LedgerHead)}


def take_seqs(conn: Connection, head: Any, n: int) -> int:
    """Take ``n`` sequence numbers from a ledger ``head`` row; returns the first. The row lock
    is held to the commit, so concurrent writers get gap-free numbers in commit order
    (``n = 0`` only takes the lock, serialising the caller behind earlier writers)."""
    statement = _NEXT_SEQ.get(head)
    if statement is None:
        statement = _NEXT_SEQ.setdefault(head, _next_seq(head))
    end = int(conn.execute(statement, {"n": n}).scalar_one())
    return end - n


_INSERT = insert(LedgerEntryRow)
_BATCH = "agentca.ledger.batch"

Pending = tuple[str, str, dict[str, Any], datetime]
ExportRow = tuple[int, dict[str, Any], dict[str, str]]
"""One exported line: its seq, its JSON object, and the CSV columns that differ from it."""


@dataclass(frozen=True)
class ExportShape:
    """What kind of export a ledger writes: the header's ``format`` and the CSV columns."""

    format: str
    csv_fields: list[str]


def append(s: Session, actor: str, event: str, body: Mapping[str, Any], now: datetime) -> None:
    """Append one entry in the caller's transaction (held until the end of a
    :func:`batched` block when inside one)."""
    pending: list[Pending] | None = s.info.get(_BATCH)
    item = (actor, event, dict(body), now)
    if pending is None:
        _write(s, [item])
    else:
        canonical(item[2])  # refuse a body that cannot be hashed here, at the caller
        pending.append(item)


@contextmanager
def batched(s: Session) -> Iterator[None]:
    """Hold the ledger appends made inside the block and write them at its end, in order,
    with one sequence-number ``UPDATE`` and one ``INSERT``: call it as the innermost block of
    a transaction, so the ledger head's row lock is held only from there to the commit.
    Nothing is written when the block raises."""
    if _BATCH in s.info:  # nested: the outer block writes
        yield
        return
    pending: list[Pending] = []
    s.info[_BATCH] = pending
    try:
        yield
    finally:
        s.info.pop(_BATCH, None)
    if pending:
        _write(s, pending)


def _write(s: Session, items: list[Pending]) -> None:
    conn = s.connection()  # Core on the session's connection: this runs on every change
    first = take_seqs(conn, LedgerHead, len(items))
    rows = []
    for seq, (actor, event, body, now) in enumerate(items, start=first):
        entry = LedgerEntry(seq, format_time(now), actor, event, body)
        rows.append(
            {
                "seq": seq,
                "time": entry.time,
                "actor": actor,
                "event": event,
                "agent": _text(body.get("agent")),
                "officer": _text(body.get("officer")),
                "body": canonical(body, check=False).decode(),
                "leaf_hash": leaf_hash(entry.canonical_bytes()),
            }
        )
    conn.execute(_INSERT, rows)


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


class LeafTreeCache:
    """Roots and proofs over an append-only sequence of leaf hashes, read through
    ``leaf_range(start, end)`` (the concatenated hashes of leaves ``start..end-1``).

    Keeps the hash of every complete block of 1,024 leaves (32 bytes per block, extended as
    the sequence grows; append-only, so a cached hash never goes stale): after the first call
    a root or proof costs O(log n) hashes and reads of at most a few blocks of leaf hashes.
    """

    def __init__(self, leaf_range: Callable[[int, int], bytes]) -> None:
        self.leaf_range = leaf_range
        self._blocks = bytearray()
        self._lock = threading.Lock()

    def block_hashes(self, size: int) -> bytes:
        """The cached hashes of the complete blocks below ``size``, extended when needed."""
        complete = size >> BLOCK_BITS
        with self._lock:
            have = len(self._blocks) // HASH_SIZE
            while have < complete:
                upto = min(complete, have + 64)  # 64 blocks (2 MiB of leaf hashes) per read
                self._blocks += block_hashes(
                    self.leaf_range(have << BLOCK_BITS, upto << BLOCK_BITS)
                )
                have = upto
            return bytes(self._blocks[: complete * HASH_SIZE])

    def tree(self, size: int) -> MerkleTree:
        """The tree over the first ``size`` leaves."""
        if size < 0:
            raise CAError(ErrorCode.BAD_REQUEST, "a tree size is not negative")

        def fetch(index: int) -> bytes:
            start = index << BLOCK_BITS
            return self.leaf_range(start, min(size, start + BLOCK))

        return BlockedTree(size, self.block_hashes(size), fetch)


class LedgerStore:
    """Reads the ledger: size, checkpoints, proofs and exports.

    Roots and proofs come from a per-process cache of the hash of every complete block of
    1,024 leaves (32 bytes per block, extended as the ledger grows; the ledger is append-only
    so a cached hash never goes stale) plus the one or two blocks a proof touches: after the
    first call a proof costs O(log n) hashes and reads of at most a few thousand leaf hashes,
    never a rebuild from every leaf.
    """

    def __init__(self, sessions: sessionmaker[Session], tables: LedgerTables = ISSUANCE) -> None:
        self.sessions = sessions
        self.tables = tables
        self._cache = LeafTreeCache(self._leaf_range)

    @property
    def name(self) -> str:
        """The ledger's name in its checkpoints."""
        return self.tables.name

    def size(self) -> int:
        head = self.tables.head
        with self.sessions() as s:
            return int(s.scalar(select(head.size).where(head.id == 1)) or 0)

    def leaf_hashes(self, size: int, start: int = 0) -> Iterator[bytes]:
        """The leaf hashes of entries ``start`` to ``size - 1`` in order, streamed."""
        t = self.tables.leaves
        with self.sessions() as s:
            result = s.execute(
                select(t.leaf_hash)
                .where(t.seq >= start, t.seq < size)
                .order_by(t.seq)
                .execution_options(yield_per=10_000)
            )
            for (h,) in result:
                yield h

    def _leaf_range(self, start: int, end: int) -> bytes:
        data = b"".join(self.leaf_hashes(end, start))
        if len(data) != (end - start) * HASH_SIZE:
            raise CAError(
                ErrorCode.INTERNAL,
                f"the ledger has {len(data) // HASH_SIZE} of entries {start}..{end - 1}",
            )
        return data

    def _block_hashes(self, size: int) -> bytes:
        return self._cache.block_hashes(size)

    def tree(self, size: int) -> MerkleTree:
        """The tree over the first ``size`` entries for roots and proofs (see the class)."""
        return self._cache.tree(size)

    def root(self, size: int) -> bytes:
        """The tree head over the first ``size`` entries."""
        return self.tree(size).root()

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 consistency proof between two sizes of the stored ledger."""
        return self.tree(new_size).consistency_proof(old_size, new_size)

    def store_checkpoint(self, cp: Checkpoint, signer_id: int) -> None:
        if cp.ledger != self.name:
            raise CAError(ErrorCode.INTERNAL, f"a checkpoint of '{cp.ledger}' is not ours")
        with self.sessions.begin() as s:
            s.add(
                self.tables.checkpoints(
                    tree_size=cp.tree_size,
                    root_hash=cp.root_hash,
                    timestamp=cp.timestamp,
                    signature=cp.signature,
                    signer_id=signer_id,
                )
            )

    def latest_checkpoint(self) -> Checkpoint | None:
        return self._checkpoint(None)

    def checkpoint_at(self, tree_size: int) -> Checkpoint | None:
        return self._checkpoint(tree_size)

    def _checkpoint(self, tree_size: int | None) -> Checkpoint | None:
        t = self.tables.checkpoints
        query = select(t, AuditSigner.certificate_der).join(
            AuditSigner, AuditSigner.id == t.signer_id
        )
        if tree_size is not None:
            query = query.where(t.tree_size == tree_size)
        with self.sessions() as s:
            row = s.execute(query.order_by(t.id.desc()).limit(1)).first()
        if row is None:
            return None
        cp, cert = row
        return Checkpoint(
            cp.tree_size, cp.root_hash, cp.timestamp, cp.signature, cert, self.tables.name
        )

    def entries(self, size: int, flt: ExportFilter) -> Iterator[tuple[LedgerEntry, bytes]]:
        """Entries with seq < size matching ``flt``, in order, streamed, with leaf hashes.

        Plain rows (no ORM objects), fetched 1,000 at a time: memory stays bounded however
        large the ledger is.
        """
        t = LedgerEntryRow
        query = _filtered(
            select(t.seq, t.time, t.actor, t.event, t.body, t.leaf_hash), size, flt
        ).order_by(t.seq)
        with self.sessions() as s:
            result = s.execute(query.execution_options(yield_per=1_000))
            for seq, time, actor, event, body, leaf in result:
                yield LedgerEntry(seq, time, actor, event, json.loads(body)), leaf

    def count(self, size: int, flt: ExportFilter) -> int:
        """How many entries with seq < size match ``flt`` (one COUNT query)."""
        query = _filtered(select(func.count()).select_from(LedgerEntryRow), size, flt)
        with self.sessions() as s:
            return int(s.scalar(query) or 0)

    def export_lines(
        self, checkpoint: Checkpoint, flt: ExportFilter, fmt: str = "jsonl"
    ) -> Iterator[str]:
        """The lines of an export covering ``checkpoint``, streamed in bounded memory.

        Filtered exports carry an inclusion proof per entry, computed from the block cache
        (see the class), so they too hold only a few blocks of leaf hashes at a time.
        """
        filtered = not flt.is_empty()

        def rows(size: int) -> Iterator[ExportRow]:
            for entry, stored_leaf in self.entries(size, flt):
                record: dict[str, Any] = entry.to_json()
                record["leaf_hash"] = stored_leaf.hex()
                yield entry.seq, record, {"body": canonical(entry.body).decode()}

        return self.stream_export(
            checkpoint,
            fmt,
            ExportShape(EXPORT_FORMAT, CSV_FIELDS),
            flt.to_json() if filtered else None,
            lambda size: self.count(size, flt),
            rows,
        )

    def stream_export(
        self,
        checkpoint: Checkpoint,
        fmt: str,
        shape: ExportShape,
        filter_json: dict[str, str] | None,
        count: Callable[[int], int],
        rows: Callable[[int], Iterator[ExportRow]],
    ) -> Iterator[str]:
        """An export of this ledger (either one): the header line, then ``rows(size)`` with
        an inclusion proof each when ``filter_json`` is given (a filtered export). A row is
        ``(seq, JSON object, CSV overrides)``. Errors are raised at the first line, before
        anything is written."""
        if fmt not in ("jsonl", "csv"):
            raise CAError(ErrorCode.BAD_REQUEST, "format must be jsonl or csv")
        if checkpoint.ledger != self.name:
            raise CAError(ErrorCode.INTERNAL, f"a checkpoint of '{checkpoint.ledger}' is not ours")
        size = checkpoint.tree_size
        filtered = filter_json is not None
        tree = self.tree(size) if filtered else None
        if tree is not None and tree.root() != checkpoint.root_hash:
            raise CAError(ErrorCode.INTERNAL, "the stored ledger does not match the checkpoint")
        header = {
            "format": shape.format,
            "version": 1,
            "filter": filter_json,
            "count": count(size) if filtered else size,
            "checkpoint": checkpoint.to_json(),
            "audit": audit_block(self.sessions),
        }
        buf = io.StringIO()
        writer = None
        if fmt == "csv":
            yield "#" + json.dumps(header, sort_keys=True) + "\n"
            writer = csv.DictWriter(buf, fieldnames=shape.csv_fields, lineterminator="\n")
            writer.writeheader()
            yield _take(buf)
        else:
            yield json.dumps(header, sort_keys=True) + "\n"
        for seq, record, csv_row in rows(size):
            if tree is not None:
                record["proof"] = [h.hex() for h in tree.inclusion_proof(seq, size)]
            if writer is not None:
                writer.writerow({**record, **csv_row, "proof": " ".join(record.get("proof", []))})
                yield _take(buf)
            else:
                yield json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"

    def export(
        self, out: TextIO, checkpoint: Checkpoint, flt: ExportFilter, fmt: str = "jsonl"
    ) -> int:
        """Write an export covering ``checkpoint`` to ``out``; returns the entries written."""
        lines = 0
        for line in self.export_lines(checkpoint, flt, fmt):
            out.write(line)
            lines += 1
        return lines - (2 if fmt == "csv" else 1)

    def export_text(self, checkpoint: Checkpoint, flt: ExportFilter, fmt: str = "jsonl") -> str:
        return "".join(self.export_lines(checkpoint, flt, fmt))

    def page(
        self, size: int, flt: ExportFilter, before: int | None, limit: int
    ) -> list[LedgerEntry]:
        """Up to ``limit`` entries with seq < min(size, before) matching ``flt``, newest
        first: keyset pagination on the primary key (the console's timeline), never OFFSET."""
        t = LedgerEntryRow
        end = size if before is None else min(size, before)
        query = (
            _filtered(select(t.seq, t.time, t.actor, t.event, t.body), end, flt)
            .order_by(t.seq.desc())
            .limit(limit)
        )
        with self.sessions() as s:
            rows = s.execute(query).all()
        return [LedgerEntry(q, tm, a, e, json.loads(b)) for q, tm, a, e, b in rows]


def _take(buf: io.StringIO) -> str:
    text = buf.getvalue()
    buf.seek(0)
    buf.truncate()
    return text


def _filtered(query: Any, size: int, flt: ExportFilter) -> Any:
    """``query`` restricted to entries with seq < size matching ``flt``."""
    query = query.where(LedgerEntryRow.seq < size)
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
    return query


def _iso(value: str) -> str:
    """Normalise an ISO time to the ledger's spelling so text comparison orders correctly."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise CAError(ErrorCode.BAD_REQUEST, f"'{value}' is not an ISO 8601 time") from exc
    if parsed.tzinfo is None:
        raise CAError(ErrorCode.BAD_REQUEST, f"'{value}' needs a time zone (e.g. Z)")
    try:
        return format_time(parsed)
    except OverflowError:  # its UTC instant is outside years 1 to 9999
        raise CAError(ErrorCode.BAD_REQUEST, f"'{value}' is out of range") from None
