"""Enrollment and renewal: the agent-facing issuance paths, always under policy."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from datetime import timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from sqlalchemy.orm import Session

from ca.authority import CertificateAuthority, IssuanceRequest, RenewalLink
from ca.config import Settings
from ca.csr import load_csr
from ca.errors import CAError, ErrorCode
from ca.extensions import read_agent_extensions, read_csr_provenance
from ca.policy import EnrollmentClaim, Refusal, Registration, decide
from ca.proof import renewal_statement, verify_statement
from ca.records import CertificateRecord
from ca.registry import Registry
from ca.revocation import RevocationReason
from ca.store.models import CertStatus

RENEWAL_SKEW = timedelta(minutes=5)  # how old a renewal proof's ``created`` may be
MAX_FUTURE_SKEW = timedelta(seconds=30)  # how far ahead of the CA's clock it may be


@dataclass(frozen=True)
class RenewalRequest:
    """An agent's renewal: its current certificate, a new CSR and the possession proof."""

    certificate_pem: bytes
    csr: bytes
    created: int
    proof: bytes
    scopes: tuple[str, ...] | None = None
    validity: timedelta | None = None


class EnrollmentService:
    """Turns enrollment tokens and renewal proofs into certificates, through policy."""

    def __init__(self, settings: Settings, authority: CertificateAuthority, registry: Registry):
        self.settings = settings
        self.authority = authority
        self.registry = registry

    def _decide(
        self,
        registration: Registration,
        csr_data: bytes,
        scopes: tuple[str, ...] | None,
        validity: timedelta | None,
        session: Session | None = None,
    ) -> IssuanceRequest:
        csr = load_csr(csr_data)
        provenance = read_csr_provenance(csr)
        digests = [provenance.model_digest.hex] if provenance else []
        inventory = self.registry.inventory(digests, registration.environment, session)
        allowed_keys = tuple(
            k for k in registration.allowed_key_types if k in self.settings.allowed_agent_key_types
        )
        outcome = decide(
            dataclasses.replace(registration, allowed_key_types=allowed_keys),
            inventory,
            EnrollmentClaim(csr.public_key(), provenance, scopes, validity),
            self.settings.default_validity,
            self.settings.max_validity,
        )
        if isinstance(outcome, Refusal):
            raise outcome.as_error(registration.name)
        return outcome

    def enroll(
        self,
        token: str,
        csr_data: bytes,
        scopes: tuple[str, ...] | None = None,
        validity: timedelta | None = None,
    ) -> CertificateRecord:
        """Issue a certificate for the registration the one-time ``token`` is bound to.

        The token is consumed in the same transaction that reserves the serial, so a refused
        or failed request never burns it and a token can never yield two certificates.
        """
        engine = self.authority.sessions.kw["bind"]
        # one connection for the whole request: lookups, reservation and storage
        with engine.connect() as conn, Session(bind=conn, expire_on_commit=False) as s:
            registration = self.registry.registration_for_token(token, s)
            request = self._decide(registration, csr_data, scopes, validity, s)
            s.commit()  # end the read transaction; issuance runs its own two
            return self.authority.issue(
                request,
                actor=f"agent:{registration.name}",
                agent_id=registration.id,
                in_reservation=lambda tx: self.registry.consume_enrollment_token(tx, token),
                session=s,
            )

    def renew(self, req: RenewalRequest) -> CertificateRecord:
        """Re-issue for an agent that proves possession of its current, valid certificate.

        The proof signs the ``agentca-renew-v2`` statement over every member of the request
        (ca/proof.py). It is accepted once, only while fresh (``created`` at most
        ``MAX_FUTURE_SKEW`` ahead, ``RENEWAL_SKEW`` behind), and only for a certificate not
        renewed yet; issuing the renewal revokes the current certificate as superseded.
        """
        try:
            current = x509.load_pem_x509_certificate(req.certificate_pem)
        except ValueError as exc:
            raise CAError(
                ErrorCode.BAD_REQUEST, "the current certificate is not valid PEM"
            ) from exc
        issuing = self.authority.chain()[0]
        try:
            current.verify_directly_issued_by(issuing)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise CAError(
                ErrorCode.UNAUTHENTICATED, "the current certificate was not issued by this CA"
            ) from exc
        now = self.authority.clock()
        age = now.timestamp() - req.created
        if age > RENEWAL_SKEW.total_seconds():
            raise CAError(ErrorCode.UNAUTHENTICATED, "the renewal proof is stale")
        if -age > MAX_FUTURE_SKEW.total_seconds():
            raise CAError(
                ErrorCode.UNAUTHENTICATED,
                f"the renewal proof is from the future (more than "
                f"{int(MAX_FUTURE_SKEW.total_seconds())} s ahead of the CA's clock)",
            )
        current_der = current.public_bytes(serialization.Encoding.DER)
        csr_bytes = load_csr(req.csr).public_bytes(serialization.Encoding.DER)
        statement = renewal_statement(
            req.created,
            csr_bytes,
            current_der,
            req.scopes,
            int(req.validity.total_seconds()) if req.validity is not None else None,
        )
        if not verify_statement(current.public_key(), req.proof, statement):
            raise CAError(
                ErrorCode.UNAUTHENTICATED,
                "the renewal proof does not verify with the current key over this request",
            )
        record = self.authority.get(format(current.serial_number, "x"))
        if record.certificate_der != current_der:
            raise CAError(
                ErrorCode.UNAUTHENTICATED, f"certificate {record.serial_hex} is not on record"
            )
        # early, read-only answers; the reservation re-checks all of this under a row lock
        link = RenewalLink(
            record.serial_hex, record.issuer_name, hashlib.sha256(statement).hexdigest()
        )
        if record.status == CertStatus.REVOKED and (
            record.revocation_reason is RevocationReason.SUPERSEDED
        ):
            raise CAError(
                ErrorCode.CONFLICT, f"certificate {record.serial_hex} was already renewed"
            )
        if record.status != CertStatus.ISSUED:
            raise CAError(
                ErrorCode.UNAUTHENTICATED,
                f"certificate {record.serial_hex} is {record.status} and cannot be renewed",
            )
        if current.not_valid_after_utc <= now:
            raise CAError(ErrorCode.UNAUTHENTICATED, "the current certificate has expired")
        registration = self.registry.get_agent(record.agent_name)
        scopes = req.scopes
        if scopes is None:
            held = read_agent_extensions(current).authorization.scopes
            scopes = tuple(s for s in held if s in registration.allowed_scopes)
            if not scopes:
                raise Refusal(("none of the current scopes is still allowed",)).as_error(
                    registration.name
                )
        request = self._decide(registration, req.csr, scopes, req.validity)
        return self.authority.issue(
            request,
            actor=f"agent:{registration.name}:renew",
            agent_id=registration.id,
            renewal=link,
        )
