"""The exit code of every error code: the CLI's half of the error family.

The codes are documented for operators (docs/operators.md, "Exit codes") and scripts rely on
them, so a value here never changes once released. ``tests/unit/test_error_edges.py`` keeps
the table total.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

from ca.errors import CAError, ErrorCode

EXIT_CODE: Final = MappingProxyType(
    {
        ErrorCode.INTERNAL: 1,
        ErrorCode.BAD_REQUEST: 2,
        ErrorCode.INVALID_SCOPE: 2,
        ErrorCode.INVALID_DIGEST: 2,
        ErrorCode.INVALID_NAME: 2,
        ErrorCode.INVALID_VALIDITY: 2,
        ErrorCode.INVALID_EXTENSION: 2,
        ErrorCode.TOO_LARGE: 2,
        ErrorCode.UNSUPPORTED_MEDIA: 2,
        ErrorCode.BAD_CSR: 3,
        ErrorCode.CSR_SIGNATURE: 3,
        ErrorCode.UNSUPPORTED_KEY: 3,
        ErrorCode.POLICY_REFUSED: 4,
        ErrorCode.UNAUTHENTICATED: 5,
        ErrorCode.FORBIDDEN: 5,
        ErrorCode.NOT_FOUND: 6,
        ErrorCode.CONFLICT: 7,
        ErrorCode.ALREADY_REVOKED: 7,
        ErrorCode.RATE_LIMITED: 8,
        ErrorCode.NOT_INITIALISED: 9,
        ErrorCode.CONFIG: 10,
        ErrorCode.HSM_PIN: 11,
        ErrorCode.HSM_TOKEN_MISSING: 11,
        ErrorCode.HSM_KEY_MISSING: 11,
        ErrorCode.HSM_MECHANISM: 11,
        ErrorCode.HSM_FAILURE: 11,
        ErrorCode.HSM_UNAVAILABLE: 11,
        ErrorCode.DB_UNAVAILABLE: 12,
        ErrorCode.CLOCK_SKEW: 13,
        ErrorCode.STORAGE_FULL: 14,
        ErrorCode.ACTION_GAP: 2,
        ErrorCode.CHECKPOINT_INVALID: 2,
    }
)


def exit_code(error: CAError | ErrorCode) -> int:
    """The process exit status the CLI ends with for an error (or an error code)."""
    code = error.code if isinstance(error, CAError) else error
    return EXIT_CODE[code]
