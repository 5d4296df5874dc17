"""Parse DER ``OCSPRequest`` structures (RFC 6960 section 4.1) with asn1crypto.

cryptography's request loader accepts exactly one CertID; relying parties may send several,
so requests are parsed here. Anything that is not a well-formed request raises
``CAError(BAD_REQUEST)``, which the edge maps to ``malformedRequest``.

The commonest shape (one CertID and nothing else: what RFC 5019 clients, OpenSSL without a
nonce, Go and browsers send) is first read by a strict byte-level DER reader (``wire.der``):
a profile of cold requests served from the shared store showed asn1crypto's parse as the
largest cost left in Python. Any other shape, and anything that reader does not accept, goes
to asn1crypto as before; where the fast path answers, its result equals asn1crypto's
(tests/unit/test_ocsp_request_fast.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from asn1crypto import ocsp as asn1_ocsp
from asn1crypto.core import OctetString

from ca.errors import CAError, ErrorCode
from wire.der import DerError, decode_integer, decode_oid, read

SHA1 = "1.3.14.3.2.26"
SHA256 = "2.16.840.1.101.3.4.2.1"
HASH_NAMES = {SHA1: "sha1", SHA256: "sha256"}
"""CertID hash algorithms we can match (OID -> name); others cannot name an issuer of ours."""
NONCE_OID = "1.3.6.1.5.5.7.48.1.2"
MAX_NONCE = 32  # RFC 8954 section 2.1: Nonce ::= OCTET STRING (SIZE(1..32))
MAX_CERT_IDS = 64


@dataclass(frozen=True)
class CertId:
    """One CertID as the client sent it (``der`` is echoed verbatim in the response)."""

    hash_algorithm: str  # "sha1", "sha256", or the dotted OID of an algorithm we do not match
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial_number: int
    der: bytes


@dataclass(frozen=True)
class OcspRequest:
    """The parts of a request that decide the answer."""

    cert_ids: tuple[CertId, ...]
    nonce: bytes | None  # the Nonce OCTET STRING's contents (1..32 bytes), or None


def _malformed(why: str) -> CAError:
    return CAError(ErrorCode.BAD_REQUEST, why)


def parse_request(der: bytes, max_cert_ids: int = MAX_CERT_IDS) -> OcspRequest:
    """Parse and validate one DER ``OCSPRequest``; ``CAError(BAD_REQUEST)`` if malformed.

    The optional signature is parsed (it must be well-formed) but not verified: RFC 6960
    does not require signed requests and this responder does not authorise by requestor.
    """
    fast = parse_simple_request(der)
    return fast if fast is not None else parse_full_request(der, max_cert_ids)


def parse_full_request(der: bytes, max_cert_ids: int = MAX_CERT_IDS) -> OcspRequest:
    """:func:`parse_request` by asn1crypto alone, for any shape."""
    try:
        request = asn1_ocsp.OCSPRequest.load(der, strict=True)
        tbs = request["tbs_request"]
        if tbs["version"].native != "v1":
            raise _malformed("unsupported request version")
        items = tbs["request_list"]
        count = len(items)
        if count == 0:
            raise _malformed("the request list is empty")
        if count > max_cert_ids:
            raise _malformed(f"more than {max_cert_ids} CertIDs in one request")
        cert_ids = tuple(_cert_id(item["req_cert"]) for item in items)
        nonce = _nonce(tbs["request_extensions"])
        # Touch the rest so a corrupt requestor name or signature is refused, not ignored.
        _ = tbs["requestor_name"].native, request["optional_signature"].native
        for item in items:
            _ = item["single_request_extensions"].native
    except CAError:
        raise
    except Exception as exc:  # asn1crypto parses lazily and raises many types
        raise _malformed("the body is not a DER OCSPRequest") from exc
    return OcspRequest(cert_ids=cert_ids, nonce=nonce)


def _only(data: bytes, tag: int) -> bytes | None:
    """The content of ``data`` if it is exactly one element with ``tag`` (else None)."""
    got, content, end = read(data)
    return content if got == tag and end == len(data) else None


def parse_simple_request(der: bytes) -> OcspRequest | None:
    """The request if it is one CertID and nothing else (no version, requestor, extensions
    or signature), in canonical DER; None for anything else (the caller parses it fully)."""
    try:
        ocsp_request = _only(der, 0x30)
        tbs = _only(ocsp_request, 0x30) if ocsp_request is not None else None
        request_list = _only(tbs, 0x30) if tbs is not None else None
        single = _only(request_list, 0x30) if request_list is not None else None
        cert_id = _only(single, 0x30) if single is not None else None
        if cert_id is None or single is None:
            return None
        tag, algorithm, pos = read(cert_id)
        if tag != 0x30:
            return None
        tag, oid, apos = read(algorithm)
        if tag != 0x06 or (apos != len(algorithm) and algorithm[apos:] != b"\x05\x00"):
            return None
        tag, name_hash, pos = read(cert_id, pos)
        if tag != 0x04:
            return None
        tag, key_hash, pos = read(cert_id, pos)
        if tag != 0x04:
            return None
        tag, serial, pos = read(cert_id, pos)
        if tag != 0x02 or pos != len(cert_id):
            return None
        dotted = decode_oid(oid)
        number = decode_integer(serial)
    except DerError:
        return None
    value = CertId(HASH_NAMES.get(dotted, dotted), name_hash, key_hash, number, single)
    return OcspRequest(cert_ids=(value,), nonce=None)


def _cert_id(value: asn1_ocsp.CertId) -> CertId:
    oid = value["hash_algorithm"]["algorithm"].dotted
    return CertId(
        hash_algorithm=HASH_NAMES.get(oid, oid),
        issuer_name_hash=bytes(value["issuer_name_hash"].native),
        issuer_key_hash=bytes(value["issuer_key_hash"].native),
        serial_number=int(value["serial_number"].native),
        der=value.dump(),
    )


def _nonce(extensions: asn1_ocsp.TBSRequestExtensions) -> bytes | None:
    nonce: bytes | None = None
    for ext in extensions:
        if ext["extn_id"].dotted != NONCE_OID:
            _ = ext["critical"].native  # well-formed; unknown extensions are ignored
            continue
        if nonce is not None:
            raise _malformed("more than one nonce extension")
        try:
            value = OctetString.load(ext["extn_value"].contents, strict=True).native
        except ValueError as exc:
            raise _malformed("the nonce is not an OCTET STRING") from exc
        if not 1 <= len(value) <= MAX_NONCE:
            raise _malformed(f"the nonce must be 1 to {MAX_NONCE} octets (RFC 8954)")
        nonce = bytes(value)
    return nonce
