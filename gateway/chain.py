"""Chain verification to the configured trust anchors, with a cache of verified chains.

Uses cryptography's RFC 5280 client verifier (``PolicyBuilder``) with an end-entity policy
that also requires the agentRequestSigning EKU of an accepted OID arc (``oid_arcs``: the CA's
arcs, e.g. from its metadata, ``gateway.verifier.oid_arcs_from_metadata``); the three agent
extensions are mandatory, under that same arc, and decoded strictly; the certificate must
carry exactly one URI SAN, the SPIFFE ID ``spiffe://<trust domain>/agent/<CN>`` of a
configured trust domain.

The cache is keyed by the SHA-256 of the leaf certificate (never by header text), and an
entry enters it only through :meth:`ChainVerifier.remember`, which the verifier calls once
the request's signature has verified: a refused request leaves nothing behind. A verified
chain is kept until the earliest notAfter in it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from gateway.problems import Check, Denied
from wire import der as _der
from wire import sf
from wire.extensions import AgentExtensions, ExtensionError, agent_arc, read_agent_extensions
from wire.oids import DEFAULT_ACCEPTED_ARCS, OidArc, parse_arcs

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey
StatusKey = tuple[bytes, int]  # (SHA-256 of the issuer's public key, serial number)

MAX_CERT_BYTES = 16 * 1024  # one DER certificate in Client-Cert / Client-Cert-Chain
MAX_CHAIN_CERTS = 4  # members of Client-Cert-Chain
# SPIFFE ID (https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md): a trust
# domain of lowercase letters, digits, '.', '-', '_'; the agent's path is /agent/<name>.
_TRUST_DOMAIN_RE = re.compile(r"[a-z0-9._-]{1,255}")
_AGENT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


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
    #: the attestor that attested the provenance (``AgentAttestation``); None: self-declared
    attested_by: str | None = None

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
    fingerprint: bytes  # SHA-256 of the leaf DER: the cache key
    issuer_ids: dict[str, tuple[bytes, bytes]]  # CertID hashes of the issuer (issuer_hashes)
    status_key: StatusKey  # what status and nonces are kept under: (issuer key hash, serial)


def _algorithm(key: PublicKey) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        names = {"secp256r1": "ecdsa-p256-sha256", "secp384r1": "ecdsa-p384-sha384"}
        if key.curve.name in names:
            return names[key.curve.name]
        raise Denied(Check.CHAIN, f"unsupported curve {key.curve.name}")
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519"
    return "rsa-v1_5-sha256"


def _signing_eku_check(arcs: tuple[OidArc, ...]) -> Callable[[Any, Any, Any], None]:
    """The EKU check: clientAuth and the agentRequestSigning EKU of one of ``arcs``."""
    wanted = {a.kp_agent_request_signing for a in arcs}

    def check(_policy: Any, _cert: Any, eku: Any) -> None:
        if eku is None or not wanted.intersection(eku):
            raise ValueError("the agentRequestSigning EKU of an accepted OID arc is required")
        if ExtendedKeyUsageOID.CLIENT_AUTH not in list(eku):
            raise ValueError("the clientAuth EKU is required")

    return check


def _byte_items(value: str, what: str, single: bool) -> list[bytes]:
    try:
        members = [sf.parse_item(value)] if single else sf.parse_list(value)
    except sf.SFError as exc:
        raise Denied(Check.MALFORMED, f"{what}: {exc}") from None
    if len(members) > MAX_CHAIN_CERTS:
        raise Denied(Check.MALFORMED, f"{what} holds more than {MAX_CHAIN_CERTS} certificates")
    out = []
    for member in members:
        if not isinstance(member, sf.Item) or not isinstance(member.value, bytes):
            raise Denied(Check.MALFORMED, f"{what} must hold byte sequences (RFC 9440)")
        if len(member.value) > MAX_CERT_BYTES:
            raise Denied(Check.MALFORMED, f"{what}: certificate over {MAX_CERT_BYTES} bytes")
        out.append(member.value)
    if not out:
        raise Denied(Check.MALFORMED, f"{what} is empty")
    return out


def leaf_der(cert_header: str) -> bytes:
    """The DER bytes of ``Client-Cert`` (an RFC 8941 byte sequence), strictly decoded."""
    if (
        len(cert_header) > 2
        and cert_header[0] == ":"
        and cert_header[-1] == ":"
        and len(cert_header) <= MAX_CERT_BYTES * 4 // 3 + 8
        and len(cert_header) % 4 == 2  # canonical padded base64 between the colons
    ):
        try:
            return base64.b64decode(cert_header[1:-1], validate=True)
        except (binascii.Error, ValueError):
            pass
    return _byte_items(cert_header, "Client-Cert", True)[0]


def check_spiffe_id(leaf: x509.Certificate, name: str, trust_domains: frozenset[str]) -> str:
    """The certificate's SPIFFE ID: exactly one URI SAN, ``spiffe://<td>/agent/<name>``
    with ``td`` one of ``trust_domains`` and ``name`` the common name; else ``Denied``."""
    serial = format(leaf.serial_number, "x")
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise Denied(Check.CHAIN, f"certificate {serial} has no subjectAltName") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise Denied(Check.CHAIN, f"certificate {serial} needs exactly one URI SAN (SPIFFE ID)")
    uri = uris[0]
    prefix = "spiffe://"
    rest = uri[len(prefix) :] if uri.startswith(prefix) else ""
    domain, slash, path = rest.partition("/")
    if not slash or not _TRUST_DOMAIN_RE.fullmatch(domain):
        raise Denied(Check.CHAIN, f"certificate {serial}: {uri!r} is not a SPIFFE ID")
    if domain not in trust_domains:
        raise Denied(
            Check.CHAIN, f"certificate {serial}: trust domain {domain!r} is not trusted here"
        )
    if path != "agent/" + name or not _AGENT_NAME_RE.fullmatch(name):
        raise Denied(
            Check.CHAIN,
            f"certificate {serial}: SPIFFE ID {uri!r} does not name the agent {name!r}",
        )
    return uri


class ChainVerifier:
    """Verifies ``Client-Cert``/``Client-Cert-Chain`` against ``anchors``; caches results."""

    def __init__(
        self,
        anchors: Iterable[x509.Certificate],
        intermediates: Iterable[x509.Certificate] = (),
        max_entries: int = 10_000,
        max_chain_depth: int = 4,
        *,
        trust_domains: Iterable[str],
        oid_arcs: Iterable[str | OidArc] = DEFAULT_ACCEPTED_ARCS,
    ) -> None:
        """``oid_arcs``: the agent OID arcs accepted (the CA's ``accepted_oid_arcs``; default
        the example arc and the legacy arc)."""
        self.anchors = list(anchors)
        self.oid_arcs = parse_arcs(oid_arcs)
        if not self.anchors:
            raise ValueError("at least one trust anchor is required")
        self.trust_domains = frozenset(
            [trust_domains] if isinstance(trust_domains, str) else trust_domains
        )
        if not self.trust_domains or not all(
            _TRUST_DOMAIN_RE.fullmatch(d) for d in self.trust_domains
        ):
            raise ValueError("trust_domains: one or more SPIFFE trust domains are required")
        self.store = verification.Store(self.anchors)
        self.intermediates = list(intermediates)
        self.max_entries = max_entries
        self.max_chain_depth = max_chain_depth
        self._ee_policy = verification.ExtensionPolicy.webpki_defaults_ee().require_present(
            x509.ExtendedKeyUsage,
            verification.Criticality.AGNOSTIC,
            _signing_eku_check(self.oid_arcs),
        )
        self._ca_policy = verification.ExtensionPolicy.webpki_defaults_ca()
        self._cache: dict[bytes, ChainEntry] = {}
        self._fingerprints: dict[str, bytes] = {}  # Client-Cert text -> leaf fingerprint
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._cache)

    def lookup(self, cert_header: str, chain_header: str, now: float) -> ChainEntry:
        """The verified entry for this leaf: from the cache, or verified now (not cached:
        see :meth:`remember`). A cached path is reused whatever ``Client-Cert-Chain`` a
        later request carries: what was verified is the leaf and its path, not header text."""
        fingerprint = self._fingerprints.get(cert_header)
        entry = None if fingerprint is None else self._cache.get(fingerprint)
        if entry is None:
            der = leaf_der(cert_header)
            fingerprint = hashlib.sha256(der).digest()
            entry = self._cache.get(fingerprint)
            if entry is None:
                entry = self._verify(der, fingerprint, chain_header, now)
        if not entry.valid_from <= now < entry.valid_until:
            raise Denied(Check.EXPIRED, f"certificate {entry.identity.serial} is not valid now")
        return entry

    def remember(self, entry: ChainEntry, cert_header: str) -> None:
        """Cache ``entry`` (and which ``Client-Cert`` text decodes to it, a pure function of
        the text); call only once a request signed with its key has verified."""
        if self._fingerprints.get(cert_header) == entry.fingerprint:
            return
        with self._lock:
            while len(self._cache) >= self.max_entries:
                self._cache.pop(next(iter(self._cache)))
            while len(self._fingerprints) >= self.max_entries:
                self._fingerprints.pop(next(iter(self._fingerprints)))
            self._cache[entry.fingerprint] = entry
            self._fingerprints[cert_header] = entry.fingerprint

    def _verify(self, der: bytes, fingerprint: bytes, chain_header: str, now: float) -> ChainEntry:
        if len(der) > MAX_CERT_BYTES:
            raise Denied(Check.MALFORMED, f"Client-Cert: certificate over {MAX_CERT_BYTES} bytes")
        try:
            leaf = x509.load_der_x509_certificate(der)
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
        try:  # first: names the arc of a certificate from a CA this gateway is not set up for
            agent_arc(leaf, self.oid_arcs)
        except ExtensionError as exc:
            raise Denied(Check.CHAIN, f"certificate {serial}: {exc}") from None
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
            ext = read_agent_extensions(leaf, self.oid_arcs)
        except ExtensionError as exc:
            raise Denied(Check.CHAIN, f"certificate {serial}: {exc}") from None
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ext.arc.kp_agent_request_signing not in list(eku):
            raise Denied(
                Check.CHAIN,
                f"certificate {serial}: the agentRequestSigning EKU is not under the arc of its "
                f"agent extensions ({ext.arc})",
            )
        key = leaf.public_key()
        if not isinstance(key, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)) and not (
            isinstance(key, rsa.RSAPublicKey)
        ):
            raise Denied(Check.CHAIN, f"certificate {serial}: unsupported key type")
        cns = leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        if len(cns) != 1:
            raise Denied(Check.CHAIN, f"certificate {serial} needs exactly one common name")
        cn = str(cns[0].value)
        spiffe_id = check_spiffe_id(leaf, cn, self.trust_domains)
        path = verified.chain
        if len(path) < 2:
            raise Denied(Check.CHAIN, f"certificate {serial} is itself a trust anchor")
        p = ext.provenance
        identity = AgentIdentity(
            name=cn,
            spiffe_id=spiffe_id,
            scopes=ext.scope_list,
            officer=ext.officer,
            environment=ext.environment,
            organization=ext.organization,
            serial=serial,
            fingerprint=fingerprint.hex(),
            model_type=p.model_type,
            model_digest=p.model_digest.value.hex(),
            prompt_digest=p.prompt_digest.value.hex(),
            config_digest=None if p.config_digest is None else p.config_digest.value.hex(),
            not_after=leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
            attested_by=None if ext.attestation is None else ext.attestation.attestor,
        )
        ids = issuer_hashes(path[1])
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
            fingerprint=fingerprint,
            issuer_ids=ids,
            status_key=(ids["sha256"][1], leaf.serial_number),
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
