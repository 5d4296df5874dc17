"""The HTTP status of every error code: the API's half of the error family.

``ca.errors`` names a failure (a slug and a title); what it means over HTTP is decided here,
once, for every code. ``tests/unit/test_error_edges.py`` keeps the table total.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

from ca.errors import CAError, ErrorCode

HTTP_STATUS: Final = MappingProxyType(
    {
        ErrorCode.BAD_REQUEST: 400,
        ErrorCode.BAD_CSR: 400,
        ErrorCode.CSR_SIGNATURE: 400,
        ErrorCode.UNSUPPORTED_KEY: 400,
        ErrorCode.INVALID_SCOPE: 400,
        ErrorCode.INVALID_DIGEST: 400,
        ErrorCode.INVALID_NAME: 400,
        ErrorCode.INVALID_VALIDITY: 400,
        ErrorCode.INVALID_EXTENSION: 400,
        ErrorCode.POLICY_REFUSED: 403,
        ErrorCode.UNAUTHENTICATED: 401,
        ErrorCode.FORBIDDEN: 403,
        ErrorCode.NOT_FOUND: 404,
        ErrorCode.CONFLICT: 409,
        ErrorCode.ALREADY_REVOKED: 409,
        ErrorCode.TOO_LARGE: 413,
        ErrorCode.UNSUPPORTED_MEDIA: 415,
        ErrorCode.RATE_LIMITED: 429,
        ErrorCode.NOT_INITIALISED: 503,
        ErrorCode.CONFIG: 500,
        ErrorCode.HSM_PIN: 503,
        ErrorCode.HSM_TOKEN_MISSING: 503,
        ErrorCode.HSM_KEY_MISSING: 503,
        ErrorCode.HSM_MECHANISM: 503,
        ErrorCode.HSM_FAILURE: 503,
        ErrorCode.HSM_UNAVAILABLE: 503,
        ErrorCode.CLOCK_SKEW: 503,
        ErrorCode.DB_UNAVAILABLE: 503,
        ErrorCode.STORAGE_FULL: 507,  # RFC 4918 section 11.5 Insufficient Storage
        ErrorCode.INTERNAL: 500,
        ErrorCode.ACTION_GAP: 422,
        ErrorCode.CHECKPOINT_INVALID: 422,
    }
)


def http_status(error: CAError | ErrorCode) -> int:
    """The HTTP status an error (or an error code) is answered with."""
    code = error.code if isinstance(error, CAError) else error
    return HTTP_STATUS[code]
