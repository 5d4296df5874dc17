"""``CurrentSigners`` (decision 0018): per issuer the newest signer that is valid now and
whose key the responder token holds; re-picked on ``check``; nothing is ever created."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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
        self.known: list[IssuerInfo] = []

    def head(self) -> FeedHead:
        return FeedHead(0, len(self.rows), 1)

    def changes(self, after: int, also: Iterable[int], limit: int) -> list[Change]:
        return []

    def issuers(self) -> list[IssuerInfo]:
        return self.known

    def signers(self, valid_at: datetime) -> list[SignerInfo]:
        self.asked.append(valid_at)
        return sorted((r for r in self.rows if r.not_after > valid_at), key=lambda r: -r.id)

    def snapshot(self) -> None:
        return None

    def statuses(self, issuer_id: int, serials: Sequence[str]) -> dict[str, SerialStatus]:
        return {}


class World:
    def __init__(self) -> None:
        self.root_key, self.root, self.issuing_key, self.issuing = software_hierarchy()
        self.keys = SoftKeyStore()
        self.source = Signers()
        der = self.issuing.public_bytes(Encoding.DER)
        self.source.known.append(IssuerInfo(2, "issuing", der, b"", b"", b"", b"", 1, "2"))
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
        return self.publish_cert(label, cert)

    def publish_cert(self, label: str, cert: x509.Certificate) -> int:
        row_id = len(self.source.rows) + 1
        start = cert.not_valid_before_utc
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


# -- a row is used only if it is fit to sign (found in review 3) ------------------------------
def _responder_cert(
    w: World, public_key: CertificatePublicKeyTypes, kind: str = ""
) -> x509.Certificate:
    """A responder certificate built by hand; ``kind`` names what is wrong with it."""
    issuer, issuer_key = (
        (w.root, w.root_key) if kind == "other-issuer" else (w.issuing, w.issuing_key)
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "responder")]))
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(0x777)
        .not_valid_before(T0 - timedelta(minutes=5))
        .not_valid_after(T0 + timedelta(hours=47))
    )
    if kind != "no-eku":
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False
        )
    if kind != "no-nocheck":
        builder = builder.add_extension(x509.OCSPNoCheck(), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def test_a_row_whose_certificate_is_not_for_the_tokens_key_is_skipped() -> None:
    """The key under the row's label is another key than the certificate names (a token
    restored or re-created, a label reused): every answer would fail verification."""
    w = World()
    good = w.publish(T0 - timedelta(hours=1), 48)
    w.keys.generate("agentca-ocsp-2", KeyType.EC_P256)
    other = SoftKeyStore().generate("x", KeyType.EC_P256)
    cert = build_responder_certificate(
        other.public_key(), 0x202, T0 - timedelta(minutes=1), T0 + timedelta(hours=47),
        w.issuing, w.issuing_key,
    )  # fmt: skip
    w.publish_cert("agentca-ocsp-2", cert)
    w.signers.reload()
    assert w.signers.signer_for(2).row_id == good


@pytest.mark.parametrize("kind", ["no-eku", "no-nocheck", "other-issuer"])
def test_a_row_that_is_no_delegated_responder_of_its_issuer_is_skipped(kind: str) -> None:
    w = World()
    key = w.keys.generate("agentca-ocsp-1", KeyType.EC_P256)
    w.publish_cert("agentca-ocsp-1", _responder_cert(w, key.public_key(), kind))
    w.signers.reload()
    with pytest.raises(CAError) as err:
        w.signers.signer_for(2)
    assert err.value.code is ErrorCode.NOT_INITIALISED  # tryLater, not a bad signature


def test_a_well_formed_hand_built_responder_row_is_used() -> None:
    w = World()
    key = w.keys.generate("agentca-ocsp-1", KeyType.EC_P256)
    row = w.publish_cert("agentca-ocsp-1", _responder_cert(w, key.public_key()))
    w.signers.reload()
    assert w.signers.signer_for(2).row_id == row
