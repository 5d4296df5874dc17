"""One strict DER reader and writer (X.690 distinguished encoding, the subset agentca uses).

The reader refuses, with :class:`DerError`: truncated input, the high-tag-number form
(multi-byte tags), the indefinite length, non-minimal lengths (long form below 128, leading
zero octets, more than four length octets), trailing bytes after a value read with
:func:`read_one`, non-minimal OBJECT IDENTIFIER sub-identifiers (a leading ``0x80``), an OID
ending inside a sub-identifier, an OID of more than :data:`MAX_OID_BYTES` content octets, empty
or non-minimal INTEGERs, and elements of the wrong tag.
The writer only ever produces what the reader accepts (tests/unit/test_wire_der.py).
"""

from __future__ import annotations


class DerError(ValueError):
    """Not (canonical) DER of the expected shape."""


#: The longest OBJECT IDENTIFIER content accepted or written. cryptography (rust-asn1) refuses
#: longer ones, so no certificate or CSR we read can carry one; the bound keeps decoding linear
#: and every failure a :class:`DerError` (an unbounded arc was quadratic to assemble and, past
#: 4300 decimal digits, raised a bare ``ValueError`` from ``str(int)``).
MAX_OID_BYTES = 63


# ------------------------------------------------------------------------------------ reading


def read(data: bytes, pos: int = 0) -> tuple[int, bytes, int]:
    """``(tag, content, end)`` of the element at ``pos``; minimal definite lengths only."""
    if pos + 2 > len(data):
        raise DerError("truncated")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise DerError("multi-byte tags are not used here")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        size = first
    elif first == 0x80:
        raise DerError("indefinite length")
    else:
        count = first & 0x7F
        if count > 4 or pos + count > len(data):
            raise DerError("bad length")
        size = int.from_bytes(data[pos : pos + count], "big")
        if size < 0x80 or data[pos] == 0:
            raise DerError("non-minimal length")
        pos += count
    end = pos + size
    if end > len(data):
        raise DerError("truncated")
    return tag, data[pos:end], end


def read_one(data: bytes, tag: int) -> bytes:
    """The content of ``data``, which must be exactly one element with ``tag``."""
    got, content, end = read(data)
    if got != tag:
        raise DerError(f"expected tag 0x{tag:02x}, got 0x{got:02x}")
    if end != len(data):
        raise DerError("trailing bytes")
    return content


def children(content: bytes) -> list[tuple[int, bytes]]:
    """``(tag, content)`` of every element of a constructed value's content."""
    out = []
    pos = 0
    while pos < len(content):
        tag, body, pos = read(content, pos)
        out.append((tag, body))
    return out


def decode_oid(content: bytes) -> str:
    """The dotted form of an OBJECT IDENTIFIER's content (minimal sub-identifiers only)."""
    if not content or content[-1] & 0x80:
        raise DerError("bad OBJECT IDENTIFIER")
    if len(content) > MAX_OID_BYTES:
        raise DerError(f"OBJECT IDENTIFIER longer than {MAX_OID_BYTES} bytes")
    arcs: list[int] = []
    value = 0
    start = True
    for byte in content:
        if start and byte == 0x80:
            raise DerError("non-minimal OBJECT IDENTIFIER arc")
        value = (value << 7) | (byte & 0x7F)
        start = not byte & 0x80
        if start:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def decode_integer(content: bytes) -> int:
    """A (signed) INTEGER's content; empty or non-minimal encodings are refused."""
    if not content:
        raise DerError("empty INTEGER")
    if len(content) > 1 and (
        (content[0] == 0x00 and content[1] < 0x80) or (content[0] == 0xFF and content[1] >= 0x80)
    ):
        raise DerError("non-minimal INTEGER")
    return int.from_bytes(content, "big", signed=True)


# ------------------------------------------------------------------------------------ writing


def length(n: int) -> bytes:
    """A DER length."""
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element (a low tag number, 0..30)."""
    if tag & 0x1F == 0x1F or not 0 <= tag <= 0xFF:
        raise DerError("multi-byte tags are not used here")
    return bytes((tag,)) + length(len(content)) + content


def seq(*items: bytes) -> bytes:
    """A SEQUENCE of already-encoded elements."""
    return tlv(0x30, b"".join(items))


def set_of(*items: bytes) -> bytes:
    """A DER SET OF: elements sorted by their encodings."""
    return tlv(0x31, b"".join(sorted(items)))


def encode_oid_content(dotted: str) -> bytes:
    """The content octets of an OBJECT IDENTIFIER."""
    parts = dotted.split(".")
    # ASCII digits only: str.isdigit and int() also take other scripts' digits ("1.\u0662.3")
    # and no arc longer than 63 bytes of base-128 could hold (< 10**133), before int() sees it
    if any(
        not (p.isascii() and p.isdigit()) or (p != "0" and p[0] == "0") or len(p) > 140
        for p in parts
    ):
        raise DerError(f"not a dotted OID: {dotted[:80]!r}")
    arcs = [int(a) for a in parts]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40):
        raise DerError(f"not a dotted OID: {dotted[:80]!r}")
    body = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
        if len(body) > MAX_OID_BYTES:
            raise DerError(f"OBJECT IDENTIFIER longer than {MAX_OID_BYTES} bytes")
    return bytes(body)


def encode_oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER element."""
    return tlv(0x06, encode_oid_content(dotted))


def integer(value: int) -> bytes:
    """An INTEGER element (two's complement, minimal)."""
    size = (value if value >= 0 else ~value).bit_length() // 8 + 1
    return tlv(0x02, value.to_bytes(size, "big", signed=True))


def bit_string(data: bytes) -> bytes:
    """A BIT STRING element with no unused bits."""
    return tlv(0x03, b"\x00" + data)


def octet_string(data: bytes) -> bytes:
    """An OCTET STRING element."""
    return tlv(0x04, data)


def utf8_string(text: str) -> bytes:
    """A UTF8String element."""
    return tlv(0x0C, text.encode("utf-8"))
