"""Delegated responder certificates on the real SoftHSM2 token and both databases: created
on first need, rotated when expiring (by the responder itself), used at once, verifiable up to
the issuer; concurrent rotators create one signer on PostgreSQL."""

from __future__ import annotations

import concurrent.futures
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from sqlalchemy import func, select

from ca.authority import IssuanceRequest
from ca.clock import utcnow
from ca.runtime import Runtime
from ca.store.models import Issuer, OcspSigner
from ocsp.options import OcspOptions
from ocsp.rotation import SignerRotator
from ocsp.service import open_responder
from tests.unit.helpers import sample_extensions


def _signer_count(rt: Runtime) -> int:
    with rt.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(OcspSigner)) or 0)


def _issue(rt: Runtime) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    record = rt.authority.issue(
        IssuanceRequest(key.public_key(), "Signer-Test-Agent", sample_extensions()), "test"
    )
    cert = record.certificate
    assert cert is not None
    return cert


def test_expiring_signer_is_rotated_and_the_new_one_signs(ca_runtime: Runtime) -> None:
    rt, opts = ca_runtime, OcspOptions()
    long_ago = utcnow() - timedelta(hours=47)  # 48 h signers made then have 1 h left
    old = SignerRotator(rt.sessions, rt.keys, opts, lambda: long_ago).ensure_all()
    assert [r.created for r in old] == [True, True]
    assert _signer_count(rt) == 2

    cert = _issue(rt)
    issuing = rt.authority.chain()[0]
    der = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(cert, issuing, hashes.SHA256())
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    responder_rt = open_responder(rt.settings, opts)
    try:
        answer = ocsp.load_der_ocsp_response(responder_rt.responder.respond(der).der)
    finally:
        responder_rt.close()
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert _signer_count(rt) == 4  # both expiring signers were replaced
    (signer,) = answer.certificates
    with rt.sessions() as s:
        newest = s.scalar(
            select(OcspSigner)
            .join(Issuer, Issuer.id == OcspSigner.issuer_id)
            .where(Issuer.role == "issuing")
            .order_by(OcspSigner.id.desc())
            .limit(1)
        )
        assert newest is not None
        assert signer.public_bytes(serialization.Encoding.DER) == newest.certificate_der
        assert newest.not_after - newest.not_before > timedelta(hours=47)
    signer.verify_directly_issued_by(issuing)
    key = signer.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(answer.signature, answer.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))
    assert signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == (
        x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING])
    )
    assert rt.keys.exists(newest.key_label)  # the signer key lives in the HSM


def test_concurrent_rotators_create_one_signer(ca_runtime: Runtime) -> None:
    rt, opts = ca_runtime, OcspOptions()
    with rt.sessions() as s:
        issuing_id = s.scalar(select(Issuer.id).where(Issuer.role == "issuing"))
    assert issuing_id is not None

    def rotate(_: int) -> bool:
        return SignerRotator(rt.sessions, rt.keys, opts, utcnow).ensure(issuing_id).created

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        created = list(pool.map(rotate, range(4)))
    if rt.engine.dialect.name == "postgresql":
        assert created.count(True) == 1 and _signer_count(rt) == 1
    else:  # SQLite: a duplicate is tolerated, readers use the newest
        assert created.count(True) >= 1
    forced = SignerRotator(rt.sessions, rt.keys, opts, utcnow).ensure(issuing_id, force=True)
    assert forced.created
