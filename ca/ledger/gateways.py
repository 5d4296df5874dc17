"""Registered gateways: who may ship decisions to the action ledger, and the key that signs
their local logs' checkpoints (decision 0056).

A gateway is registered by an operator (``agentca gateway add NAME --public-key FILE``) with
the public key of its checkpoint signer; ``key_id`` is the hex SHA-256 of the key's
SubjectPublicKeyInfo (DER), the value a :class:`wire.actions.GatewayCheckpoint` names. Keys are
Ed25519 or ECDSA (P-256 with SHA-256, P-384 with SHA-384). Registration and disabling are
issuance-ledger events.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ca.clock import Clock
from ca.errors import CAError, ErrorCode
from ca.ledger.store import append
from ca.names import validate_agent_name
from ca.store.models import GatewayRow
from wire.actions import GATEWAY_ID, GatewayCheckpoint

_EC_HASHES = {"secp256r1": hashes.SHA256, "secp384r1": hashes.SHA384}


def key_id(spki_der: bytes) -> str:
    """The hex SHA-256 of a SubjectPublicKeyInfo (DER): how checkpoints name their key."""
    return hashlib.sha256(spki_der).hexdigest()


def load_gateway_key(data: bytes) -> bytes:
    """A gateway public key (PEM or DER) as SPKI DER; ``BAD_REQUEST`` unless it is Ed25519 or
    ECDSA P-256/P-384."""
    try:
        key = (
            serialization.load_pem_public_key(data)
            if data.lstrip().startswith(b"-----")
            else serialization.load_der_public_key(data)
        )
    except (ValueError, TypeError) as exc:
        raise CAError(ErrorCode.BAD_REQUEST, "not a public key (PEM or DER SPKI)") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey) and not (
        isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_HASHES
    ):
        raise CAError(ErrorCode.UNSUPPORTED_KEY, "a gateway key is Ed25519 or ECDSA P-256 / P-384")
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def checkpoint_signature_problem(cp: GatewayCheckpoint, spki_der: bytes) -> str | None:
    """``None`` when ``cp`` is signed by the key ``spki_der``, else one line saying why."""
    if cp.key_id != key_id(spki_der):
        return f"the checkpoint names key {cp.key_id[:16]}..., not the gateway's registered key"
    key = serialization.load_der_public_key(spki_der)
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(cp.signature, cp.statement())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cp.signature, cp.statement(), ec.ECDSA(_EC_HASHES[key.curve.name]()))
        else:  # refused at registration
            return "the registered key is of an unsupported type"
    except InvalidSignature:
        return "the checkpoint signature does not verify with the gateway's registered key"
    return None


@dataclass(frozen=True)
class Gateway:
    """A registered gateway."""

    name: str
    public_key_der: bytes
    key_id: str
    created_at: datetime
    disabled_at: datetime | None

    @property
    def enabled(self) -> bool:
        return self.disabled_at is None

    def to_json(self) -> dict[str, Any]:
        pem = serialization.load_der_public_key(self.public_key_der).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {
            "name": self.name,
            "key_id": self.key_id,
            "public_key_pem": pem.decode(),
            "created_at": self.created_at,
            "disabled_at": self.disabled_at,
            "enabled": self.enabled,
        }


def _gateway(row: GatewayRow) -> Gateway:
    return Gateway(row.name, row.public_key_der, row.key_id, row.created_at, row.disabled_at)


def validate_gateway_name(name: str) -> str:
    """A gateway name: an API token name (it authenticates as one) and a record's gateway ID."""
    validate_agent_name(name)
    if not GATEWAY_ID.fullmatch(name):
        raise CAError(ErrorCode.INVALID_NAME, f"'{name[:64]}' is not a gateway name")
    return name


class Gateways:
    """The registered gateways."""

    def __init__(self, sessions: sessionmaker[Session], clock: Clock) -> None:
        self.sessions = sessions
        self.clock = clock

    def add(self, name: str, public_key: bytes, actor: str) -> tuple[Gateway, bool]:
        """Register gateway ``name`` with its checkpoint key (PEM or DER); returns it and
        whether it changed: the same registration again changes nothing, another key under
        a taken name is ``CONFLICT``. Ledger: ``gateway.registered``."""
        validate_gateway_name(name)
        spki = load_gateway_key(public_key)
        now = self.clock()
        row = GatewayRow(name=name, public_key_der=spki, key_id=key_id(spki), created_at=now)
        try:
            with self.sessions.begin() as s:
                taken = s.scalar(select(GatewayRow).where(GatewayRow.name == name))
                if taken is not None and taken.public_key_der == spki:
                    return _gateway(taken), False
                if taken is not None:
                    raise CAError(
                        ErrorCode.CONFLICT,
                        f"gateway '{name}' is already registered with another key "
                        f"({taken.key_id[:16]}...)",
                    )
                s.add(row)
                s.flush()
                append(s, actor, "gateway.registered", {"gateway": name, "key_id": row.key_id}, now)
        except IntegrityError as exc:
            raise CAError(ErrorCode.CONFLICT, f"gateway '{name}' is already registered") from exc
        return _gateway(row), True

    def disable(self, name: str, actor: str) -> tuple[Gateway, bool]:
        """Disable gateway ``name`` (its batches are refused from now on); returns it and
        whether it changed. Ledger: ``gateway.disabled``."""
        now = self.clock()
        with self.sessions.begin() as s:
            row = s.scalar(select(GatewayRow).where(GatewayRow.name == name))
            if row is None:
                raise CAError(ErrorCode.NOT_FOUND, f"no gateway '{name[:64]}' is registered")
            changed = row.disabled_at is None
            if changed:
                row.disabled_at = now
                append(s, actor, "gateway.disabled", {"gateway": name}, now)
            return _gateway(row), changed

    def get(self, name: str) -> Gateway | None:
        with self.sessions() as s:
            row = s.scalar(select(GatewayRow).where(GatewayRow.name == name))
            return None if row is None else _gateway(row)

    def list(self) -> list[Gateway]:
        with self.sessions() as s:
            return [_gateway(r) for r in s.scalars(select(GatewayRow).order_by(GatewayRow.name))]
