"""``JsonLinesSource`` reading crafted record files and action-ledger exports (review).

``agentca drift run --records FILE`` may hold certificates on what it reads, so a file that
counts a record twice, or whose export line shows other content than its leaf hash, or that
a strict verifier reads differently (a repeated member), is refused, not scored."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ca.drift.source import JsonLinesSource, RecordFileError
from ca.ledger.verify import ACTION_EXPORT_FORMAT
from wire.actions import ActionRecord, record_time

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
LO, HI = T0 - timedelta(days=1), T0 + timedelta(days=1)


def _record(seq: int, agent: str = "agent0") -> ActionRecord:
    return ActionRecord(
        gateway="gw-1", seq=seq, time=record_time(T0 + timedelta(seconds=seq)),
        request_id=f"r{seq}", outcome="allow", method="GET", route="/book", agent=agent,
    )  # fmt: skip


def _export_line(seq: int, record: ActionRecord) -> str:
    return json.dumps(
        {"seq": seq, "record": record.to_json(), "leaf_hash": record.leaf_hash().hex()}
    )


HEADER = json.dumps({"format": ACTION_EXPORT_FORMAT, "version": 1, "filter": None, "count": 3})


def _read(tmp_path: Path, lines: list[str]) -> list[ActionRecord]:
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return list(JsonLinesSource(path).records(LO, HI))


def test_an_honest_export_and_a_records_file_read_the_same(tmp_path: Path) -> None:
    records = [_record(i) for i in range(3)]
    export = [HEADER, *(_export_line(i, r) for i, r in enumerate(records))]
    assert _read(tmp_path, export) == records
    assert _read(tmp_path, [json.dumps(r.to_json()) for r in records]) == records


def test_a_record_counted_twice_is_refused(tmp_path: Path) -> None:
    """A repeated line (same gateway and seq) would double an agent's counts."""
    r = [_record(0), _record(1)]
    with pytest.raises(RecordFileError, match="line 4: record 1 of gateway 'gw-1' appears twice"):
        _read(
            tmp_path, [HEADER, _export_line(0, r[0]), _export_line(1, r[1]), _export_line(2, r[1])]
        )
    with pytest.raises(RecordFileError, match="line 2: record 0 of gateway 'gw-1' appears twice"):
        _read(tmp_path, [json.dumps(r[0].to_json()), json.dumps(_record(0, "agent9").to_json())])


def test_an_export_line_whose_record_is_not_its_leaf_is_refused(tmp_path: Path) -> None:
    line = json.loads(_export_line(0, _record(0)))
    line["record"]["agent"] = "victim"
    with pytest.raises(RecordFileError, match=r"line 2: .*does not match its leaf_hash"):
        _read(tmp_path, [HEADER, json.dumps(line)])


def test_a_repeated_member_is_refused_as_ledger_verify_does(tmp_path: Path) -> None:
    """``ledger verify`` refuses it; plain ``json.loads`` kept the last ``record``."""
    honest = _export_line(0, _record(0))
    other = json.dumps(_record(0, "victim").to_json())
    with pytest.raises(RecordFileError, match="line 2: the member 'record' appears twice"):
        _read(tmp_path, [HEADER, honest[:-1] + f', "record": {other}}}'])
    with pytest.raises(RecordFileError, match=r"line 1: .*NaN"):
        _read(tmp_path, ['{"v": 1, "seq": NaN}'])
