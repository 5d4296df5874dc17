"""The action-record codec: what it writes it reads back, and it refuses everything else."""

from __future__ import annotations

import json

import pytest

from wire.actions import MAX_BATCH, ActionBatch, ActionRecord, GatewayCheckpoint
from wire.merkle import leaf_hash


def _record(seq: int = 0, **over: object) -> ActionRecord:
    base: dict[str, object] = {
        "gateway": "gw-1",
        "seq": seq,
        "time": "2026-12-07T04:00:00.000001Z",
        "request_id": f"req-{seq}",
        "outcome": "allow",
        "method": "POST",
        "route": "/orders",
        "scope": "submit_limit_order",
        "agent": "trader",
        "serial": "0a1b",
        "http_status": 200,
    }
    base.update(over)
    return ActionRecord(**base)  # type: ignore[arg-type]


def test_a_record_round_trips_through_its_canonical_bytes() -> None:
    rec = _record(officer="Ada Lovelace <ada@example.com>", subject="user:42")
    data = json.loads(rec.leaf_bytes())
    assert data["v"] == 1 and "model_digest" not in data  # None members are omitted
    assert ActionRecord.from_json(data) == rec
    assert rec.leaf_hash() == leaf_hash(rec.leaf_bytes())
    assert rec.leaf_bytes() == json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"extra": 1}, "unknown member 'extra'"),
        ({"seq": "1"}, "'seq' must be an integer"),
        ({"seq": True}, "'seq' must be an integer"),
        ({"seq": -1}, "'seq' must not be negative"),
        ({"time": "2026-12-07T04:00:00Z"}, "'time' must be RFC 3339"),
        ({"time": "2026-13-07T04:00:00.000000Z"}, "'time' must be RFC 3339"),
        ({"time": "9999-99-99T99:99:99.999999Z"}, "'time' must be RFC 3339"),
        ({"time": "\u0662\u0660\u0662\u0666-12-07T04:00:00.000000Z"}, "'time' must be RFC 3339"),
        ({"outcome": "maybe"}, "'outcome'"),
        ({"outcome": "deny"}, "names its failed 'check'"),
        ({"check": "scope"}, "names its failed 'check'"),
        ({"route": "x" * 1025}, "longer than 1024"),
        ({"gateway": "../etc"}, "gateway identifier"),
        ({"http_status": 700}, "HTTP status"),
        ({"agent": None}, "is null"),
        ({"v": 2}, "'v' must be 1"),
    ],
)
def test_a_record_that_this_codec_would_not_write_is_refused(
    change: dict[str, object], message: str
) -> None:
    data = _record().to_json()
    data.update(change)
    with pytest.raises(ValueError, match=message):
        ActionRecord.from_json(data)


def test_a_batch_holds_consecutive_records_of_one_gateway() -> None:
    records = tuple(_record(i) for i in range(5, 8))
    cp = GatewayCheckpoint("gw-1", 8, b"\x01" * 32, "2026-12-07T04:00:01.000000Z", b"sig", "a" * 64)
    batch = ActionBatch("gw-1", records, cp)
    assert ActionBatch.from_json(json.loads(json.dumps(batch.to_json()))) == batch
    gap = batch.to_json()
    gap["records"][2]["seq"] = 9
    with pytest.raises(ValueError, match="does not follow"):
        ActionBatch.from_json(gap)
    other = batch.to_json()
    other["records"][0]["gateway"] = "gw-2"
    with pytest.raises(ValueError, match="another gateway"):
        ActionBatch.from_json(other)
    with pytest.raises(ValueError, match="1 to"):
        ActionBatch.from_json({"v": 1, "gateway": "gw-1", "records": []})
    too_many = {
        "v": 1,
        "gateway": "gw-1",
        "records": [_record(i).to_json() for i in range(MAX_BATCH + 1)],
    }
    with pytest.raises(ValueError, match="1 to"):
        ActionBatch.from_json(too_many)
    bad_cp = batch.to_json()
    bad_cp["checkpoint"]["root_hash"] = "AAAA"
    with pytest.raises(ValueError, match="wrong length"):
        ActionBatch.from_json(bad_cp)
