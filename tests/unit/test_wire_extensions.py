"""wire.extensions and wire.csr_attributes: round trips, and agreement with an independent
asn1crypto schema (tests/unit/asn1_oracle.py) on valid inputs, including values written by the
oracle rather than by wire."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit import asn1_oracle as oracle
from wire import csr_attributes, oids
from wire.extensions import (
    Digest,
    ExtensionError,
    Provenance,
    decode_accountability,
    decode_authorization,
    decode_provenance,
    encode_accountability,
    encode_authorization,
)

SCOPES = st.lists(
    st.from_regex(r"[a-z][a-z0-9_]{0,12}(?:[.:][a-z0-9_]{1,8}){0,2}", fullmatch=True),
    min_size=1,
    max_size=12,
    unique=True,
).map(sorted)
TEXT = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "S")), min_size=1, max_size=30
)
OFFICERS = st.sampled_from(["a@b.io", "risk.officer@example.com", "x+y@sub.example.org"])


@st.composite
def digests(draw: st.DrawFn) -> Digest:
    name, (_, size) = draw(st.sampled_from(sorted(oids.DIGEST_ALGORITHMS.items())))
    return Digest(draw(st.binary(min_size=size, max_size=size)), name)


PROVENANCES = st.builds(Provenance, TEXT, digests(), digests(), st.none() | digests())


def _pair(d: Digest | None) -> tuple[str, bytes] | None:
    return None if d is None else (d.algorithm, d.value)


@settings(max_examples=300, deadline=None)
@given(PROVENANCES)
def test_provenance_round_trips_and_agrees_with_the_oracle(p: Provenance) -> None:
    data = p.to_der()
    assert decode_provenance(data) == p
    assert oracle.provenance(data) == (
        p.model_type,
        _pair(p.model_digest),
        _pair(p.prompt_digest),
        _pair(p.config_digest),
    )


@settings(max_examples=300, deadline=None)
@given(PROVENANCES)
def test_provenance_written_by_the_oracle_decodes(p: Provenance) -> None:
    def info(d: Digest) -> dict[str, object]:
        return {
            "algorithm": {"algorithm": oids.DIGEST_ALGORITHMS[d.algorithm][0]},
            "digest": d.value,
        }

    fields: dict[str, object] = {
        "model_type": p.model_type,
        "model_digest": info(p.model_digest),
        "system_prompt_digest": info(p.prompt_digest),
    }
    if p.config_digest is not None:
        fields["config_digest"] = info(p.config_digest)
    assert decode_provenance(bytes(oracle.AgentProvenance(fields).dump())) == p


@settings(max_examples=300, deadline=None)
@given(SCOPES)
def test_authorization_agrees_with_the_oracle(scopes: list[str]) -> None:
    data = encode_authorization(scopes)
    assert decode_authorization(data) == tuple(scopes) == oracle.authorization(data)
    assert bytes(oracle.AgentAuthorization({"scopes": scopes}).dump()) == data


@settings(max_examples=200, deadline=None)
@given(OFFICERS, TEXT, st.none() | TEXT)
def test_accountability_agrees_with_the_oracle(officer: str, env: str, org: str | None) -> None:
    data = encode_accountability(officer, env, org)
    assert decode_accountability(data) == (officer, env, org) == oracle.accountability(data)
    fields = {"officer_of_record": officer, "environment": env}
    if org is not None:
        fields["organization"] = org
    assert bytes(oracle.AgentAccountability(fields).dump()) == data


@settings(max_examples=100, deadline=None)
@given(PROVENANCES, st.data())
def test_every_single_byte_change_is_refused_or_canonical(
    p: Provenance, data: st.DataObject
) -> None:
    enc = p.to_der()
    i = data.draw(st.integers(0, len(enc) - 1))
    flip = data.draw(st.integers(1, 255))
    bad = enc[:i] + bytes((enc[i] ^ flip,)) + enc[i + 1 :]
    try:
        got = decode_provenance(bad)
    except ExtensionError:
        return
    assert got.to_der() == bad  # accepted only as another canonical value


KEYS = {
    "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "rsa2048": lambda: rsa.generate_private_key(65537, 2048),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
}
PROV = Provenance("m", Digest(b"\x01" * 32), Digest(b"\x02" * 32))


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_csr_is_valid_and_its_attribute_agrees_with_the_oracle(kind: str) -> None:
    key = KEYS[kind]()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agent-1")])
    csr = csr_attributes.build_csr(key, name, PROV.to_der())  # type: ignore[arg-type]
    assert csr.is_signature_valid and csr.subject == name
    assert csr_attributes.read_provenance_attribute(csr.tbs_certrequest_bytes) == PROV.to_der()
    info = oracle.CertificationRequestInfo.load(csr.tbs_certrequest_bytes, strict=True)
    (attr,) = info["attributes"]
    assert attr["type"].dotted == oids.DEFAULT_ARC.csr_provenance.dotted_string
    assert bytes(attr["values"][0].dump()) == PROV.to_der()


def test_csr_without_the_attribute_and_unsupported_keys() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    from cryptography.hazmat.primitives import hashes

    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a")]))
        .sign(key, hashes.SHA256())
    )
    assert csr_attributes.read_provenance_attribute(csr.tbs_certrequest_bytes) is None
    with pytest.raises(csr_attributes.UnsupportedKeyError, match="secp521r1"):
        csr_attributes.signature_algorithm(ec.generate_private_key(ec.SECP521R1()))
    with pytest.raises(ExtensionError):
        csr_attributes.read_provenance_attribute(csr.tbs_certrequest_bytes + b"\x00")


def _certificate_with_two_authorizations() -> x509.Certificate:
    """A certificate carrying AgentAuthorization twice (an unsigned-over copy: the extension
    parser, not the signature, is what is tested)."""
    import datetime

    from cryptography.hazmat.primitives import hashes, serialization

    from wire import der

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    other = x509.ObjectIdentifier(oids.DEFAULT_ARC.dotted + ".1.9")  # same length as AUTHORIZATION
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(5)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.UnrecognizedExtension(oids.DEFAULT_ARC.authorization, encode_authorization(["a"])),
            False,
        )
        .add_extension(x509.UnrecognizedExtension(other, encode_authorization(["b"])), False)
        .sign(key, hashes.SHA256())
    )
    raw = cert.public_bytes(serialization.Encoding.DER)
    return x509.load_der_x509_certificate(
        raw.replace(
            der.encode_oid(other.dotted_string),
            der.encode_oid(oids.DEFAULT_ARC.authorization.dotted_string),
        )
    )


def test_a_repeated_extension_is_an_extension_error_everywhere() -> None:
    """cryptography's DuplicateExtension is not a ValueError: it escaped extension_value (and so
    the CA's read_agent_extensions, the SDK's Provenance.of_certificate and the lint) as a bare
    exception. (The gateway's chain verification refuses such a leaf before decoding.)"""
    from agent.errors import AgentError
    from agent.provenance import Provenance as AgentProvenance
    from ca.errors import CAError, ErrorCode
    from ca.extensions import read_agent_extensions as ca_read
    from wire.extensions import extension_value, read_agent_extensions

    cert = _certificate_with_two_authorizations()
    with pytest.raises(ExtensionError, match="malformed"):
        extension_value(cert, oids.DEFAULT_ARC.authorization, "AgentAuthorization")
    with pytest.raises(ExtensionError):
        read_agent_extensions(cert)
    with pytest.raises(CAError) as caught:
        ca_read(cert)
    assert caught.value.code is ErrorCode.INVALID_EXTENSION
    with pytest.raises(AgentError):
        AgentProvenance.of_certificate(cert)


def test_csr_attribute_sets_must_be_in_der_order_as_cryptography_requires() -> None:
    """read_provenance_attribute read the attributes SET OF and each values SET OF without
    checking DER order; cryptography refuses both, so wire now does too (a verifier that uses
    wire alone on a CertificationRequestInfo gets the same answer)."""
    from cryptography.hazmat.primitives import serialization

    from wire import der

    key = ec.generate_private_key(ec.SECP256R1())
    alg, sign = csr_attributes.signature_algorithm(key)
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a")]).public_bytes()
    prov = der.seq(
        der.encode_oid(oids.DEFAULT_ARC.csr_provenance.dotted_string), der.set_of(PROV.to_der())
    )
    other = der.seq(der.encode_oid("1.2.840.113549.1.9.7"), der.set_of(der.utf8_string("pw")))
    assert prov > other

    def cri(*attributes: bytes) -> bytes:
        return der.seq(der.integer(0), subject, spki, der.tlv(0xA0, b"".join(attributes)))

    def csr_der(info: bytes) -> bytes:
        return der.seq(info, alg, der.bit_string(sign(info)))

    good = cri(other, prov)
    assert csr_attributes.read_provenance_attribute(good) == PROV.to_der()
    x509.load_der_x509_csr(csr_der(good))
    two = PROV.to_der()[:-1] + b"\x03"  # sorts after PROV
    for bad in (
        cri(prov, other),  # attributes out of order
        cri(
            der.seq(
                der.encode_oid(oids.DEFAULT_ARC.csr_provenance.dotted_string),
                der.tlv(0x31, two + PROV.to_der()),
            )
        ),
    ):
        with pytest.raises(ExtensionError, match="DER SET OF order"):
            csr_attributes.read_provenance_attribute(bad)
        with pytest.raises(ValueError):
            x509.load_der_x509_csr(csr_der(bad))
