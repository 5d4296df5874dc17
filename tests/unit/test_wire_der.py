"""The one DER codec (wire.der): it round-trips everything it writes and refuses every
malformed encoding the strictest of the former codecs (gateway/_der.py) refused: truncation,
trailing data, the indefinite length, non-minimal lengths, high-tag-number forms, non-minimal
OID sub-identifiers, an OID ending inside a sub-identifier, wrong tags, non-minimal INTEGERs.
The three inputs the former agent codec (agent/_der.py) wrongly accepted are pinned too."""

from __future__ import annotations

import pytest
from asn1crypto import core, parser
from cryptography import x509
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from wire import der

# low-tag-number identifier octets (class and constructed bit free, tag number 0..30)
TAGS = st.integers(0, 255).filter(lambda t: t & 0x1F != 0x1F)
CONTENT = st.binary(max_size=300)


@st.composite
def oids(draw: st.DrawFn) -> str:
    first = draw(st.integers(0, 2))
    second = draw(st.integers(0, 39 if first < 2 else 2**70))
    rest = draw(st.lists(st.integers(0, 2**70), max_size=5))  # <= 60 content bytes
    return ".".join(str(a) for a in [first, second, *rest])


def _long_form(tag: int, content: bytes, extra_zeros: int = 0, width: int | None = None) -> bytes:
    n = len(content)
    raw = n.to_bytes(width or max(1, (n.bit_length() + 7) // 8), "big")
    raw = b"\x00" * extra_zeros + raw
    return bytes((tag, 0x80 | len(raw))) + raw + content


# --- round trips ----------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(TAGS, CONTENT)
def test_tlv_round_trips(tag: int, content: bytes) -> None:
    enc = der.tlv(tag, content)
    assert der.read(enc) == (tag, content, len(enc))
    assert der.read_one(enc, tag) == content


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(TAGS, st.binary(max_size=200)), max_size=8))
def test_children_round_trip(items: list[tuple[int, bytes]]) -> None:
    enc = der.seq(*(der.tlv(t, c) for t, c in items))
    assert der.children(der.read_one(enc, 0x30)) == items


@settings(max_examples=400, deadline=None)
@given(st.integers(-(2**200), 2**200))
def test_integer_round_trips_minimally(n: int) -> None:
    enc = der.integer(n)
    assert der.decode_integer(der.read_one(enc, 0x02)) == n
    assert enc == bytes(core.Integer(n).dump())  # the oracle's DER


@settings(max_examples=400, deadline=None)
@given(oids())
def test_oid_round_trips(dotted: str) -> None:
    enc = der.encode_oid(dotted)
    assert der.decode_oid(der.read_one(enc, 0x06)) == dotted
    assert enc == bytes(core.ObjectIdentifier(dotted).dump())


def test_set_of_sorts_and_writer_refuses_bad_input() -> None:
    assert der.set_of(b"\x04\x01\x02", b"\x04\x01\x01") == b"\x31\x06\x04\x01\x01\x04\x01\x02"
    for bad in ("1", "3.1", "1.40", "1.2.-3", "1..2", "1.02", "a.b", "1.2.+3"):
        with pytest.raises(der.DerError):
            der.encode_oid(bad)
    with pytest.raises(der.DerError):
        der.tlv(0x1F, b"")


# --- refusals -------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(TAGS, st.binary(max_size=0x7F))
def test_long_form_for_a_short_length_is_refused(tag: int, content: bytes) -> None:
    with pytest.raises(der.DerError, match="non-minimal length"):
        der.read(_long_form(tag, content))


@settings(max_examples=300, deadline=None)
@given(TAGS, CONTENT, st.integers(1, 2))
def test_leading_zero_length_octets_are_refused(tag: int, content: bytes, zeros: int) -> None:
    with pytest.raises(der.DerError):
        der.read(_long_form(tag, content, extra_zeros=zeros))


@settings(max_examples=200, deadline=None)
@given(TAGS, CONTENT)
def test_indefinite_length_is_refused(tag: int, content: bytes) -> None:
    with pytest.raises(der.DerError, match="indefinite"):
        der.read(bytes((tag | 0x20, 0x80)) + content + b"\x00\x00")


@settings(max_examples=300, deadline=None)
@given(TAGS, CONTENT, st.data())
def test_every_truncation_is_refused(tag: int, content: bytes, data: st.DataObject) -> None:
    enc = der.tlv(tag, content)
    cut = data.draw(st.integers(0, len(enc) - 1))
    with pytest.raises(der.DerError):
        der.read_one(enc[:cut], tag)


@settings(max_examples=300, deadline=None)
@given(TAGS, CONTENT, st.binary(min_size=1, max_size=8))
def test_trailing_data_is_refused(tag: int, content: bytes, extra: bytes) -> None:
    with pytest.raises(der.DerError):
        der.read_one(der.tlv(tag, content) + extra, tag)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 7), st.binary(max_size=6))
def test_high_tag_number_form_is_refused(cls_bits: int, rest: bytes) -> None:
    with pytest.raises(der.DerError, match="multi-byte tags"):
        der.read(bytes(((cls_bits << 5) | 0x1F,)) + b"\x81\x00\x00" + rest)


@settings(max_examples=300, deadline=None)
@given(TAGS, TAGS, CONTENT)
def test_wrong_tag_is_refused(tag: int, other: int, content: bytes) -> None:
    assume(tag != other)
    with pytest.raises(der.DerError, match="expected tag"):
        der.read_one(der.tlv(tag, content), other)


@settings(max_examples=300, deadline=None)
@given(oids(), st.data())
def test_non_minimal_oid_arcs_are_refused(dotted: str, data: st.DataObject) -> None:
    content = der.encode_oid_content(dotted)
    starts = [0] + [i + 1 for i, b in enumerate(content[:-1]) if not b & 0x80]
    at = data.draw(st.sampled_from(starts))
    with pytest.raises(der.DerError, match="non-minimal"):
        der.decode_oid(content[:at] + b"\x80" + content[at:])


@settings(max_examples=200, deadline=None)
@given(oids(), st.integers(0x80, 0xFF))
def test_oid_ending_inside_an_arc_is_refused(dotted: str, last: int) -> None:
    with pytest.raises(der.DerError):
        der.decode_oid(der.encode_oid_content(dotted) + bytes((last,)))


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2**64), 2**64), st.sampled_from([b"\x00", b"\xff"]))
def test_non_minimal_integers_are_refused(n: int, pad: bytes) -> None:
    content = der.read_one(der.integer(n), 0x02)
    padded = pad + content
    if int.from_bytes(padded, "big", signed=True) != n:
        return  # the pad changed the value: a different integer, not a padded one
    with pytest.raises(der.DerError, match="non-minimal INTEGER"):
        der.decode_integer(padded)
    with pytest.raises(der.DerError, match="empty"):
        der.decode_integer(b"")


def test_the_three_inputs_the_former_agent_codec_accepted() -> None:
    with pytest.raises(der.DerError, match="non-minimal"):
        der.decode_oid(bytes.fromhex("2a8001"))  # 1.2 then an arc with a leading 0x80
    with pytest.raises(der.DerError):
        der.decode_oid(bytes.fromhex("2a86"))  # truncated: ends inside a sub-identifier
    with pytest.raises(der.DerError, match="multi-byte tags"):
        der.read(bytes.fromhex("1f8101") + b"\x01")  # high-tag-number form
    with pytest.raises(der.DerError):
        der.decode_oid(b"")


def test_long_oids_are_der_errors_at_the_limit_cryptography_uses() -> None:
    """An OID arc of 2100 bytes raised a bare ValueError (``str(int)`` digit limit) instead of
    DerError, and assembling one was quadratic; the bound is cryptography's own (63 bytes)."""
    limit = "1.2" + ".1" * (der.MAX_OID_BYTES - 1)  # 63 content bytes
    assert len(der.encode_oid_content(limit)) == der.MAX_OID_BYTES
    assert der.decode_oid(der.encode_oid_content(limit)) == limit
    x509.ObjectIdentifier(limit)  # cryptography takes 63 bytes ...
    with pytest.raises(ValueError):
        x509.ObjectIdentifier(limit + ".1")  # ... and refuses 64
    with pytest.raises(der.DerError, match="longer than"):
        der.encode_oid(limit + ".1")
    with pytest.raises(der.DerError, match="longer than"):
        der.decode_oid(der.encode_oid_content(limit) + b"\x01")
    for size in (2100, 200_000):  # a quadratic decoder took seconds at 200 kB
        with pytest.raises(der.DerError, match="longer than"):
            der.decode_oid(b"\x2a" + b"\xff" * size + b"\x01")
    with pytest.raises(der.DerError):
        der.encode_oid("1.2." + "9" * 5000)  # int() alone raises a bare ValueError here


def test_the_writer_takes_ascii_digits_only() -> None:
    for bad in ("1.\u0662.3", "1.2.\u00b3", "\uff11.2", "1.2.3\u0663"):
        with pytest.raises(der.DerError):
            der.encode_oid(bad)


# --- differential: what wire accepts, a general ASN.1 library reads identically ---------------


@settings(max_examples=1000, deadline=None)
@given(st.binary(min_size=2, max_size=40))
def test_anything_accepted_is_der_per_asn1crypto(data: bytes) -> None:
    try:
        tag, content, end = der.read(data)
    except der.DerError:
        return
    class_, method, number, header, body, trailer = parser.parse(data[:end], strict=True)
    assert (body, trailer, len(header) + len(body)) == (content, b"", end)
    assert (class_, method, number) == (tag >> 6, (tag >> 5) & 1, tag & 0x1F)


@settings(max_examples=1000, deadline=None)
@given(st.binary(min_size=1, max_size=20))
def test_oids_accepted_agree_with_asn1crypto(content: bytes) -> None:
    try:
        dotted = der.decode_oid(content)
    except der.DerError:
        return
    assert core.ObjectIdentifier.load(der.tlv(0x06, content)).dotted == dotted
    assert der.encode_oid_content(dotted) == content  # and it is canonical
