"""Pure CRL building (RFC 5280 section 5) as streamed DER, and fast reading for verifiers.

cryptography's ``CertificateRevocationListBuilder`` is quadratic in the number of entries and
its CRL lookup is a linear scan, so large CRLs are written here by hand:

1. the revokedCertificates entries are encoded in batches into a spool file while their total
   length is counted (bounded memory, linear time);
2. the TBSCertList is written to the output behind a reserved outer header and hashed while it
   is written; the signature is over that hash (``Prehashed``), so 40 MB are never held twice;
3. the signature is appended and the outer ``SEQUENCE`` header is written into its place.

Ed25519 cannot sign a pre-hashed message: for Ed25519 issuers the TBS bytes are read back into
memory once to be signed. Nothing here reads a clock, the environment or a database.

Why one module of this size: the streamed CRL writer and the streamed reader (windowed, for 50
MB CRLs) share one DER framing of the CRL; keeping them together keeps them byte-compatible.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, BinaryIO, NamedTuple, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from ca.errors import CAError, ErrorCode
from ca.profile import signature_hash
from ca.revocation import RevocationReason
from wire import der

_BATCH = 8192  # entries encoded per write
_COPY_CHUNK = 1 << 20


class _Readable(Protocol):
    def seek(self, pos: int, whence: int = 0, /) -> int: ...
    def read(self, n: int = -1, /) -> bytes: ...


class RevokedEntry(NamedTuple):
    """One revokedCertificates entry: serial, revocation date, reason (None: no reasonCode)."""

    serial: int
    revoked_at: datetime
    reason: int | None = None


EntryLike = RevokedEntry | tuple[int, datetime, int | None]


@dataclass(frozen=True)
class CrlSpec:
    """What goes into one CRL besides its entries.

    ``base_number`` makes it a delta CRL (Delta CRL Indicator, critical); ``freshest_url`` adds
    a Freshest CRL extension pointing at the delta CRL (complete CRLs only).
    """

    this_update: datetime
    next_update: datetime
    number: int
    base_number: int | None = None
    freshest_url: str | None = None

    @property
    def is_delta(self) -> bool:
        return self.base_number is not None


@dataclass(frozen=True)
class BuiltCrl:
    """The result of a build: how many entries and bytes were written."""

    entries: int
    size: int


@dataclass(frozen=True)
class CrlInfo:
    """The header fields of a CRL, read without walking its entries."""

    number: int | None
    base_number: int | None
    this_update: datetime
    next_update: datetime | None
    freshest_url: str | None
    entries_offset: int  # offset of the revokedCertificates contents (0 when absent)
    entries_length: int

    @property
    def is_delta(self) -> bool:
        return self.base_number is not None


# ---------------------------------------------------------------------------------- DER writing


_len = der.length
_tlv = der.tlv
_oid = der.encode_oid
_seq = der.seq


def _int(n: int) -> bytes:
    if n < 0:
        raise ValueError("negative integers are not used in CRLs")
    return der.integer(n)


def _time(when: datetime) -> bytes:
    """UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 5.1.2.4), whole seconds."""
    if when.tzinfo is None:
        raise ValueError("CRL times must be timezone-aware")
    t = when.astimezone(UTC)
    clock = f"{t.month:02d}{t.day:02d}{t.hour:02d}{t.minute:02d}{t.second:02d}Z".encode()
    if 1950 <= t.year <= 2049:
        return b"\x17\x0d" + f"{t.year % 100:02d}".encode() + clock
    return b"\x18\x0f" + f"{t.year:04d}".encode() + clock


class _TimeEncoder:
    """:func:`_time` in O(1) per call for any number of distinct times: the date part is cached
    per day, the time of day comes from a table of the 86,400 encodings (built once)."""

    _SECONDS: list[bytes] = []

    def __init__(self) -> None:
        self._days: dict[int, bytes] = {}
        if not _TimeEncoder._SECONDS:
            _TimeEncoder._SECONDS = [
                f"{h:02d}{m:02d}{s:02d}Z".encode()
                for h in range(24)
                for m in range(60)
                for s in range(60)
            ]
        self._seconds = _TimeEncoder._SECONDS

    def __call__(self, when: datetime) -> bytes:
        if when.tzinfo is None:
            raise ValueError("CRL times must be timezone-aware")
        day, second = divmod(int(when.timestamp() // 1), 86400)
        prefix = self._days.get(day)
        if prefix is None:
            prefix = self._days[day] = _time(_EPOCH + timedelta(days=day))[:-7]
        return prefix + self._seconds[second]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _extension(oid: str, value: bytes, critical: bool = False) -> bytes:
    return _seq(_oid(oid), b"\x01\x01\xff" if critical else b"", _tlv(0x04, value))


OID_AKI = "2.5.29.35"
OID_CRL_NUMBER = "2.5.29.20"
OID_DELTA_INDICATOR = "2.5.29.27"
OID_FRESHEST_CRL = "2.5.29.46"
OID_REASON_CODE = "2.5.29.21"
_OID_CRL_NUMBER = _oid(OID_CRL_NUMBER)
_OID_DELTA_INDICATOR = _oid(OID_DELTA_INDICATOR)
_OID_FRESHEST_CRL = _oid(OID_FRESHEST_CRL)

# crlEntryExtensions carrying only a reasonCode, per reason value (none for unspecified).
_REASON_EXT: dict[int | None, bytes] = {None: b"", 0: b""}
for _r in RevocationReason:
    if _r is not RevocationReason.UNSPECIFIED:
        _REASON_EXT[int(_r)] = _seq(_extension(OID_REASON_CODE, _tlv(0x0A, bytes((int(_r),)))))


def _algorithm_identifier(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    digest = signature_hash(key)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return _seq(_oid("1.3.101.112"))
    assert digest is not None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        oid = {"sha256": "1.2.840.10045.4.3.2", "sha384": "1.2.840.10045.4.3.3"}
        return _seq(_oid(oid.get(digest.name, "1.2.840.10045.4.3.4")))
    if isinstance(key, rsa.RSAPrivateKey):
        oid = {"sha256": "1.2.840.113549.1.1.11", "sha384": "1.2.840.113549.1.1.12"}
        return _seq(_oid(oid.get(digest.name, "1.2.840.113549.1.1.13")), b"\x05\x00")
    raise CAError(ErrorCode.UNSUPPORTED_KEY, f"cannot sign CRLs with {type(key).__name__}")


def _key_identifier(issuer: x509.Certificate) -> bytes:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return ski.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(issuer.public_key()).digest


def _crl_extensions(issuer: x509.Certificate, spec: CrlSpec) -> bytes:
    exts = [
        _extension(OID_AKI, _seq(_tlv(0x80, _key_identifier(issuer)))),
        _extension(OID_CRL_NUMBER, _int(spec.number)),
    ]
    if spec.base_number is not None:
        exts.append(_extension(OID_DELTA_INDICATOR, _int(spec.base_number), critical=True))
    elif spec.freshest_url:
        uri = _tlv(0x86, spec.freshest_url.encode("ascii"))
        dp = _seq(_tlv(0xA0, _tlv(0xA0, uri)))
        exts.append(_extension(OID_FRESHEST_CRL, _seq(dp)))
    return _tlv(0xA0, _seq(*exts))


def encode_entries(entries: Iterable[EntryLike]) -> bytes:
    """DER of the revokedCertificates contents (no outer header); for tests and small lists."""
    return b"".join(chunk for chunk, _ in _encoded_batches(iter(entries)))


def _encoded_batches(entries: Iterator[EntryLike]) -> Iterator[tuple[bytes, int]]:
    """Yield (DER, count) of the entries in batches: linear time, one batch in memory."""
    encode_time = _TimeEncoder()
    reasons = _REASON_EXT
    batch: list[bytes] = []
    append = batch.append
    for serial, when, reason in entries:
        t = encode_time(when)
        if serial < 0:
            raise ValueError("serial numbers are positive")
        sb = serial.to_bytes((serial.bit_length() + 8) // 8, "big")
        try:
            ext = reasons[reason]
        except KeyError:
            raise ValueError(f"{reason!r} is not a CRL reason code") from None
        body = b"\x02" + bytes((len(sb),)) + sb + t + ext
        if len(body) < 0x80:
            append(b"\x30" + bytes((len(body),)) + body)
        else:  # serials longer than 20 octets: not produced by us, still encoded correctly
            append(b"\x30" + _len(len(body)) + body)
        if len(batch) >= _BATCH:
            yield b"".join(batch), len(batch)
            batch.clear()
    if batch:
        yield b"".join(batch), len(batch)


class _HashingWriter:
    """Writes to a file while feeding the same bytes to a hash (or, for Ed25519, nothing)."""

    def __init__(self, out: IO[bytes], digest: hashes.Hash | None) -> None:
        self.out, self.digest, self.count = out, digest, 0

    def write(self, data: bytes | memoryview) -> None:
        self.out.write(data)
        if self.digest is not None:
            self.digest.update(data)
        self.count += len(data)


def build_crl(
    output: BinaryIO,
    issuer: x509.Certificate,
    key: CertificateIssuerPrivateKeyTypes,
    spec: CrlSpec,
    entries: Iterable[EntryLike],
    spool_dir: str | os.PathLike[str] | None = None,
) -> BuiltCrl:
    """Write a signed CRL (DER) for ``issuer`` to the seekable ``output`` from position 0.

    ``entries`` is consumed once; they are spooled to a temporary file in ``spool_dir``.
    """
    if spec.next_update <= spec.this_update:
        raise CAError(ErrorCode.BAD_REQUEST, "nextUpdate must be after thisUpdate")
    if spec.base_number is not None and spec.base_number >= spec.number:
        raise CAError(ErrorCode.BAD_REQUEST, "a delta CRL's number must exceed its base number")
    algorithm = _algorithm_identifier(key)
    head = b"".join(
        (
            b"\x02\x01\x01",  # version v2
            algorithm,
            issuer.subject.public_bytes(),
            _time(spec.this_update),
            _time(spec.next_update),
        )
    )
    tail = _crl_extensions(issuer, spec)
    with tempfile.TemporaryFile(dir=spool_dir, prefix="crl-spool-") as spool:
        count = length = 0
        for chunk, n in _encoded_batches(iter(entries)):
            spool.write(chunk)
            length += len(chunk)
            count += n
        revoked_head = b"\x30" + _len(length) if length else b""
        tbs_len = len(head) + len(revoked_head) + length + len(tail)
        tbs_head = b"\x30" + _len(tbs_len)
        sig_max = _max_signature_len(key)
        bit_string_max = 1 + len(_len(sig_max + 1)) + sig_max + 1
        tbs_total = len(tbs_head) + tbs_len
        outer_len_max = tbs_total + len(algorithm) + bit_string_max
        reserved = 1 + len(_len(outer_len_max))

        digest_alg = signature_hash(key)
        digest = hashes.Hash(digest_alg) if digest_alg is not None else None
        output.seek(0)
        output.truncate()
        output.write(b"\x00" * reserved)
        writer = _HashingWriter(output, digest)
        writer.write(tbs_head + head + revoked_head)
        spool.seek(0)
        while block := spool.read(_COPY_CHUNK):
            writer.write(block)
        writer.write(tail)
        signature = _sign(key, digest, digest_alg, output, reserved, tbs_total)
    bit_string = _tlv(0x03, b"\x00" + signature)
    outer_len = tbs_total + len(algorithm) + len(bit_string)
    outer_head = b"\x30" + _len(outer_len)
    output.seek(reserved + tbs_total)
    output.write(algorithm + bit_string)
    output.truncate()
    if len(outer_head) == reserved:
        output.seek(0)
        output.write(outer_head)
    else:  # the signature came out shorter across a length-of-length boundary: shift once
        _shift_left(output, reserved, len(outer_head), reserved + outer_len)
        output.seek(0)
        output.write(outer_head)
        output.truncate(len(outer_head) + outer_len)
    output.flush()
    return BuiltCrl(entries=count, size=len(outer_head) + outer_len)


def _sign(
    key: CertificateIssuerPrivateKeyTypes,
    digest: hashes.Hash | None,
    digest_alg: hashes.HashAlgorithm | None,
    output: BinaryIO,
    tbs_offset: int,
    tbs_total: int,
) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        output.seek(tbs_offset)
        return key.sign(output.read(tbs_total))
    assert digest is not None and digest_alg is not None
    prehashed = utils.Prehashed(digest_alg)
    value = digest.finalize()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(value, ec.ECDSA(prehashed))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(value, padding.PKCS1v15(), prehashed)
    raise CAError(ErrorCode.UNSUPPORTED_KEY, f"cannot sign CRLs with {type(key).__name__}")


def _max_signature_len(key: CertificateIssuerPrivateKeyTypes) -> int:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        n = (key.curve.key_size + 7) // 8 + 1  # each INTEGER may need a leading zero
        inner = 2 * (2 + n)
        return 1 + len(_len(inner)) + inner
    if isinstance(key, rsa.RSAPrivateKey):
        return (key.key_size + 7) // 8
    return 64


def _shift_left(fh: BinaryIO, src: int, dst: int, end: int) -> None:
    pos = src
    while pos < end:
        fh.seek(pos)
        block = fh.read(min(_COPY_CHUNK, end - pos))
        fh.seek(dst + (pos - src))
        fh.write(block)
        pos += len(block)


def build_crl_bytes(
    issuer: x509.Certificate,
    key: CertificateIssuerPrivateKeyTypes,
    spec: CrlSpec,
    entries: Iterable[EntryLike] = (),
) -> bytes:
    """:func:`build_crl` into memory: for small CRLs and tests."""
    with tempfile.TemporaryFile() as out:
        build_crl(out, issuer, key, spec, entries)
        out.seek(0)
        return out.read()


# ---------------------------------------------------------------------------------- DER reading


class _FileView:
    """Random access to a file object, with a small read cache, for the header walker."""

    def __init__(self, fh: _Readable) -> None:
        self.fh = fh
        self._start = 0
        self._buf = b""

    def get(self, pos: int, n: int) -> bytes:
        if not (self._start <= pos and pos + n <= self._start + len(self._buf)):
            self.fh.seek(pos)
            self._buf = self.fh.read(max(n, 1 << 16))
            self._start = pos
        off = pos - self._start
        data = self._buf[off : off + n]
        if len(data) != n:
            raise ValueError("truncated DER")
        return data


def _header(view: _FileView, pos: int) -> tuple[int, int, int]:
    """(tag, content offset, content length) of the TLV at ``pos``."""
    tag, first = view.get(pos, 2)
    if first < 0x80:
        return tag, pos + 2, first
    n = first & 0x7F
    if not 1 <= n <= 4:
        raise ValueError("unsupported DER length")
    return tag, pos + 2 + n, int.from_bytes(view.get(pos + 2, n), "big")


def _parse_time(tag: int, raw: bytes) -> datetime:
    text = raw.decode("ascii")
    if tag == 0x17:
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)


def _der_int(raw: bytes) -> int:
    return int.from_bytes(raw, "big", signed=True)


def read_crl_info(fh: _Readable) -> CrlInfo:
    """Read number, base number, this/next update of a DER CRL, seeking past its entries."""
    view = _FileView(fh)
    try:
        tag, pos, _ = _header(view, 0)
        tag2, tbs_pos, tbs_len = _header(view, pos)
        if tag != 0x30 or tag2 != 0x30:
            raise ValueError("not a CertificateList")
        end = tbs_pos + tbs_len
        fields: list[tuple[int, int, int]] = []
        p = tbs_pos
        while p < end:
            t, c, n = _header(view, p)
            fields.append((t, c, n))
            p = c + n
        idx = 1 if fields[0][0] == 0x02 else 0  # version
        idx += 2  # signature, issuer
        t, c, n = fields[idx]
        this_update = _parse_time(t, view.get(c, n))
        idx += 1
        next_update = None
        if idx < len(fields) and fields[idx][0] in (0x17, 0x18):
            t, c, n = fields[idx]
            next_update = _parse_time(t, view.get(c, n))
            idx += 1
        entries_offset = entries_length = 0
        if idx < len(fields) and fields[idx][0] == 0x30:
            entries_offset, entries_length = fields[idx][1], fields[idx][2]
            idx += 1
        number = base = None
        freshest = None
        if idx < len(fields) and fields[idx][0] == 0xA0:
            _, c, n = fields[idx]
            _, ep, en = _header(view, c)
            q = ep
            while q < ep + en:
                _, ec_, en_ = _header(view, q)
                body = view.get(ec_, en_)
                number, base, freshest = _apply_extension(body, number, base, freshest)
                q = ec_ + en_
    except (ValueError, IndexError) as exc:
        raise CAError(ErrorCode.BAD_REQUEST, f"not a DER CRL: {exc}") from exc
    return CrlInfo(number, base, this_update, next_update, freshest, entries_offset, entries_length)


def _tlv_at(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content offset, content length) of the TLV at ``pos`` in ``data``."""
    n, content = _length_at(memoryview(data), pos + 1)
    if content + n > len(data):
        raise ValueError("truncated DER")
    return data[pos], content, n


def _apply_extension(
    body: bytes, number: int | None, base: int | None, freshest: str | None
) -> tuple[int | None, int | None, str | None]:
    _, oc, on = _tlv_at(body, 0)
    oid = body[: oc + on]
    pos = oc + on
    if body[pos] == 0x01:  # critical BOOLEAN
        _, c, n = _tlv_at(body, pos)
        pos = c + n
    _, vc, vn = _tlv_at(body, pos)  # OCTET STRING holding the extension value
    value = body[vc : vc + vn]
    if oid in (_OID_CRL_NUMBER, _OID_DELTA_INDICATOR):
        _, c, n = _tlv_at(value, 0)
        if oid == _OID_CRL_NUMBER:
            number = _der_int(value[c : c + n])
        else:
            base = _der_int(value[c : c + n])
    elif oid == _OID_FRESHEST_CRL:
        # SEQUENCE OF DistributionPoint { [0] { [0] fullName { [6] URI ... } } }: first URI
        pos = 0
        for _level in range(4):
            _, pos, _n = _tlv_at(value, pos)
        tag, c, n = _tlv_at(value, pos)
        if tag == 0x86:
            freshest = value[c : c + n].decode("ascii", "replace")
    return number, base, freshest


def iter_revoked(data: bytes | bytearray | memoryview | mmap.mmap) -> Iterator[RevokedEntry]:
    """Every entry of a DER CRL held in a buffer (bytes, or an ``mmap`` of the file)."""
    buf = memoryview(data)
    info = read_crl_info(_BufferFile(buf))
    p, end = info.entries_offset, info.entries_offset + info.entries_length
    reason_by_ext = {v: k for k, v in _REASON_EXT.items() if v}
    while p < end:
        if buf[p] != 0x30:
            raise CAError(ErrorCode.BAD_REQUEST, "malformed revokedCertificates entry")
        n, p = _length_at(buf, p + 1)
        stop = p + n
        sn = buf[p + 1]
        serial = int.from_bytes(buf[p + 2 : p + 2 + sn], "big")
        q = p + 2 + sn
        tlen = buf[q + 1]
        when = _parse_time(buf[q], bytes(buf[q + 2 : q + 2 + tlen]))
        ext = bytes(buf[q + 2 + tlen : stop])
        yield RevokedEntry(serial, when, reason_by_ext.get(ext) if ext else None)
        p = stop


def revoked_serials(data: bytes | bytearray | memoryview | mmap.mmap) -> frozenset[int]:
    """The revoked serials of a DER CRL as a set: O(1) lookups for verifiers.

    Verify the CRL's signature first (``is_signature_valid``); this only parses.
    """
    buf = memoryview(data)
    info = read_crl_info(_BufferFile(buf))
    p, end = info.entries_offset, info.entries_offset + info.entries_length
    serials: set[int] = set()
    add = serials.add
    from_bytes = int.from_bytes
    while p < end:
        first = buf[p + 1]
        if first < 0x80:
            body, stop = p + 2, p + 2 + first
        else:
            n, body = _length_at(buf, p + 1)
            stop = body + n
        sn = buf[body + 1]
        add(from_bytes(buf[body + 2 : body + 2 + sn], "big"))
        p = stop
    return frozenset(serials)


def _length_at(buf: memoryview, pos: int) -> tuple[int, int]:
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    n = first & 0x7F
    return int.from_bytes(buf[pos + 1 : pos + 1 + n], "big"), pos + 1 + n


class _BufferFile:
    """A minimal read/seek file over a buffer, for :func:`read_crl_info`."""

    def __init__(self, buf: memoryview) -> None:
        self.buf, self.pos = buf, 0

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos
        return pos

    def read(self, n: int = -1) -> bytes:
        end = len(self.buf) if n < 0 else self.pos + n
        data = bytes(self.buf[self.pos : end])
        self.pos += len(data)
        return data
