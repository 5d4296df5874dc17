"""One error family for the whole product.

Every failure the core can report is a :class:`CAError` carrying an :class:`ErrorCode`,
which is a stable slug and a title and nothing else. What an error becomes at an edge is
that edge's business: the HTTP status and the RFC 9457 ``type`` URI in ``ca.api.statuses``
and ``ca.api.problems``, the exit code in ``cli.exit_codes``, the OCSPResponseStatus in
``ocsp.responder`` (docs/decisions/0021-errors-at-the-edges.md).
"""

from __future__ import annotations

import enum
import errno
import os
from typing import Any


class ErrorCode(enum.Enum):
    """Stable error codes; the value is the slug (it never changes once released)."""

    BAD_REQUEST = "bad-request"
    BAD_CSR = "bad-csr"
    CSR_SIGNATURE = "csr-signature-invalid"
    UNSUPPORTED_KEY = "unsupported-key-type"
    INVALID_SCOPE = "invalid-scope"
    INVALID_DIGEST = "invalid-digest"
    INVALID_NAME = "invalid-name"
    INVALID_VALIDITY = "invalid-validity"
    INVALID_EXTENSION = "invalid-extension"
    POLICY_REFUSED = "policy-refused"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not-found"
    CONFLICT = "conflict"
    ALREADY_REVOKED = "already-revoked"
    TOO_LARGE = "payload-too-large"
    UNSUPPORTED_MEDIA = "unsupported-media-type"
    RATE_LIMITED = "rate-limited"
    NOT_INITIALISED = "not-initialised"
    CONFIG = "configuration"
    HSM_PIN = "hsm-pin-incorrect"
    HSM_TOKEN_MISSING = "hsm-token-missing"
    HSM_KEY_MISSING = "hsm-key-missing"
    HSM_MECHANISM = "hsm-mechanism-unsupported"
    HSM_FAILURE = "hsm-failure"
    HSM_UNAVAILABLE = "hsm-unavailable"
    CLOCK_SKEW = "clock-skew"
    DB_UNAVAILABLE = "database-unavailable"
    STORAGE_FULL = "storage-full"
    INTERNAL = "internal"
    ACTION_GAP = "action-sequence-gap"  # a batch starts past the gateway's next record (0056)
    CHECKPOINT_INVALID = "checkpoint-invalid"  # a gateway checkpoint that does not verify

    @property
    def slug(self) -> str:
        """The stable, machine-readable name, e.g. ``storage-full``."""
        slug: str = self.value
        return slug

    @property
    def title(self) -> str:
        """A short human-readable summary of the kind of error."""
        return _TITLES[self]


_TITLES = {
    ErrorCode.BAD_REQUEST: "Bad request",
    ErrorCode.BAD_CSR: "Malformed certificate signing request",
    ErrorCode.CSR_SIGNATURE: "CSR signature does not verify",
    ErrorCode.UNSUPPORTED_KEY: "Unsupported key type",
    ErrorCode.INVALID_SCOPE: "Invalid scope",
    ErrorCode.INVALID_DIGEST: "Invalid digest",
    ErrorCode.INVALID_NAME: "Invalid name",
    ErrorCode.INVALID_VALIDITY: "Invalid validity",
    ErrorCode.INVALID_EXTENSION: "Invalid agent extension",
    ErrorCode.POLICY_REFUSED: "Refused by policy",
    ErrorCode.UNAUTHENTICATED: "Authentication required",
    ErrorCode.FORBIDDEN: "Forbidden",
    ErrorCode.NOT_FOUND: "Not found",
    ErrorCode.CONFLICT: "Conflict",
    ErrorCode.ALREADY_REVOKED: "Already revoked",
    ErrorCode.TOO_LARGE: "Payload too large",
    ErrorCode.UNSUPPORTED_MEDIA: "Unsupported media type",
    ErrorCode.RATE_LIMITED: "Too many requests",
    ErrorCode.NOT_INITIALISED: "CA not initialised",
    ErrorCode.CONFIG: "Configuration error",
    ErrorCode.HSM_PIN: "HSM PIN incorrect",
    ErrorCode.HSM_TOKEN_MISSING: "HSM token not found",
    ErrorCode.HSM_KEY_MISSING: "HSM key not found",
    ErrorCode.HSM_MECHANISM: "HSM mechanism not supported",
    ErrorCode.HSM_FAILURE: "HSM failure",
    ErrorCode.HSM_UNAVAILABLE: "HSM unavailable",
    ErrorCode.CLOCK_SKEW: "Clock skew too large",
    ErrorCode.DB_UNAVAILABLE: "Database unavailable",
    ErrorCode.STORAGE_FULL: "Insufficient storage",
    ErrorCode.INTERNAL: "Internal error",
    ErrorCode.ACTION_GAP: "Gap in the action records",
    ErrorCode.CHECKPOINT_INVALID: "Invalid gateway checkpoint",
}

_BY_SLUG = {code.slug: code for code in ErrorCode}

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_SQLITE_FULL = 13  # SQLITE_FULL: "database or disk is full"
_PG_DISK_FULL = "53100"


def is_storage_full(exc: BaseException) -> bool:
    """True for "no space left" (ENOSPC, EDQUOT), SQLite's SQLITE_FULL, PostgreSQL's 53100."""
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return True
    orig = getattr(exc, "orig", None)
    if orig is None:
        return False
    if getattr(orig, "sqlstate", None) == _PG_DISK_FULL:
        return True
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF == _SQLITE_FULL:
        return True
    return "database or disk is full" in str(orig)


def storage_full(exc: OSError, what: str, where: str | os.PathLike[str] | None = None) -> CAError:
    """A :class:`CAError` naming what was being written and the directory whose file system
    is full (``where``, else the directory of the error's file name)."""
    path = exc.filename if isinstance(exc.filename, str) else None
    place = str(where) if where is not None else (os.path.dirname(path) or path) if path else ""
    of = f" of {place}" if place else ""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return CAError(ErrorCode.STORAGE_FULL, f"{what}: the file system{of} is full: {reason}")


class CAError(Exception):
    """An expected failure with a stable code and a human-readable detail."""

    def __init__(self, code: ErrorCode, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.extra: dict[str, Any] = extra

    @property
    def title(self) -> str:
        return self.code.title

    def __str__(self) -> str:
        return f"{self.code.slug}: {self.detail}"


def as_ca_error(exc: BaseException) -> CAError:
    """Map any exception raised below the edge to a :class:`CAError`.

    HSM errors (``hsm.errors.HSMError``) carry a ``code`` slug that matches one of ours; a
    full disk (ENOSPC, SQLite's ``SQLITE_FULL``, PostgreSQL's ``disk_full``) becomes
    ``STORAGE_FULL``; a database connectivity failure becomes ``DB_UNAVAILABLE``;
    anything else is ``INTERNAL`` with no internals leaked.
    """
    if isinstance(exc, CAError):
        return exc
    if isinstance(exc, OSError) and is_storage_full(exc):
        return storage_full(exc, "cannot write")
    slug = getattr(exc, "code_slug", None)
    if isinstance(slug, str):
        retry_after = getattr(exc, "retry_after", None)
        extra = {"retry_after": retry_after} if isinstance(retry_after, int) else {}
        code = _BY_SLUG.get(slug)
        if code is not None:
            return CAError(code, str(exc), **extra)
    try:
        from sqlalchemy.exc import DataError, DBAPIError, OperationalError

        sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
        if isinstance(exc, DBAPIError) and is_storage_full(exc):
            return CAError(
                ErrorCode.STORAGE_FULL,
                "the database's storage is full; the change was not made",
            )
        if isinstance(exc, DBAPIError) and sqlstate in ("40P01", "40001"):
            return CAError(  # deadlock or serialization failure: nothing was changed
                ErrorCode.CONFLICT,
                "the change met a concurrent one on the same records and was not made; retry",
            )
        if isinstance(exc, OperationalError) or (
            isinstance(exc, DBAPIError) and exc.connection_invalidated
        ):
            return CAError(ErrorCode.DB_UNAVAILABLE, "the database cannot be reached")
        if isinstance(exc, DataError):  # a value the database cannot store, e.g. a NUL byte
            return CAError(ErrorCode.BAD_REQUEST, "a value in the request cannot be stored")
    except ImportError:  # pragma: no cover - sqlalchemy is a hard dependency
        pass
    return CAError(ErrorCode.INTERNAL, "an internal error occurred")
