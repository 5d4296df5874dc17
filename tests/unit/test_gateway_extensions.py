"""The gateway decodes with wire.extensions, the CA with its ``ca.extensions`` values on top of
the same functions: every value the CA encodes decodes to the same content at the gateway, and
a corrupted encoding is refused by the CA exactly when the gateway refuses it (the CA's extra
name rules add no acceptance and no refusal). The independent asn1crypto oracle is in
test_wire_extensions.py."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ca.errors import CAError
from ca.extensions import Accountability, Authorization, Digest, Provenance
from wire.extensions import (
    ExtensionError,
    decode_accountability,
    decode_authorization,
    decode_provenance,
)

scopes = st.from_regex(r"[a-z][a-z0-9_]{0,12}(?:[.:][a-z0-9_]{1,8}){0,2}", fullmatch=True)
printable = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "S")), min_size=1, max_size=30
)
algos = st.sampled_from([("sha256", 32), ("sha384", 48), ("sha512", 64)])


@st.composite
def digests(draw: st.DrawFn) -> Digest:
    name, size = draw(algos)
    return Digest(draw(st.binary(min_size=size, max_size=size)), name)


@settings(max_examples=200, deadline=None)
@given(printable, digests(), digests(), st.none() | digests())
def test_provenance_agrees(mt: str, m: Digest, p: Digest, c: Digest | None) -> None:
    der = Provenance(mt, m, p, c).to_der()
    got = decode_provenance(der)
    assert (got.model_type, got.model_digest.value, got.prompt_digest.value) == (
        mt,
        m.value,
        p.value,
    )
    assert got.model_digest.algorithm == m.algorithm
    assert (None if got.config_digest is None else got.config_digest.value) == (
        None if c is None else c.value
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(scopes, min_size=1, max_size=10))
def test_authorization_agrees(values: list[str]) -> None:
    auth = Authorization(tuple(values))
    assert decode_authorization(auth.to_der()) == auth.scopes


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["a@b.io", "risk.officer@example.com", "x+y@sub.example.org"]), printable,
       st.none() | printable)  # fmt: skip
def test_accountability_agrees(officer: str, env: str, org: str | None) -> None:
    acc = Accountability(officer, env, org)
    assert decode_accountability(acc.to_der()) == (officer, env, org)


def test_known_answers_from_docs() -> None:
    der = bytes.fromhex("301f1611616c696365406578616d706c652e636f6d0c0470726f64800441636d65")
    assert decode_accountability(der) == ("alice@example.com", "prod", "Acme")
    assert decode_authorization(bytes.fromhex("3010300e0c0c6f72646572733a7772697465")) == (
        "orders:write",
    )


def _ca_decoders() -> list[tuple[object, object]]:
    return [
        (Provenance.from_der, decode_provenance),
        (Authorization.from_der, decode_authorization),
        (Accountability.from_der, decode_accountability),
    ]


VALID = [
    Provenance("m", Digest(b"\x01" * 32), Digest(b"\x02" * 32), Digest(b"\x03" * 32)).to_der(),
    Authorization(("a", "b:c")).to_der(),
    Accountability("a@b.io", "prod", "Org").to_der(),
]


def _mutations(der: bytes) -> list[bytes]:
    out = [der + b"\x00", der[:-1], b"\x31" + der[1:], b"\x30\x81" + der[1:]]
    out.append(der[:2] + b"\x02\x01\x00" + der[2:])  # an encoded version
    out.append(b"\x30\x80" + der[2:] + b"\x00\x00")  # BER indefinite length
    for i in range(2, len(der)):
        for flip in (0x01, 0x80):
            out.append(der[:i] + bytes([der[i] ^ flip]) + der[i + 1 :])
    return out


@pytest.mark.parametrize("index", range(3))
def test_corruptions_are_refused_exactly_when_the_ca_refuses(index: int) -> None:
    ca_decode, gw_decode = _ca_decoders()[index]
    for bad in _mutations(VALID[index]):
        try:
            ca_decode(bad)  # type: ignore[operator]
            ca_ok = True
        except CAError:
            ca_ok = False
        try:
            gw_decode(bad)  # type: ignore[operator]
            gw_ok = True
        except ExtensionError:
            gw_ok = False
        assert ca_ok == gw_ok, bad.hex()


def test_specific_refusals() -> None:
    with pytest.raises(ExtensionError, match="sorted"):
        decode_authorization(bytes.fromhex("300830060c01620c0161"))
    from wire import der as _der

    alg = _der.tlv(0x30, _der.encode_oid("2.16.840.1.101.3.4.2.1") + b"\x05\x00")
    info = _der.tlv(0x30, alg + _der.tlv(0x04, b"\x01" * 32))
    bad = _der.tlv(0x30, _der.tlv(0x0C, b"m") + info + info)
    with pytest.raises(ExtensionError, match="parameters"):
        decode_provenance(bad)
    with pytest.raises(CAError):
        Provenance.from_der(bad)
