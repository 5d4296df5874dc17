"""A strict DER reader/writer, just enough for the agent extensions."""

from __future__ import annotations

from typing import Final

DIGEST_OIDS: Final = {
    "2.16.840.1.101.3.4.2.1": ("sha256", 32),
    "2.16.840.1.101.3.4.2.2": ("sha384", 48),
    "2.16.840.1.101.3.4.2.3": ("sha512", 64),
}
OID_BY_DIGEST: Final = {name: oid for oid, (name, _) in DIGEST_OIDS.items()}


class DerError(ValueError):
    """Not (canonical) DER of the expected shape."""


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
    out = []
    pos = 0
    while pos < len(content):
        tag, body, pos = read(content, pos)
        out.append((tag, body))
    return out


def decode_oid(content: bytes) -> str:
    if not content or content[-1] & 0x80:
        raise DerError("bad OBJECT IDENTIFIER")
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


def length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + length(len(content)) + content


def encode_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return tlv(0x06, bytes(body))
