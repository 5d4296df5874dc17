"""The agent certificate extensions: one value type per extension and strict DER codecs.

ASN.1 (module ``AgentCA-Extensions-2026``, published in ``docs/oids.md``)::

    DigestInfo ::= SEQUENCE { algorithm AlgorithmIdentifier, digest OCTET STRING }
    AgentProvenance ::= SEQUENCE { version INTEGER { v1(0), v2(1) } DEFAULT v1,
      modelType UTF8String (SIZE(1..128)), modelDigest DigestInfo, systemPromptDigest DigestInfo,
      configDigest [0] IMPLICIT DigestInfo OPTIONAL,
      modelDigestScheme [1] IMPLICIT INTEGER { agentcaManifest(0), omsFiles(1) } OPTIONAL }
      -- v1: scheme absent (agentcaManifest); v2: scheme present and not agentcaManifest
    AgentAuthorization ::= SEQUENCE { version INTEGER DEFAULT 0,
      scopes SEQUENCE SIZE (1..64) OF UTF8String }
    AgentAccountability ::= SEQUENCE { version INTEGER DEFAULT 0, officerOfRecord IA5String,
      environment UTF8String, organization [0] IMPLICIT UTF8String OPTIONAL }
    AgentAttestation ::= SEQUENCE { version INTEGER { v1(0) } DEFAULT v1,
      method UTF8String (SIZE(1..64)), attestor UTF8String (SIZE(1..128)),
      keyId UTF8String (SIZE(1..128)), attestedAt GeneralizedTime,
      statementDigest DigestInfo }
      -- optional sibling (id-agentca-attestation, arc .1.4): absent = self-declared provenance

A value is accepted only if it has exactly this shape (:mod:`wire.der`), passes the string rules
(scope grammar, officer e-mail, printable labels, digest lengths) and re-encodes to the same
bytes: BER, trailing bytes, an encoded DEFAULT version, digest parameters, unsorted or
duplicate scopes are all refused with :class:`ExtensionError`. The CA, the gateway and the
agent SDK all decode with these functions.
"""

from __future__ import annotations

import calendar
import enum
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from cryptography import x509

from wire import der, oids

_SCOPE_RE: Final = re.compile(r"[a-z][a-z0-9_]*(?:[.:][a-z0-9_]+)*")
_LOCAL_RE: Final = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
)
_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN_RE: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")
_DIGEST_ALG_DER: Final = {
    name: der.seq(der.encode_oid(dotted)) for name, (dotted, _) in oids.DIGEST_ALGORITHMS.items()
}

#: Arcs whose ``.1.N`` extensions are standard ones: PKIX id-pe (AIA, qcStatements...) and
#: Netscape's (cert type, base URL).
_NOT_ARCS: Final = frozenset({"1.3.6.1.5.5.7", "2.16.840.1.113730"})
#: The agent extensions' OIDs under an arc: ``.1.1``, ``.1.2``, ``.1.3``.
_AGENT_TAILS: Final = frozenset({".1.1", ".1.2", ".1.3", ".1.4"})

PROVENANCE_NAME: Final = "AgentProvenance"
AUTHORIZATION_NAME: Final = "AgentAuthorization"
ACCOUNTABILITY_NAME: Final = "AgentAccountability"
ATTESTATION_NAME: Final = "AgentAttestation"
_GENERALIZED_TIME: Final = re.compile(rb"[0-9]{14}Z")


class ExtensionError(ValueError):
    """A missing or malformed agent extension (the message starts with what was decoded)."""


class DigestValueError(ExtensionError):
    """A digest of an unsupported algorithm or of the wrong length."""


@dataclass(frozen=True)
class Digest:
    """A digest value and its algorithm (``sha256``, ``sha384`` or ``sha512``)."""

    value: bytes
    algorithm: str = "sha256"

    def __post_init__(self) -> None:
        if self.algorithm not in oids.DIGEST_ALGORITHMS:
            raise DigestValueError(
                f"unsupported digest algorithm {self.algorithm!r} "
                f"(supported: {', '.join(oids.DIGEST_ALGORITHMS)})"
            )
        if not isinstance(self.value, (bytes, bytearray)):
            raise DigestValueError("digest value must be bytes")
        object.__setattr__(self, "value", bytes(self.value))
        expected = oids.DIGEST_ALGORITHMS[self.algorithm][1]
        if len(self.value) != expected:
            raise DigestValueError(
                f"{self.algorithm} digest must be {expected} bytes, got {len(self.value)}"
            )

    @property
    def hex(self) -> str:
        """The digest as lowercase hex."""
        return self.value.hex()

    def to_json(self) -> str:
        """Lowercase hex (the algorithm follows from the length)."""
        return self.value.hex()

    def content(self) -> bytes:
        """The content octets of the ``DigestInfo`` (for the IMPLICIT-tagged form)."""
        return _DIGEST_ALG_DER[self.algorithm] + der.octet_string(self.value)

    def to_der(self) -> bytes:
        """DER of the ``DigestInfo``."""
        return der.tlv(0x30, self.content())


class ModelDigestScheme(enum.IntEnum):
    """How the model digest was computed (``modelDigestScheme``; docs/oids.md "Model digest").

    ``AGENTCA_MANIFEST``: SHA-256 of agentca's weights manifest (:mod:`wire.digests`), the only
    scheme of ``AgentProvenance`` v1. ``OMS``: the OpenSSF Model Signing v1.0 root digest
    (:mod:`wire.oms`), carried by ``AgentProvenance`` v2.
    """

    AGENTCA_MANIFEST = 0
    OMS = 1

    @property
    def label(self) -> str:
        """The scheme's name in JSON, the CLI and the inventory."""
        return _SCHEME_LABELS[self]

    @classmethod
    def parse(cls, value: object) -> ModelDigestScheme:
        """A scheme from its label (or the enum itself); :class:`ExtensionError` otherwise."""
        if isinstance(value, ModelDigestScheme):
            return value
        for scheme, label in _SCHEME_LABELS.items():
            if value == label:
                return scheme
        raise ExtensionError(
            f"unknown model digest scheme {str(value)[:40]!r} "
            f"(known: {', '.join(_SCHEME_LABELS.values())})"
        )


_SCHEME_LABELS: Final = {
    ModelDigestScheme.AGENTCA_MANIFEST: "agentca-manifest-v1",
    ModelDigestScheme.OMS: "oms-v1",
}
_V2: Final = 1


@dataclass(frozen=True)
class Provenance:
    """Model type and the digests of model, system prompt and (optional) config.

    ``model_digest_scheme`` says what the model digest is a digest *of*: agentca's manifest
    (v1 encoding, every certificate before decision 0049) or the OMS root digest (v2).

    The one provenance value type: the gateway decodes into it, the CA's
    ``ca.extensions.Provenance`` is this type with the CA's validation errors and JSON form,
    and the agent SDK's ``agent.Provenance`` converts to and from it (``to_wire``).
    """

    model_type: str
    model_digest: Digest
    prompt_digest: Digest
    config_digest: Digest | None = None
    model_digest_scheme: ModelDigestScheme = ModelDigestScheme.AGENTCA_MANIFEST

    def __post_init__(self) -> None:
        self._check_scheme()

    def _check_scheme(self) -> None:
        try:
            scheme = ModelDigestScheme(self.model_digest_scheme)
        except ValueError:
            raise ExtensionError(
                f"unsupported model digest scheme {self.model_digest_scheme!r}"
            ) from None
        object.__setattr__(self, "model_digest_scheme", scheme)
        if scheme is ModelDigestScheme.OMS and self.model_digest.algorithm != "sha256":
            raise DigestValueError("an OMS model digest is a sha256 digest")

    def to_der(self) -> bytes:
        """DER of the ``AgentProvenance`` (the certificate extension and the CSR attribute):
        v1 for the agentca-manifest scheme, v2 (with ``modelDigestScheme``) otherwise."""
        scheme = self.model_digest_scheme
        body = b"" if scheme is ModelDigestScheme.AGENTCA_MANIFEST else der.integer(_V2)
        body += der.utf8_string(self.model_type) + self.model_digest.to_der()
        body += self.prompt_digest.to_der()
        if self.config_digest is not None:
            body += der.tlv(0xA0, self.config_digest.content())  # [0] IMPLICIT DigestInfo
        if scheme is not ModelDigestScheme.AGENTCA_MANIFEST:
            body += der.tlv(0x81, der.integer(int(scheme))[2:])  # [1] IMPLICIT INTEGER
        return der.tlv(0x30, body)

    @classmethod
    def from_der(cls, data: bytes) -> Provenance:
        """Strictly decode an ``AgentProvenance``."""
        return decode_provenance(data)


@dataclass(frozen=True)
class Attestation:
    """The certificate's provenance was attested (``AgentAttestation``, decision 0051).

    ``method``: how (``orchestrator-jws-v1``: a JWS from the orchestrator that launched the
    agent; ``sev-snp-v1``: an AMD SEV-SNP attestation report); ``attestor`` and ``key_id``:
    which configured attestor and key signed it (for SEV-SNP, the ``[[sev_snp]]`` entry's
    attestor and id); ``attested_at``: the statement's ``iat`` (Unix seconds, UTC);
    ``statement_digest``: the SHA-256 of the statement's signed payload (for a JWS, the decoded
    claims; for SEV-SNP, the report's signed bytes 0x000-0x29F), so the evidence can be
    matched later and a statement is not used twice for one lineage.
    """

    method: str
    attestor: str
    key_id: str
    attested_at: int
    statement_digest: Digest

    def __post_init__(self) -> None:
        for what, text, limit in (
            ("method", self.method, 64),
            ("attestor", self.attestor, 128),
            ("keyId", self.key_id, 128),
        ):
            if not isinstance(text, str):
                raise ExtensionError(f"{ATTESTATION_NAME}.{what} must be a string")
            printable(text.encode("utf-8"), f"{ATTESTATION_NAME}.{what}", limit)
        at = self.attested_at
        if isinstance(at, bool) or not isinstance(at, int) or not 0 <= at < 253402300800:
            raise ExtensionError(f"{ATTESTATION_NAME}.attestedAt must be a time before 10000")
        sd = self.statement_digest
        if not isinstance(sd, Digest):
            raise ExtensionError(f"{ATTESTATION_NAME}.statementDigest must be a Digest")
        # one value type whichever Digest subclass was given (the CA's), so values compare
        object.__setattr__(self, "statement_digest", Digest(sd.value, sd.algorithm))

    def to_der(self) -> bytes:
        """DER of the ``AgentAttestation``."""
        when = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(self.attested_at)).encode()
        return der.seq(
            der.utf8_string(self.method),
            der.utf8_string(self.attestor),
            der.utf8_string(self.key_id),
            der.tlv(0x18, when),
            self.statement_digest.to_der(),
        )

    @classmethod
    def from_der(cls, data: bytes) -> Attestation:
        """Strictly decode an ``AgentAttestation``."""
        return decode_attestation(data)


@dataclass(frozen=True)
class AgentExtensions:
    """The decoded agent extensions of one certificate."""

    provenance: Provenance
    scopes: frozenset[str]
    scope_list: tuple[str, ...]
    officer: str
    environment: str
    organization: str | None
    #: the arc the certificate carries its agent extensions under
    arc: oids.OidArc = oids.DEFAULT_ARC
    #: who attested the provenance; None: self-declared (no ``AgentAttestation``)
    attestation: Attestation | None = None


# ------------------------------------------------------------------------------------ helpers


def printable(raw: bytes, what: str, limit: int) -> str:
    """UTF-8 ``raw`` as 1..``limit`` printable characters without outer spaces."""
    text = raw.decode("utf-8")
    if not 1 <= len(text) <= limit or not text.isprintable() or text != text.strip():
        raise ExtensionError(f"{what} must be 1..{limit} printable characters, no outer spaces")
    return text


def valid_scope(scope: str) -> bool:
    """True when ``scope`` follows the scope grammar (1..64 characters)."""
    return 1 <= len(scope) <= 64 and _SCOPE_RE.fullmatch(scope) is not None


def valid_officer(officer: str) -> bool:
    """True when ``officer`` is an e-mail address the accountability extension accepts."""
    local, sep, domain = officer.rpartition("@")
    return (
        3 <= len(officer) <= 254
        and bool(sep)
        and len(local) <= 64
        and _LOCAL_RE.fullmatch(local) is not None
        and _DOMAIN_RE.fullmatch(domain) is not None
    )


def _no_version(items: list[tuple[int, bytes]], what: str) -> None:
    if items and items[0][0] == 0x02:
        try:
            version = der.decode_integer(items[0][1])
        except der.DerError:
            raise ExtensionError(f"{what}: malformed DER (bad version)") from None
        if version == 0:
            raise ExtensionError(f"{what}: version 0 is the DEFAULT and must be omitted in DER")
        raise ExtensionError(f"{what}: unsupported version {version}")


def _digest(content: bytes, what: str) -> Digest:
    items = der.children(content)
    if len(items) != 2 or items[0][0] != 0x30 or items[1][0] != 0x04:
        raise ExtensionError(f"{what}: malformed DER (not a DigestInfo)")
    alg = der.children(items[0][1])
    if not alg or alg[0][0] != 0x06:
        raise ExtensionError(f"{what}: malformed DER (not an AlgorithmIdentifier)")
    if len(alg) != 1:
        raise ExtensionError(f"{what}: digest AlgorithmIdentifier parameters must be absent")
    dotted = der.decode_oid(alg[0][1])
    if dotted not in oids.DIGEST_BY_OID:
        raise ExtensionError(f"{what}: unsupported digest algorithm {dotted}")
    name, size = oids.DIGEST_BY_OID[dotted]
    if len(items[1][1]) != size:
        raise ExtensionError(f"{what}: {name} digest must be {size} bytes, got {len(items[1][1])}")
    return Digest(items[1][1], name)


def _canonical(what: str, data: bytes, reencoded: bytes) -> None:
    if reencoded != data:
        raise ExtensionError(f"{what}: not canonical DER (re-encoding is not byte-identical)")


def _as_bytes(data: object, what: str) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ExtensionError(f"{what}: DER input must be bytes")
    return bytes(data)


# ------------------------------------------------------------------------------------- codecs


def decode_digest_info(data: bytes) -> Digest:
    """Strictly decode a ``DigestInfo``."""
    what = "DigestInfo"
    raw = _as_bytes(data, what)
    try:
        value = _digest(der.read_one(raw, 0x30), what)
    except der.DerError as exc:
        raise ExtensionError(f"{what}: malformed DER ({exc})") from None
    _canonical(what, raw, value.to_der())
    return value


def decode_provenance(data: bytes) -> Provenance:
    """Strictly decode ``AgentProvenance``."""
    what = PROVENANCE_NAME
    raw = _as_bytes(data, what)
    try:
        items = der.children(der.read_one(raw, 0x30))
        scheme = ModelDigestScheme.AGENTCA_MANIFEST
        v2 = bool(items) and items[0][0] == 0x02 and items[0][1] == bytes([_V2])
        if v2:
            items = items[1:]
            if not items or items[-1][0] != 0x81:
                raise ExtensionError(f"{what}: v2 requires the modelDigestScheme field")
            number = der.decode_integer(items[-1][1])
            if number not in ModelDigestScheme.__members__.values():
                raise ExtensionError(f"{what}: unsupported model digest scheme {number}")
            scheme = ModelDigestScheme(number)
            items = items[:-1]
        else:
            _no_version(items, what)
        if len(items) < 3 or items[0][0] != 0x0C or items[1][0] != 0x30 or items[2][0] != 0x30:
            raise ExtensionError(f"{what}: malformed DER (missing or mis-typed fields)")
        if len(items) > 4 or (len(items) == 4 and items[3][0] != 0xA0):
            raise ExtensionError(f"{what}: unexpected or mis-tagged field after the last field")
        model_type = printable(items[0][1], f"{what}.modelType: model type", 128)
        model = _digest(items[1][1], f"{what}.modelDigest")
        prompt = _digest(items[2][1], f"{what}.systemPromptDigest")
        config = _digest(items[3][1], f"{what}.configDigest") if len(items) == 4 else None
    except (der.DerError, UnicodeDecodeError) as exc:
        raise ExtensionError(f"{what}: malformed DER ({exc})") from None
    value = Provenance(model_type, model, prompt, config, scheme)
    _canonical(what, raw, value.to_der())
    return value


def decode_attestation(data: bytes) -> Attestation:
    """Strictly decode ``AgentAttestation``."""
    what = ATTESTATION_NAME
    raw = _as_bytes(data, what)
    try:
        items = der.children(der.read_one(raw, 0x30))
        _no_version(items, what)
        tags = [tag for tag, _ in items]
        if tags != [0x0C, 0x0C, 0x0C, 0x18, 0x30]:
            raise ExtensionError(f"{what}: malformed DER (missing or mis-typed fields)")
        method = printable(items[0][1], f"{what}.method", 64)
        attestor = printable(items[1][1], f"{what}.attestor", 128)
        key_id = printable(items[2][1], f"{what}.keyId", 128)
        when = items[3][1]
        if not _GENERALIZED_TIME.fullmatch(when):
            raise ExtensionError(f"{what}.attestedAt: not a DER GeneralizedTime (YYYYMMDDHHMMSSZ)")
        try:
            at = calendar.timegm(time.strptime(when.decode(), "%Y%m%d%H%M%SZ"))
        except ValueError:
            raise ExtensionError(f"{what}.attestedAt: not a valid time") from None
        digest = _digest(items[4][1], f"{what}.statementDigest")
    except (der.DerError, UnicodeDecodeError) as exc:
        raise ExtensionError(f"{what}: malformed DER ({exc})") from None
    value = Attestation(method, attestor, key_id, at, digest)
    _canonical(what, raw, value.to_der())
    return value


def encode_authorization(scopes: tuple[str, ...] | list[str]) -> bytes:
    """DER of ``AgentAuthorization`` listing ``scopes`` in the given order."""
    return der.seq(der.seq(*(der.utf8_string(s) for s in scopes)))


def decode_authorization(data: bytes) -> tuple[str, ...]:
    """Strictly decode ``AgentAuthorization``: its scopes (sorted, unique, 1..64)."""
    what = AUTHORIZATION_NAME
    raw = _as_bytes(data, what)
    try:
        items = der.children(der.read_one(raw, 0x30))
        _no_version(items, what)
        if len(items) != 1 or items[0][0] != 0x30:
            raise ExtensionError(f"{what}: malformed DER (expected one SEQUENCE OF scopes)")
        scopes = []
        for tag, body in der.children(items[0][1]):
            if tag != 0x0C:
                raise ExtensionError(f"{what}: malformed DER (a scope is not a UTF8String)")
            scope = body.decode("utf-8")
            if not valid_scope(scope):
                raise ExtensionError(f"{what}: scope {scope[:64]!r} does not match the grammar")
            scopes.append(scope)
    except (der.DerError, UnicodeDecodeError) as exc:
        raise ExtensionError(f"{what}: malformed DER ({exc})") from None
    if not scopes:
        raise ExtensionError(f"{what}: at least one scope is required")
    if len(scopes) > 64:
        raise ExtensionError(f"{what}: at most 64 scopes")
    if scopes != sorted(set(scopes)):
        raise ExtensionError(f"{what}: scopes must be sorted and unique")
    _canonical(what, raw, encode_authorization(scopes))
    return tuple(scopes)


def encode_accountability(officer: str, environment: str, organization: str | None) -> bytes:
    """DER of ``AgentAccountability``."""
    body = der.tlv(0x16, officer.encode("ascii")) + der.utf8_string(environment)
    if organization is not None:
        body += der.tlv(0x80, organization.encode("utf-8"))
    return der.tlv(0x30, body)


def decode_accountability(data: bytes) -> tuple[str, str, str | None]:
    """Strictly decode ``AgentAccountability``: officer, environment, organization."""
    what = ACCOUNTABILITY_NAME
    raw = _as_bytes(data, what)
    try:
        items = der.children(der.read_one(raw, 0x30))
        _no_version(items, what)
        if len(items) < 2 or items[0][0] != 0x16 or items[1][0] != 0x0C:
            raise ExtensionError(f"{what}: malformed DER (missing or mis-typed fields)")
        if len(items) > 3 or (len(items) == 3 and items[2][0] != 0x80):
            raise ExtensionError(f"{what}: malformed DER (unexpected field after environment)")
        officer = items[0][1].decode("ascii")
        if not valid_officer(officer):
            raise ExtensionError(f"{what}: officer of record is not an e-mail address")
        environment = printable(items[1][1], f"{what}.environment", 64)
        organization = None
        if len(items) == 3:
            organization = printable(items[2][1], f"{what}.organization", 128)
    except (der.DerError, UnicodeDecodeError) as exc:
        raise ExtensionError(f"{what}: malformed DER ({exc})") from None
    _canonical(what, raw, encode_accountability(officer, environment, organization))
    return officer, environment, organization


# ------------------------------------------------------------------------------- certificates


def extension_value(cert: x509.Certificate, oid: x509.ObjectIdentifier, what: str) -> bytes:
    """The raw value of the (non-standard) extension ``oid`` of ``cert``."""
    try:
        ext = cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        raise ExtensionError(
            f"{what}: the certificate has no {what} extension ({oid.dotted_string})"
        ) from None
    except (ValueError, x509.DuplicateExtension) as exc:  # unparsable or repeated extensions
        # DuplicateExtension is not a ValueError: it escaped the gateway, the CA and the SDK
        text = " ".join(str(exc).split())[:200]
        raise ExtensionError(f"certificate extensions are malformed: {text}") from None
    if not isinstance(ext.value, x509.UnrecognizedExtension):
        raise ExtensionError(f"{what}: unexpected extension value")
    return ext.value.value


def _present_oids(cert: x509.Certificate) -> set[str]:
    """The dotted OIDs of ``cert``'s extensions."""
    try:
        exts = list(cert.extensions)
    except (ValueError, x509.DuplicateExtension) as exc:
        text = " ".join(str(exc).split())[:200]
        raise ExtensionError(f"certificate extensions are malformed: {text}") from None
    return {e.oid.dotted_string for e in exts}


def found_arcs(cert: x509.Certificate) -> tuple[str, ...]:
    """Every arc under which ``cert`` carries an agent extension: ``P`` for each extension
    ``P.1.1`` (provenance), ``P.1.2`` or ``P.1.3`` outside the standard arcs, sorted. Used to
    name the arc of a refused certificate; acceptance is decided by :func:`agent_arc`."""
    return tuple(sorted(_arcs_in(_present_oids(cert))))


def _arcs_in(present: set[str]) -> set[str]:
    return {d[:-4] for d in present if d[-4:] in _AGENT_TAILS and d[:-4] not in _NOT_ARCS}


def agent_arc(
    cert: x509.Certificate, arcs: Iterable[oids.OidArc] = oids.DEFAULT_ACCEPTED_ARCS
) -> oids.OidArc:
    """The one accepted arc under which ``cert`` carries its agent extensions.

    :class:`ExtensionError` if it carries them under no accepted arc (naming the arcs found
    and the arcs accepted) or under two different arcs (accepted or not): a certificate
    speaks for one CA arc, never two.
    """
    accepted = oids.parse_arcs(arcs)
    found = _arcs_in(_present_oids(cert))
    used = [a for a in accepted if a.dotted in found]
    if len(found) > 1:
        raise ExtensionError(
            f"the certificate carries agent extensions under more than one OID arc "
            f"({', '.join(sorted(found))})"
        )
    if not used:
        seen = ", ".join(sorted(found)) or "none"
        raise ExtensionError(
            f"the certificate carries no agent extensions under an accepted OID arc "
            f"(found under: {seen}; accepted: {', '.join(a.dotted for a in accepted)})"
        )
    return used[0]


def read_agent_extensions(
    cert: x509.Certificate, arcs: Iterable[oids.OidArc] = oids.DEFAULT_ACCEPTED_ARCS
) -> AgentExtensions:
    """The three mandatory agent extensions of ``cert`` under one of ``arcs`` (default: the
    default arc and the legacy arc); :class:`ExtensionError` if bad (see :func:`agent_arc`).
    The result names the arc the certificate used."""
    arc = agent_arc(cert, arcs)
    provenance = decode_provenance(extension_value(cert, arc.provenance, PROVENANCE_NAME))
    scopes = decode_authorization(extension_value(cert, arc.authorization, AUTHORIZATION_NAME))
    officer, environment, org = decode_accountability(
        extension_value(cert, arc.accountability, ACCOUNTABILITY_NAME)
    )
    attestation = None
    if arc.attestation.dotted_string in _present_oids(cert):
        attestation = decode_attestation(extension_value(cert, arc.attestation, ATTESTATION_NAME))
    return AgentExtensions(
        provenance, frozenset(scopes), scopes, officer, environment, org, arc, attestation
    )
