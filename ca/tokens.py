"""Enrollment tokens: one-time, short-lived secrets that let one registered agent enroll.

A token is ``aca_enroll_`` + 256 random bits, returned once and stored as its SHA-256 hash.
It is consumed in the transaction that reserves the certificate's serial and recorded on the
reservation, so a reservation that fails releases it (ca/reconciliation.py) and a token never
yields two live certificates (docs/decisions/0014-crash-safe-enrollment.md).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker

from ca.clock import Clock, utcnow
from ca.errors import CAError, ErrorCode
from ca.ledger.store import append
from ca.policy import Registration
from ca.records import CertStatus
from ca.registry import registration_of, use_session
from ca.roles import token_hash
from ca.store.models import AgentRegistration, Certificate, EnrollmentToken, Issuer

ENROLLMENT_PREFIX = "aca_enroll_"
MAX_TTL = timedelta(days=7)
#: A token's public handle is a prefix of its SHA-256 (the ``token_sha256`` of the ledger):
#: the secret itself is never stored and never shown again.
HANDLE_HEX = 16
MIN_HANDLE_HEX = 8

_USABLE = (  # the registration of a usable token: the enrollment's first read
    select(*AgentRegistration.__table__.columns)
    .join_from(EnrollmentToken, AgentRegistration, AgentRegistration.id == EnrollmentToken.agent_id)
    .where(
        EnrollmentToken.token_hash == bindparam("h"),
        EnrollmentToken.used_at.is_(None),
        EnrollmentToken.revoked_at.is_(None),
        EnrollmentToken.expires_at > bindparam("now"),
    )
)
_CONSUME = (  # built once: it runs on every enrollment
    update(EnrollmentToken)
    .where(
        EnrollmentToken.token_hash == bindparam("h"),
        EnrollmentToken.used_at.is_(None),
        EnrollmentToken.revoked_at.is_(None),
        EnrollmentToken.expires_at > bindparam("now"),
    )
    .values(used_at=bindparam("now"))
    .returning(EnrollmentToken.id, EnrollmentToken.agent_id)
)


@dataclass(frozen=True)
class TokenInfo:
    """What an operator may see of an enrollment token (never the secret)."""

    handle: str
    token_sha256: str
    agent: str
    created_at: datetime
    expires_at: datetime
    created_by: str
    used_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None

    def status(self, now: datetime) -> str:
        """``revoked``, ``used``, ``expired`` or ``usable``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.used_at is not None:
            return "used"
        return "expired" if self.expires_at <= now else "usable"

    def to_json(self, now: datetime) -> dict[str, object]:
        def iso(t: datetime | None) -> str | None:
            return t.isoformat() if t is not None else None

        return {
            "id": self.handle,
            "token_sha256": self.token_sha256,
            "agent": self.agent,
            "status": self.status(now),
            "created_at": iso(self.created_at),
            "created_by": self.created_by,
            "expires_at": iso(self.expires_at),
            "used_at": iso(self.used_at),
            "revoked_at": iso(self.revoked_at),
            "revoked_by": self.revoked_by,
        }


def _token_info(row: EnrollmentToken, agent: str) -> TokenInfo:
    return TokenInfo(
        row.token_hash[:HANDLE_HEX],
        row.token_hash,
        agent,
        row.created_at,
        row.expires_at,
        row.created_by,
        row.used_at,
        row.revoked_at,
        row.revoked_by,
    )


@dataclass(frozen=True)
class TokenCertificate:
    """The live certificate an enrollment token yielded (for an idempotent retry)."""

    serial_hex: str
    issuer_name: str
    public_key_sha256: bytes


class EnrollmentTokens:
    """Creates, checks and consumes enrollment tokens."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock = utcnow,
        pending_bound: timedelta = timedelta(seconds=120),
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.pending_bound = pending_bound  # Settings.pending_reconcile_seconds

    def create(self, agent_name: str, ttl: timedelta, actor: str) -> tuple[str, datetime]:
        """A one-time token for ``agent_name``; returns ``(token, expires_at)``. Shown once."""
        if not timedelta(0) < ttl <= MAX_TTL:
            raise CAError(ErrorCode.INVALID_VALIDITY, "token lifetime must be within 7 days")
        token = ENROLLMENT_PREFIX + secrets.token_urlsafe(32)
        now = self.clock()
        with self.sessions.begin() as s:
            row = s.scalar(select(AgentRegistration).where(AgentRegistration.name == agent_name))
            if row is None:
                raise CAError(ErrorCode.NOT_FOUND, f"no agent registered as '{agent_name}'")
            if row.status != "active":
                raise CAError(ErrorCode.CONFLICT, f"agent '{agent_name}' is disabled")
            s.add(
                EnrollmentToken(
                    token_hash=token_hash(token),
                    agent_id=row.id,
                    created_at=now,
                    expires_at=now + ttl,
                    created_by=actor,
                )
            )
            s.flush()
            append(
                s,
                actor,
                "enrollment_token.created",
                {
                    "agent": agent_name,
                    "officer": row.officer,
                    "token_sha256": token_hash(token),
                    "expires_at": (now + ttl).isoformat(),
                },
                now,
            )
        return token, now + ttl

    def list_tokens(self, agent_name: str | None = None, every: bool = False) -> list[TokenInfo]:
        """Tokens, newest first: the usable ones, or ``every`` one; of one agent or all."""
        now = self.clock()
        query = (
            select(EnrollmentToken, AgentRegistration.name)
            .join(AgentRegistration, AgentRegistration.id == EnrollmentToken.agent_id)
            .order_by(EnrollmentToken.created_at.desc(), EnrollmentToken.id.desc())
        )
        if agent_name is not None:
            query = query.where(AgentRegistration.name == agent_name)
        if not every:
            query = query.where(
                EnrollmentToken.used_at.is_(None),
                EnrollmentToken.revoked_at.is_(None),
                EnrollmentToken.expires_at > now,
            )
        with self.sessions() as s:
            if (
                agent_name is not None
                and s.scalar(
                    select(AgentRegistration.id).where(AgentRegistration.name == agent_name)
                )
                is None
            ):
                raise CAError(ErrorCode.NOT_FOUND, f"no agent registered as '{agent_name}'")
            return [_token_info(row, name) for row, name in s.execute(query)]

    def revoke(self, handle: str, actor: str) -> TokenInfo:
        """Revoke an unused token by its handle (a unique prefix of its SHA-256, at least
        8 hex digits, or the full hash); recorded in the ledger. Revoking twice, or a used
        token, is a CONFLICT (as for API tokens)."""
        wanted = handle.strip().lower()
        if not MIN_HANDLE_HEX <= len(wanted) <= 64 or any(
            c not in "0123456789abcdef" for c in wanted
        ):
            raise CAError(
                ErrorCode.NOT_FOUND,
                f"'{handle[:70]}' is not a token id (at least {MIN_HANDLE_HEX} hexadecimal "
                "digits, as 'agentca token list' prints them)",
            )
        now = self.clock()
        with self.sessions.begin() as s:
            rows = s.execute(
                select(EnrollmentToken, AgentRegistration.name)
                .join(AgentRegistration, AgentRegistration.id == EnrollmentToken.agent_id)
                .where(EnrollmentToken.token_hash.startswith(wanted, autoescape=True))
                .limit(2)
                .with_for_update(of=EnrollmentToken)
            ).all()
            if not rows:
                raise CAError(ErrorCode.NOT_FOUND, f"no enrollment token {wanted}")
            if len(rows) > 1:
                raise CAError(
                    ErrorCode.CONFLICT, f"token id {wanted} is ambiguous: give more digits"
                )
            row, agent = rows[0]
            if row.revoked_at is not None:
                raise CAError(ErrorCode.CONFLICT, f"enrollment token {wanted} is already revoked")
            if row.used_at is not None:
                raise CAError(
                    ErrorCode.CONFLICT,
                    f"enrollment token {wanted} was already used: revoke the certificate it "
                    "yielded instead",
                )
            row.revoked_at = now
            row.revoked_by = actor
            append(
                s,
                actor,
                "enrollment_token.revoked",
                {"agent": agent, "token_sha256": row.token_hash},
                now,
            )
            return _token_info(row, agent)

    def registration_for(self, token: str, session: Session | None = None) -> Registration:
        """The registration a usable enrollment token is bound to (does not consume it)."""
        now = self.clock()
        with use_session(self.sessions, session) as s:
            usable = s.connection().execute(_USABLE, {"h": token_hash(token), "now": now}).first()
            if usable is not None:  # the common case, in one Core statement
                return registration_of(usable)  # type: ignore[arg-type]
            found = s.execute(
                select(EnrollmentToken, AgentRegistration)
                .join(AgentRegistration, AgentRegistration.id == EnrollmentToken.agent_id)
                .where(EnrollmentToken.token_hash == token_hash(token))
            ).first()
            self._check(s, found[0] if found else None, now)
            assert found is not None
            return registration_of(found[1])

    def certificate_for(self, token: str, s: Session) -> TokenCertificate | None:
        """The certificate issued for a used enrollment token, if it is still issued."""
        found = s.execute(
            select(Certificate.serial_hex, Issuer.name, Certificate.public_key_sha256)
            .join(Issuer, Issuer.id == Certificate.issuer_id)
            .join(EnrollmentToken, EnrollmentToken.id == Certificate.enrollment_token_id)
            .where(
                EnrollmentToken.token_hash == token_hash(token),
                EnrollmentToken.used_at.is_not(None),
                Certificate.status == CertStatus.ISSUED,
                Certificate.not_after > self.clock(),
            )
        ).first()
        return TokenCertificate(*found) if found is not None else None

    def consume(self, s: Session, token: str, agent: str | None = None) -> int:
        """Mark the token used inside the caller's transaction; refuses a used/expired one.

        Returns the token's id, which the reservation records: if that reservation fails, the
        token is released (``ca.reconciliation.fail_reservation``). ``agent``, when the caller
        knows the registration's name, saves reading it again.
        """
        now = self.clock()
        digest = token_hash(token)
        result = s.connection().execute(_CONSUME, {"h": digest, "now": now}).first()
        if result is None:
            row = s.scalar(select(EnrollmentToken).where(EnrollmentToken.token_hash == digest))
            self._check(s, row, now)
            raise CAError(ErrorCode.UNAUTHENTICATED, "the enrollment token cannot be used")
        token_id, agent_id = result
        if agent is None:
            agent = s.scalar(select(AgentRegistration.name).where(AgentRegistration.id == agent_id))
        append(
            s,
            f"agent:{agent}",
            "enrollment_token.used",
            {"agent": agent, "token_sha256": digest},
            now,
        )
        return int(token_id)

    def _check(self, s: Session, row: EnrollmentToken | None, now: datetime) -> None:
        """Refuse an unusable token; a used one whose reservation is still pending is a 409
        saying when to retry (the reservation either completes or is reconciled by then)."""
        if row is not None and row.used_at is not None:
            created = s.scalar(
                select(Certificate.created_at).where(
                    Certificate.enrollment_token_id == row.id,
                    Certificate.status == CertStatus.PENDING,
                )
            )
            if created is not None:
                wait = max(1, int((created + self.pending_bound - now).total_seconds()) + 1)
                raise CAError(
                    ErrorCode.CONFLICT,
                    f"an enrollment with this token is in progress; retry in {wait} s",
                    retry_after=wait,
                )
        if row is None:
            raise CAError(ErrorCode.UNAUTHENTICATED, "unknown enrollment token")
        if row.revoked_at is not None:
            raise CAError(ErrorCode.UNAUTHENTICATED, "the enrollment token was revoked")
        if row.used_at is not None:
            raise CAError(ErrorCode.UNAUTHENTICATED, "the enrollment token was already used")
        if row.expires_at <= now:
            raise CAError(ErrorCode.UNAUTHENTICATED, "the enrollment token has expired")
