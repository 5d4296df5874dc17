"""``CurrentSigners`` (decision 0018): per issuer the newest signer that is valid now and
whose key the responder token holds; re-picked on ``check``; nothing is ever created."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from ca.errors import CAError, ErrorCode
from ca.responder_certs import build_responder_certificate
from hsm import KeyType, SoftKeyStore
from ocsp.decision import SerialStatus
from ocsp.loaded_signers import CurrentSigners
from ocsp.status import Change, FeedHead, IssuerInfo, SignerInfo
from tests.unit.helpers import software_hierarchy

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Signers:
    """A status source that only knows signer rows (what ``CurrentSigners`` reads)."""

    def __init__(self) -> None:
        self.rows: list[SignerInfo] = []
        self.asked: list[datetime] = []

    def head(self) -> FeedHead:
        return FeedHead(0, len(self.rows), 1)

    def changes(self, after: int, also: Iterable[int], limit: int) -> list[Change]:
        return []

    def issuers(self) -> list[IssuerInfo]:
        return []

    def signers(self, valid_at: datetime) -> list[SignerInfo]:
        self.asked.append(valid_at)
        return sorted((r for r in self.rows if r.not_after > valid_at), key=lambda r: -r.id)

    def statuses(self, issuer_id: int, serials: Sequence[str]) -> dict[str, SerialStatus]:
        return {}


class World:
    def __init__(self) -> None:
        _, _, self.issuing_key, self.issuing = software_hierarchy()
        self.keys = SoftKeyStore()
        self.source = Signers()
        self.now = T0
        self.signers = CurrentSigners(self.source, self.keys, lambda: self.now)

    def publish(self, start: datetime, hours: float, in_token: bool = True) -> int:
        row_id = len(self.source.rows) + 1
        label = f"agentca-ocsp-{row_id}"
        key = (SoftKeyStore() if not in_token else self.keys).generate(label, KeyType.EC_P256)
        cert = build_responder_certificate(
            key.public_key(), 0x100 + row_id, start, start + timedelta(hours=hours),
            self.issuing, self.issuing_key,
        )  # fmt: skip
        der = cert.public_bytes(Encoding.DER)
        self.source.rows.append(SignerInfo(row_id, 2, label, der, start, cert.not_valid_after_utc))
        return row_id


def test_no_signer_is_not_initialised_try_later() -> None:
    w = World()
    w.signers.reload()
    with pytest.raises(CAError) as err:
        w.signers.signer_for(2)
    assert err.value.code is ErrorCode.NOT_INITIALISED
    assert w.keys.labels() == []  # nothing was generated


def test_the_newest_valid_signer_is_used_and_the_older_one_until_then() -> None:
    w = World()
    old = w.publish(T0 - timedelta(hours=30), 48)
    w.signers.reload()
    assert w.signers.signer_for(2).row_id == old
    new = w.publish(T0 + timedelta(minutes=5), 48)  # published, not valid yet
    assert w.signers.check() is False
    assert w.signers.signer_for(2).row_id == old
    w.now = T0 + timedelta(minutes=6)
    assert w.signers.check() is True  # a newer one became valid: answers are re-signed
    assert w.signers.signer_for(2).row_id == new


def test_an_expired_signer_is_dropped_on_check() -> None:
    w = World()
    w.publish(T0 - timedelta(hours=47), 48)
    w.signers.reload()
    w.now = T0 + timedelta(hours=2)
    assert w.signers.check() is True
    with pytest.raises(CAError):
        w.signers.signer_for(2)


def test_a_signer_whose_key_is_not_in_the_token_is_skipped() -> None:
    w = World()
    older = w.publish(T0 - timedelta(hours=1), 48)
    w.publish(T0 - timedelta(minutes=1), 48, in_token=False)  # e.g. key in the CA token
    w.signers.reload()
    assert w.signers.signer_for(2).row_id == older
    w.signers.reload()  # reported once, still skipped
    assert w.signers.signer_for(2).row_id == older
