"""Object identifiers of agentca, in one place.

Every agentca OID hangs off one arc, and the arc is a property of each CA (decision 0022): an
:class:`OidArc` names it and derives the OIDs. :data:`DEFAULT_ARC` sits under the IANA Private
Enterprise Number 32473, which RFC 5612 reserves for documentation and examples (fine for
evaluation, not for production: a production CA uses its organisation's PEN arc); every
component fits in 31 bits, so Go's crypto/x509 and GnuTLS parse it. :data:`LEGACY_ARC` is the
UUID arc of wave-1 certificates, whose 128-bit component those libraries refuse
(:data:`LARGE_ARC_REFUSED_BY`). See ``docs/oids.md`` for the table and the ASN.1 module.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Final

from wire import der

if TYPE_CHECKING:
    from cryptography import x509

#: Components of at least this value are refused by the verifiers in LARGE_ARC_REFUSED_BY.
LARGE_COMPONENT: Final = 2**31
#: Verifiers that refuse a certificate carrying any OID component >= 2**31 (measured: Go says
#: ``x509: malformed extension OID field``, GnuTLS ``ASN1 parser: Error in DER parsing``).
LARGE_ARC_REFUSED_BY: Final = (
    "Go crypto/x509 (and so SPIRE, HashiCorp Vault, Go API gateways and service meshes)",
    "GnuTLS (certtool, ocsptool, gnutls-cli)",
)
#: The IANA PEN arc under which an organisation's own arc sits: ``1.3.6.1.4.1.<PEN>``.
PEN_PREFIX: Final = "1.3.6.1.4.1."
#: RFC 5612's documentation PEN.
EXAMPLE_PEN: Final = 32473
#: Arcs of standards whose OIDs verifiers give a meaning (X.500 attribute types and id-ce,
#: IANA security incl. PKIX id-pe/id-kp/id-qt, PKCS, X9.62, X9.57, NIST algorithms, OIW,
#: Ed25519/X25519, SEC curves, Netscape, CA/Browser Forum, Certificate Transparency). An agentca
#: arc under one would mint OIDs that are (or shadow) standard ones: under 1.3.6.1.5.5.7 the
#: agentRequestSigning EKU is id-kp-serverAuth, the ledger EKU id-kp-clientAuth and the
#: provenance extension the Authority Information Access OID. An arc equal to one of these or
#: a prefix of one is refused as well (its ``.N.M`` OIDs would be those standards' own arcs).
RESERVED_ARCS: Final = (
    "2.5",
    "1.3.6.1.1",
    "1.3.6.1.2",
    "1.3.6.1.5",
    "1.2.840.113549",
    "1.2.840.10045",
    "1.2.840.10040",
    "1.2.840.10046",
    "2.16.840.1.101.3",
    "1.3.14",
    "1.3.101",
    "1.3.132",
    "2.16.840.1.113730",
    "2.23.140",
    "1.3.6.1.4.1.11129.2",
)
#: Registration arcs: what sits under them belongs to whoever registered it (a PEN, a UUID),
#: so the arc itself, or a prefix of it, is no agentca arc (``.1.1`` would be PEN 1's arc).
REGISTRATION_ARCS: Final = ("1.3.6.1.4.1", "2.25")


X509_COMPONENT_BOUND: Final = 2**128


def fits_x509_libraries(parts: list[str]) -> bool:
    """Whether X.509 libraries can hold these (DER-valid) components: rust-asn1, under
    cryptography, keeps each subidentifier in a u128, the first one being 40 * first + second
    (it panics, not raises, on the combined overflow). Pure, so importing this module does not
    load cryptography."""
    first, second, *rest = (int(p) for p in parts)
    return 40 * first + second < X509_COMPONENT_BOUND and all(
        c < X509_COMPONENT_BOUND for c in rest
    )


class OidArcError(ValueError):
    """A dotted string that is not a usable agentca arc."""


@dataclass(frozen=True, order=True)
class OidArc:
    """One agentca arc (``dotted``) and the OIDs derived from it (docs/oids.md)."""

    dotted: str

    def __post_init__(self) -> None:
        text = self.dotted
        if not isinstance(text, str) or not text or text != text.strip():
            raise OidArcError(f"not a dotted OID arc: {str(text)[:80]!r}")
        parts = text.split(".")
        if len(parts) < 2:
            raise OidArcError(f"an OID arc needs at least two components: {text[:80]!r}")
        try:
            der.encode_oid_content(text)
        except der.DerError:
            raise OidArcError(
                f"not a DER-encodable OID arc (dotted decimal, first component 0-2, second "
                f"below 40 under 0 and 1, no leading zeros): {text[:80]!r}"
            ) from None
        try:  # the derived OIDs (two more one-byte components) must fit wire.der's bound
            der.encode_oid_content(text + ".9.9")
        except der.DerError:
            raise OidArcError(
                f"OID arc too long: the OIDs under it would exceed {der.MAX_OID_BYTES} bytes "
                f"({text[:80]!r})"
            ) from None
        if not fits_x509_libraries(parts):
            raise OidArcError(
                f"OID arc has a component too large for X.509 libraries: {text[:80]!r}"
            )
        reason = reserved_arc_reason(text)
        if reason:
            raise OidArcError(reason)

    def __str__(self) -> str:
        return self.dotted

    def _oid(self, suffix: str) -> x509.ObjectIdentifier:
        from cryptography import x509  # here, so `agentca list` does not load cryptography

        return x509.ObjectIdentifier(f"{self.dotted}.{suffix}")

    @property
    def module(self) -> str:
        """Dotted identifier of the ASN.1 module ``AgentCA-Extensions-2026``."""
        return f"{self.dotted}.0.1"

    @cached_property
    def provenance(self) -> x509.ObjectIdentifier:
        """Extension: model type, model digest, system-prompt digest, optional config digest."""
        return self._oid("1.1")

    @cached_property
    def authorization(self) -> x509.ObjectIdentifier:
        """Extension: authorized scopes."""
        return self._oid("1.2")

    @cached_property
    def accountability(self) -> x509.ObjectIdentifier:
        """Extension: officer of record, environment, owner organisation."""
        return self._oid("1.3")

    @cached_property
    def attestation(self) -> x509.ObjectIdentifier:
        """Extension (optional): the provenance was attested, by which attestor (decision 0051)."""
        return self._oid("1.4")

    @cached_property
    def policy_agent_v1(self) -> x509.ObjectIdentifier:
        """Certificate policy for agent certificates, version 1."""
        return self._oid("2.1")

    @cached_property
    def kp_agent_request_signing(self) -> x509.ObjectIdentifier:
        """Extended key usage: signing outgoing agent HTTP requests."""
        return self._oid("3.1")

    @cached_property
    def kp_ledger_signing(self) -> x509.ObjectIdentifier:
        """Extended key usage of the audit key that signs ledger checkpoints."""
        return self._oid("3.2")

    @cached_property
    def csr_provenance(self) -> x509.ObjectIdentifier:
        """CSR attribute: the agent's claimed provenance (an ``AgentProvenance`` value)."""
        return self._oid("4.1")

    @cached_property
    def agent_extension_oids(self) -> tuple[x509.ObjectIdentifier, ...]:
        """The three agent certificate extensions, in the order certificates carry them."""
        return (self.provenance, self.authorization, self.accountability)

    @cached_property
    def names(self) -> dict[str, str]:
        """dotted OID -> ASN.1 name, e.g. for logs and ``docs/oids.md``."""
        return {
            self.provenance.dotted_string: "id-agentca-provenance",
            self.authorization.dotted_string: "id-agentca-authorization",
            self.accountability.dotted_string: "id-agentca-accountability",
            self.attestation.dotted_string: "id-agentca-attestation",
            self.policy_agent_v1.dotted_string: "id-agentca-policy-agent-v1",
            self.kp_agent_request_signing.dotted_string: "id-kp-agentRequestSigning",
            self.kp_ledger_signing.dotted_string: "id-kp-agentcaLedgerSigning",
            self.csr_provenance.dotted_string: "id-agentca-csr-provenance",
        }

    @property
    def large_components(self) -> tuple[int, ...]:
        """This arc's components of 2**31 or more (see :data:`LARGE_ARC_REFUSED_BY`)."""
        return large_components(self.dotted)

    @property
    def is_example(self) -> bool:
        """True when the arc sits under RFC 5612's documentation PEN (not for production)."""
        return (self.dotted + ".").startswith(f"{PEN_PREFIX}{EXAMPLE_PEN}.")


def _is_prefix(short: list[str], long: list[str]) -> bool:
    return len(short) <= len(long) and long[: len(short)] == short


def reserved_arc_reason(dotted: str) -> str | None:
    """Why ``dotted`` may not be an agentca arc (:data:`RESERVED_ARCS`,
    :data:`REGISTRATION_ARCS`), or ``None``; compared component by component."""
    parts = dotted.split(".")
    for registration in REGISTRATION_ARCS:
        if _is_prefix(parts, registration.split(".")):
            return (
                f"OID arc {dotted[:80]} is (a prefix of) the registration arc {registration}: "
                f"the OIDs under it belong to others; use {registration}.<your number>..."
            )
    for reserved in RESERVED_ARCS:
        other = reserved.split(".")
        if _is_prefix(other, parts) or _is_prefix(parts, other):
            return (
                f"OID arc {dotted[:80]} collides with the standard arc {reserved}: the agentca "
                f"OIDs under it would be (or shadow) standard OIDs; use an arc under your "
                f"organisation's IANA PEN ({PEN_PREFIX}<PEN>...)"
            )
    return None


def large_components(dotted: str) -> tuple[int, ...]:
    """The components of ``dotted`` that are 2**31 or more (Go and GnuTLS refuse them)."""
    return tuple(int(p) for p in dotted.split(".") if p.isdigit() and int(p) >= LARGE_COMPONENT)


def parse_arc(value: str | OidArc) -> OidArc:
    """``value`` as an :class:`OidArc` (:class:`OidArcError` if it is not one)."""
    return value if isinstance(value, OidArc) else OidArc(value)


def parse_arcs(values: Iterable[str | OidArc]) -> tuple[OidArc, ...]:
    """Distinct arcs in their first order; :class:`OidArcError` if none or one is bad."""
    out: list[OidArc] = []
    for value in [values] if isinstance(values, (str, OidArc)) else values:
        arc = parse_arc(value)
        if arc not in out:
            out.append(arc)
    if not out:
        raise OidArcError("at least one accepted OID arc is required")
    return tuple(out)


def large_arc_warning(arc: OidArc) -> str | None:
    """The warning for an arc with components >= 2**31, or ``None``."""
    big = arc.large_components
    if not big:
        return None
    return (
        f"OID arc {arc.dotted} has a component >= 2**31 ({big[0]}): certificates under it are "
        f"refused by {'; '.join(LARGE_ARC_REFUSED_BY)}"
    )


def example_arc_warning(arc: OidArc) -> str | None:
    """The warning for an arc under RFC 5612's documentation PEN, or ``None``."""
    if not arc.is_example:
        return None
    return (
        f"OID arc {arc.dotted} is under PEN {EXAMPLE_PEN}, which RFC 5612 reserves for "
        f"documentation and examples: fine for evaluation; a production CA sets --oid-arc "
        f"under its organisation's IANA PEN ({PEN_PREFIX}<PEN>...)"
    )


def arc_warnings(arc: OidArc) -> list[str]:
    """Every warning an operator should see before using ``arc`` (possibly none)."""
    return [w for w in (large_arc_warning(arc), example_arc_warning(arc)) if w]


#: The default agentca arc (RFC 5612 example PEN): what a CA uses when none is configured.
DEFAULT_ARC: Final = OidArc("1.3.6.1.4.1.32473.2026")
#: The UUID-derived arc (ITU-T X.667) that wave-1 certificates carry.
LEGACY_ARC: Final = OidArc("2.25.40108673889173621464063845417476256764")
#: What a verifier accepts when it is not told: the default arc and the legacy arc.
DEFAULT_ACCEPTED_ARCS: Final = (DEFAULT_ARC, LEGACY_ARC)

#: Supported digest algorithms: name -> (dotted OID, digest length in bytes).
DIGEST_ALGORITHMS: Final[dict[str, tuple[str, int]]] = {
    "sha256": ("2.16.840.1.101.3.4.2.1", 32),
    "sha384": ("2.16.840.1.101.3.4.2.2", 48),
    "sha512": ("2.16.840.1.101.3.4.2.3", 64),
}
#: dotted OID -> (name, digest length in bytes).
DIGEST_BY_OID: Final[dict[str, tuple[str, int]]] = {
    oid: (name, size) for name, (oid, size) in DIGEST_ALGORITHMS.items()
}

#: Signature algorithms the agent SDK writes into a CSR.
ECDSA_WITH_SHA256: Final = "1.2.840.10045.4.3.2"
ECDSA_WITH_SHA384: Final = "1.2.840.10045.4.3.3"
SHA256_WITH_RSA: Final = "1.2.840.113549.1.1.11"
ED25519: Final = "1.3.101.112"
