"""The action ledger: every gateway decision the gateways ship, append-only and checkpointed
(issue 18, decision 0056).

It is a second Merkle ledger built from the issuance ledger's parts (:mod:`ca.ledger.store`):
the same single-row head gives gap-free ``seq`` numbers under concurrency (its row lock is
taken first by every batch, so batches are serialised and a gateway's records are compared
and stored under it), the same block-hash cache answers roots and proofs, the same audit key
signs its checkpoints under the ledger name ``agentca-actions``. The tables are append-only
in the database (migration 0017).

A row's leaf is the record's own leaf (:meth:`wire.actions.ActionRecord.leaf_bytes`), so the
same leaf hash sits in the gateway's local log at index ``gateway_seq`` and in this ledger at
``seq``: the CA recomputes a gateway's checkpoint root from the leaves it holds of that
gateway, and a record the gateway logged but never delivered is found.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from ca.clock import Clock
from ca.errors import CAError, ErrorCode
from ca.ledger.entries import ACTIONS_LEDGER_NAME, Checkpoint, format_time
from ca.ledger.gateways import checkpoint_signature_problem
from ca.ledger.store import (
    ExportRow,
    ExportShape,
    LeafTreeCache,
    LedgerStore,
    LedgerTables,
    _iso,
    append,
    take_seqs,
)
from ca.ledger.verify import ACTION_CSV_FIELDS, ACTION_EXPORT_FORMAT
from ca.store.models import (
    ActionCheckpointRow,
    ActionLedgerHead,
    ActionRecordRow,
    GatewayCheckpointRow,
    GatewayRow,
)
from wire.actions import ActionBatch, ActionRecord, GatewayCheckpoint
from wire.merkle import HASH_SIZE

log = logging.getLogger("agentca.actions")

ACTIONS = LedgerTables(ACTIONS_LEDGER_NAME, ActionLedgerHead, ActionRecordRow, ActionCheckpointRow)
#: the most pending gateway checkpoints one batch re-checks (per-request work stays bounded)
RECHECK_LIMIT = 8
PENDING, CONSISTENT, INCONSISTENT = "pending", "consistent", "inconsistent"
MAX_SEQ = 2**63 - 1  # the BIGINT columns' bound


@dataclass(frozen=True)
class IngestResult:
    """What ``POST /v1/actions`` answers."""

    accepted: int
    duplicates: int
    next_seq: int
    checkpoint: str | None = None  # the carried checkpoint's status, when one came

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "next_seq": self.next_seq,
        }
        if self.checkpoint is not None:
            out["checkpoint"] = self.checkpoint
        return out


@dataclass(frozen=True)
class ActionFilter:
    """Which records an action export holds (all given conditions must match)."""

    since: str | None = None  # ISO time, inclusive
    until: str | None = None  # ISO time, exclusive
    agent: str | None = None
    officer: str | None = None
    route: str | None = None
    outcome: str | None = None
    gateway: str | None = None

    def is_empty(self) -> bool:
        return all(v is None for v in self.__dict__.values())

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class CrossCheck:
    """One gateway checkpoint judged against the records the CA holds of that gateway."""

    tree_size: int
    timestamp: str
    status: str  # consistent | inconsistent | missing | bad-signature
    detail: str

    @property
    def ok(self) -> bool:
        return self.status == CONSISTENT

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


def _row(seq: int, record: ActionRecord) -> dict[str, Any]:
    """The stored columns of one record: every record the codec accepts fits (agent, officer
    and route have hash indexes on PostgreSQL, whose entries are not size-bounded)."""
    return {
        "seq": seq,
        "gateway": record.gateway,
        "gateway_seq": record.seq,
        "time": record.time,
        "agent": record.agent,
        "serial": record.serial,
        "officer": record.officer,
        "method": record.method,
        "route": record.route,
        "outcome": record.outcome,
        "scope": record.scope,
        "failed_check": record.check,
        "record": record.leaf_bytes().decode(),
        "leaf_hash": record.leaf_hash(),
    }


class ActionLedger(LedgerStore):
    """The action ledger: ingest of gateway batches, gateway checkpoints, exports."""

    def __init__(self, sessions: sessionmaker[Session], clock: Clock) -> None:
        super().__init__(sessions, ACTIONS)
        self.clock = clock
        self._gateway_trees: dict[str, LeafTreeCache] = {}
        self._trees_lock = threading.Lock()

    # ------------------------------------------------------------------ ingest

    def ingest(self, batch: ActionBatch) -> IngestResult:
        """Store a batch in one transaction (see ``POST /v1/actions`` in decision 0056).

        Idempotent: records already held with the same bytes are duplicates; a record held
        with other bytes is ``CONFLICT`` and a batch that starts past the gateway's next
        record is ``ACTION_GAP`` (``next_seq`` in the problem), both storing nothing. A
        carried checkpoint must verify with the gateway's registered key
        (``CHECKPOINT_INVALID`` before anything is stored)."""
        gateway = self._enabled_gateway(batch.gateway)
        if batch.checkpoint is not None:
            problem = checkpoint_signature_problem(batch.checkpoint, gateway.public_key_der)
            if batch.checkpoint.tree_size > MAX_SEQ:
                problem = f"checkpoint 'tree_size' exceeds {MAX_SEQ}"
            if problem:
                raise CAError(ErrorCode.CHECKPOINT_INVALID, problem)
        first = batch.records[0].seq
        with self.sessions.begin() as s:
            conn = s.connection()
            take_seqs(conn, ActionLedgerHead, 0)  # the head's lock: batches go one at a time
            next_seq = self._next_seq(s, batch.gateway)
            if first > next_seq:
                raise CAError(
                    ErrorCode.ACTION_GAP,
                    f"the batch starts at record {first} but the CA holds records up to "
                    f"{next_seq - 1} of gateway '{batch.gateway}': send from {next_seq}",
                    next_seq=next_seq,
                )
            held = [r for r in batch.records if r.seq < next_seq]
            if held:
                stored = dict(
                    s.execute(
                        select(ActionRecordRow.gateway_seq, ActionRecordRow.record).where(
                            ActionRecordRow.gateway == batch.gateway,
                            ActionRecordRow.gateway_seq >= held[0].seq,
                            ActionRecordRow.gateway_seq <= held[-1].seq,
                        )
                    ).all()
                )
                for record in held:
                    if stored.get(record.seq) != record.leaf_bytes().decode():
                        raise CAError(
                            ErrorCode.CONFLICT,
                            f"record {record.seq} of gateway '{batch.gateway}' is already "
                            "stored with different content; nothing of the batch was stored",
                            seq=record.seq,
                            next_seq=next_seq,
                        )
            tail = batch.records[len(held) :]
            if tail:
                start = take_seqs(conn, ActionLedgerHead, len(tail))
                conn.execute(
                    insert(ActionRecordRow), [_row(start + i, r) for i, r in enumerate(tail)]
                )
            next_seq += len(tail)
        status = None
        if batch.checkpoint is not None:
            status = self.receive_checkpoint(batch.checkpoint)
        self.recheck_pending(batch.gateway)
        return IngestResult(len(tail), len(held), next_seq, status)

    def _enabled_gateway(self, name: str) -> GatewayRow:
        with self.sessions() as s:
            row = s.scalar(select(GatewayRow).where(GatewayRow.name == name))
            if row is None:
                raise CAError(ErrorCode.FORBIDDEN, f"gateway '{name}' is not registered")
            if row.disabled_at is not None:
                raise CAError(ErrorCode.FORBIDDEN, f"gateway '{name}' is disabled")
            s.expunge(row)
            return row

    @staticmethod
    def _next_seq(s: Session, gateway: str) -> int:
        top = s.scalar(
            select(func.max(ActionRecordRow.gateway_seq)).where(ActionRecordRow.gateway == gateway)
        )
        return 0 if top is None else int(top) + 1

    def next_seq(self, gateway: str) -> int:
        """The first record of ``gateway`` not yet held (records 0..next_seq-1 all are)."""
        with self.sessions() as s:
            return self._next_seq(s, gateway)

    # ------------------------------------------------------------------ gateway checkpoints

    def gateway_tree_root(self, gateway: str, size: int) -> bytes:
        """The root over the first ``size`` records of ``gateway`` as the CA holds them."""
        with self._trees_lock:
            cache = self._gateway_trees.get(gateway)
            if cache is None:
                cache = self._gateway_trees[gateway] = LeafTreeCache(
                    lambda start, end: self._gateway_leaves(gateway, start, end)
                )
        return cache.tree(size).root()

    def _gateway_leaves(self, gateway: str, start: int, end: int) -> bytes:
        t = ActionRecordRow
        with self.sessions() as s:
            result = s.execute(
                select(t.leaf_hash)
                .where(t.gateway == gateway, t.gateway_seq >= start, t.gateway_seq < end)
                .order_by(t.gateway_seq)
                .execution_options(yield_per=10_000)
            )
            data = b"".join(h for (h,) in result)
        if len(data) != (end - start) * HASH_SIZE:
            raise CAError(ErrorCode.INTERNAL, f"gateway '{gateway}' records {start}..{end} missing")
        return data

    def judge(self, cp: GatewayCheckpoint, held: int | None = None) -> CrossCheck:
        """``cp`` (signature already verified) against the records held of its gateway."""
        held = self.next_seq(cp.gateway) if held is None else held
        if cp.tree_size > held:
            return CrossCheck(
                cp.tree_size,
                cp.timestamp,
                "missing",
                f"the CA holds {held} of the {cp.tree_size} records this checkpoint covers",
            )
        if self.gateway_tree_root(cp.gateway, cp.tree_size) != cp.root_hash:
            return CrossCheck(
                cp.tree_size,
                cp.timestamp,
                INCONSISTENT,
                f"the root of the first {cp.tree_size} records the CA holds differs from the "
                "gateway's signed root: records were changed, dropped or reordered",
            )
        return CrossCheck(
            cp.tree_size,
            cp.timestamp,
            CONSISTENT,
            f"all {cp.tree_size} records are in the action ledger",
        )

    def receive_checkpoint(self, cp: GatewayCheckpoint) -> str:
        """Store a verified gateway checkpoint (once) and its status: ``consistent`` or
        ``inconsistent`` when the CA holds its records, else ``pending``."""
        verdict = self.judge(cp)
        status = PENDING if verdict.status == "missing" else verdict.status
        now = self.clock()
        with self.sessions.begin() as s:
            take_seqs(s.connection(), ActionLedgerHead, 0)  # one writer at a time, as batches
            t = GatewayCheckpointRow
            existing = s.execute(
                select(t.id, t.status).where(
                    t.gateway == cp.gateway,
                    t.tree_size == cp.tree_size,
                    t.root_hash == cp.root_hash,
                    t.timestamp == cp.timestamp,
                )
            ).first()
            if existing is not None:
                return str(existing.status)
            row = GatewayCheckpointRow(
                gateway=cp.gateway,
                tree_size=cp.tree_size,
                root_hash=cp.root_hash,
                timestamp=cp.timestamp,
                signature=cp.signature,
                key_id=cp.key_id,
                status=status,
                received_at=now,
                checked_at=None if status == PENDING else now,
            )
            s.add(row)
            s.flush()
            if status == INCONSISTENT:
                self._raise_alarm(s, cp.gateway, cp.tree_size, cp.timestamp, verdict.detail, now)
        return status

    def recheck_pending(self, gateway: str) -> int:
        """Settle pending checkpoints of ``gateway`` whose records have all arrived (at most
        :data:`RECHECK_LIMIT` per call); returns how many settled."""
        held = self.next_seq(gateway)
        t = GatewayCheckpointRow
        with self.sessions() as s:
            rows = s.execute(
                select(t.id, t.tree_size, t.root_hash, t.timestamp)
                .where(t.gateway == gateway, t.status == PENDING, t.tree_size <= held)
                .order_by(t.tree_size)
                .limit(RECHECK_LIMIT)
            ).all()
        settled = 0
        for row_id, size, root, timestamp in rows:
            cp = GatewayCheckpoint(gateway, size, root, timestamp, b"", "0" * 64)
            verdict = self.judge(cp, held)
            now = self.clock()
            with self.sessions.begin() as s:
                result = s.execute(
                    update(t)
                    .where(t.id == row_id, t.status == PENDING)
                    .values(status=verdict.status, checked_at=now)
                )
                done = int(getattr(result, "rowcount", 0))
                if done and verdict.status == INCONSISTENT:
                    self._raise_alarm(s, gateway, size, timestamp, verdict.detail, now)
            settled += done
        return settled

    @staticmethod
    def _raise_alarm(
        s: Session, gateway: str, size: int, timestamp: str, detail: str, now: datetime
    ) -> None:
        """An inconsistent gateway checkpoint: a loud log line and an issuance-ledger event
        (``gateway.checkpoint_inconsistent``, counted by the metric of the same name)."""
        log.error(
            "INCONSISTENT gateway checkpoint: gateway=%s tree_size=%d timestamp=%s: %s",
            gateway,
            size,
            timestamp,
            detail,
        )
        append(
            s,
            "system",
            "gateway.checkpoint_inconsistent",
            {"gateway": gateway, "tree_size": size, "timestamp": timestamp, "detail": detail},
            now,
        )

    def stored_checkpoints(self, gateway: str) -> list[tuple[GatewayCheckpoint, str]]:
        """Every checkpoint received from ``gateway``, oldest first, with its status."""
        t = GatewayCheckpointRow
        with self.sessions() as s:
            rows = s.execute(
                select(t.tree_size, t.root_hash, t.timestamp, t.signature, t.key_id, t.status)
                .where(t.gateway == gateway)
                .order_by(t.id)
            ).all()
        return [
            (GatewayCheckpoint(gateway, size, root, ts, sig, kid), status)
            for size, root, ts, sig, kid, status in rows
        ]

    def inconsistent_count(self) -> int:
        """Gateway checkpoints found inconsistent (all gateways): the metric's value."""
        t = GatewayCheckpointRow
        with self.sessions() as s:
            return int(s.scalar(select(func.count()).where(t.status == INCONSISTENT)) or 0)

    def crosscheck(
        self, gateway: str, spki_der: bytes, checkpoints: Iterable[GatewayCheckpoint]
    ) -> list[CrossCheck]:
        """Judge each checkpoint (from the gateway's own log) against the CA's records."""
        held = self.next_seq(gateway)
        out = []
        for cp in checkpoints:
            if cp.gateway != gateway:
                out.append(
                    CrossCheck(
                        cp.tree_size, cp.timestamp, "bad-signature", "another gateway's checkpoint"
                    )
                )
                continue
            problem = checkpoint_signature_problem(cp, spki_der)
            if problem:
                out.append(CrossCheck(cp.tree_size, cp.timestamp, "bad-signature", problem))
            else:
                out.append(self.judge(cp, held))
        return out

    # ------------------------------------------------------------------ export

    def count_matching(self, size: int, flt: ActionFilter) -> int:
        query = _filtered(select(func.count()).select_from(ActionRecordRow), size, flt)
        with self.sessions() as s:
            return int(s.scalar(query) or 0)

    def records(self, size: int, flt: ActionFilter) -> Iterator[tuple[int, str, bytes]]:
        """``(seq, canonical record JSON, leaf hash)`` of matching records below ``size``,
        in order, streamed 1,000 at a time."""
        t = ActionRecordRow
        query = _filtered(select(t.seq, t.record, t.leaf_hash), size, flt).order_by(t.seq)
        with self.sessions() as s:
            result = s.execute(query.execution_options(yield_per=1_000))
            for seq, record, leaf in result:
                yield int(seq), str(record), bytes(leaf)

    def records_between(self, since: datetime, until: datetime) -> Iterator[ActionRecord]:
        """The records with ``since <= time < until``, in ledger order, streamed 1,000 at a
        time (the drift analyser's source, :class:`ca.drift.source.LedgerSource`)."""
        t = ActionRecordRow
        query = (
            select(t.record)
            .where(t.time >= format_time(since), t.time < format_time(until))
            .order_by(t.seq)
        )
        with self.sessions() as s:
            for (text,) in s.execute(query.execution_options(yield_per=1_000)):
                yield ActionRecord.from_json(json.loads(text))

    def export_actions(
        self, checkpoint: Checkpoint, flt: ActionFilter, fmt: str = "jsonl"
    ) -> Iterator[str]:
        """The lines of an action export covering ``checkpoint``, streamed in bounded memory:
        a header, then one record per line with its leaf hash and (filtered export) its
        inclusion proof. Format: :mod:`ca.ledger.verify`."""

        def rows(size: int) -> Iterator[ExportRow]:
            for seq, record, leaf in self.records(size, flt):
                line = {"seq": seq, "record": json.loads(record), "leaf_hash": leaf.hex()}
                yield seq, line, {"record": record}

        return self.stream_export(
            checkpoint,
            fmt,
            ExportShape(ACTION_EXPORT_FORMAT, ACTION_CSV_FIELDS),
            None if flt.is_empty() else flt.to_json(),
            lambda size: self.count_matching(size, flt),
            rows,
        )


def _filtered(query: Any, size: int, flt: ActionFilter) -> Any:
    t = ActionRecordRow
    query = query.where(t.seq < size)
    if flt.since:
        query = query.where(t.time >= _iso(flt.since))
    if flt.until:
        query = query.where(t.time < _iso(flt.until))
    for name in ("agent", "officer", "route", "outcome", "gateway"):
        value = getattr(flt, name)
        if value is not None:
            query = query.where(getattr(t, name) == value)
    return query


@dataclass(frozen=True)
class ActionRow:
    """One stored record as the console's timeline shows it (``record`` is its canonical
    JSON, the leaf bytes)."""

    seq: int
    gateway: str
    gateway_seq: int
    time: str
    agent: str | None
    officer: str | None
    method: str
    route: str
    outcome: str
    scope: str | None
    failed_check: str | None
    record: str
    leaf_hash: bytes

    def members(self) -> dict[str, Any]:
        """The record's JSON members (what the gateway logged)."""
        parsed: dict[str, Any] = json.loads(self.record)
        return parsed


def action_page(
    ledger: ActionLedger, size: int, flt: ActionFilter, before: int | None, limit: int
) -> list[ActionRow]:
    """Up to ``limit`` records with seq < min(size, before) matching ``flt``, newest first:
    keyset pagination on the primary key (the console's timeline), never OFFSET."""
    t = ActionRecordRow
    end = size if before is None else min(size, before)
    columns = [getattr(t, f.name) for f in fields(ActionRow)]
    query = _filtered(select(*columns), end, flt).order_by(t.seq.desc()).limit(limit)
    with ledger.sessions() as s:
        rows = s.execute(query).all()
    return [ActionRow(*r) for r in rows]
