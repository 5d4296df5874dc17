"""Action records, batches and signed gateway checkpoints for the action-ledger tests."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from wire.actions import ActionBatch, ActionRecord, GatewayCheckpoint, record_time
from wire.merkle import root_of

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
ROUTES = ("/v1/book/{symbol}", "/v1/orders", "/v1/orders/{id}")


def record(gateway: str, seq: int, agent: str = "agent0", **extra: Any) -> ActionRecord:
    """Record ``seq`` of ``gateway``: agents, officers, routes and outcomes vary with ``seq``."""
    deny = seq % 5 == 4
    fields: dict[str, Any] = {
        "time": record_time(T0 + timedelta(minutes=seq)),
        "request_id": f"req-{gateway}-{seq}",
        "outcome": "deny" if deny else "allow",
        "method": "GET" if seq % 2 else "POST",
        "route": ROUTES[seq % len(ROUTES)],
        "scope": "read_book",
        "check": "scope" if deny else None,
        "http_status": 403 if deny else 200,
        "agent": agent,
        "serial": f"{seq + 1:x}",
        "officer": f"{agent}-officer@example.com",
    }
    fields.update(extra)
    return ActionRecord(gateway=gateway, seq=seq, **fields)


def records(gateway: str, start: int, end: int, **extra: Any) -> list[ActionRecord]:
    return [record(gateway, i, agent=f"agent{i % 2}", **extra) for i in range(start, end)]


class GatewayKey:
    """A gateway's Ed25519 checkpoint key."""

    def __init__(self) -> None:
        self.key = ed25519.Ed25519PrivateKey.generate()
        self.spki = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.key_id = hashlib.sha256(self.spki).hexdigest()

    def pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def checkpoint(self, gateway: str, log: Sequence[ActionRecord]) -> GatewayCheckpoint:
        """A signed checkpoint over ``log`` (the gateway's whole local log so far)."""
        root = root_of(r.leaf_hash() for r in log)
        stamp = record_time(T0 + timedelta(hours=1, microseconds=len(log)))
        unsigned = GatewayCheckpoint(gateway, len(log), root, stamp, b"", self.key_id)
        return GatewayCheckpoint(
            gateway, len(log), root, stamp, self.key.sign(unsigned.statement()), self.key_id
        )


def batch(
    gateway: str, recs: Sequence[ActionRecord], cp: GatewayCheckpoint | None = None
) -> dict[str, Any]:
    return ActionBatch(gateway, tuple(recs), cp).to_json()
