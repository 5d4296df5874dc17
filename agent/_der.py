"""Just enough DER for the agent: encode ``AgentProvenance`` and a PKCS#10 request, read back
the certificate's provenance extension. Byte-compatible with the CA's codecs (tested)."""

from __future__ import annotations

from typing import Final

OID_SHA256: Final = "2.16.840.1.101.3.4.2.1"
DIGEST_OIDS: Final = {
    "sha256": (OID_SHA256, 32),
    "sha384": ("2.16.840.1.101.3.4.2.2", 48),
    "sha512": ("2.16.840.1.101.3.4.2.3", 64),
}
DIGEST_BY_OID: Final = {oid: (name, size) for name, (oid, size) in DIGEST_OIDS.items()}


def length(n: int) -> bytes:
    """A DER length."""
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element."""
    return bytes([tag]) + length(len(content)) + content


def seq(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def set_of(*items: bytes) -> bytes:
    """A DER SET OF: elements sorted by their encodings."""
    return tlv(0x31, b"".join(sorted(items)))


def oid(dotted: str) -> bytes:
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


def integer(value: int) -> bytes:
    raw = value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True)
    return tlv(0x02, raw)


def bit_string(data: bytes) -> bytes:
    return tlv(0x03, b"\x00" + data)


def digest_info(algorithm: str, value: bytes) -> bytes:
    """``DigestInfo`` with absent parameters (RFC 5754 form)."""
    return seq(seq(oid(DIGEST_OIDS[algorithm][0])), tlv(0x04, value))


def read_tlv(data: bytes, pos: int = 0) -> tuple[int, bytes, int]:
    """``(tag, content, next position)`` of the DER element at ``pos``; ``ValueError`` if bad."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag = data[pos]
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        size = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ValueError("bad DER length")
        size = int.from_bytes(data[pos : pos + count], "big")
        if size < 0x80 or data[pos] == 0:
            raise ValueError("non-minimal DER length")
        pos += count
    end = pos + size
    if end > len(data):
        raise ValueError("truncated DER")
    return tag, data[pos:end], end


def read_all(data: bytes) -> list[tuple[int, bytes]]:
    """Every element of a constructed value's content."""
    items: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        tag, content, pos = read_tlv(data, pos)
        items.append((tag, content))
    return items


def decode_oid(content: bytes) -> str:
    arcs: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])
