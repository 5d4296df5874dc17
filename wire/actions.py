"""Action records: one gateway decision as the action ledger keeps it (issue 18, decision 0053).

One codec for the three places a record lives: a gateway's local append-only log, the batch a
gateway ships to ``POST /v1/actions``, and the CA's action ledger. A record's leaf bytes are
the canonical JSON (:mod:`wire.canonical`) of :meth:`ActionRecord.to_json`, hashed as an RFC
9162 leaf (:mod:`wire.merkle`), so the same record has the same leaf hash in the gateway's log
and in the CA's ledger, and the two can be cross-checked leaf by leaf.

A record is identified by ``(gateway, seq)``: ``seq`` is its index in that gateway's local log
(0, 1, 2, ... with no gaps), which makes shipping idempotent. No request body is ever recorded;
``content_digest`` is the request's ``Content-Digest`` value, when it carried one.

Parsing is strict: unknown members, wrong types and oversize strings are refused with a
``ValueError`` naming the member, so a record that parses is one this codec would write.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, Final

from wire.canonical import canonical
from wire.merkle import leaf_hash

VERSION: Final = 1
MAX_TEXT: Final = 1024
"""The longest string member (characters); longer values are refused, not truncated."""
MAX_BATCH: Final = 1000
"""The most records one ``POST /v1/actions`` batch may carry."""
GATEWAY_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
"""A gateway's identifier: the name it is registered under at the CA."""
CHECKPOINT_CONTEXT: Final = b"agentca-gateway-checkpoint-v1\n"
_TIME: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
OUTCOMES: Final = ("allow", "deny")


def record_time(t: datetime) -> str:
    """UTC with microseconds and ``Z``: the one spelling of an instant in a record."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One gateway decision, allow or deny (members documented in docs/auditors.md)."""

    gateway: str
    seq: int
    time: str
    request_id: str
    outcome: str  # "allow" | "deny"
    method: str
    route: str  # the normalised route (the template the gateway matched), not the raw path
    scope: str | None = None  # the scope the route requires
    check: str | None = None  # the failed check of a denial
    detail: str | None = None  # the denial's explanation
    http_status: int | None = None  # the status sent, when the shell knew it
    agent: str | None = None
    spiffe_id: str | None = None
    serial: str | None = None
    issuer: str | None = None  # the issuing CA's subject key identifier (hex)
    officer: str | None = None
    subject: str | None = None  # the delegated subject, when the request carries one
    environment: str | None = None
    model_type: str | None = None
    model_digest: str | None = None
    prompt_digest: str | None = None
    config_digest: str | None = None
    attested_by: str | None = None
    content_digest: str | None = None
    profile: str | None = None

    def __post_init__(self) -> None:
        _check(self)

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON object (``None`` members omitted), with its version."""
        out: dict[str, Any] = {"v": VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = value
        return out

    def leaf_bytes(self) -> bytes:
        """The bytes a log hashes for this record (canonical JSON)."""
        return canonical(self.to_json())

    def leaf_hash(self) -> bytes:
        """The RFC 9162 leaf hash of this record."""
        return leaf_hash(self.leaf_bytes())

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ActionRecord:
        """Parse a record; raises ``ValueError`` naming the first member that is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError("an action record is a JSON object")
        if data.get("v") != VERSION or isinstance(data.get("v"), bool):
            raise ValueError(f"member 'v' must be {VERSION}")
        known = _FIELDS
        unknown = sorted(set(data) - set(known) - {"v"})
        if unknown:
            raise ValueError(f"unknown member '{unknown[0]}'")
        for name in _REQUIRED:
            if name not in data:
                raise ValueError(f"member '{name}' is missing")
        for name, value in data.items():
            if name != "v" and value is None:
                raise ValueError(f"member '{name}' is null (omit it instead)")
        return cls(**{k: v for k, v in data.items() if k != "v"})


_FIELDS: Final = tuple(f.name for f in fields(ActionRecord))
_REQUIRED: Final = ("gateway", "seq", "time", "request_id", "outcome", "method", "route")
_INTS: Final = frozenset({"seq", "http_status"})


def _check(record: ActionRecord) -> None:
    for name in _FIELDS:
        value = getattr(record, name)
        if value is None:
            if name in _REQUIRED:
                raise ValueError(f"member '{name}' is missing")
            continue
        if name in _INTS:
            if type(value) is not int:
                raise ValueError(f"member '{name}' must be an integer")
            continue
        if type(value) is not str:
            raise ValueError(f"member '{name}' must be a string")
        if len(value) > MAX_TEXT:
            raise ValueError(f"member '{name}' is longer than {MAX_TEXT} characters")
    if not GATEWAY_ID.fullmatch(record.gateway):
        raise ValueError("member 'gateway' is not a gateway identifier")
    if record.seq < 0:
        raise ValueError("member 'seq' must not be negative")
    if not _valid_time(record.time):
        raise ValueError("member 'time' must be RFC 3339 UTC with microseconds and 'Z'")
    if record.outcome not in OUTCOMES:
        raise ValueError("member 'outcome' must be 'allow' or 'deny'")
    if (record.outcome == "deny") != (record.check is not None):
        raise ValueError("a denial names its failed 'check', and only a denial does")
    if record.http_status is not None and not 100 <= record.http_status <= 599:
        raise ValueError("member 'http_status' must be an HTTP status code")


def _valid_time(text: str) -> bool:
    """ASCII digits only (``\\d`` would take other scripts' digits) and a real instant."""
    if not _TIME.fullmatch(text):
        return False
    try:
        datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return False
    return True


def checkpoint_statement(gateway: str, tree_size: int, root_hash: bytes, timestamp: str) -> bytes:
    """The bytes a gateway signs for a checkpoint of its local log."""
    body = {
        "gateway": gateway,
        "tree_size": tree_size,
        "root_hash": base64.b64encode(root_hash).decode(),
        "timestamp": timestamp,
    }
    return CHECKPOINT_CONTEXT + canonical(body)


@dataclass(frozen=True, slots=True)
class GatewayCheckpoint:
    """A signed tree head of one gateway's local action log."""

    gateway: str
    tree_size: int
    root_hash: bytes
    timestamp: str
    signature: bytes
    key_id: str  # the hex SHA-256 of the gateway key's SubjectPublicKeyInfo

    def statement(self) -> bytes:
        """The signed bytes."""
        return checkpoint_statement(self.gateway, self.tree_size, self.root_hash, self.timestamp)

    def to_json(self) -> dict[str, Any]:
        """The checkpoint as a JSON object."""
        return {
            "gateway": self.gateway,
            "tree_size": self.tree_size,
            "root_hash": base64.b64encode(self.root_hash).decode(),
            "timestamp": self.timestamp,
            "signature": base64.b64encode(self.signature).decode(),
            "key_id": self.key_id,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GatewayCheckpoint:
        """Parse a checkpoint; raises ``ValueError`` naming what is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError("a checkpoint is a JSON object")
        for key, kind in (
            ("gateway", str),
            ("tree_size", int),
            ("root_hash", str),
            ("timestamp", str),
            ("signature", str),
            ("key_id", str),
        ):
            value = data.get(key)
            if type(value) is not kind:
                raise ValueError(f"checkpoint member '{key}' is missing or not a {kind.__name__}")
        if set(data) - {"gateway", "tree_size", "root_hash", "timestamp", "signature", "key_id"}:
            raise ValueError("a checkpoint has unknown members")
        if not GATEWAY_ID.fullmatch(data["gateway"]) or data["tree_size"] < 0:
            raise ValueError("checkpoint 'gateway' or 'tree_size' is invalid")
        if not _valid_time(data["timestamp"]):
            raise ValueError("checkpoint 'timestamp' must be RFC 3339 UTC with microseconds")
        try:
            root = base64.b64decode(data["root_hash"], validate=True)
            signature = base64.b64decode(data["signature"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("checkpoint 'root_hash' or 'signature' is not base64") from exc
        if len(root) != 32 or not re.fullmatch(r"[0-9a-f]{64}", data["key_id"]):
            raise ValueError("checkpoint 'root_hash' or 'key_id' has the wrong length")
        return cls(
            data["gateway"], data["tree_size"], root, data["timestamp"], signature, data["key_id"]
        )


@dataclass(frozen=True, slots=True)
class ActionBatch:
    """What a gateway ships in one ``POST /v1/actions``: consecutive records of its log
    (``records[i].seq == first + i``), and optionally its latest checkpoint."""

    gateway: str
    records: tuple[ActionRecord, ...]
    checkpoint: GatewayCheckpoint | None = None

    def to_json(self) -> dict[str, Any]:
        """The batch as a JSON object."""
        out: dict[str, Any] = {
            "v": VERSION,
            "gateway": self.gateway,
            "records": [r.to_json() for r in self.records],
        }
        if self.checkpoint is not None:
            out["checkpoint"] = self.checkpoint.to_json()
        return out

    @classmethod
    def from_json(cls, data: Any) -> ActionBatch:
        """Parse and check a batch; raises ``ValueError`` naming what is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError("an action batch is a JSON object")
        if data.get("v") != VERSION or set(data) - {"v", "gateway", "records", "checkpoint"}:
            raise ValueError(f"an action batch has version {VERSION} and no unknown members")
        gateway = data.get("gateway")
        if type(gateway) is not str or not GATEWAY_ID.fullmatch(gateway):
            raise ValueError("batch member 'gateway' is not a gateway identifier")
        raw = data.get("records")
        if not isinstance(raw, list) or not 0 < len(raw) <= MAX_BATCH:
            raise ValueError(f"batch member 'records' holds 1 to {MAX_BATCH} records")
        records: list[ActionRecord] = []
        for i, item in enumerate(raw):
            try:
                record = ActionRecord.from_json(item)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"record {i}: {exc}") from exc
            if record.gateway != gateway:
                raise ValueError(f"record {i} belongs to another gateway")
            if i and record.seq != records[0].seq + i:
                raise ValueError(f"record {i} does not follow record {i - 1} (seq)")
            records.append(record)
        checkpoint = None
        if data.get("checkpoint") is not None:
            checkpoint = GatewayCheckpoint.from_json(data["checkpoint"])
            if checkpoint.gateway != gateway:
                raise ValueError("the checkpoint belongs to another gateway")
        return cls(gateway, tuple(records), checkpoint)
