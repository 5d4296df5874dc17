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

Decoding is strict: a value is accepted only if it decodes, validates, and re-encodes to exactly
the same bytes (so BER, trailing data, an encoded DEFAULT version, unsorted scopes, digest
parameters and the like are all refused with ``CAError(INVALID_EXTENSION, ...)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeVar

from asn1crypto import algos, core, keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from ca import oids
from ca.errors import CAError, ErrorCode
from ca.names import (
    normalise_scopes,
    validate_agent_name,
    validate_environment,
    validate_model_type,
    validate_officer,
    validate_organization,
)

#: Supported digest algorithms: name -> (dotted OID, digest length in bytes).
DIGEST_ALGORITHMS: Final[dict[str, tuple[str, int]]] = {
    "sha256": ("2.16.840.1.101.3.4.2.1", 32),
    "sha384": ("2.16.840.1.101.3.4.2.2", 48),
    "sha512": ("2.16.840.1.101.3.4.2.3", 64),
}
_ALG_BY_OID: Final = {oid: name for name, (oid, _) in DIGEST_ALGORITHMS.items()}
_ALG_BY_LEN: Final = {length: name for name, (_, length) in DIGEST_ALGORITHMS.items()}

#: The only version this code writes and reads (encoded by omission, DER DEFAULT).
VERSION: Final = 0

AgentPrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

T = TypeVar("T")


# --- ASN.1 types (asn1crypto) ---------------------------------------------------------------


class _AlgorithmIdentifier(core.Sequence):  # type: ignore[misc]
    _fields = [("algorithm", core.ObjectIdentifier), ("parameters", core.Any, {"optional": True})]


class _DigestInfo(core.Sequence):  # type: ignore[misc]
    _fields = [("algorithm", _AlgorithmIdentifier), ("digest", core.OctetString)]


class _AgentProvenance(core.Sequence):  # type: ignore[misc]
    _fields = [
        ("version", core.Integer, {"default": 0}),
        ("model_type", core.UTF8String),
        ("model_digest", _DigestInfo),
        ("system_prompt_digest", _DigestInfo),
        ("config_digest", _DigestInfo, {"implicit": 0, "optional": True}),
    ]


class _Scopes(core.SequenceOf):  # type: ignore[misc]
    _child_spec = core.UTF8String


class _AgentAuthorization(core.Sequence):  # type: ignore[misc]
    _fields = [("version", core.Integer, {"default": 0}), ("scopes", _Scopes)]


class _AgentAccountability(core.Sequence):  # type: ignore[misc]
    _fields = [
        ("version", core.Integer, {"default": 0}),
        ("officer_of_record", core.IA5String),
        ("environment", core.UTF8String),
        ("organization", core.UTF8String, {"implicit": 0, "optional": True}),
    ]


class _AttributeValues(core.SetOf):  # type: ignore[misc]
    _child_spec = core.Any


class _Attribute(core.Sequence):  # type: ignore[misc]
    _fields = [("type", core.ObjectIdentifier), ("values", _AttributeValues)]


class _Attributes(core.SetOf):  # type: ignore[misc]
    _child_spec = _Attribute


class _CertificationRequestInfo(core.Sequence):  # type: ignore[misc]
    _fields = [
        ("version", core.Integer),
        ("subject", asn1_x509.Name),
        ("subject_pk_info", keys.PublicKeyInfo),
        ("attributes", _Attributes, {"implicit": 0}),
    ]


class _CertificationRequest(core.Sequence):  # type: ignore[misc]
    _fields = [
        ("certification_request_info", _CertificationRequestInfo),
        ("signature_algorithm", algos.SignedDigestAlgorithm),
        ("signature", core.OctetBitString),
    ]


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
    except Exception as exc:  # asn1crypto raises ValueError, TypeError, KeyError, ...
        raise CAError(
            ErrorCode.INVALID_EXTENSION, f"{what}: malformed DER ({_one_line(exc)})"
        ) from None


def _bad(what: str, detail: str) -> CAError:
    return CAError(ErrorCode.INVALID_EXTENSION, f"{what}: {detail}")


def _load(spec: type[core.Sequence], what: str, raw: bytes) -> core.Sequence:
    if not raw or raw[0] != 0x30:
        raise _bad(what, "not a DER SEQUENCE (wrong outer tag)")
    parsed = spec.load(raw, strict=True)  # strict: trailing bytes are an error
    if len(parsed) > len(spec._fields):  # asn1crypto keeps unknown trailing fields
        raise _bad(what, "unexpected or mis-tagged field after the last known field")
    return parsed


def _check_version(parsed: core.Sequence, what: str) -> None:
    contents = parsed.contents or b""
    if contents[:1] == b"\x02":  # an INTEGER first: the version is encoded explicitly
        version = parsed["version"].native
        if version == VERSION:
            raise _bad(what, "version 0 is the DEFAULT and must be omitted in DER")
        raise _bad(what, f"unsupported version {version}")


def _check_exact(what: str, raw: bytes, reencoded: bytes) -> None:
    if raw != reencoded:
        raise _bad(what, "not canonical DER (re-encoding is not byte-identical)")


# --- values ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Digest:
    """A digest value and its algorithm (``sha256``, ``sha384`` or ``sha512``)."""

    value: bytes
    algorithm: str = "sha256"

    def __post_init__(self) -> None:
        if self.algorithm not in DIGEST_ALGORITHMS:
            raise CAError(
                ErrorCode.INVALID_DIGEST,
                f"unsupported digest algorithm {self.algorithm!r} "
                f"(supported: {', '.join(DIGEST_ALGORITHMS)})",
            )
        if not isinstance(self.value, (bytes, bytearray)):
            raise CAError(ErrorCode.INVALID_DIGEST, "digest value must be bytes")
        object.__setattr__(self, "value", bytes(self.value))
        expected = DIGEST_ALGORITHMS[self.algorithm][1]
        if len(self.value) != expected:
            raise CAError(
                ErrorCode.INVALID_DIGEST,
                f"{self.algorithm} digest must be {expected} bytes, got {len(self.value)}",
            )

    @property
    def hex(self) -> str:
        """The digest as lowercase hex."""
        return self.value.hex()

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

    def _asn1(self) -> _DigestInfo:
        oid = DIGEST_ALGORITHMS[self.algorithm][0]
        return _DigestInfo({"algorithm": {"algorithm": oid}, "digest": self.value})

    def to_der(self) -> bytes:
        """DER of the ``DigestInfo``."""
        return bytes(self._asn1().dump())

    @classmethod
    def _from_asn1(cls, info: _DigestInfo, what: str) -> Digest:
        alg = info["algorithm"]
        if not isinstance(alg["parameters"], core.Void):
            raise _bad(what, "digest AlgorithmIdentifier parameters must be absent")
        dotted = alg["algorithm"].dotted
        if dotted not in _ALG_BY_OID:
            raise _bad(what, f"unsupported digest algorithm {dotted}")
        name = _ALG_BY_OID[dotted]
        value = info["digest"].native
        expected = DIGEST_ALGORITHMS[name][1]
        if len(value) != expected:
            raise _bad(what, f"{name} digest must be {expected} bytes, got {len(value)}")
        return cls(value, name)

    @classmethod
    def from_der(cls, data: bytes) -> Digest:
        """Strictly decode a ``DigestInfo``."""
        what = "DigestInfo"

        def decode(raw: bytes) -> Digest:
            parsed = _load(_DigestInfo, what, raw)
            digest = cls._from_asn1(parsed, what)
            _check_exact(what, raw, digest.to_der())
            return digest

        return _strict_decode(what, data, decode)

    def to_json(self) -> str:
        """Lowercase hex (the algorithm follows from the length)."""
        return self.hex


@dataclass(frozen=True)
class Provenance:
    """Where the agent comes from: model type and digests of model, system prompt, config."""

    model_type: str
    model_digest: Digest
    prompt_digest: Digest
    config_digest: Digest | None = None

    NAME: ClassVar[str] = "AgentProvenance"
    OID: ClassVar[x509.ObjectIdentifier] = oids.PROVENANCE

    def __post_init__(self) -> None:
        validate_model_type(self.model_type)
        for field in ("model_digest", "prompt_digest", "config_digest"):
            value = getattr(self, field)
            if value is None and field == "config_digest":
                continue
            if not isinstance(value, Digest):
                raise CAError(ErrorCode.INVALID_DIGEST, f"{field} must be a Digest")

    def to_der(self) -> bytes:
        """DER of the ``AgentProvenance``."""
        fields: dict[str, Any] = {
            "model_type": self.model_type,
            "model_digest": self.model_digest._asn1(),
            "system_prompt_digest": self.prompt_digest._asn1(),
        }
        if self.config_digest is not None:
            fields["config_digest"] = self.config_digest._asn1()
        return bytes(_AgentProvenance(fields).dump())

    @classmethod
    def from_der(cls, data: bytes) -> Provenance:
        """Strictly decode an ``AgentProvenance``."""
        what = cls.NAME

        def decode(raw: bytes) -> Provenance:
            parsed = _load(_AgentProvenance, what, raw)
            _check_version(parsed, what)
            config = parsed["config_digest"]
            value = cls(
                model_type=parsed["model_type"].native,
                model_digest=Digest._from_asn1(parsed["model_digest"], f"{what}.modelDigest"),
                prompt_digest=Digest._from_asn1(
                    parsed["system_prompt_digest"], f"{what}.systemPromptDigest"
                ),
                config_digest=None
                if isinstance(config, core.Void)
                else Digest._from_asn1(config, f"{what}.configDigest"),
            )
            _check_exact(what, raw, value.to_der())
            return value

        return _strict_decode(what, data, decode)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form; digests as lowercase hex."""
        return {
            "model_type": self.model_type,
            "model_digest": self.model_digest.to_json(),
            "prompt_digest": self.prompt_digest.to_json(),
            "config_digest": None if self.config_digest is None else self.config_digest.to_json(),
        }

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
        )


@dataclass(frozen=True)
class Authorization:
    """The scopes the agent is authorised for, normalised (validated, deduplicated, sorted)."""

    scopes: tuple[str, ...]

    NAME: ClassVar[str] = "AgentAuthorization"
    OID: ClassVar[x509.ObjectIdentifier] = oids.AUTHORIZATION

    def __post_init__(self) -> None:
        object.__setattr__(self, "scopes", normalise_scopes(self.scopes))

    def to_der(self) -> bytes:
        """DER of the ``AgentAuthorization``."""
        return bytes(_AgentAuthorization({"scopes": list(self.scopes)}).dump())

    @classmethod
    def from_der(cls, data: bytes) -> Authorization:
        """Strictly decode an ``AgentAuthorization`` (scopes must be sorted and unique)."""
        what = cls.NAME

        def decode(raw: bytes) -> Authorization:
            parsed = _load(_AgentAuthorization, what, raw)
            _check_version(parsed, what)
            scopes = [s.native for s in parsed["scopes"]]
            value = cls(tuple(scopes))
            if tuple(scopes) != value.scopes:
                raise _bad(what, "scopes must be sorted and unique")
            _check_exact(what, raw, value.to_der())
            return value

        return _strict_decode(what, data, decode)

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
    OID: ClassVar[x509.ObjectIdentifier] = oids.ACCOUNTABILITY

    def __post_init__(self) -> None:
        validate_officer(self.officer)
        validate_environment(self.environment)
        if self.organization is not None:
            validate_organization(self.organization)

    def to_der(self) -> bytes:
        """DER of the ``AgentAccountability``."""
        fields: dict[str, Any] = {
            "officer_of_record": self.officer,
            "environment": self.environment,
        }
        if self.organization is not None:
            fields["organization"] = self.organization
        return bytes(_AgentAccountability(fields).dump())

    @classmethod
    def from_der(cls, data: bytes) -> Accountability:
        """Strictly decode an ``AgentAccountability``."""
        what = cls.NAME

        def decode(raw: bytes) -> Accountability:
            parsed = _load(_AgentAccountability, what, raw)
            _check_version(parsed, what)
            org = parsed["organization"]
            value = cls(
                officer=parsed["officer_of_record"].native,
                environment=parsed["environment"].native,
                organization=None if isinstance(org, core.Void) else org.native,
            )
            _check_exact(what, raw, value.to_der())
            return value

        return _strict_decode(what, data, decode)

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


@dataclass(frozen=True)
class AgentExtensions:
    """The three agent extensions of one certificate."""

    provenance: Provenance
    authorization: Authorization
    accountability: Accountability

    def __post_init__(self) -> None:
        for field, kind in (
            ("provenance", Provenance),
            ("authorization", Authorization),
            ("accountability", Accountability),
        ):
            if not isinstance(getattr(self, field), kind):
                raise CAError(ErrorCode.INVALID_EXTENSION, f"{field} must be a {kind.__name__}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "provenance": self.provenance.to_dict(),
            "authorization": self.authorization.to_dict(),
            "accountability": self.accountability.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgentExtensions:
        """Inverse of :meth:`to_dict`."""
        _require_keys(data, "agent extensions", ("provenance", "authorization", "accountability"))
        return cls(
            Provenance.from_dict(_as_mapping(data["provenance"], Provenance.NAME)),
            Authorization.from_dict(_as_mapping(data["authorization"], Authorization.NAME)),
            Accountability.from_dict(_as_mapping(data["accountability"], Accountability.NAME)),
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
    ext: AgentExtensions,
) -> list[tuple[x509.UnrecognizedExtension, bool]]:
    """``(extension value, critical)`` pairs for ``CertificateBuilder.add_extension``.

    The agent extensions are non-critical (a critical unknown extension makes ``openssl
    verify`` fail); relying parties such as the gateway treat them as mandatory.
    """
    return [
        (x509.UnrecognizedExtension(oids.PROVENANCE, ext.provenance.to_der()), False),
        (x509.UnrecognizedExtension(oids.AUTHORIZATION, ext.authorization.to_der()), False),
        (x509.UnrecognizedExtension(oids.ACCOUNTABILITY, ext.accountability.to_der()), False),
    ]


def _extension_der(cert: x509.Certificate, oid: x509.ObjectIdentifier, what: str) -> bytes:
    try:
        ext = cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        raise CAError(
            ErrorCode.INVALID_EXTENSION,
            f"{what}: the certificate has no {what} extension ({oid.dotted_string})",
        ) from None
    except ValueError as exc:  # duplicate or unparsable extensions
        raise CAError(
            ErrorCode.INVALID_EXTENSION, f"certificate extensions are malformed: {_one_line(exc)}"
        ) from None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):  # pragma: no cover - defensive
        raise CAError(ErrorCode.INVALID_EXTENSION, f"{what}: unexpected extension value")
    return value.value


def read_agent_extensions(cert: x509.Certificate) -> AgentExtensions:
    """Decode the three agent extensions of ``cert``; ``INVALID_EXTENSION`` if any is bad."""
    return AgentExtensions(
        Provenance.from_der(_extension_der(cert, oids.PROVENANCE, Provenance.NAME)),
        Authorization.from_der(_extension_der(cert, oids.AUTHORIZATION, Authorization.NAME)),
        Accountability.from_der(_extension_der(cert, oids.ACCOUNTABILITY, Accountability.NAME)),
    )


# --- certificate signing requests -----------------------------------------------------------


def provenance_csr_attribute_value(p: Provenance) -> bytes:
    """The single value of the CSR attribute ``id-agentca-csr-provenance``: ``AgentProvenance``."""
    return p.to_der()


def _signature_for(key: object) -> tuple[str, Callable[[bytes], bytes]]:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        curve = key.curve.name
        if curve == "secp256r1":
            return "sha256_ecdsa", lambda d: key.sign(d, ec.ECDSA(hashes.SHA256()))
        if curve == "secp384r1":
            return "sha384_ecdsa", lambda d: key.sign(d, ec.ECDSA(hashes.SHA384()))
        raise CAError(
            ErrorCode.UNSUPPORTED_KEY, f"EC curve {curve} is not supported (P-256, P-384)"
        )
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise CAError(ErrorCode.UNSUPPORTED_KEY, f"RSA key of {key.key_size} bits is too small")
        return "sha256_rsa", lambda d: key.sign(d, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519", key.sign
    raise CAError(
        ErrorCode.UNSUPPORTED_KEY,
        f"unsupported key type {type(key).__name__} (EC P-256/P-384, RSA >= 2048, Ed25519)",
    )


def build_agent_csr(
    private_key: AgentPrivateKey,
    common_name: str,
    provenance: Provenance,
    organization: str | None = None,
) -> x509.CertificateSigningRequest:
    """Build and sign a PKCS#10 CSR carrying ``provenance`` in the ``.4.1`` attribute.

    cryptography cannot emit an attribute whose value is a SEQUENCE, so the
    CertificationRequestInfo is assembled with asn1crypto and signed with ``private_key``
    (ECDSA P-256/SHA-256, P-384/SHA-384, RSA PKCS#1 v1.5/SHA-256, Ed25519).
    """
    validate_agent_name(common_name)
    alg_name, sign = _signature_for(private_key)
    rdns = []
    if organization is not None:
        rdns.append(
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, validate_organization(organization))
        )
    rdns.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    subject = asn1_x509.Name.load(x509.Name(rdns).public_bytes())
    spki = keys.PublicKeyInfo.load(
        private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    attribute = _Attribute(
        {
            "type": oids.CSR_PROVENANCE_DOTTED,
            "values": [core.Any.load(provenance_csr_attribute_value(provenance))],
        }
    )
    info = _CertificationRequestInfo(
        {"version": 0, "subject": subject, "subject_pk_info": spki, "attributes": [attribute]}
    )
    tbs = bytes(info.dump())
    request = _CertificationRequest(
        {
            "certification_request_info": info,
            "signature_algorithm": {"algorithm": alg_name},
            "signature": sign(tbs),
        }
    )
    return x509.load_der_x509_csr(bytes(request.dump()))


def read_csr_provenance(csr: x509.CertificateSigningRequest) -> Provenance | None:
    """The provenance claimed in ``csr``'s ``.4.1`` attribute, or ``None`` if absent.

    ``INVALID_EXTENSION`` if the attribute is repeated, has other than exactly one value, or
    the value is not a strict DER ``AgentProvenance``.
    """
    what = "CSR attribute id-agentca-csr-provenance"

    def find(raw: bytes) -> bytes | None:
        info = _CertificationRequestInfo.load(raw, strict=True)
        found: list[bytes] = []
        for attr in info["attributes"]:
            if attr["type"].dotted != oids.CSR_PROVENANCE_DOTTED:
                continue
            values = attr["values"]
            if len(values) != 1:
                raise _bad(what, f"must have exactly one value, has {len(values)}")
            found.append(bytes(values[0].dump()))
        if len(found) > 1:
            raise _bad(what, "appears more than once")
        return found[0] if found else None

    value = _strict_decode(what, csr.tbs_certrequest_bytes, find)
    return None if value is None else Provenance.from_der(value)
