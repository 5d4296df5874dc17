"""Where the analyser's records come from: the one seam between the drift core and storage.

A :class:`RecordSource` yields the action records of a time range. ``JsonLinesSource``
reads a file of ``ActionRecord.to_json()`` objects, one per line (what
``agentca drift run --records FILE`` takes); the CA's action ledger is another source with
the same one method (docs/drift.md, "Record sources").
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Protocol

from wire.actions import ActionRecord


class RecordSource(Protocol):
    """Action records with ``since <= time < until``, in any order."""

    def records(self, since: datetime, until: datetime) -> Iterator[ActionRecord]: ...


class RecordFileError(ValueError):
    """A record file cannot be read or holds something that is not an action record."""


class JsonLinesSource:
    """Action records from a JSON-lines file (blank lines ignored)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def records(self, since: datetime, until: datetime) -> Iterator[ActionRecord]:
        lo, hi = since.timestamp(), until.timestamp()
        try:
            fh = self.path.open(encoding="utf-8")
        except OSError as exc:
            raise RecordFileError(f"cannot read records file {self.path}: {exc.strerror}") from exc
        with fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = ActionRecord.from_json(json.loads(line))
                except (ValueError, TypeError) as exc:
                    raise RecordFileError(f"{self.path} line {number}: {exc}") from exc
                t = datetime.fromisoformat(record.time).timestamp()
                if lo <= t < hi:
                    yield record
