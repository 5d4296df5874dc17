"""Lint before signing (ca/lint.py): the to-be-signed certificate is checked with the gateway's
strict decoder before the issuing key signs, and a defect means the real key is never used."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from ca import lint, oids
from ca.errors import CAError, ErrorCode
from ca.extensions import Authorization
from ca.profile import (
    AgentCertificateSpec,
    CertificateUrls,
    agent_certificate_builder,
    build_agent_certificate,
    signature_hash,
)
from hsm import SoftKeyStore
from hsm.keytypes import KeyType
from tests.unit.helpers import NOW, sample_extensions, software_hierarchy
from wire.extensions import read_agent_extensions

URLS = CertificateUrls("http://o/ocsp", "http://o/ca.der", "http://o/ca.crl")
_, _, _ISSUING_KEY, ISSUING = software_hierarchy()


def _spec(scopes: tuple[str, ...] = ("a", "b")) -> AgentCertificateSpec:
    return AgentCertificateSpec(
        serial=0x1234567890ABCDEF,
        agent_name="agent-1",
        organization="Enterprise Inc",
        trust_domain="agents.example",
        public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
        extensions=sample_extensions(scopes),
        not_before=NOW - timedelta(seconds=60),
        not_after=NOW + timedelta(hours=1),
    )


def _store(key_type: KeyType) -> tuple[SoftKeyStore, list[int]]:
    store = SoftKeyStore()
    calls: list[int] = []
    store.set_guard(lambda: calls.append(1))
    store.generate("issuing", key_type)
    return store, calls


@pytest.mark.parametrize(
    "key_type", [KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048, KeyType.ED25519]
)
def test_a_good_certificate_is_signed_once_by_the_real_key(key_type: KeyType) -> None:
    store, calls = _store(key_type)
    key = store.get("issuing")
    spec = _spec()
    builder = agent_certificate_builder(spec, ISSUING, URLS)
    cert = lint.sign_linted(builder, key, signature_hash(key), spec.extensions)
    assert calls == [1]
    assert read_agent_extensions(cert).scope_list == ("a", "b")
    _verify(key.public_key(), cert)  # signed by the real key, not the lint key
    plain = build_agent_certificate(spec, ISSUING, _ISSUING_KEY, URLS)
    assert list(plain.extensions) == list(cert.extensions)  # the builder is the profile's


def _verify(public_key: object, cert: x509.Certificate) -> None:
    data, sig = cert.tbs_certificate_bytes, cert.signature
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        assert cert.signature_hash_algorithm is not None
        public_key.verify(sig, data, ec.ECDSA(cert.signature_hash_algorithm))
    elif isinstance(public_key, rsa.RSAPublicKey):
        assert cert.signature_hash_algorithm is not None
        public_key.verify(sig, data, padding.PKCS1v15(), cert.signature_hash_algorithm)
    else:
        assert isinstance(public_key, ed25519.Ed25519PublicKey)
        public_key.verify(sig, data)


def test_the_tbs_is_exactly_the_linted_one() -> None:
    store, _ = _store(KeyType.EC_P256)
    key = store.get("issuing")
    spec = _spec()
    builder = agent_certificate_builder(spec, ISSUING, URLS)
    cert = lint.sign_linted(builder, key, signature_hash(key), spec.extensions)
    linted = builder.sign(lint.lint_key_for(key), signature_hash(key))
    assert cert.tbs_certificate_bytes == linted.tbs_certificate_bytes
    assert cert.signature_algorithm_oid == linted.signature_algorithm_oid
    assert lint.lint_key_for(key) is lint.lint_key_for(store.get("issuing"))  # cached


def _broken_builder(value: bytes) -> tuple[x509.CertificateBuilder, AgentCertificateSpec]:
    spec = _spec()
    good = agent_certificate_builder(spec, ISSUING, URLS)
    # rebuild with the authorization extension's value replaced by ``value``
    builder = x509.CertificateBuilder(
        issuer_name=ISSUING.subject,
        subject_name=good._subject_name,  # type: ignore[attr-defined]
        public_key=spec.public_key,
        serial_number=spec.serial,
        not_valid_before=spec.not_before,
        not_valid_after=spec.not_after,
    )
    for ext in good._extensions:  # type: ignore[attr-defined]
        if ext.oid == oids.DEFAULT_ARC.authorization:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(oids.DEFAULT_ARC.authorization, value), False
            )
        else:
            builder = builder.add_extension(ext.value, ext.critical)
    return builder, spec


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (bytes.fromhex("300830060c01620c0161"), "sorted and unique"),  # unsorted scopes
        (bytes.fromhex("3009308106") + b"\x0c\x01a\x0c\x01b", "non-minimal length"),
        (bytes.fromhex("30083006") + b"\x0c\x01a\x0c\x01b" + b"\x00", "trailing"),
    ],
)
def test_a_broken_extension_is_refused_before_the_real_key_signs(value: bytes, needle: str) -> None:
    store, calls = _store(KeyType.EC_P256)
    key = store.get("issuing")
    builder, spec = _broken_builder(value)
    with pytest.raises(CAError, match=needle) as info:
        lint.sign_linted(builder, key, signature_hash(key), spec.extensions)
    assert info.value.code is ErrorCode.INTERNAL
    assert calls == []  # the issuing key never signed


def test_a_certificate_that_differs_from_the_request_is_refused() -> None:
    store, calls = _store(KeyType.RSA_2048)
    key = store.get("issuing")
    spec = _spec(("a", "b"))
    builder = agent_certificate_builder(spec, ISSUING, URLS)
    other = sample_extensions(("a", "c"))
    with pytest.raises(CAError, match="AgentAuthorization differs") as info:
        lint.sign_linted(builder, key, signature_hash(key), other)
    assert info.value.code is ErrorCode.INTERNAL and calls == []
    assert Authorization(("a", "b")) == spec.extensions.authorization


def test_a_real_signature_over_other_bytes_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    store, _ = _store(KeyType.EC_P256)
    key = store.get("issuing")
    spec = _spec()
    builder = agent_certificate_builder(spec, ISSUING, URLS)
    other = agent_certificate_builder(_spec(), ISSUING, URLS).sign(key, signature_hash(key))
    real_sign = x509.CertificateBuilder.sign

    def sign(
        self: x509.CertificateBuilder, k: object, alg: object, **kw: object
    ) -> x509.Certificate:
        return other if k is key else real_sign(self, k, alg, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(x509.CertificateBuilder, "sign", sign)
    with pytest.raises(CAError, match="differs from the linted one") as info:
        lint.sign_linted(builder, key, signature_hash(key), spec.extensions)
    assert info.value.code is ErrorCode.INTERNAL


def test_issuance_signs_only_what_verifies_under_the_issuing_ca() -> None:
    """``sign_agent_certificate`` (what issuance calls) refuses a signature by any key other
    than the issuing CA certificate's: a key store handing out the wrong key issues nothing."""
    spec = _spec()
    good = lint.sign_agent_certificate(spec, ISSUING, _ISSUING_KEY, URLS)
    good.verify_directly_issued_by(ISSUING)
    other = ec.generate_private_key(ec.SECP256R1())  # the same family: lint and TBS agree
    with pytest.raises(CAError) as caught:
        lint.sign_agent_certificate(spec, ISSUING, other, URLS)
    assert caught.value.code is ErrorCode.INTERNAL and "does not verify" in str(caught.value)
