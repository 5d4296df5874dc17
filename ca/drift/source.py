"""Where the analyser's records come from: the one seam between the drift core and storage.

A :class:`RecordSource` yields the action records of a time range. ``JsonLinesSource``
reads a file of ``ActionRecord.to_json()`` objects, one per line (what
``agentca drift run --records FILE`` takes); :class:`LedgerSource` reads the CA's action
ledger (what ``agentca drift run`` reads without ``--records``; docs/drift.md, "Record
sources").
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Protocol

from ca.ledger.verify import ACTION_EXPORT_FORMAT
from wire.actions import ActionRecord
from wire.strict_json import loads


class RecordSource(Protocol):
    """Action records with ``since <= time < until``, in any order."""

    def records(self, since: datetime, until: datetime) -> Iterator[ActionRecord]: ...


class RecordFileError(ValueError):
    """A record file cannot be read or holds something that is not an action record."""


class JsonLinesSource:
    """Action records from a JSON-lines file (blank lines ignored): one record per line, or
    a JSON-lines action-ledger export (``agentca ledger export --actions``) as it is.

    What it scores may hold certificates, so the file is read as ``ledger verify`` reads it
    (strict JSON: a repeated member or ``NaN`` is refused), an export line's record must be
    the one its ``leaf_hash`` names, and a record (gateway, seq) may appear only once: a
    repeated line would double an agent's counts. This does not verify the export (its
    checkpoint and proofs): ``agentca ledger verify`` does."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def records(self, since: datetime, until: datetime) -> Iterator[ActionRecord]:
        lo, hi = since.timestamp(), until.timestamp()
        try:
            fh = self.path.open(encoding="utf-8")
        except OSError as exc:
            raise RecordFileError(f"cannot read records file {self.path}: {exc.strerror}") from exc
        seen: set[tuple[str, int]] = set()
        with fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    data = loads(line)
                    if number == 1 and isinstance(data, dict) and "format" in data:
                        if data["format"] != ACTION_EXPORT_FORMAT:
                            raise ValueError(f"not an action export ({data['format']!r})")
                        continue  # an action-ledger export: its header, then its lines
                    leaf = None
                    if isinstance(data, dict) and "record" in data and "leaf_hash" in data:
                        data, leaf = data["record"], data["leaf_hash"]
                    record = ActionRecord.from_json(data)
                    if leaf is not None and leaf != record.leaf_hash().hex():
                        raise ValueError(
                            f"record {record.seq} of gateway '{record.gateway}' does not "
                            "match its leaf_hash"
                        )
                    key = (record.gateway, record.seq)
                    if key in seen:
                        raise ValueError(
                            f"record {record.seq} of gateway '{record.gateway}' appears twice"
                        )
                    seen.add(key)
                except (ValueError, TypeError) as exc:
                    raise RecordFileError(f"{self.path} line {number}: {exc}") from exc
                t = datetime.fromisoformat(record.time).timestamp()
                if lo <= t < hi:
                    yield record


class _ActionLedger(Protocol):
    def records_between(self, since: datetime, until: datetime) -> Iterator[ActionRecord]: ...


class LedgerSource:
    """Action records from the CA's action ledger (``ca.ledger.actions.ActionLedger``)."""

    def __init__(self, ledger: _ActionLedger) -> None:
        self.ledger = ledger

    def records(self, since: datetime, until: datetime) -> Iterator[ActionRecord]:
        return self.ledger.records_between(since, until)
