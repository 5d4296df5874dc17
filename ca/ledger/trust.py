"""Which audit certificates an offline verifier accepts (pure: no database, no HSM, no clock).

Trust is anchored one of two ways (decision 0027):

- **pinned**: a trusted certificate *is* the audit certificate the checkpoint embeds (the
  historical ``--trust audit.pem``); the signature must verify and the checkpoint must have been
  signed within that certificate's validity;
- **chained**: the trusted certificates are CA certificates (the root, or the issuing CA): the
  embedded audit certificate must have been valid when the checkpoint was signed, carry the
  ledger-signing EKU (``<arc>.3.2``) under one of the CA's OID arcs, and chain to a trusted
  certificate at that time (path built with ``cryptography.x509.verification`` from the
  certificates the export or a ``--chain`` bundle carries).

Validity is judged at the checkpoint's own timestamp, never at verification time, so an audit
certificate that expired or was rotated out keeps the checkpoints it signed verifiable.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification

from ca.ledger.entries import Checkpoint
from ca.oids import DEFAULT_ACCEPTED_ARCS, OidArc, OidArcError, parse_arc


@dataclass(frozen=True)
class LedgerTrust:
    """What the auditor trusts: anchors (PEM from ``--trust``), untrusted certificates to build
    paths with (``--chain``), and optionally the only OID arcs to accept (``--arc``)."""

    anchors: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...] = ()
    arcs: tuple[OidArc, ...] = ()

    @property
    def pinned_only(self) -> bool:
        """True when no anchor is a CA certificate: only pinning can succeed."""
        return not any(is_ca(c) for c in self.anchors)

    def describe(self) -> str:
        """The anchor, for reports: the subject of each trusted certificate."""
        return "; ".join(c.subject.rfc4514_string() for c in self.anchors)


def is_ca(cert: x509.Certificate) -> bool:
    """True when ``cert`` says it is a CA (basicConstraints cA)."""
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def checkpoint_time(cp: Checkpoint) -> datetime:
    """The checkpoint's signing time; ``ValueError`` if it is not an RFC 3339 UTC time."""
    parsed = datetime.fromisoformat(cp.timestamp.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"checkpoint timestamp {cp.timestamp!r} has no time zone")
    return parsed.astimezone(UTC)


def parse_arcs(values: Iterable[str]) -> tuple[OidArc, ...]:
    """The arcs named in an export or on the command line; unusable ones are skipped."""
    out: list[OidArc] = []
    for value in values:
        try:
            arc = parse_arc(str(value))
        except OidArcError:
            continue
        if arc not in out:
            out.append(arc)
    return tuple(out)


def _signature_problem(cp: Checkpoint, cert: x509.Certificate) -> str | None:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return "the audit certificate does not hold an EC key"
    try:
        key.verify(cp.signature, cp.statement(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return "the checkpoint signature does not verify"
    return None


def _validity_problem(cert: x509.Certificate, at: datetime, stamp: str) -> str | None:
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    if nb <= at <= na:
        return None
    return (
        f"the checkpoint was signed at {stamp}, outside the audit certificate's validity "
        f"({_z(nb)} to {_z(na)})"
    )


def _z(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ledger_ekus(arcs: Sequence[OidArc]) -> tuple[x509.ObjectIdentifier, ...]:
    """The ledger-signing EKU under each arc."""
    return tuple(a.kp_ledger_signing for a in arcs)


def _eku_problem(cert: x509.Certificate, arcs: Sequence[OidArc]) -> str | None:
    wanted = ledger_ekus(arcs)
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = x509.ExtendedKeyUsage([])
    if any(oid in wanted for oid in eku):
        return None
    names = ", ".join(o.dotted_string for o in wanted)
    return (
        f"the audit certificate ({cert.subject.rfc4514_string()}) does not carry the "
        f"ledger-signing EKU id-kp-agentcaLedgerSigning ({names})"
    )


def _chain_problem(
    cert: x509.Certificate,
    anchors: Sequence[x509.Certificate],
    untrusted: Sequence[x509.Certificate],
    at: datetime,
) -> str | None:
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(list(anchors)))
        .time(at)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
            # the EE is not a TLS client: its EKU is checked above, not as clientAuth
            ee_policy=verification.ExtensionPolicy.permit_all(),
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(cert, [c for c in untrusted if c != cert])
    except verification.VerificationError as exc:
        return (
            f"the audit certificate ({cert.subject.rfc4514_string()}, issued by "
            f"{cert.issuer.rfc4514_string()}) does not chain to the trusted certificate "
            f"at the checkpoint's time: {exc}"
        )
    return None


def checkpoint_problem(
    cp: Checkpoint,
    trust: LedgerTrust,
    carried: Sequence[x509.Certificate] = (),
    carried_arcs: Sequence[OidArc] = (),
) -> str | None:
    """``None`` when ``trust`` accepts the checkpoint's signature, else one line saying why.

    ``carried`` are certificates an export brings along (audit certificates, issuing CA,
    root): used to build the path, never trusted by themselves. ``carried_arcs`` are the arcs
    the export says the CA issues under; ``trust.arcs``, when given, replaces them.
    """
    cert = x509.load_der_x509_certificate(cp.certificate_der)
    try:
        at = checkpoint_time(cp)
    except ValueError as exc:
        return f"the checkpoint time is unreadable: {exc}"
    pinned = cert in trust.anchors
    if not pinned and trust.pinned_only:
        return "the checkpoint was signed by a certificate other than the trusted one"
    problem = _signature_problem(cp, cert) or _validity_problem(cert, at, cp.timestamp)
    if problem or pinned:
        return problem
    arcs = trust.arcs or tuple(dict.fromkeys((*carried_arcs, *DEFAULT_ACCEPTED_ARCS)))
    return _eku_problem(cert, arcs) or _chain_problem(
        cert, trust.anchors, (*trust.intermediates, *carried), at
    )
