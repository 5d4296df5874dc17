"""Strict decoders of the three agent certificate extensions (docs/oids.md).

A value is accepted only if it has exactly the ASN.1 shape, passes the string rules (scope
grammar, officer e-mail, printable labels, digest lengths) and re-encodes to the same bytes,
like the CA's own codecs: BER, trailing bytes, an encoded DEFAULT version, digest parameters,
unsorted or duplicate scopes are all refused with :class:`ExtensionError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from cryptography import x509

from gateway import _der

ARC: Final = "2.25.40108673889173621464063845417476256764"
PROVENANCE_OID: Final = x509.ObjectIdentifier(f"{ARC}.1.1")
AUTHORIZATION_OID: Final = x509.ObjectIdentifier(f"{ARC}.1.2")
ACCOUNTABILITY_OID: Final = x509.ObjectIdentifier(f"{ARC}.1.3")
REQUEST_SIGNING_EKU: Final = x509.ObjectIdentifier(f"{ARC}.3.1")

_SCOPE_RE: Final = re.compile(r"[a-z][a-z0-9_]*(?:[.:][a-z0-9_]+)*")
_LOCAL_RE: Final = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
)
_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN_RE: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")


class ExtensionError(ValueError):
    """A missing or malformed agent extension."""


@dataclass(frozen=True)
class DigestValue:
    algorithm: str
    value: bytes


@dataclass(frozen=True)
class Provenance:
    model_type: str
    model_digest: DigestValue
    prompt_digest: DigestValue
    config_digest: DigestValue | None


@dataclass(frozen=True)
class AgentExtensions:
    """The decoded agent extensions of one certificate."""

    provenance: Provenance
    scopes: frozenset[str]
    scope_list: tuple[str, ...]
    officer: str
    environment: str
    organization: str | None


def _printable(raw: bytes, what: str, limit: int) -> str:
    text = raw.decode("utf-8")
    if not 1 <= len(text) <= limit or not text.isprintable() or text != text.strip():
        raise ExtensionError(f"{what} must be 1..{limit} printable characters, no outer spaces")
    return text


def _no_version(items: list[tuple[int, bytes]], what: str) -> None:
    if items and items[0][0] == 0x02:
        raise ExtensionError(f"{what}: an encoded version (DEFAULT v1 must be omitted)")


def _digest(tag: int, content: bytes, what: str) -> tuple[DigestValue, bytes]:
    items = _der.children(content)
    if len(items) != 2 or items[0][0] != 0x30 or items[1][0] != 0x04:
        raise ExtensionError(f"{what}: not a DigestInfo")
    alg = _der.children(items[0][1])
    if len(alg) != 1 or alg[0][0] != 0x06:
        raise ExtensionError(f"{what}: algorithm parameters must be absent")
    dotted = _der.decode_oid(alg[0][1])
    if dotted not in _der.DIGEST_OIDS:
        raise ExtensionError(f"{what}: unsupported digest algorithm {dotted}")
    name, size = _der.DIGEST_OIDS[dotted]
    if len(items[1][1]) != size:
        raise ExtensionError(f"{what}: {name} digest must be {size} bytes")
    value = DigestValue(name, items[1][1])
    return value, _der.tlv(tag, _encode_digest_content(value))


def _encode_digest_content(d: DigestValue) -> bytes:
    alg = _der.tlv(0x30, _der.encode_oid(_der.OID_BY_DIGEST[d.algorithm]))
    return alg + _der.tlv(0x04, d.value)


def decode_provenance(data: bytes) -> Provenance:
    """Strictly decode ``AgentProvenance``."""
    what = "AgentProvenance"
    try:
        items = _der.children(_der.read_one(data, 0x30))
        _no_version(items, what)
        if len(items) not in (3, 4) or items[0][0] != 0x0C:
            raise ExtensionError(f"{what}: unexpected fields")
        model_type = _printable(items[0][1], f"{what}.modelType", 128)
        if items[1][0] != 0x30 or items[2][0] != 0x30:
            raise ExtensionError(f"{what}: digests must be DigestInfo SEQUENCEs")
        model, enc_model = _digest(0x30, items[1][1], f"{what}.modelDigest")
        prompt, enc_prompt = _digest(0x30, items[2][1], f"{what}.systemPromptDigest")
        config = None
        enc = _der.tlv(0x0C, model_type.encode()) + enc_model + enc_prompt
        if len(items) == 4:
            if items[3][0] != 0xA0:
                raise ExtensionError(f"{what}: unexpected field after systemPromptDigest")
            config, enc_config = _digest(0xA0, items[3][1], f"{what}.configDigest")
            enc += enc_config
    except (_der.DerError, UnicodeDecodeError, IndexError) as exc:
        raise ExtensionError(f"{what}: malformed DER ({exc})") from None
    if _der.tlv(0x30, enc) != data:
        raise ExtensionError(f"{what}: not canonical DER")
    return Provenance(model_type, model, prompt, config)


def decode_authorization(data: bytes) -> tuple[str, ...]:
    """Strictly decode ``AgentAuthorization``: its scopes (sorted, unique, 1..64)."""
    what = "AgentAuthorization"
    try:
        items = _der.children(_der.read_one(data, 0x30))
        _no_version(items, what)
        if len(items) != 1 or items[0][0] != 0x30:
            raise ExtensionError(f"{what}: unexpected fields")
        scopes = []
        for tag, raw in _der.children(items[0][1]):
            if tag != 0x0C:
                raise ExtensionError(f"{what}: a scope is not a UTF8String")
            scope = raw.decode("utf-8")
            if not 1 <= len(scope) <= 64 or not _SCOPE_RE.fullmatch(scope):
                raise ExtensionError(f"{what}: invalid scope {scope[:64]!r}")
            scopes.append(scope)
    except (_der.DerError, UnicodeDecodeError) as exc:
        raise ExtensionError(f"{what}: malformed DER ({exc})") from None
    if not 1 <= len(scopes) <= 64:
        raise ExtensionError(f"{what}: 1..64 scopes required")
    if scopes != sorted(set(scopes)):
        raise ExtensionError(f"{what}: scopes must be sorted and unique")
    enc = _der.tlv(0x30, b"".join(_der.tlv(0x0C, s.encode()) for s in scopes))
    if _der.tlv(0x30, enc) != data:
        raise ExtensionError(f"{what}: not canonical DER")
    return tuple(scopes)


def decode_accountability(data: bytes) -> tuple[str, str, str | None]:
    """Strictly decode ``AgentAccountability``: officer, environment, organization."""
    what = "AgentAccountability"
    try:
        items = _der.children(_der.read_one(data, 0x30))
        _no_version(items, what)
        if len(items) not in (2, 3) or items[0][0] != 0x16 or items[1][0] != 0x0C:
            raise ExtensionError(f"{what}: unexpected fields")
        officer = items[0][1].decode("ascii")
        local, sep, domain = officer.rpartition("@")
        if (
            not 3 <= len(officer) <= 254
            or not sep
            or len(local) > 64
            or not _LOCAL_RE.fullmatch(local)
            or not _DOMAIN_RE.fullmatch(domain)
        ):
            raise ExtensionError(f"{what}: officer of record is not an e-mail address")
        environment = _printable(items[1][1], f"{what}.environment", 64)
        organization = None
        if len(items) == 3:
            if items[2][0] != 0x80:
                raise ExtensionError(f"{what}: unexpected field after environment")
            organization = _printable(items[2][1], f"{what}.organization", 128)
    except (_der.DerError, UnicodeDecodeError) as exc:
        raise ExtensionError(f"{what}: malformed DER ({exc})") from None
    enc = _der.tlv(0x16, officer.encode()) + _der.tlv(0x0C, environment.encode())
    if organization is not None:
        enc += _der.tlv(0x80, organization.encode())
    if _der.tlv(0x30, enc) != data:
        raise ExtensionError(f"{what}: not canonical DER")
    return officer, environment, organization


def _value(cert: x509.Certificate, oid: x509.ObjectIdentifier, what: str) -> bytes:
    try:
        ext = cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        raise ExtensionError(f"the certificate has no {what} extension") from None
    except ValueError as exc:
        raise ExtensionError(f"certificate extensions are malformed: {exc}") from None
    if not isinstance(ext.value, x509.UnrecognizedExtension):
        raise ExtensionError(f"{what}: unexpected extension value")
    return ext.value.value


def read_agent_extensions(cert: x509.Certificate) -> AgentExtensions:
    """The three mandatory agent extensions of ``cert``; :class:`ExtensionError` if bad."""
    provenance = decode_provenance(_value(cert, PROVENANCE_OID, "AgentProvenance"))
    scopes = decode_authorization(_value(cert, AUTHORIZATION_OID, "AgentAuthorization"))
    officer, environment, org = decode_accountability(
        _value(cert, ACCOUNTABILITY_OID, "AgentAccountability")
    )
    return AgentExtensions(provenance, frozenset(scopes), scopes, officer, environment, org)
