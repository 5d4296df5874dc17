"""Review 17: what a certificate bundle's signing certificate may be (``wire.oms_signature``).

A producer's CA also issues certificates for other purposes (TLS servers, clients, mail,
sub-CAs). RFC 5280 4.2.1.12: with an extendedKeyUsage present, the key is for those purposes
only; 4.2.1.3: a keyUsage without digitalSignature does not verify signatures. So a TLS
server certificate of the producer's CA must not sign models, nor a CA certificate.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wire.oms_signature import PAYLOAD_TYPE, Producer, SignatureError, pae, verify_bundle

SIGN_ONLY = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
ENCIPHER_ONLY = x509.KeyUsage(False, False, True, False, False, False, False, False, False)
CA_USAGE = x509.KeyUsage(True, False, False, False, False, True, True, False, False)


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    usage: x509.KeyUsage | None,
    eku: list[x509.ObjectIdentifier] | None,
    issuer: str = "acme Root",
) -> x509.Certificate:
    now = datetime.now(UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if usage is not None:
        b = b.add_extension(usage, critical=True)
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


ROOT_KEY = ec.generate_private_key(ec.SECP256R1())
ROOT = _cert("acme Root", ROOT_KEY, ROOT_KEY, ca=True, usage=CA_USAGE, eku=None)
ACME = Producer("acme", roots=(ROOT,))


def _bundle(
    leaf_key: ec.EllipticCurvePrivateKey, leaf: x509.Certificate, *more: x509.Certificate
) -> bytes:
    digest = hashlib.sha256(b"weights").digest()
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "model", "digest": {"sha256": hashlib.sha256(digest).hexdigest()}}],
        "predicateType": "https://model_signing/signature/v1.0",
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "ignore_paths": []},
            "resources": [{"algorithm": "sha256", "digest": digest.hex(), "name": "w.bin"}],
        },
    }
    raw = json.dumps(statement).encode()
    sig = leaf_key.sign(pae(PAYLOAD_TYPE, raw), ec.ECDSA(hashes.SHA256()))
    ders = [c.public_bytes(serialization.Encoding.DER) for c in (leaf, *more)]
    return json.dumps(
        {
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "x509CertificateChain": {
                    "certificates": [{"rawBytes": base64.b64encode(d).decode()} for d in ders]
                }
            },
            "dsseEnvelope": {
                "payload": base64.b64encode(raw).decode(),
                "payloadType": PAYLOAD_TYPE,
                "signatures": [{"sig": base64.b64encode(sig).decode()}],
            },
        }
    ).encode()


def test_a_code_signing_leaf_of_the_producer_ca_verifies() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _cert(
        "acme release",
        key,
        ROOT_KEY,
        ca=False,
        usage=SIGN_ONLY,
        eku=[ExtendedKeyUsageOID.CODE_SIGNING],
    )
    assert verify_bundle(_bundle(key, leaf), [ACME]).producer == "acme"


@pytest.mark.parametrize(
    ("what", "ca", "usage", "eku"),
    [
        ("a TLS server certificate", False, SIGN_ONLY, [ExtendedKeyUsageOID.SERVER_AUTH]),
        ("a TLS client certificate", False, SIGN_ONLY, [ExtendedKeyUsageOID.CLIENT_AUTH]),
        ("an S/MIME certificate", False, SIGN_ONLY, [ExtendedKeyUsageOID.EMAIL_PROTECTION]),
        ("a key-encipherment-only key", False, ENCIPHER_ONLY, [ExtendedKeyUsageOID.CODE_SIGNING]),
        ("a CA certificate", True, CA_USAGE, None),
    ],
)
def test_a_leaf_not_for_code_signing_is_refused(
    what: str, ca: bool, usage: x509.KeyUsage, eku: list[x509.ObjectIdentifier] | None
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _cert(what, key, ROOT_KEY, ca=ca, usage=usage, eku=eku)
    with pytest.raises(SignatureError, match="signing certificate"):
        verify_bundle(_bundle(key, leaf), [ACME])


@pytest.mark.parametrize(
    ("inter_eku", "accepted"),
    [
        (None, True),
        ([ExtendedKeyUsageOID.CODE_SIGNING], True),  # a code-signing sub-CA: was refused
        ([ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE], True),
        ([ExtendedKeyUsageOID.CLIENT_AUTH], False),  # a TLS-client sub-CA: was accepted
        ([ExtendedKeyUsageOID.SERVER_AUTH], False),
    ],
)
def test_an_intermediate_s_extended_key_usage_is_read_for_code_signing(
    inter_eku: list[x509.ObjectIdentifier] | None, accepted: bool
) -> None:
    """The chain is checked for code signing, not TLS client authentication (what
    ``build_client_verifier`` checks a CA certificate's extendedKeyUsage against)."""
    inter_key, key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    inter = _cert("acme Models CA", inter_key, ROOT_KEY, ca=True, usage=CA_USAGE, eku=inter_eku)
    leaf = _cert(
        "acme release",
        key,
        inter_key,
        ca=False,
        usage=SIGN_ONLY,
        eku=[ExtendedKeyUsageOID.CODE_SIGNING],
        issuer="acme Models CA",
    )
    data = _bundle(key, leaf, inter)
    if accepted:
        assert verify_bundle(data, [ACME]).signer == "CN=acme release"
    else:
        with pytest.raises(SignatureError, match="leads to no trusted producer"):
            verify_bundle(data, [ACME])


def _patched(der: bytes, old: bytes, new: bytes) -> bytes:
    assert der.count(old) == 1
    return der.replace(old, new)


def test_a_signing_certificate_with_malformed_extensions_is_refused_not_a_crash() -> None:
    """``cert.extensions`` raises ``DuplicateExtension`` (not a ValueError) or ValueError:
    both escaped ``verify_bundle`` (a traceback from the CLI, a 500 from ``POST /v1/models``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    fake = x509.ObjectIdentifier("2.5.29.99")
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme release")]))
        .issuer_name(ROOT.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.now(UTC) - timedelta(minutes=5))
        .not_valid_after(datetime.now(UTC) + timedelta(days=30))
        .add_extension(SIGN_ONLY, critical=True)
        .add_extension(x509.UnrecognizedExtension(fake, SIGN_ONLY.public_bytes()), critical=False)
        .sign(ROOT_KEY, hashes.SHA256())
    )
    der = leaf.public_bytes(serialization.Encoding.DER)
    # the unknown OID becomes keyUsage's: a duplicate extension (the signature no longer
    # matters: the leaf's extensions are read before any signature is checked)
    duplicate = _patched(der, bytes.fromhex("0603551d63"), bytes.fromhex("0603551d0f"))
    # keyUsage's BIT STRING becomes a NULL: an unparsable extension value
    garbled = _patched(
        der,
        bytes.fromhex("0603551d0f0101ff0404030207"),
        bytes.fromhex("0603551d0f0101ff0404050007"),
    )
    for bad in (duplicate, garbled):
        data = _bundle(key, x509.load_der_x509_certificate(bad))
        with pytest.raises(SignatureError, match="malformed extensions"):
            verify_bundle(data, [ACME])
