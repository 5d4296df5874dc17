"""Ledger entries and signed tree heads (checkpoints): their canonical bytes and signatures.

Hashing rules (see docs/auditors.md):
- an entry's bytes are the canonical JSON of ``{"seq", "time", "actor", "event", "body"}``:
  keys sorted, separators ``,`` and ``:``, UTF-8, no floats; its leaf hash is
  ``SHA-256(0x00 || bytes)`` and the tree follows RFC 9162;
- a checkpoint signs ``"agentca-checkpoint-v1\\n" || canonical JSON of {"ledger", "tree_size",
  "root_hash", "timestamp"}`` with the audit key (ECDSA P-256 / SHA-256, DER signature).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from wire.canonical import canonical
from wire.merkle import leaf_hash

CHECKPOINT_CONTEXT = b"agentca-checkpoint-v1\n"
LEDGER_NAME = "agentca"
"""The issuance ledger's name in its checkpoints."""
ACTIONS_LEDGER_NAME = "agentca-actions"
"""The action ledger's name (decision 0056): it is signed, so a checkpoint of one ledger never
verifies as a checkpoint of the other."""
LEDGER_NAMES = (LEDGER_NAME, ACTIONS_LEDGER_NAME)


def format_time(t: datetime) -> str:
    """UTC, microseconds, ``Z``: one spelling for one instant (a four-digit year, also
    before 1000: ``strftime('%Y')`` does not pad it, and text order must be time order)."""
    u = t.astimezone(UTC)
    return f"{u.year:04d}-" + u.strftime("%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LedgerEntry:
    """One ledger entry."""

    seq: int
    time: str
    actor: str
    event: str
    body: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "event": self.event,
            "body": dict(self.body),
        }

    def canonical_bytes(self, check: bool = True) -> bytes:
        return canonical(self.to_json(), check)

    def leaf_hash(self, check: bool = True) -> bytes:
        return leaf_hash(self.canonical_bytes(check))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LedgerEntry:
        """Parse an exported entry; raises ``ValueError`` naming what is wrong."""
        for key, kind in (
            ("seq", int),
            ("time", str),
            ("actor", str),
            ("event", str),
            ("body", dict),
        ):
            if not isinstance(data.get(key), kind) or (
                kind is int and isinstance(data.get(key), bool)
            ):
                raise ValueError(f"field '{key}' is missing or not a {kind.__name__}")
        return cls(data["seq"], data["time"], data["actor"], data["event"], data["body"])


@dataclass(frozen=True)
class Checkpoint:
    """A signed tree head: the ledger's size and root, signed by the audit key."""

    tree_size: int
    root_hash: bytes
    timestamp: str
    signature: bytes
    certificate_der: bytes
    ledger: str = LEDGER_NAME  # which ledger: signed, see ACTIONS_LEDGER_NAME

    def statement(self) -> bytes:
        return checkpoint_statement(self.tree_size, self.root_hash, self.timestamp, self.ledger)

    def to_json(self) -> dict[str, Any]:
        cert = x509.load_der_x509_certificate(self.certificate_der)
        return {
            "ledger": self.ledger,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "timestamp": self.timestamp,
            "signature": base64.b64encode(self.signature).decode(),
            "certificate_pem": cert.public_bytes(serialization.Encoding.PEM).decode(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], ledger: str = LEDGER_NAME) -> Checkpoint:
        """Parse a checkpoint of the ledger named ``ledger``; raises ``ValueError`` naming what
        is wrong (a checkpoint of the other ledger included)."""
        try:
            if data.get("ledger") != ledger:
                found = data.get("ledger")
                if found in LEDGER_NAMES:
                    raise ValueError(f"a checkpoint of ledger '{found}', not of '{ledger}'")
                raise ValueError(f"not an {ledger} checkpoint")
            size = data["tree_size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ValueError("tree_size must be a non-negative integer")
            root = bytes.fromhex(data["root_hash"])
            if len(root) != 32:
                raise ValueError("root_hash must be 32 bytes")
            cert = x509.load_pem_x509_certificate(data["certificate_pem"].encode())
            return cls(
                size,
                root,
                str(data["timestamp"]),
                base64.b64decode(data["signature"], validate=True),
                cert.public_bytes(serialization.Encoding.DER),
                ledger,
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed checkpoint: {exc}") from exc

    def verify(self, trusted: x509.Certificate) -> str | None:
        """``None`` when signed by ``trusted``'s key, else why not."""
        embedded = x509.load_der_x509_certificate(self.certificate_der)
        if embedded != trusted:
            return "the checkpoint was signed by a certificate other than the trusted one"
        key = trusted.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return "the audit certificate does not hold an EC key"
        try:
            key.verify(self.signature, self.statement(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return "the checkpoint signature does not verify"
        return None


def checkpoint_statement(
    tree_size: int, root_hash: bytes, timestamp: str, ledger: str = LEDGER_NAME
) -> bytes:
    """The exact bytes the audit key signs."""
    return CHECKPOINT_CONTEXT + canonical(
        {
            "ledger": ledger,
            "tree_size": tree_size,
            "root_hash": root_hash.hex(),
            "timestamp": timestamp,
        }
    )


def sign_checkpoint(
    tree_size: int,
    root_hash: bytes,
    now: datetime,
    key: ec.EllipticCurvePrivateKey,
    certificate: x509.Certificate,
    ledger: str = LEDGER_NAME,
) -> Checkpoint:
    """Sign a tree head of ledger ``ledger`` with the audit key (an HSM key in production)."""
    timestamp = format_time(now)
    signature = key.sign(
        checkpoint_statement(tree_size, root_hash, timestamp, ledger), ec.ECDSA(hashes.SHA256())
    )
    return Checkpoint(
        tree_size,
        root_hash,
        timestamp,
        signature,
        certificate.public_bytes(serialization.Encoding.DER),
        ledger,
    )
