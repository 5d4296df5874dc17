"""API tokens for operators, auditors and read-only clients: create, authenticate, list, revoke.

A token is ``aca_api_`` + 256 random bits, returned once and stored as its SHA-256 hash. Every
token expires (a default lifetime, capped by a maximum, fixed at creation) and can be revoked;
creation and revocation are recorded in the ledger in the same transaction. The time a token
was last used is written at most once a minute per token, so authenticating stays one indexed
read on almost every request.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ca.clock import Clock, utcnow
from ca.errors import CAError, ErrorCode
from ca.ledger.store import append
from ca.names import validate_agent_name

# re-exported: their home is ca.roles
from ca.roles import ApiPrincipal as ApiPrincipal
from ca.roles import Role as Role
from ca.roles import parse_role as parse_role
from ca.roles import token_hash as token_hash
from ca.store.models import ApiToken

API_PREFIX = "aca_api_"
DEFAULT_TTL = timedelta(days=90)
MAX_TTL = timedelta(days=365)
MIN_TTL = timedelta(minutes=1)
LAST_USED_RESOLUTION = timedelta(minutes=1)
TOKEN_LENGTH = len(API_PREFIX) + 43  # secrets.token_urlsafe(32) is 43 characters


@dataclass(frozen=True)
class ApiTokenInfo:
    """What may be shown about a token: never its secret or its hash."""

    name: str
    role: Role
    created_at: datetime
    created_by: str
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None
    last_used_at: datetime | None

    def status(self, now: datetime) -> str:
        """``active``, ``expired`` or ``revoked`` at ``now``."""
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at <= now else "active"

    def to_json(self, now: datetime) -> dict[str, Any]:
        """The JSON shape the API and ``apitoken list --json`` answer."""

        def iso(t: datetime | None) -> str | None:
            return t.isoformat() if t is not None else None

        return {
            "name": self.name,
            "role": self.role.value,
            "status": self.status(now),
            "created_at": iso(self.created_at),
            "created_by": self.created_by,
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
            "revoked_by": self.revoked_by,
            "last_used_at": iso(self.last_used_at),
        }


def _info(row: ApiToken) -> ApiTokenInfo:
    return ApiTokenInfo(
        row.name,
        Role(row.role),
        row.created_at,
        row.created_by,
        row.expires_at,
        row.disabled_at,
        row.revoked_by,
        row.last_used_at,
    )


class ApiTokens:
    """The API token store (see the module docstring)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock = utcnow,
        default_ttl: timedelta = DEFAULT_TTL,
        max_ttl: timedelta = MAX_TTL,
    ) -> None:
        if not MIN_TTL <= default_ttl <= max_ttl:
            raise CAError(
                ErrorCode.CONFIG,
                "api_token_default_ttl_days must be positive and within api_token_max_ttl_days",
            )
        self.sessions = sessions
        self.clock = clock
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl

    def create(
        self, name: str, role: str, actor: str = "system", ttl: timedelta | None = None
    ) -> tuple[str, ApiTokenInfo]:
        """A new token; returns ``(secret, info)``. The secret is shown only this once."""
        parsed = parse_role(role)
        validate_agent_name(name)
        lifetime = self.default_ttl if ttl is None else ttl
        if not MIN_TTL <= lifetime <= self.max_ttl:
            raise CAError(
                ErrorCode.INVALID_VALIDITY,
                f"an API token lives between 1 minute and {self.max_ttl.days} days",
            )
        token = API_PREFIX + secrets.token_urlsafe(32)
        now = self.clock()
        row = ApiToken(
            name=name,
            token_hash=token_hash(token),
            role=parsed.value,
            created_at=now,
            created_by=actor,
            expires_at=now + lifetime,
        )
        try:
            with self.sessions.begin() as s:
                s.add(row)
                s.flush()
                append(
                    s,
                    actor,
                    "api_token.created",
                    {
                        "name": name,
                        "role": parsed.value,
                        "token_sha256": row.token_hash,
                        "expires_at": row.expires_at.isoformat(),
                    },
                    now,
                )
        except IntegrityError as exc:
            raise CAError(
                ErrorCode.CONFLICT,
                f"an API token named '{name}' exists (names are never reused, even after "
                "revocation, so the ledger's actors stay unambiguous)",
            ) from exc
        return token, _info(row)

    def list(self) -> list[ApiTokenInfo]:
        """Every token, oldest first (revoked and expired ones included)."""
        with self.sessions() as s:
            return [_info(r) for r in s.scalars(select(ApiToken).order_by(ApiToken.id))]

    def revoke(self, name: str, actor: str) -> ApiTokenInfo:
        """Revoke a token at once (its next request gets 401); recorded in the ledger."""
        now = self.clock()
        with self.sessions.begin() as s:
            row = s.scalar(select(ApiToken).where(ApiToken.name == name).with_for_update())
            if row is None:
                raise CAError(ErrorCode.NOT_FOUND, f"no API token named '{name[:64]}'")
            if row.disabled_at is not None:
                raise CAError(ErrorCode.CONFLICT, f"the API token '{name}' is already revoked")
            row.disabled_at = now
            row.revoked_by = actor
            append(
                s,
                actor,
                "api_token.revoked",
                {"name": name, "role": row.role, "token_sha256": row.token_hash},
                now,
            )
            return _info(row)

    def authenticate(self, token: str) -> ApiPrincipal:
        """The principal of a usable token, else ``UNAUTHENTICATED`` (unknown, expired or
        revoked). Records the time of use at most once a minute per token."""
        if len(token) != TOKEN_LENGTH or not token.startswith(API_PREFIX):
            raise CAError(ErrorCode.UNAUTHENTICATED, "unknown API token")
        digest = token_hash(token)
        now = self.clock()
        with self.sessions() as s:
            row = s.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
            # The lookup is by a hash of the secret, so its timing reveals nothing usable;
            # the comparison is constant-time all the same.
            if row is None or not hmac.compare_digest(row.token_hash, digest):
                raise CAError(ErrorCode.UNAUTHENTICATED, "unknown API token")
            if row.disabled_at is not None:
                raise CAError(ErrorCode.UNAUTHENTICATED, "the API token has been revoked")
            if row.expires_at <= now:
                raise CAError(ErrorCode.UNAUTHENTICATED, "the API token has expired")
            if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
                s.execute(
                    update(ApiToken)
                    .where(
                        ApiToken.id == row.id,
                        or_(
                            ApiToken.last_used_at.is_(None),
                            ApiToken.last_used_at <= now - LAST_USED_RESOLUTION,
                        ),
                    )
                    .values(last_used_at=now)
                )
                s.commit()
            return ApiPrincipal(row.name, Role(row.role))
