"""The agent certificate extensions: values, strict DER codecs and x509 helpers.

ASN.1 (module ``AgentCA-Extensions-2026``, published in ``docs/oids.md``)::

    DigestInfo ::= SEQUENCE { algorithm AlgorithmIdentifier, digest OCTET STRING }
    AgentProvenance ::= SEQUENCE { version INTEGER DEFAULT 0, modelType UTF8String (SIZE(1..128)),
      modelDigest DigestInfo, systemPromptDigest DigestInfo,
      configDigest [0] IMPLICIT DigestInfo OPTIONAL }
    AgentAuthorization ::= SEQUENCE { version INTEGER DEFAULT 0,
      scopes SEQUENCE SIZE (1..64) OF UTF8String }
    AgentAccountability ::= SEQUENCE { version INTEGER DEFAULT 0, officerOfRecord IA5String,
      environment UTF8String, organization [0] IMPLICIT UTF8String OPTIONAL }

The DER codecs are the shared strict ones of :mod:`wire.extensions` (the gateway decodes with
the same functions); this module adds the CA's validation rules, errors and JSON forms.
Decoding is strict: a value is accepted only if it decodes, validates, and re-encodes to exactly
the same bytes (so BER, trailing data, an encoded DEFAULT version, unsorted scopes, digest
parameters and the like are all refused with ``CAError(INVALID_EXTENSION, ...)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from ca.errors import CAError, ErrorCode
from ca.names import (
    normalise_scopes,
    validate_agent_name,
    validate_environment,
    validate_model_type,
    validate_officer,
    validate_organization,
)
from ca.oids import DEFAULT_ACCEPTED_ARCS, DEFAULT_ARC, OidArc
from wire import csr_attributes
from wire import extensions as wire_ext
from wire import oids as wire_oids

#: Supported digest algorithms: name -> (dotted OID, digest length in bytes).
DIGEST_ALGORITHMS: Final[dict[str, tuple[str, int]]] = wire_oids.DIGEST_ALGORITHMS
_ALG_BY_LEN: Final = {length: name for name, (_, length) in DIGEST_ALGORITHMS.items()}

#: The only version this code writes and reads (encoded by omission, DER DEFAULT).
VERSION: Final = 0

AgentPrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

T = TypeVar("T")


# --- decoding helpers -----------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__


def _strict_decode(what: str, data: object, decode: Callable[[bytes], T]) -> T:
    """Run ``decode`` on ``data``; every failure becomes ``CAError(INVALID_EXTENSION)``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CAError(ErrorCode.INVALID_EXTENSION, f"{what}: DER input must be bytes")
    raw = bytes(data)
    try:
        return decode(raw)
    except CAError as exc:
        detail = exc.detail if exc.detail.startswith(what) else f"{what}: {exc.detail}"
        raise CAError(ErrorCode.INVALID_EXTENSION, detail) from None
    except wire_ext.ExtensionError as exc:
        detail = _one_line(exc)
        detail = detail if detail.startswith(what) else f"{what}: {detail}"
        raise CAError(ErrorCode.INVALID_EXTENSION, detail) from None
    except Exception as exc:  # pragma: no cover - defensive
        raise CAError(
            ErrorCode.INVALID_EXTENSION, f"{what}: malformed DER ({_one_line(exc)})"
        ) from None


def _bad(what: str, detail: str) -> CAError:
    return CAError(ErrorCode.INVALID_EXTENSION, f"{what}: {detail}")


# --- values ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Digest(wire_ext.Digest):
    """A :class:`wire.extensions.Digest` whose invalid values raise ``CAError(INVALID_DIGEST)``."""

    def __post_init__(self) -> None:
        try:
            super().__post_init__()
        except wire_ext.DigestValueError as exc:
            raise CAError(ErrorCode.INVALID_DIGEST, str(exc)) from None

    @classmethod
    def sha256_hex(cls, text: str) -> Digest:
        """A SHA-256 digest from 64 hex digits (optionally ``sha256:``-prefixed)."""
        from ca.names import parse_sha256_hex

        return cls(parse_sha256_hex(text))

    @classmethod
    def parse(cls, text: object) -> Digest:
        """A digest from ``<hex>`` (algorithm by length) or ``<algorithm>:<hex>``."""
        if not isinstance(text, str):
            raise CAError(ErrorCode.INVALID_DIGEST, "digest must be a hex string")
        alg, sep, hex_part = text.partition(":")
        if not sep:
            alg, hex_part = "", text
        try:
            value = bytes.fromhex(hex_part)
        except ValueError:
            raise CAError(ErrorCode.INVALID_DIGEST, f"digest is not hex: {text[:80]!r}") from None
        if len(hex_part) != 2 * len(value):
            raise CAError(ErrorCode.INVALID_DIGEST, f"digest is not hex: {text[:80]!r}")
        if not alg:
            if len(value) not in _ALG_BY_LEN:
                raise CAError(
                    ErrorCode.INVALID_DIGEST,
                    f"digest of {len(value)} bytes matches no supported algorithm",
                )
            alg = _ALG_BY_LEN[len(value)]
        return cls(value, alg.lower())

    @classmethod
    def from_der(cls, data: bytes) -> Digest:
        """Strictly decode a ``DigestInfo``."""

        def decode(raw: bytes) -> Digest:
            value = wire_ext.decode_digest_info(raw)
            return cls(value.value, value.algorithm)

        return _strict_decode("DigestInfo", data, decode)


@dataclass(frozen=True)
class Provenance(wire_ext.Provenance):
    """Where the agent comes from: the :class:`wire.extensions.Provenance` value with the CA's
    validation (``ca.names``), errors and JSON form."""

    NAME: ClassVar[str] = "AgentProvenance"

    def __post_init__(self) -> None:
        validate_model_type(self.model_type)
        for field in ("model_digest", "prompt_digest", "config_digest"):
            value = getattr(self, field)
            if value is None and field == "config_digest":
                continue
            if not isinstance(value, wire_ext.Digest):
                raise CAError(ErrorCode.INVALID_DIGEST, f"{field} must be a Digest")
        try:
            self._check_scheme()
        except wire_ext.ExtensionError as exc:
            raise CAError(ErrorCode.INVALID_DIGEST, str(exc)) from None

    @classmethod
    def from_wire(cls, value: wire_ext.Provenance) -> Provenance:
        """The CA form of a decoded wire value (validated by the CA's name rules)."""
        config = value.config_digest
        return cls(
            value.model_type,
            Digest(value.model_digest.value, value.model_digest.algorithm),
            Digest(value.prompt_digest.value, value.prompt_digest.algorithm),
            None if config is None else Digest(config.value, config.algorithm),
            value.model_digest_scheme,
        )

    @classmethod
    def from_der(cls, data: bytes) -> Provenance:
        """Strictly decode an ``AgentProvenance``."""
        return _strict_decode(
            cls.NAME, data, lambda raw: cls.from_wire(wire_ext.decode_provenance(raw))
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form; digests as lowercase hex."""
        return {
            "model_type": self.model_type,
            "model_digest": self.model_digest.to_json(),
            "prompt_digest": self.prompt_digest.to_json(),
            "config_digest": None if self.config_digest is None else self.config_digest.to_json(),
        } | self._scheme_json()

    def _scheme_json(self) -> dict[str, str]:
        """``model_digest_scheme``, given only when it is not the v1 (manifest) scheme."""
        scheme = self.model_digest_scheme
        if scheme is wire_ext.ModelDigestScheme.AGENTCA_MANIFEST:
            return {}
        return {"model_digest_scheme": scheme.label}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Provenance:
        """Inverse of :meth:`to_dict`; digests as ``<hex>`` or ``<algorithm>:<hex>``."""
        _require_keys(data, cls.NAME, ("model_type", "model_digest", "prompt_digest"))
        config = data.get("config_digest")
        return cls(
            model_type=data["model_type"],
            model_digest=Digest.parse(data["model_digest"]),
            prompt_digest=Digest.parse(data["prompt_digest"]),
            config_digest=None if config is None else Digest.parse(config),
            model_digest_scheme=_parse_scheme(data.get("model_digest_scheme")),
        )


def _parse_scheme(value: object) -> wire_ext.ModelDigestScheme:
    if value is None:
        return wire_ext.ModelDigestScheme.AGENTCA_MANIFEST
    try:
        return wire_ext.ModelDigestScheme.parse(value)
    except wire_ext.ExtensionError as exc:
        raise CAError(ErrorCode.INVALID_DIGEST, str(exc)) from None


@dataclass(frozen=True)
class Authorization:
    """The scopes the agent is authorised for, normalised (validated, deduplicated, sorted)."""

    scopes: tuple[str, ...]

    NAME: ClassVar[str] = "AgentAuthorization"

    def __post_init__(self) -> None:
        object.__setattr__(self, "scopes", normalise_scopes(self.scopes))

    def to_der(self) -> bytes:
        """DER of the ``AgentAuthorization``."""
        return wire_ext.encode_authorization(self.scopes)

    @classmethod
    def from_der(cls, data: bytes) -> Authorization:
        """Strictly decode an ``AgentAuthorization`` (scopes must be sorted and unique)."""
        return _strict_decode(cls.NAME, data, lambda raw: cls(wire_ext.decode_authorization(raw)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"scopes": list(self.scopes)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Authorization:
        """Inverse of :meth:`to_dict`."""
        _require_keys(data, cls.NAME, ("scopes",))
        return cls(tuple(_as_list(data["scopes"], f"{cls.NAME}.scopes")))


@dataclass(frozen=True)
class Accountability:
    """Who answers for the agent: officer of record (e-mail), environment, organisation."""

    officer: str
    environment: str
    organization: str | None = None

    NAME: ClassVar[str] = "AgentAccountability"

    def __post_init__(self) -> None:
        validate_officer(self.officer)
        validate_environment(self.environment)
        if self.organization is not None:
            validate_organization(self.organization)

    def to_der(self) -> bytes:
        """DER of the ``AgentAccountability``."""
        return wire_ext.encode_accountability(self.officer, self.environment, self.organization)

    @classmethod
    def from_der(cls, data: bytes) -> Accountability:
        """Strictly decode an ``AgentAccountability``."""
        return _strict_decode(cls.NAME, data, lambda raw: cls(*wire_ext.decode_accountability(raw)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "officer": self.officer,
            "environment": self.environment,
            "organization": self.organization,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Accountability:
        """Inverse of :meth:`to_dict`."""
        _require_keys(data, cls.NAME, ("officer", "environment"))
        return cls(data["officer"], data["environment"], data.get("organization"))


#: The optional ``AgentAttestation`` (decision 0051): the shared wire value type.
Attestation = wire_ext.Attestation


def attestation_to_dict(a: Attestation) -> dict[str, Any]:
    """JSON form of an ``AgentAttestation``."""
    return {
        "method": a.method,
        "attestor": a.attestor,
        "key_id": a.key_id,
        "attested_at": a.attested_at,
        "statement_sha256": a.statement_digest.hex,
    }


def attestation_from_dict(data: Mapping[str, Any]) -> Attestation:
    """Inverse of :func:`attestation_to_dict`."""
    what = wire_ext.ATTESTATION_NAME
    _require_keys(data, what, ("method", "attestor", "key_id", "attested_at", "statement_sha256"))
    try:
        return Attestation(
            data["method"],
            data["attestor"],
            data["key_id"],
            data["attested_at"],
            Digest.sha256_hex(data["statement_sha256"]),
        )
    except wire_ext.ExtensionError as exc:
        raise _bad(what, str(exc)) from None


@dataclass(frozen=True)
class AgentExtensions:
    """The three agent extensions of one certificate, and the optional attestation marker."""

    provenance: Provenance
    authorization: Authorization
    accountability: Accountability
    attestation: Attestation | None = None

    def __post_init__(self) -> None:
        for field, kind in (
            ("provenance", Provenance),
            ("authorization", Authorization),
            ("accountability", Accountability),
        ):
            if not isinstance(getattr(self, field), kind):
                raise CAError(ErrorCode.INVALID_EXTENSION, f"{field} must be a {kind.__name__}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (``attestation`` only when the provenance was attested)."""
        body: dict[str, Any] = {
            "provenance": self.provenance.to_dict(),
            "authorization": self.authorization.to_dict(),
            "accountability": self.accountability.to_dict(),
        }
        if self.attestation is not None:
            body["attestation"] = attestation_to_dict(self.attestation)
        return body

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgentExtensions:
        """Inverse of :meth:`to_dict`."""
        _require_keys(data, "agent extensions", ("provenance", "authorization", "accountability"))
        return cls(
            Provenance.from_dict(_as_mapping(data["provenance"], Provenance.NAME)),
            Authorization.from_dict(_as_mapping(data["authorization"], Authorization.NAME)),
            Accountability.from_dict(_as_mapping(data["accountability"], Accountability.NAME)),
            None
            if data.get("attestation") is None
            else attestation_from_dict(_as_mapping(data["attestation"], wire_ext.ATTESTATION_NAME)),
        )


def _require_keys(data: object, what: str, keys_: Iterable[str]) -> None:
    if not isinstance(data, Mapping):
        raise CAError(ErrorCode.INVALID_EXTENSION, f"{what}: expected a JSON object")
    missing = [k for k in keys_ if data.get(k) is None]
    if missing:
        raise CAError(ErrorCode.INVALID_EXTENSION, f"{what}: missing {', '.join(missing)}")


def _as_mapping(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise CAError(ErrorCode.INVALID_EXTENSION, f"{what}: expected a JSON object")
    return value


def _as_list(value: object, what: str) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise CAError(ErrorCode.INVALID_SCOPE, f"{what}: expected a list of strings")
    return list(value)


# --- certificates ---------------------------------------------------------------------------


def agent_x509_extensions(
    ext: AgentExtensions, arc: OidArc
) -> list[tuple[x509.UnrecognizedExtension, bool]]:
    """``(extension value, critical)`` pairs for ``CertificateBuilder.add_extension``, under
    ``arc`` (the issuing CA's recorded arc).

    The agent extensions are non-critical (a critical unknown extension makes ``openssl
    verify`` fail); relying parties such as the gateway treat them as mandatory.
    """
    pairs = [
        (x509.UnrecognizedExtension(arc.provenance, ext.provenance.to_der()), False),
        (x509.UnrecognizedExtension(arc.authorization, ext.authorization.to_der()), False),
        (x509.UnrecognizedExtension(arc.accountability, ext.accountability.to_der()), False),
    ]
    if ext.attestation is not None:
        pairs.append((x509.UnrecognizedExtension(arc.attestation, ext.attestation.to_der()), False))
    return pairs


def _extension_der(cert: x509.Certificate, oid: x509.ObjectIdentifier, what: str) -> bytes:
    try:
        return wire_ext.extension_value(cert, oid, what)
    except wire_ext.ExtensionError as exc:
        raise CAError(ErrorCode.INVALID_EXTENSION, _one_line(exc)) from None


def certificate_arc(cert: x509.Certificate, arcs: Sequence[OidArc]) -> OidArc:
    """The one of ``arcs`` ``cert`` carries its agent extensions under (``INVALID_EXTENSION``
    if none, or if it carries them under two arcs)."""
    try:
        return wire_ext.agent_arc(cert, arcs)
    except wire_ext.ExtensionError as exc:
        raise CAError(ErrorCode.INVALID_EXTENSION, _one_line(exc)) from None


def read_agent_extensions(
    cert: x509.Certificate, arcs: Sequence[OidArc] = DEFAULT_ACCEPTED_ARCS
) -> AgentExtensions:
    """Decode the three agent extensions of ``cert`` under one of ``arcs`` (the CA passes
    the arcs it accepts); ``INVALID_EXTENSION`` if any is bad."""
    arc = certificate_arc(cert, arcs)
    attestation = None
    try:
        present = {e.oid for e in cert.extensions}
    except (ValueError, x509.DuplicateExtension) as exc:
        raise CAError(ErrorCode.INVALID_EXTENSION, _one_line(exc)) from None
    if arc.attestation in present:
        name = wire_ext.ATTESTATION_NAME
        attestation = _strict_decode(
            name, _extension_der(cert, arc.attestation, name), wire_ext.decode_attestation
        )
    return AgentExtensions(
        Provenance.from_der(_extension_der(cert, arc.provenance, Provenance.NAME)),
        Authorization.from_der(_extension_der(cert, arc.authorization, Authorization.NAME)),
        Accountability.from_der(_extension_der(cert, arc.accountability, Accountability.NAME)),
        attestation,
    )


# --- certificate signing requests -----------------------------------------------------------


def provenance_csr_attribute_value(p: Provenance) -> bytes:
    """The single value of the CSR attribute ``id-agentca-csr-provenance``: ``AgentProvenance``."""
    return p.to_der()


def _check_key(key: object) -> None:
    try:
        csr_attributes.signature_algorithm(key)
    except csr_attributes.UnsupportedKeyError as exc:
        raise CAError(ErrorCode.UNSUPPORTED_KEY, str(exc)) from None


def build_agent_csr(
    private_key: AgentPrivateKey,
    common_name: str,
    provenance: Provenance,
    organization: str | None = None,
    arc: OidArc = DEFAULT_ARC,
) -> x509.CertificateSigningRequest:
    """Build and sign a PKCS#10 CSR carrying ``provenance`` in ``arc``'s ``.4.1`` attribute.

    cryptography cannot emit an attribute whose value is a SEQUENCE, so the request is
    assembled by :func:`wire.csr_attributes.build_csr` and signed with ``private_key``
    (ECDSA P-256/SHA-256, P-384/SHA-384, RSA PKCS#1 v1.5/SHA-256, Ed25519).
    """
    validate_agent_name(common_name)
    _check_key(private_key)
    rdns = []
    if organization is not None:
        rdns.append(
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, validate_organization(organization))
        )
    rdns.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return csr_attributes.build_csr(
        private_key, x509.Name(rdns), provenance_csr_attribute_value(provenance), arc
    )


def read_csr_provenance(
    csr: x509.CertificateSigningRequest, arcs: Sequence[OidArc] = DEFAULT_ACCEPTED_ARCS
) -> Provenance | None:
    """The provenance claimed in ``csr``'s ``.4.1`` attribute under one of ``arcs`` (the CA
    passes the arcs it accepts), or ``None`` if absent.

    ``INVALID_EXTENSION`` if the attribute is repeated, has other than exactly one value, or
    the value is not a strict DER ``AgentProvenance``.
    """
    what = csr_attributes.ATTRIBUTE_NAME
    value = _strict_decode(
        what,
        csr.tbs_certrequest_bytes,
        lambda tbs: csr_attributes.read_provenance_attribute(tbs, arcs),
    )
    return None if value is None else Provenance.from_der(value)
