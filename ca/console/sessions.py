"""Console sessions: an API token exchanged for a random session id, stored hashed.

A session is a row of ``console_sessions`` bound to the API token it was exchanged for. Every
request looks it up by the SHA-256 of its id together with that token, and ends it (recorded
in the ledger) when it has been idle too long, has lived too long, or its token has been
revoked or has expired. Sign-in and sign-out are recorded in the ledger in the same
transaction as the session change (decision 0054).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from ca.apitokens import ApiTokens
from ca.clock import Clock
from ca.errors import CAError, ErrorCode
from ca.ledger.store import append
from ca.roles import ApiPrincipal, Role, token_hash
from ca.store.models import ApiToken, ConsoleSession

#: roles that may sign in to the console (issuer-verbatim tokens only issue, over the API)
CONSOLE_ROLES = frozenset({Role.OPERATOR, Role.AUDITOR, Role.READ_ONLY})
#: the last-seen time is written at most this often (or a tenth of the idle timeout, if
#: shorter), so a page costs one read, not a write, and the idle timeout stays precise
TOUCH_RESOLUTION = timedelta(seconds=5)


@dataclass(frozen=True)
class ConsoleUser:
    """The signed-in principal of a request and its session's CSRF token."""

    principal: ApiPrincipal
    csrf_token: str
    session_id: int

    @property
    def actor(self) -> str:
        """The ledger actor of console actions: the token's name, marked as the console's."""
        return f"console:{self.principal.name}"

    @property
    def role(self) -> Role:
        return self.principal.role


class SessionEnded(Exception):
    """The session cookie names no live session (the reason is shown on the sign-in page)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConsoleSessions:
    """The session store (see the module docstring)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        api_tokens: ApiTokens,
        clock: Clock,
        idle: timedelta,
        absolute: timedelta,
    ) -> None:
        if idle <= timedelta(0) or absolute <= timedelta(0):
            raise CAError(
                ErrorCode.CONFIG,
                "console_idle_seconds and console_session_seconds must be positive",
            )
        self.sessions = sessions
        self.api_tokens = api_tokens
        self.clock = clock
        self.idle = idle
        self.absolute = absolute
        self.touch = min(TOUCH_RESOLUTION, idle / 10)

    def sign_in(self, token: str, client: str) -> tuple[str, ConsoleUser]:
        """A new session for a usable API token: ``(session id, user)``. The token is checked
        by the API's own authentication; the id is returned once and stored hashed."""
        principal = self.api_tokens.authenticate(token)
        if principal.role not in CONSOLE_ROLES:
            raise CAError(
                ErrorCode.FORBIDDEN,
                f"role '{principal.role.value}' may not sign in to the console",
            )
        sid = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = self.clock()
        with self.sessions.begin() as s:
            token_id = s.scalar(select(ApiToken.id).where(ApiToken.token_hash == token_hash(token)))
            if token_id is None:  # revoked between the check and here: refuse all the same
                raise CAError(ErrorCode.UNAUTHENTICATED, "unknown API token")
            row = ConsoleSession(
                session_hash=token_hash(sid),
                api_token_id=token_id,
                csrf_token=csrf,
                created_at=now,
                last_seen_at=now,
            )
            s.add(row)
            s.flush()
            append(
                s,
                f"console:{principal.name}",
                "console.signed_in",
                {
                    "token_name": principal.name,
                    "role": principal.role.value,
                    "session": row.id,
                    "client": client[:64],
                },
                now,
            )
            return sid, ConsoleUser(principal, csrf, row.id)

    def lookup(self, sid: str) -> ConsoleUser:
        """The user of a live session, or :class:`SessionEnded` (and the session is ended,
        with the reason recorded, when it has just timed out or lost its token)."""
        if not sid or len(sid) > 64:
            raise SessionEnded("signed-out")
        digest = token_hash(sid)
        now = self.clock()
        with self.sessions() as s:
            found = s.execute(
                select(ConsoleSession, ApiToken)
                .join(ApiToken, ApiToken.id == ConsoleSession.api_token_id)
                .where(ConsoleSession.session_hash == digest)
            ).first()
            if found is None or not hmac.compare_digest(found[0].session_hash, digest):
                raise SessionEnded("signed-out")
            row, tok = found
            if row.ended_at is not None:
                raise SessionEnded(row.ended_reason or "signed-out")
            reason = None
            if tok.disabled_at is not None:
                reason = "token-revoked"
            elif tok.expires_at <= now:
                reason = "token-expired"
            elif now - row.created_at >= self.absolute:
                reason = "session-expired"
            elif now - row.last_seen_at >= self.idle:
                reason = "idle-timeout"
            if reason is not None:
                self._end(s, row.id, tok.name, reason, now)
                s.commit()
                raise SessionEnded(reason)
            if now - row.last_seen_at >= self.touch:
                s.execute(
                    update(ConsoleSession)
                    .where(ConsoleSession.id == row.id)
                    .values(last_seen_at=now)
                )
                s.commit()
            return ConsoleUser(ApiPrincipal(tok.name, Role(tok.role)), row.csrf_token, row.id)

    def sign_out(self, user: ConsoleUser) -> None:
        """End the session now (recorded in the ledger)."""
        now = self.clock()
        with self.sessions.begin() as s:
            self._end(s, user.session_id, user.principal.name, "signed-out", now)

    @staticmethod
    def _end(s: Session, session_id: int, name: str, reason: str, now: datetime) -> None:
        done = s.execute(
            update(ConsoleSession)
            .where(ConsoleSession.id == session_id, ConsoleSession.ended_at.is_(None))
            .values(ended_at=now, ended_reason=reason)
        )
        if getattr(done, "rowcount", 0):
            event = "console.signed_out" if reason == "signed-out" else "console.session_ended"
            append(
                s,
                f"console:{name}",
                event,
                {"token_name": name, "session": session_id, "reason": reason},
                now,
            )
