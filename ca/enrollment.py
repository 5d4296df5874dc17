"""Enrollment, renewal and direct issuance: every issuance path, under policy.

The one way around policy is verbatim issuance (:meth:`EnrollmentService.issue_direct` with
``outside_policy=True``): its callers gate it (the ``issuer-verbatim`` API role, the local CLI's
``--outside-policy``), and its ledger entries say so and carry the reasons policy would have
given (docs/decisions/0007-direct-issuance-policy.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ca import enroll_pg
from ca.attestation import AttestationError, AttestedStatement, Attestor, load_attestors
from ca.authority import CertificateAuthority
from ca.config import Settings
from ca.csr import load_csr
from ca.errors import CAError, ErrorCode
from ca.extensions import (
    Accountability,
    AgentExtensions,
    Authorization,
    Provenance,
    read_agent_extensions,
    read_csr_provenance,
)
from ca.names import normalise_scopes
from ca.policy import EnrollmentClaim, InventoryModel, Refusal, Registration, decide
from ca.proof import renewal_statement, verify_statement
from ca.records import CertificateRecord, CertStatus
from ca.registry import Registry, registration_of
from ca.requests import IssuanceRequest, RenewalLink, TokenClaim
from ca.revocation import RevocationReason
from ca.roles import token_hash
from ca.tokens import EnrollmentTokens

RENEWAL_SKEW = timedelta(minutes=5)  # how old a renewal proof's ``created`` may be
MAX_FUTURE_SKEW = timedelta(seconds=30)  # how far ahead of the CA's clock it may be
WITHIN_POLICY: dict[str, Any] = {"outside_policy": False}


@dataclass(frozen=True)
class RenewalRequest:
    """An agent's renewal: its current certificate, a new CSR and the possession proof."""

    certificate_pem: bytes
    csr: bytes
    created: int
    proof: bytes
    scopes: tuple[str, ...] | None = None
    validity: timedelta | None = None
    #: the runtime attestation from the agent's launcher (decision 0051), as sent
    attestation: bytes | None = None


@dataclass(frozen=True)
class DirectIssuance:
    """An operator's direct issuance: a CSR for a registered agent, optional explicit contents.

    Fields left ``None`` come from the CSR (provenance) or the registration (scopes, officer,
    environment, organisation). Fields given must agree with them, or policy refuses; only
    verbatim issuance signs them as given.
    """

    agent_name: str
    csr: bytes
    provenance: Provenance | None = None
    scopes: tuple[str, ...] | None = None
    officer: str | None = None
    environment: str | None = None
    organization: str | None = None
    validity: timedelta | None = None


class EnrollmentService:
    """Turns enrollment tokens and renewal proofs into certificates, through policy."""

    def __init__(
        self,
        settings: Settings,
        authority: CertificateAuthority,
        registry: Registry,
        tokens: EnrollmentTokens,
    ) -> None:
        self.settings = settings
        self.authority = authority
        self.registry = registry
        self.tokens = tokens
        self._attestors: Attestor | None = None

    @property
    def attestors(self) -> Attestor | None:
        """The configured attestor (``attestors_file``), read once; None: none configured."""
        if self._attestors is None and self.settings.attestors_file:
            self._attestors = load_attestors(Path(self.settings.attestors_file))
        return self._attestors

    def _attested(
        self, registration: Registration, evidence: bytes | None
    ) -> tuple[AttestedStatement | None, str | None]:
        """The verified statement of ``evidence``, or why it is refused (pure but for the
        CA's clock): the policy compares the statement with the CSR."""
        if evidence is None:
            return None, None
        attestor = self.attestors
        if attestor is None:
            return None, "attestation-unconfigured: this CA trusts no attestor"
        now = int(self.authority.clock().timestamp())
        try:
            return attestor.verify(evidence, registration.environment, now), None
        except AttestationError as exc:
            return None, f"{exc.reason}: {exc.detail}"

    def _outcome(
        self,
        registration: Registration,
        csr: x509.CertificateSigningRequest,
        provenance: Provenance | None,
        scopes: tuple[str, ...] | None,
        validity: timedelta | None,
        session: Session | None = None,
        attestation: bytes | None = None,
        spent_statement: bytes | None = None,
        inventory: Mapping[tuple[str, str], InventoryModel] | None = None,
    ) -> IssuanceRequest | Refusal:
        if inventory is None:
            digests = [provenance.model_digest.hex] if provenance else []
            inventory = self.registry.inventory(digests, registration.environment, session)
        allowed_keys = tuple(
            k for k in registration.allowed_key_types if k in self.settings.allowed_agent_key_types
        )
        if self.registry.requires_signature(registration.environment):
            inventory = {
                k: dataclasses.replace(v, signature_required=True) for k, v in inventory.items()
            }
        statement, refused = self._attested(registration, attestation)
        return decide(
            dataclasses.replace(registration, allowed_key_types=allowed_keys),
            inventory,
            EnrollmentClaim(
                csr.public_key(), provenance, scopes, validity, statement, refused, spent_statement
            ),
            self.settings.default_validity,
            self.settings.max_validity,
        )

    def _csr_provenance(self, csr: x509.CertificateSigningRequest) -> Provenance | None:
        """The CSR's provenance attribute under the CA's accepted arcs. The cached arcs first;
        if none of them carries it, the arcs read now: a move made in another process within
        the cache's lifetime must not make the new arc's requests look provenance-less."""
        hierarchy = self.authority.hierarchy
        found = read_csr_provenance(csr, hierarchy.accepted_arcs())
        return (
            found
            if found is not None
            else read_csr_provenance(csr, hierarchy.accepted_arcs(fresh=True))
        )

    def _decide(
        self,
        registration: Registration,
        csr_data: bytes,
        scopes: tuple[str, ...] | None,
        validity: timedelta | None,
        session: Session | None = None,
        attestation: bytes | None = None,
        spent_statement: bytes | None = None,
    ) -> IssuanceRequest:
        csr = load_csr(csr_data)
        outcome = self._outcome(
            registration,
            csr,
            self._csr_provenance(csr),
            scopes,
            validity,
            session,
            attestation,
            spent_statement,
        )
        if isinstance(outcome, Refusal):
            raise outcome.as_error(registration.name)
        return dataclasses.replace(outcome, ledger_note=WITHIN_POLICY)

    def enroll(
        self,
        token: str,
        csr_data: bytes,
        scopes: tuple[str, ...] | None = None,
        validity: timedelta | None = None,
        attestation: bytes | None = None,
    ) -> CertificateRecord:
        """Issue a certificate for the registration the one-time ``token`` is bound to.

        ``attestation``: the runtime attestation the agent's launcher gave it (decision
        0051); required when the registration says so, checked against the CSR whenever sent.

        The token is consumed in the same transaction that reserves the serial, so a refused
        request never burns it, and the reservation records it: a reservation that fails
        afterwards (HSM or database error, or reconciliation after a crash) releases it, so
        the retry succeeds. A retry after the certificate was issued and the answer lost
        (same token, same public key) gets that certificate again; a retry while the first
        attempt is still pending gets a 409 saying when to retry. A token never yields two
        certificates (docs/decisions/0014-crash-safe-enrollment.md).

        On PostgreSQL the plain success takes three statements (``ca.enroll_pg``); whatever
        that path does not issue is left to the general one, which names the reason. An
        attestation statement yields one certificate: a second use is ``attestation-reused``.
        """
        engine = self.authority.sessions.kw["bind"]
        # an attested enrollment takes the general path, whose reservation checks that the
        # statement was not spent on another certificate (``uq_certificates_attestation_live``)
        if engine.dialect.name == "postgresql" and attestation is None:
            issued = self._enroll_in_three(engine, token, csr_data, scopes, validity, attestation)
            if issued is not None:
                return issued
        # one connection for the whole request: lookups, reservation and storage
        with engine.connect() as conn, Session(bind=conn, expire_on_commit=False) as s:
            try:
                registration = self.tokens.registration_for(token, s)
            except CAError as exc:
                replayed = (
                    self._replay(token, csr_data, s)
                    if exc.code is ErrorCode.UNAUTHENTICATED
                    else None
                )
                if replayed is None:
                    raise
                return replayed
            request = self._decide(registration, csr_data, scopes, validity, s, attestation)
            s.commit()  # end the read transaction; issuance runs its own two

            def reserve(tx: Session) -> dict[str, Any]:
                self._confirm_decision(tx, registration, request)
                return {"enrollment_token_id": self.tokens.consume(tx, token, registration.name)}

            return self.authority.issue(
                request,
                actor=f"agent:{registration.name}",
                agent_id=registration.id,
                in_reservation=reserve,
                session=s,
            )

    def _enroll_in_three(
        self,
        engine: Engine,
        token: str,
        csr_data: bytes,
        scopes: tuple[str, ...] | None,
        validity: timedelta | None,
        attestation: bytes | None = None,
    ) -> CertificateRecord | None:
        """The PostgreSQL enrollment of ``ca.enroll_pg``: read, decide, reserve, sign, store.
        None, with nothing written, when the token is not usable, the CSR is malformed, policy
        refuses or the reservation's checks fail: :meth:`enroll` then takes the general path,
        which refuses (or replays) with the reason, in its usual order."""
        try:
            csr = load_csr(csr_data)
            provenance = self._csr_provenance(csr)
        except CAError:
            return None
        digest = token_hash(token)
        with enroll_pg.autocommit(engine) as raw:
            rows = enroll_pg.read_usable(
                raw,
                digest,
                self.tokens.clock(),
                [provenance.model_digest.hex] if provenance else [],
            )
            if rows is None:
                return None
            registration = registration_of(rows[0])
            inventory = {
                (r.m_digest, r.m_environment): InventoryModel(
                    r.m_digest,
                    r.m_model_type,
                    r.m_environment,
                    r.m_status == "active",
                    r.m_digest_scheme,
                    r.m_signed_by,
                    r.m_signature_method,
                    r.m_signer,
                    r.m_signature_sha256,
                )
                for r in rows
                if r.m_digest is not None
            }
            outcome = self._outcome(
                registration,
                csr,
                provenance,
                scopes,
                validity,
                attestation=attestation,
                inventory=inventory,
            )
            if isinstance(outcome, Refusal) or registration.id is None:
                return None
            return self.authority.issue_claimed(
                dataclasses.replace(outcome, ledger_note=WITHIN_POLICY),
                f"agent:{registration.name}",
                TokenClaim(digest, registration.id, registration.name, registration.version),
                raw,
            )

    def _confirm_decision(
        self, tx: Session, registration: Registration | None, request: IssuanceRequest
    ) -> None:
        """In the reservation: what the policy decision rested on still holds (the
        registration is active and unchanged since it was read, the model is not retired): a
        change committed after the decision refuses the issuance instead of racing it."""
        ext = request.extensions
        self.registry.confirm_decision(
            tx,
            None if registration is None else registration.id,
            ext.provenance.model_digest.hex,
            ext.accountability.environment,
            None if registration is None else registration.version,
        )

    def _replay(self, token: str, csr_data: bytes, s: Session) -> CertificateRecord | None:
        """The certificate a used token already yielded, when this CSR is for the same key
        (the first answer was lost); None otherwise."""
        issued = self.tokens.certificate_for(token, s)
        if issued is None:
            return None
        try:
            spki = (
                load_csr(csr_data)
                .public_key()
                .public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
        except CAError:
            return None
        if hashlib.sha256(spki).digest() != issued.public_key_sha256:
            return None
        s.commit()
        return self.authority.get(issued.serial_hex, issued.issuer_name)

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
        if not any(
            _issued_by(current, issuing)
            # after a rollover, a certificate of the retired issuing CA renews too
            for issuing in self.authority.hierarchy.issuing_certificates()
        ):
            raise CAError(
                ErrorCode.UNAUTHENTICATED, "the current certificate was not issued by this CA"
            )
        if not 0 <= req.created < 2**40:  # seconds since 1970; floats overflow beyond
            raise CAError(ErrorCode.BAD_REQUEST, "created must be a Unix time in seconds")
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
            arcs = self.authority.hierarchy.accepted_arcs()
            held = read_agent_extensions(current, arcs).authorization.scopes
            scopes = tuple(s for s in held if s in registration.allowed_scopes)
            if not scopes:
                raise Refusal(("none of the current scopes is still allowed",)).as_error(
                    registration.name
                )
        # the attestation rules again: a fresh statement, not the one the current cert used
        held_attestation = read_agent_extensions(
            current, self.authority.hierarchy.accepted_arcs()
        ).attestation
        spent = None if held_attestation is None else held_attestation.statement_digest.value
        request = self._decide(
            registration, req.csr, scopes, req.validity, None, req.attestation, spent
        )
        return self.authority.issue(
            request,
            actor=f"agent:{registration.name}:renew",
            agent_id=registration.id,
            in_reservation=lambda tx: self._confirm_decision(tx, registration, request),
            renewal=link,
        )

    def issue_direct(
        self, req: DirectIssuance, actor: str, outside_policy: bool = False
    ) -> CertificateRecord:
        """Issue for a registered agent from an operator's CSR, through the enrollment policy.

        Refused (``POLICY_REFUSED``, naming every reason, writing nothing) for an unregistered
        agent, contents beyond its registration or the scope catalogue, accountability that is
        not the registration's, or provenance that is missing, not the CSR's, or not authorised.
        With ``outside_policy`` the contents given are signed verbatim and the ledger records
        ``outside_policy: true`` with the reasons policy gave; the caller must have checked
        that the requester may do this.
        """
        csr = load_csr(req.csr)
        csr_provenance = self._csr_provenance(csr)
        provenance = req.provenance or csr_provenance
        reasons: list[str] = []
        if req.provenance is not None and csr_provenance not in (None, req.provenance):
            reasons.append("the provenance given differs from the CSR's provenance attribute")
        try:
            registration: Registration | None = self.registry.get_agent(req.agent_name)
        except CAError as exc:
            if exc.code is not ErrorCode.NOT_FOUND:
                raise
            registration = None
            reasons.append(f"no agent is registered as '{req.agent_name}'")
        engine = self.authority.sessions.kw["bind"]
        with engine.connect() as conn, Session(bind=conn, expire_on_commit=False) as s:
            if req.scopes is not None:
                try:
                    missing = self.registry.scopes_outside_catalogue(
                        normalise_scopes(req.scopes), s
                    )
                except CAError:
                    missing = []  # malformed scopes: policy names them below
                if missing:
                    reasons.append(f"scopes not in the catalogue: {', '.join(missing)}")
            outcome: IssuanceRequest | Refusal | None = None
            if registration is not None:
                reasons += _accountability_mismatches(req, registration)
                outcome = self._outcome(registration, csr, provenance, req.scopes, req.validity, s)
                if isinstance(outcome, Refusal):
                    reasons += outcome.reasons
            s.commit()  # end the read transaction; issuance runs its own two
            agent_id = registration.id if registration is not None else None
            if outside_policy:
                request = _verbatim(req, csr, provenance, reasons)
            elif reasons or not isinstance(outcome, IssuanceRequest):
                raise CAError(
                    ErrorCode.POLICY_REFUSED,
                    f"issuance for '{req.agent_name}' refused: " + "; ".join(reasons),
                    reasons=reasons,
                )
            else:
                request = dataclasses.replace(outcome, ledger_note=WITHIN_POLICY)
            return self.authority.issue(
                request,
                actor=actor,
                agent_id=agent_id,
                in_reservation=None
                if outside_policy
                else lambda tx: self._confirm_decision(tx, registration, request),
                session=s,
            )


def _accountability_mismatches(req: DirectIssuance, reg: Registration) -> list[str]:
    """Reasons for accountability fields given that are not the registration's."""
    reasons = []
    for what, given, registered in (
        ("officer", req.officer, reg.officer),
        ("environment", req.environment, reg.environment),
        ("organization", req.organization, reg.organization),
    ):
        if given is not None and given != registered:
            reasons.append(
                f"{what} '{given}' is not the registration's {what} '{registered or ''}'"
            )
    return reasons


def _verbatim(
    req: DirectIssuance,
    csr: x509.CertificateSigningRequest,
    provenance: Provenance | None,
    reasons: list[str],
) -> IssuanceRequest:
    """The contents given, exactly, noted as outside policy with the reasons policy gave."""
    if provenance is None or req.scopes is None or req.officer is None or req.environment is None:
        given = {
            "provenance": provenance,
            "scopes": req.scopes,
            "officer": req.officer,
            "environment": req.environment,
        }
        raise CAError(
            ErrorCode.BAD_REQUEST,
            "issuance outside policy signs exactly the contents given; missing: "
            + ", ".join(k for k, v in given.items() if v is None),
        )
    return IssuanceRequest(
        public_key=csr.public_key(),
        agent_name=req.agent_name,
        extensions=AgentExtensions(
            provenance=provenance,
            authorization=Authorization(scopes=req.scopes),
            accountability=Accountability(
                officer=req.officer, environment=req.environment, organization=req.organization
            ),
        ),
        validity=req.validity,
        ledger_note={"outside_policy": True, "policy_reasons": list(reasons)},
    )


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
