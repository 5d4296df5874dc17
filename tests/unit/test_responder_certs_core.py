"""``ResponderCertRotator`` on the SQLite core: a responder certificate is published only if it
verifies under its issuer and certifies the key the responder token holds (found in review 3:
a key store handing out a stale handle published certificates no client could verify)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy import func, select

from ca.errors import CAError, ErrorCode
from ca.responder_certs import ResponderCertRotator
from ca.store.models import Issuer, OcspSigner
from hsm import KeyType, SigningKey, SoftKeyStore
from tests.unit.core_support import Core, make_core


class WrongKeys:
    """A key store whose ``get`` hands out another key than the label names."""

    def __init__(self, inner: SoftKeyStore) -> None:
        self.inner = inner
        self.other = SoftKeyStore().generate("other", KeyType.EC_P256)

    def get(self, label: str) -> SigningKey:
        return self.other

    def generate(self, label: str, key_type: KeyType) -> SigningKey:
        return self.inner.generate(label, key_type)

    def exists(self, label: str) -> bool:
        return self.inner.exists(label)


def _published(core: Core) -> int:
    with core.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(OcspSigner)) or 0)


def test_published_certificates_verify_under_their_issuer(tmp_path: Path) -> None:
    core = make_core(tmp_path)
    responder = SoftKeyStore()
    results = ResponderCertRotator(
        core.sessions, core.keys, responder, clock=core.clock
    ).ensure_all()
    assert [r.created for r in results] == [True, True]
    with core.sessions() as s:
        for row in s.scalars(select(OcspSigner)):
            issuer = s.get(Issuer, row.issuer_id)
            assert issuer is not None
            cert = x509.load_der_x509_certificate(row.certificate_der)
            cert.verify_directly_issued_by(x509.load_der_x509_certificate(issuer.certificate_der))
            assert cert.public_key() == responder.get(row.key_label).public_key()


def test_a_ca_key_store_signing_with_another_key_publishes_nothing(tmp_path: Path) -> None:
    core = make_core(tmp_path)
    events = len(core.events())
    rotator = ResponderCertRotator(
        core.sessions,
        WrongKeys(core.keys),  # type: ignore[arg-type]
        SoftKeyStore(),
        clock=core.clock,
    )
    with pytest.raises(CAError) as err:
        rotator.ensure_all()
    assert err.value.code is ErrorCode.HSM_FAILURE
    assert _published(core) == 0 and len(core.events()) == events


def test_a_responder_token_handing_out_another_key_publishes_nothing(tmp_path: Path) -> None:
    core = make_core(tmp_path)
    rotator = ResponderCertRotator(
        core.sessions,
        core.keys,
        WrongKeys(SoftKeyStore()),  # type: ignore[arg-type]
        clock=core.clock,
    )
    with pytest.raises(CAError) as err:
        rotator.ensure_all()
    assert err.value.code is ErrorCode.HSM_FAILURE
    assert _published(core) == 0
