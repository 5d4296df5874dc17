"""The agent certificate profile (docs/oids.md), built with software keys."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from ca import oids
from ca.errors import CAError, ErrorCode
from ca.extensions import read_agent_extensions
from ca.profile import (
    AgentCertificateSpec,
    CertificateUrls,
    build_agent_certificate,
    key_type_of,
    signature_hash,
    spiffe_id,
)
from tests.unit.helpers import NOW, sample_extensions, software_hierarchy

URLS = CertificateUrls(
    ocsp_url="http://127.0.0.1:8401/ocsp",
    ca_issuers_url="http://127.0.0.1:8400/ca/issuing.der",
    crl_url="http://127.0.0.1:8400/crl/issuing.crl",
)


def _issue(public_key=None, not_after=None):
    _root_key, root, issuing_key, issuing = software_hierarchy()
    key = public_key or ec.generate_private_key(ec.SECP256R1()).public_key()
    spec = AgentCertificateSpec(
        serial=0x1234567890ABCDEF1234,
        agent_name="ExecutionAgent-ETH-01",
        organization="Enterprise Inc",
        trust_domain="agents.enterprise.io",
        public_key=key,
        extensions=sample_extensions(),
        not_before=NOW - timedelta(seconds=60),
        not_after=not_after or NOW + timedelta(hours=12),
    )
    return build_agent_certificate(spec, issuing, issuing_key, URLS), root, issuing


def test_profile_has_every_required_extension():
    cert, _root, issuing = _issue()
    ext = cert.extensions
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "ExecutionAgent-ETH-01"
    )
    assert cert.issuer == issuing.subject
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH, oids.DEFAULT_ARC.kp_agent_request_signing]
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://agents.enterprise.io/agent/ExecutionAgent-ETH-01"
    ]
    assert len(list(san)) == 1
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski_issuer = issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski_issuer.digest
    aia = ext.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert {(d.access_method, d.access_location.value) for d in aia} == {
        (x509.AuthorityInformationAccessOID.OCSP, URLS.ocsp_url),
        (x509.AuthorityInformationAccessOID.CA_ISSUERS, URLS.ca_issuers_url),
    }
    cdp = ext.get_extension_for_class(x509.CRLDistributionPoints).value
    assert cdp[0].full_name[0].value == URLS.crl_url
    policies = ext.get_extension_for_class(x509.CertificatePolicies).value
    assert [p.policy_identifier for p in policies] == [oids.DEFAULT_ARC.policy_agent_v1]
    for oid in (
        oids.DEFAULT_ARC.provenance,
        oids.DEFAULT_ARC.authorization,
        oids.DEFAULT_ARC.accountability,
    ):
        assert ext.get_extension_for_oid(oid).critical is False
    assert cert.serial_number == 0x1234567890ABCDEF1234


def test_agent_extensions_decode_back_exactly():
    cert, _root, _issuing = _issue()
    assert read_agent_extensions(cert) == sample_extensions()


def test_chain_validates_with_cryptography_verifier():
    cert, root, issuing = _issue()
    verifier = PolicyBuilder().store(Store([root])).time(NOW).build_client_verifier()
    verified = verifier.verify(cert, [issuing])
    assert verified.chain[-1] == root


def test_validity_must_end_after_it_starts_and_within_issuer():
    with pytest.raises(CAError) as err:
        _issue(not_after=NOW - timedelta(hours=1))
    assert err.value.code is ErrorCode.INVALID_VALIDITY
    with pytest.raises(CAError) as err:
        _issue(not_after=NOW + timedelta(days=4000))
    assert err.value.code is ErrorCode.INVALID_VALIDITY


@pytest.mark.parametrize(
    ("key", "name"),
    [
        (ec.generate_private_key(ec.SECP256R1()).public_key(), "ec-p256"),
        (ec.generate_private_key(ec.SECP384R1()).public_key(), "ec-p384"),
        (rsa.generate_private_key(65537, 2048).public_key(), "rsa-2048"),
        (ed25519.Ed25519PrivateKey.generate().public_key(), "ed25519"),
    ],
)
def test_key_types_are_named(key, name):
    assert key_type_of(key) == name


@pytest.mark.parametrize(
    "key",
    [
        ec.generate_private_key(ec.SECP521R1()).public_key(),
        rsa.generate_private_key(65537, 1024).public_key(),
        dsa.generate_private_key(2048).public_key(),
    ],
)
def test_unsupported_keys_are_refused(key):
    with pytest.raises(CAError) as err:
        key_type_of(key)
    assert err.value.code is ErrorCode.UNSUPPORTED_KEY


def test_signature_hash_follows_issuer_strength():
    assert signature_hash(ec.generate_private_key(ec.SECP384R1())).name == "sha384"
    assert signature_hash(ec.generate_private_key(ec.SECP256R1())).name == "sha256"
    assert signature_hash(ed25519.Ed25519PrivateKey.generate()) is None


def test_spiffe_id():
    assert spiffe_id("td.example", "a-1") == "spiffe://td.example/agent/a-1"


def test_ca_certificates_have_ca_extensions():
    _rk, root, _ik, issuing = software_hierarchy()
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 1
    bc = issuing.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0
    ku = issuing.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
