"""Agent extensions: DER codecs, x509 helpers and CSRs (ca.extensions)."""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from ca import oids
from ca.errors import CAError, ErrorCode
from ca.extensions import (
    Accountability,
    AgentExtensions,
    AgentPrivateKey,
    Authorization,
    Digest,
    Provenance,
    agent_x509_extensions,
    build_agent_csr,
    provenance_csr_attribute_value,
    read_agent_extensions,
    read_csr_provenance,
)
from tests.unit.asn1_oracle import Attribute as _Attribute
from tests.unit.asn1_oracle import CertificationRequest as _CertificationRequest
from tests.unit.asn1_oracle import CertificationRequestInfo as _CertificationRequestInfo

SHA256_OID = bytes.fromhex("0609608648016503040201")
SHA384_OID = bytes.fromhex("0609608648016503040202")
MD5_OID = bytes.fromhex("06082a864886f70d0205")


def tlv(tag: int, body: bytes) -> bytes:
    """DER tag-length-value (definite, minimal length)."""
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def digest_info(oid: bytes = SHA256_OID, value: bytes = b"\x11" * 32, params: bytes = b"") -> bytes:
    return tlv(0x30, tlv(0x30, oid + params) + tlv(0x04, value))


D1 = Digest(b"\x11" * 32)
D2 = Digest(b"\x22" * 32)
PROV = Provenance("gpt-4o", D1, D2)
AUTHZ = Authorization(("orders:write",))
ACCT = Accountability("alice@example.com", "prod", "Acme")
EXTS = AgentExtensions(PROV, AUTHZ, ACCT)


def reject(decode: Callable[[Any], object], data: Any, *needles: str) -> CAError:
    with pytest.raises(CAError) as info:
        decode(data)
    err = info.value
    assert err.code is ErrorCode.INVALID_EXTENSION, err
    assert "\n" not in err.detail
    for needle in needles:
        assert needle in err.detail, err.detail
    return err


# --- known answers ---------------------------------------------------------------------------


def test_accountability_der_byte_by_byte() -> None:
    der = ACCT.to_der()
    expected = (
        b"\x30\x1f"  # SEQUENCE, 31 bytes; version 0 is DEFAULT so it is absent
        b"\x16\x11"  # IA5String, 17 bytes
        b"alice@example.com"
        b"\x0c\x04"  # UTF8String, 4 bytes
        b"prod"
        b"\x80\x04"  # [0] IMPLICIT UTF8String: context-specific, primitive, tag 0
        b"Acme"
    )
    assert len(expected) == 2 + 0x1F
    assert der == expected
    assert Accountability.from_der(der) == ACCT
    assert Accountability("bob@x.io", "dev").to_der() == bytes.fromhex("300f") + (
        b"\x16\x08bob@x.io" + b"\x0c\x03dev"
    )


def test_authorization_der_known_answer() -> None:
    assert AUTHZ.to_der() == bytes.fromhex("3010300e0c0c") + b"orders:write"
    two = Authorization(("b", "a", "b"))
    assert two.scopes == ("a", "b")
    assert two.to_der() == bytes.fromhex("30083006") + b"\x0c\x01a\x0c\x01b"


def test_provenance_der_known_answer() -> None:
    body = tlv(0x0C, b"gpt-4o") + digest_info(value=b"\x11" * 32) + digest_info(value=b"\x22" * 32)
    assert PROV.to_der() == tlv(0x30, body)
    assert PROV.to_der()[:4] == bytes.fromhex("306a0c06")
    cfg = Digest(b"\x33" * 48, "sha384")
    with_cfg = Provenance("gpt-4o", D1, D2, cfg)
    # configDigest [0] IMPLICIT DigestInfo: constructed context tag 0 replaces SEQUENCE (0x30)
    implicit = b"\xa0" + digest_info(SHA384_OID, b"\x33" * 48)[1:]
    assert with_cfg.to_der() == tlv(0x30, body + implicit)
    assert Provenance.from_der(with_cfg.to_der()) == with_cfg


def test_digest_der_and_helpers() -> None:
    assert D1.to_der() == digest_info()
    assert Digest.from_der(D1.to_der()) == D1
    assert D1.hex == "11" * 32
    assert Digest.sha256_hex("sha256:" + "AB" * 32) == Digest(b"\xab" * 32)
    assert Digest.parse("cd" * 48) == Digest(b"\xcd" * 48, "sha384")
    assert Digest.parse("sha512:" + "ef" * 64).algorithm == "sha512"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((b"\x11" * 31,), "32 bytes"),
        ((b"\x11" * 32, "sha384"), "48 bytes"),
        ((b"\x11" * 16, "md5"), "unsupported digest algorithm"),
        (("11" * 32,), "must be bytes"),
    ],
)
def test_digest_rejects(args: tuple[Any, ...], needle: str) -> None:
    with pytest.raises(CAError, match=needle) as info:
        Digest(*args)
    assert info.value.code is ErrorCode.INVALID_DIGEST


@pytest.mark.parametrize("text", ["zz" * 32, "ab" * 20, "sha256:" + "ab" * 48, "a", 5])
def test_digest_parse_rejects(text: object) -> None:
    with pytest.raises(CAError) as info:
        Digest.parse(text)
    assert info.value.code is ErrorCode.INVALID_DIGEST


def test_oids() -> None:
    arc = "1.3.6.1.4.1.32473.2026"
    assert arc == oids.DEFAULT_ARC.dotted
    assert oids.DEFAULT_ARC.provenance.dotted_string == arc + ".1.1"
    assert oids.DEFAULT_ARC.authorization.dotted_string == arc + ".1.2"
    assert oids.DEFAULT_ARC.accountability.dotted_string == arc + ".1.3"
    assert oids.DEFAULT_ARC.policy_agent_v1.dotted_string == arc + ".2.1"
    assert oids.DEFAULT_ARC.kp_agent_request_signing.dotted_string == arc + ".3.1"
    assert oids.DEFAULT_ARC.csr_provenance.dotted_string == arc + ".4.1"


# --- round trips -----------------------------------------------------------------------------

PRINTABLE = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Cf", "Zs", "Co", "Cn")),
    min_size=1,
    max_size=40,
)
DIGESTS = st.one_of(
    st.binary(min_size=32, max_size=32).map(Digest),
    st.binary(min_size=48, max_size=48).map(lambda b: Digest(b, "sha384")),
    st.binary(min_size=64, max_size=64).map(lambda b: Digest(b, "sha512")),
)
PROVENANCES = st.builds(
    Provenance,
    model_type=PRINTABLE,
    model_digest=DIGESTS,
    prompt_digest=DIGESTS,
    config_digest=st.none() | DIGESTS,
)
SCOPE = st.from_regex(r"[a-z][a-z0-9_]{0,12}(?:[.:][a-z0-9_]{1,8}){0,3}", fullmatch=True)
AUTHORIZATIONS = st.lists(SCOPE, min_size=1, max_size=64).map(lambda s: Authorization(tuple(s)))
OFFICERS = st.builds(
    "{}@{}.{}".format,
    st.from_regex(r"[a-z0-9._%+-]{0,20}[a-z0-9]", fullmatch=True).filter(
        lambda s: ".." not in s and not s.startswith(".")
    ),
    st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True),
    st.sampled_from(["com", "io", "co.uk"]),
)
ACCOUNTABILITIES = st.builds(
    Accountability, officer=OFFICERS, environment=PRINTABLE, organization=st.none() | PRINTABLE
)


@given(PROVENANCES)
def test_provenance_round_trip(p: Provenance) -> None:
    der = p.to_der()
    assert Provenance.from_der(der) == p
    assert Provenance.from_der(der).to_der() == der
    assert Provenance.from_dict(json.loads(json.dumps(p.to_dict()))) == p


@given(AUTHORIZATIONS)
def test_authorization_round_trip(a: Authorization) -> None:
    der = a.to_der()
    assert Authorization.from_der(der) == a
    assert Authorization.from_dict(json.loads(json.dumps(a.to_dict()))) == a


@given(ACCOUNTABILITIES)
def test_accountability_round_trip(a: Accountability) -> None:
    der = a.to_der()
    assert Accountability.from_der(der) == a
    assert Accountability.from_dict(json.loads(json.dumps(a.to_dict()))) == a


@given(st.builds(AgentExtensions, PROVENANCES, AUTHORIZATIONS, ACCOUNTABILITIES))
def test_agent_extensions_dict_round_trip(e: AgentExtensions) -> None:
    assert AgentExtensions.from_dict(json.loads(json.dumps(e.to_dict()))) == e


def test_to_dict_shape() -> None:
    assert EXTS.to_dict() == {
        "provenance": {
            "model_type": "gpt-4o",
            "model_digest": "11" * 32,
            "prompt_digest": "22" * 32,
            "config_digest": None,
        },
        "authorization": {"scopes": ["orders:write"]},
        "accountability": {
            "officer": "alice@example.com",
            "environment": "prod",
            "organization": "Acme",
        },
    }


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({}, ErrorCode.INVALID_EXTENSION),
        ({"provenance": 1, "authorization": {}, "accountability": {}}, ErrorCode.INVALID_EXTENSION),
        ([], ErrorCode.INVALID_EXTENSION),
    ],
)
def test_from_dict_rejects(data: Any, code: ErrorCode) -> None:
    with pytest.raises(CAError) as info:
        AgentExtensions.from_dict(data)
    assert info.value.code is code


def test_from_dict_field_errors_keep_their_codes() -> None:
    with pytest.raises(CAError) as info:
        Authorization.from_dict({"scopes": ["Bad"]})
    assert info.value.code is ErrorCode.INVALID_SCOPE
    with pytest.raises(CAError) as info:
        Authorization.from_dict({"scopes": "orders"})
    assert info.value.code is ErrorCode.INVALID_SCOPE
    with pytest.raises(CAError) as info:
        Accountability.from_dict({"officer": "nobody", "environment": "prod"})
    assert info.value.code is ErrorCode.INVALID_NAME
    with pytest.raises(CAError) as info:
        Provenance.from_dict({"model_type": "m", "model_digest": "00", "prompt_digest": "00"})
    assert info.value.code is ErrorCode.INVALID_DIGEST


# --- strict decoding: rejections --------------------------------------------------------------

PROV_BODY = tlv(0x0C, b"gpt-4o") + digest_info() + digest_info(value=b"\x22" * 32)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "truncated"),
        (PROV.to_der() + b"\x00", "trailing"),
        (b"\x31" + PROV.to_der()[1:], "expected tag 0x30"),
        (PROV.to_der()[:-1], "malformed DER"),
        (tlv(0x30, b"\x02\x01\x00" + PROV_BODY), "DEFAULT and must be omitted"),
        # version 1 is v2 (decision 0049), which must carry the modelDigestScheme field
        (tlv(0x30, b"\x02\x01\x01" + PROV_BODY), "v2 requires the modelDigestScheme"),
        (tlv(0x30, b"\x02\x01\x02" + PROV_BODY), "unsupported version 2"),
        (tlv(0x30, b"\x02\x01\x7f" + PROV_BODY), "unsupported version 127"),
        (tlv(0x30, tlv(0x13, b"gpt-4o") + PROV_BODY[8:]), "malformed DER"),
        (tlv(0x30, tlv(0x0C, b"") + PROV_BODY[8:]), "model type"),
        (tlv(0x30, tlv(0x0C, b"gpt\n") + PROV_BODY[8:]), "model type"),
        (tlv(0x30, tlv(0x0C, b"\xff\xfe") + PROV_BODY[8:]), "malformed DER"),
        (tlv(0x30, PROV_BODY[:8] + digest_info(value=b"\x11" * 31) + PROV_BODY[57:]), "32 bytes"),
        (tlv(0x30, PROV_BODY[:8] + digest_info(SHA384_OID) + PROV_BODY[57:]), "48 bytes"),
        (
            tlv(0x30, PROV_BODY[:8] + digest_info(MD5_OID, b"\x11" * 16) + PROV_BODY[57:]),
            "unsupported digest algorithm 1.2.840.113549.2.5",
        ),
        (
            tlv(0x30, PROV_BODY[:8] + digest_info(params=b"\x05\x00") + PROV_BODY[57:]),
            "parameters must be absent",
        ),
        (tlv(0x30, PROV_BODY[:8] + digest_info()), "malformed DER"),  # prompt digest missing
        (tlv(0x30, PROV_BODY + tlv(0xA0, digest_info())), "malformed DER"),  # EXPLICIT [0]
        (tlv(0x30, PROV_BODY + b"\xa1" + digest_info()[1:]), "unexpected or mis-tagged"),  # [1]
        (tlv(0x30, PROV_BODY + digest_info()), "unexpected or mis-tagged"),  # untagged config
        (b"\x30\x81" + PROV.to_der()[1:], "non-minimal length"),  # long-form short length
        (b"\x30\x80" + PROV_BODY + b"\x00\x00", "DER"),  # BER indefinite length
    ],
)
def test_provenance_rejects(data: bytes, needle: str) -> None:
    err = reject(Provenance.from_der, data, needle)
    assert err.detail.startswith("AgentProvenance")


def test_from_der_requires_bytes() -> None:
    reject(Provenance.from_der, "3000", "must be bytes")
    assert Provenance.from_der(bytearray(PROV.to_der())) == PROV  # type: ignore[arg-type]


SCOPES_OK = tlv(0x0C, b"a") + tlv(0x0C, b"b")


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (tlv(0x30, tlv(0x30, b"")), "at least one scope"),
        (tlv(0x30, b""), "malformed DER"),
        (tlv(0x30, tlv(0x30, tlv(0x0C, b"Bad"))), "does not match"),
        (tlv(0x30, tlv(0x30, tlv(0x0C, b"b") + tlv(0x0C, b"a"))), "sorted and unique"),
        (tlv(0x30, tlv(0x30, tlv(0x0C, b"a") + tlv(0x0C, b"a"))), "sorted and unique"),
        (tlv(0x30, tlv(0x31, SCOPES_OK)), "malformed DER"),  # SET OF instead of SEQUENCE OF
        (tlv(0x30, tlv(0x30, tlv(0x16, b"a"))), "malformed DER"),  # IA5String scope
        (tlv(0x30, b"\x02\x01\x00" + tlv(0x30, SCOPES_OK)), "DEFAULT and must be omitted"),
        (tlv(0x30, b"\x02\x01\x02" + tlv(0x30, SCOPES_OK)), "unsupported version 2"),
        (tlv(0x30, tlv(0x30, b"".join(tlv(0x0C, b"s%02d" % i) for i in range(65)))), "at most 64"),
        (AUTHZ.to_der() + b"\x30\x00", "trailing"),
    ],
)
def test_authorization_rejects(data: bytes, needle: str) -> None:
    err = reject(Authorization.from_der, data, needle)
    assert err.detail.startswith("AgentAuthorization")


ACCT_TAIL = tlv(0x0C, b"prod")


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (tlv(0x30, tlv(0x16, b"nobody") + ACCT_TAIL), "not an e-mail address"),
        (tlv(0x30, tlv(0x16, b"a\xff@example.com") + ACCT_TAIL), "malformed DER"),
        (tlv(0x30, tlv(0x0C, b"alice@example.com") + ACCT_TAIL), "malformed DER"),
        (tlv(0x30, tlv(0x16, b"alice@example.com") + tlv(0x0C, b"a\x07b")), "environment"),
        (tlv(0x30, tlv(0x16, b"alice@example.com")), "malformed DER"),
        (tlv(0x30, tlv(0x16, b"alice@example.com") + ACCT_TAIL + tlv(0x80, b"")), "organization"),
        (
            tlv(0x30, tlv(0x16, b"alice@example.com") + ACCT_TAIL + tlv(0xA0, tlv(0x0C, b"Acme"))),
            "malformed DER",
        ),
        (
            tlv(0x30, b"\x02\x01\x00" + tlv(0x16, b"alice@example.com") + ACCT_TAIL),
            "DEFAULT and must be omitted",
        ),
    ],
)
def test_accountability_rejects(data: bytes, needle: str) -> None:
    err = reject(Accountability.from_der, data, needle)
    assert err.detail.startswith("AgentAccountability")


def test_digest_from_der_rejects() -> None:
    reject(Digest.from_der, digest_info() + b"\x00", "trailing")
    reject(Digest.from_der, digest_info(params=b"\x05\x00"), "parameters must be absent")
    reject(Digest.from_der, digest_info(value=b"\x00" * 33), "32 bytes")


def test_direct_construction_codes() -> None:
    with pytest.raises(CAError) as info:
        Authorization(())
    assert info.value.code is ErrorCode.INVALID_SCOPE
    with pytest.raises(CAError) as info:
        Accountability("alice@example.com", "")
    assert info.value.code is ErrorCode.INVALID_NAME
    with pytest.raises(CAError) as info:
        Provenance("m", D1, "nope")  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.INVALID_DIGEST
    with pytest.raises(CAError) as info:
        AgentExtensions(PROV, AUTHZ, None)  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.INVALID_EXTENSION


# --- certificates ----------------------------------------------------------------------------

KEY = ec.generate_private_key(ec.SECP256R1())


def make_cert(extensions: Sequence[tuple[x509.ExtensionType, bool]]) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ExecutionAgent-ETH-01")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(KEY.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=1))
    )
    for value, critical in extensions:
        builder = builder.add_extension(value, critical)
    return builder.sign(KEY, hashes.SHA256())


def test_certificate_round_trip() -> None:
    pairs = agent_x509_extensions(EXTS, oids.DEFAULT_ARC)
    assert [v.oid for v, _ in pairs] == [
        oids.DEFAULT_ARC.provenance,
        oids.DEFAULT_ARC.authorization,
        oids.DEFAULT_ARC.accountability,
    ]
    assert all(critical is False for _, critical in pairs)
    cert = make_cert(list(pairs))
    assert read_agent_extensions(cert) == EXTS
    for oid in oids.DEFAULT_ARC.agent_extension_oids:
        assert cert.extensions.get_extension_for_oid(oid).critical is False


def test_certificate_missing_extension() -> None:
    cert = make_cert(list(agent_x509_extensions(EXTS, oids.DEFAULT_ARC))[:2])
    err = reject(read_agent_extensions, cert, "no AgentAccountability extension")
    assert oids.DEFAULT_ARC.accountability.dotted_string in err.detail


def test_certificate_malformed_extension() -> None:
    pairs: list[tuple[x509.ExtensionType, bool]] = list(
        agent_x509_extensions(EXTS, oids.DEFAULT_ARC)
    )
    pairs[1] = (
        x509.UnrecognizedExtension(oids.DEFAULT_ARC.authorization, b"\x30\x02\x30\x00"),
        False,
    )
    reject(read_agent_extensions, make_cert(pairs), "AgentAuthorization")


# --- CSRs ------------------------------------------------------------------------------------

KEYS: dict[str, Callable[[], AgentPrivateKey]] = {
    "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "rsa2048": lambda: rsa.generate_private_key(65537, 2048),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
}
PROV_CFG = Provenance("gpt-4o", D1, D2, Digest(b"\x33" * 32))


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_build_agent_csr(kind: str) -> None:
    key = KEYS[kind]()
    csr = build_agent_csr(key, "ExecutionAgent-ETH-01", PROV_CFG, organization="Acme")
    assert csr.is_signature_valid
    assert read_csr_provenance(csr) == PROV_CFG
    assert csr.subject.rfc4514_string() == "CN=ExecutionAgent-ETH-01,O=Acme"
    assert csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert provenance_csr_attribute_value(PROV_CFG) == PROV_CFG.to_der()


def test_csr_without_organization() -> None:
    csr = build_agent_csr(KEY, "agent-1", PROV)
    assert csr.subject.rfc4514_string() == "CN=agent-1"


def test_csr_without_provenance_attribute() -> None:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a")]))
        .sign(KEY, hashes.SHA256())
    )
    assert read_csr_provenance(csr) is None


def test_csr_with_malformed_provenance_attribute() -> None:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a")]))
        .add_attribute(oids.DEFAULT_ARC.csr_provenance, b"not a sequence")
        .sign(KEY, hashes.SHA256())
    )
    reject(read_csr_provenance, csr, "AgentProvenance", "expected tag 0x30")


def _csr_with_attributes(attributes: list[_Attribute]) -> x509.CertificateSigningRequest:
    good = build_agent_csr(KEY, "agent-1", PROV)
    info = _CertificationRequestInfo.load(good.tbs_certrequest_bytes)
    info = _CertificationRequestInfo(
        {
            "version": 0,
            "subject": info["subject"],
            "subject_pk_info": info["subject_pk_info"],
            "attributes": attributes,
        }
    )
    sig = KEY.sign(info.dump(), ec.ECDSA(hashes.SHA256()))
    req = _CertificationRequest(
        {
            "certification_request_info": info,
            "signature_algorithm": {"algorithm": "sha256_ecdsa"},
            "signature": sig,
        }
    )
    return x509.load_der_x509_csr(req.dump())


def test_csr_attribute_repeated_or_multivalued() -> None:
    from asn1crypto import core

    value = core.Any.load(PROV.to_der())
    one = _Attribute({"type": oids.DEFAULT_ARC.csr_provenance.dotted_string, "values": [value]})
    two_values = _Attribute(
        {"type": oids.DEFAULT_ARC.csr_provenance.dotted_string, "values": [value, value]}
    )
    assert read_csr_provenance(_csr_with_attributes([one])) == PROV
    reject(read_csr_provenance, _csr_with_attributes([one, one]), "more than once")
    reject(read_csr_provenance, _csr_with_attributes([two_values]), "exactly one value")


@pytest.mark.parametrize(
    ("make_key", "needle"),
    [
        (lambda: ec.generate_private_key(ec.SECP521R1()), "secp521r1"),
        (lambda: rsa.generate_private_key(65537, 1024), "too small"),
        (lambda: dsa.generate_private_key(2048), "unsupported key type"),
    ],
)
def test_csr_unsupported_keys(make_key: Callable[[], Any], needle: str) -> None:
    with pytest.raises(CAError, match=needle) as info:
        build_agent_csr(make_key(), "agent-1", PROV)
    assert info.value.code is ErrorCode.UNSUPPORTED_KEY


def test_csr_invalid_names() -> None:
    with pytest.raises(CAError) as info:
        build_agent_csr(KEY, "spiffe/agent", PROV)
    assert info.value.code is ErrorCode.INVALID_NAME
    with pytest.raises(CAError) as info:
        build_agent_csr(KEY, "agent", PROV, organization="bad\norg")
    assert info.value.code is ErrorCode.INVALID_NAME


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
@pytest.mark.parametrize("kind", sorted(KEYS))
def test_openssl_verifies_agent_csr(kind: str, tmp_path: Path) -> None:
    csr = build_agent_csr(KEYS[kind](), "ExecutionAgent-ETH-01", PROV_CFG, "Acme")
    pem = tmp_path / "csr.pem"
    pem.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    done = subprocess.run(
        ["openssl", "req", "-in", str(pem), "-verify", "-noout"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "verify OK" in done.stdout + done.stderr
