"""The status decision (docs/architecture.md, the OCSP responder), as pure functions.

| CertID                                   | answer                                           |
|------------------------------------------|--------------------------------------------------|
| issuer name/key hash not ours, or a hash | ``unauthorized`` for the whole request           |
| algorithm we cannot match                |                                                  |
| ours, issued, not revoked                | good (also after expiry: status is kept)         |
| ours, revoked (incl. certificateHold)    | revoked + time + reason                          |
| ours, never issued (absent, pending,     | revoked, certificateHold, 1970-01-01T00:00:00Z,  |
| failed, or a serial that cannot be ours) | with the extended-revoke extension (RFC 6960 2.2)|
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from ocsp.request import CertId

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CERTIFICATE_HOLD = 6
MAX_SERIAL = (1 << 160) - 1  # RFC 5280: at most 20 octets


class CertState(enum.Enum):
    """What the responder says about one certificate."""

    GOOD = "good"
    REVOKED = "revoked"
    UNISSUED = "unissued"  # answered as revoked/certificateHold per RFC 6960 section 2.2


@dataclass(frozen=True)
class SerialStatus:
    """What the responder answers for one serial under one issuer (the database's own
    ``ca.store.models.CertStatus`` is the lifecycle of a ``certificates`` row)."""

    state: CertState
    revoked_at: datetime | None = None
    reason: int | None = None  # RFC 5280 CRLReason

    @property
    def answer_time(self) -> datetime | None:
        """revocationTime to answer with (the epoch for never-issued serials)."""
        return EPOCH if self.state is CertState.UNISSUED else self.revoked_at

    @property
    def answer_reason(self) -> int | None:
        return CERTIFICATE_HOLD if self.state is CertState.UNISSUED else self.reason


GOOD = SerialStatus(CertState.GOOD)
UNISSUED = SerialStatus(CertState.UNISSUED)


def status_from_record(
    status: str | None, revoked_at: datetime | None, reason: int | None
) -> SerialStatus:
    """Map a ``certificates`` row (or its absence: ``None``) to a :class:`SerialStatus`.

    Only ``issued`` is good. ``pending`` and ``failed`` records were never (validly) issued.
    """
    if status == "issued":
        return GOOD
    if status == "revoked":
        return SerialStatus(CertState.REVOKED, revoked_at or EPOCH, reason)
    return UNISSUED


IssuerKey = tuple[str, bytes, bytes]
"""(hash algorithm name, issuer name hash, issuer key hash) -> identifies one of our CAs."""


def serial_key(serial: int) -> str | None:
    """The stored form of a serial, or None when it cannot be one we issued."""
    if serial <= 0 or serial > MAX_SERIAL:
        return None
    return format(serial, "x")


@dataclass(frozen=True)
class Lookup:
    """One CertID resolved to one of our issuers and a serial key (None: cannot exist)."""

    cert_id: CertId
    issuer_id: int
    serial_hex: str | None


def resolve(cert_ids: Sequence[CertId], issuers: Mapping[IssuerKey, int]) -> list[Lookup] | None:
    """Match every CertID to one of our issuers; None (-> ``unauthorized``) if any is not ours."""
    found: list[Lookup] = []
    for cid in cert_ids:
        issuer_id = issuers.get((cid.hash_algorithm, cid.issuer_name_hash, cid.issuer_key_hash))
        if issuer_id is None:
            return None
        found.append(Lookup(cid, issuer_id, serial_key(cid.serial_number)))
    return found
