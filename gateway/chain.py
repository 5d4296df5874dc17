"""Chain verification to the configured trust anchors, cached by the certificate headers.

Uses cryptography's RFC 5280 client verifier (``PolicyBuilder``) with an end-entity policy
that also requires the agentRequestSigning EKU; the three agent extensions are mandatory
and decoded strictly. A verified chain is cached until the earliest notAfter in it.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from gateway import _der, sf
from gateway.extensions import (
    REQUEST_SIGNING_EKU,
    AgentExtensions,
    ExtensionError,
    read_agent_extensions,
)
from gateway.problems import Check, Denied

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey


@dataclass(frozen=True)
class AgentIdentity:
    """What the application learns about a verified agent."""

    name: str
    spiffe_id: str
    scopes: tuple[str, ...]
    officer: str
    environment: str
    organization: str | None
    serial: str
    fingerprint: str
    model_type: str
    model_digest: str
    prompt_digest: str
    config_digest: str | None
    not_after: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ChainEntry:
    """A verified certificate chain and everything the hot path needs from it."""

    leaf: x509.Certificate
    issuer: x509.Certificate
    public_key: PublicKey
    algorithm: str
    extensions: AgentExtensions
    identity: AgentIdentity
    valid_from: float
    valid_until: float
    ocsp_url: str | None
    serial: int


def _algorithm(key: PublicKey) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        names = {"secp256r1": "ecdsa-p256-sha256", "secp384r1": "ecdsa-p384-sha384"}
        if key.curve.name in names:
            return names[key.curve.name]
        raise Denied(Check.CHAIN, f"unsupported curve {key.curve.name}")
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519"
    return "rsa-v1_5-sha256"


def _require_signing_eku(_policy: Any, _cert: Any, eku: Any) -> None:
    if eku is None or REQUEST_SIGNING_EKU not in list(eku):
        raise ValueError("the agentRequestSigning EKU is required")
    if ExtendedKeyUsageOID.CLIENT_AUTH not in list(eku):
        raise ValueError("the clientAuth EKU is required")


def _byte_items(value: str, what: str, single: bool) -> list[bytes]:
    try:
        members = [sf.parse_item(value)] if single else sf.parse_list(value)
    except sf.SFError as exc:
        raise Denied(Check.MALFORMED, f"{what}: {exc}") from None
    out = []
    for member in members:
        if not isinstance(member, sf.Item) or not isinstance(member.value, bytes):
            raise Denied(Check.MALFORMED, f"{what} must hold byte sequences (RFC 9440)")
        out.append(member.value)
    if not out:
        raise Denied(Check.MALFORMED, f"{what} is empty")
    return out


class ChainVerifier:
    """Verifies ``Client-Cert``/``Client-Cert-Chain`` against ``anchors``; caches results."""

    def __init__(
        self,
        anchors: Iterable[x509.Certificate],
        intermediates: Iterable[x509.Certificate] = (),
        max_entries: int = 10_000,
        max_chain_depth: int = 4,
    ) -> None:
        self.anchors = list(anchors)
        if not self.anchors:
            raise ValueError("at least one trust anchor is required")
        self.store = verification.Store(self.anchors)
        self.intermediates = list(intermediates)
        self.max_entries = max_entries
        self.max_chain_depth = max_chain_depth
        self._ee_policy = verification.ExtensionPolicy.webpki_defaults_ee().require_present(
            x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, _require_signing_eku
        )
        self._ca_policy = verification.ExtensionPolicy.webpki_defaults_ca()
        self._cache: dict[tuple[str, str], ChainEntry] = {}
        self._lock = threading.Lock()

    def lookup(self, cert_header: str, chain_header: str, now: float) -> ChainEntry:
        """The verified entry for these header values (verifying on a cache miss)."""
        key = (cert_header, chain_header)
        entry = self._cache.get(key)
        if entry is None:
            entry = self._verify(cert_header, chain_header, now)
            with self._lock:
                if len(self._cache) >= self.max_entries:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[key] = entry
        if not entry.valid_from <= now < entry.valid_until:
            raise Denied(Check.EXPIRED, f"certificate {entry.identity.serial} is not valid now")
        return entry

    def _verify(self, cert_header: str, chain_header: str, now: float) -> ChainEntry:
        try:
            leaf = x509.load_der_x509_certificate(_byte_items(cert_header, "Client-Cert", True)[0])
            chain = [
                x509.load_der_x509_certificate(d)
                for d in (
                    _byte_items(chain_header, "Client-Cert-Chain", False) if chain_header else []
                )
            ]
        except ValueError as exc:
            if isinstance(exc, Denied):
                raise
            raise Denied(Check.MALFORMED, f"certificate is not DER: {exc}") from None
        serial = format(leaf.serial_number, "x")
        if not (
            leaf.not_valid_before_utc.timestamp() <= now < leaf.not_valid_after_utc.timestamp()
        ):
            raise Denied(Check.EXPIRED, f"certificate {serial} is expired or not yet valid")
        when = datetime.fromtimestamp(now, UTC)
        verifier = (
            verification.PolicyBuilder()
            .store(self.store)
            .time(when)
            .max_chain_depth(self.max_chain_depth)
            .extension_policies(ca_policy=self._ca_policy, ee_policy=self._ee_policy)
            .build_client_verifier()
        )
        try:
            verified = verifier.verify(leaf, [*chain, *self.intermediates])
        except verification.VerificationError as exc:
            raise Denied(Check.CHAIN, f"certificate {serial}: {exc}") from None
        try:
            ext = read_agent_extensions(leaf)
        except ExtensionError as exc:
            raise Denied(Check.CHAIN, f"certificate {serial}: {exc}") from None
        uris = [
            s.value
            for s in (verified.subjects or [])
            if isinstance(s, x509.UniformResourceIdentifier)
        ]
        spiffe = [u for u in uris if u.startswith("spiffe://")]
        if len(spiffe) != 1:
            raise Denied(Check.CHAIN, f"certificate {serial} needs exactly one SPIFFE URI SAN")
        key = leaf.public_key()
        if not isinstance(key, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)) and not (
            isinstance(key, rsa.RSAPublicKey)
        ):
            raise Denied(Check.CHAIN, f"certificate {serial}: unsupported key type")
        try:
            cn = leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        except IndexError:
            raise Denied(Check.CHAIN, f"certificate {serial} has no common name") from None
        p = ext.provenance
        identity = AgentIdentity(
            name=str(cn),
            spiffe_id=spiffe[0],
            scopes=ext.scope_list,
            officer=ext.officer,
            environment=ext.environment,
            organization=ext.organization,
            serial=serial,
            fingerprint=hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
            model_type=p.model_type,
            model_digest=p.model_digest.value.hex(),
            prompt_digest=p.prompt_digest.value.hex(),
            config_digest=None if p.config_digest is None else p.config_digest.value.hex(),
            not_after=leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        path = verified.chain
        return ChainEntry(
            leaf=leaf,
            issuer=path[1],
            public_key=key,
            algorithm=_algorithm(key),
            extensions=ext,
            identity=identity,
            valid_from=max(c.not_valid_before_utc.timestamp() for c in path),
            valid_until=min(c.not_valid_after_utc.timestamp() for c in path),
            ocsp_url=_ocsp_url(leaf),
            serial=leaf.serial_number,
        )


def _ocsp_url(cert: x509.Certificate) -> str | None:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for desc in aia:
        if desc.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
            desc.access_location, x509.UniformResourceIdentifier
        ):
            url = desc.access_location.value
            if url.startswith(("http://", "https://")):
                return url
    return None


def issuer_hashes(issuer: x509.Certificate) -> dict[str, tuple[bytes, bytes]]:
    """``{hash name: (issuerNameHash, issuerKeyHash)}`` for SHA-1 and SHA-256 CertIDs."""
    name = issuer.subject.public_bytes()
    spki = issuer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _, spki_body, _ = _der.read(spki)
    _, _, pos = _der.read(spki_body)  # algorithm
    _, bits, _ = _der.read(spki_body, pos)
    key_bytes = bits[1:]
    out = {}
    for algo, fn in (("sha1", hashlib.sha1), ("sha256", hashlib.sha256)):
        out[algo] = (fn(name).digest(), fn(key_bytes).digest())
    return out
