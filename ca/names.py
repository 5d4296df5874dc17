"""Validators for the names and strings agentca puts into certificates (pure functions).

Every validator returns the accepted value (possibly normalised) or raises
:class:`~ca.errors.CAError` with a one-line detail; nothing else escapes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from ca.errors import CAError, ErrorCode

MAX_SCOPE_LEN: Final = 64
MAX_SCOPES: Final = 64
MAX_AGENT_NAME_LEN: Final = 64
MAX_OFFICER_LEN: Final = 254
MAX_ENVIRONMENT_LEN: Final = 64
MAX_ORGANIZATION_LEN: Final = 128
MAX_MODEL_TYPE_LEN: Final = 128
MAX_TRUST_DOMAIN_LEN: Final = 255

_SCOPE_RE: Final = re.compile(r"[a-z][a-z0-9_]*(?:[.:][a-z0-9_]+)*")
_AGENT_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_EMAIL_LOCAL_RE: Final = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
)
_DNS_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL_DOMAIN_RE: Final = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})+")
_HEX64_RE: Final = re.compile(r"[0-9A-Fa-f]{64}")
_TRUST_DOMAIN_RE: Final = re.compile(r"[a-z0-9._-]+")


def _require_str(value: object, what: str, code: ErrorCode) -> str:
    if not isinstance(value, str):
        raise CAError(code, f"{what} must be a string, not {type(value).__name__}")
    return value


def _show(value: str, limit: int = 40) -> str:
    """A short, safe rendering of user input for error details."""
    text = value if len(value) <= limit else value[:limit] + "..."
    return repr(text)


def validate_scope(s: object) -> str:
    """Validate one scope such as ``submit_limit_order`` or ``orders:write``.

    Grammar ``[a-z][a-z0-9_]*(?:[.:][a-z0-9_]+)*``, 1..64 characters.
    """
    value = _require_str(s, "scope", ErrorCode.INVALID_SCOPE)
    if not 1 <= len(value) <= MAX_SCOPE_LEN:
        raise CAError(
            ErrorCode.INVALID_SCOPE, f"scope must be 1..{MAX_SCOPE_LEN} characters: {_show(value)}"
        )
    if not _SCOPE_RE.fullmatch(value):
        raise CAError(
            ErrorCode.INVALID_SCOPE,
            f"scope {_show(value)} does not match [a-z][a-z0-9_]*([.:][a-z0-9_]+)*",
        )
    return value


def normalise_scopes(scopes: Iterable[object]) -> tuple[str, ...]:
    """Validate every scope, drop duplicates and sort; 1..64 distinct scopes."""
    if isinstance(scopes, (str, bytes)):
        raise CAError(ErrorCode.INVALID_SCOPE, "scopes must be a list of strings, not one string")
    try:
        items = list(scopes)
    except TypeError:
        raise CAError(ErrorCode.INVALID_SCOPE, "scopes must be a list of strings") from None
    result = tuple(sorted({validate_scope(s) for s in items}))
    if not result:
        raise CAError(ErrorCode.INVALID_SCOPE, "at least one scope is required")
    if len(result) > MAX_SCOPES:
        raise CAError(
            ErrorCode.INVALID_SCOPE, f"at most {MAX_SCOPES} scopes are allowed, got {len(result)}"
        )
    return result


def validate_agent_name(s: object) -> str:
    """Validate an agent name such as ``ExecutionAgent-ETH-01``.

    Case-sensitive, ``A-Za-z0-9._-``, 1..64 characters, starting with a letter or digit; it
    becomes a SPIFFE path segment (``spiffe://<td>/agent/<name>``), so no ``/``.
    """
    value = _require_str(s, "agent name", ErrorCode.INVALID_NAME)
    if not 1 <= len(value) <= MAX_AGENT_NAME_LEN:
        raise CAError(
            ErrorCode.INVALID_NAME,
            f"agent name must be 1..{MAX_AGENT_NAME_LEN} characters: {_show(value)}",
        )
    if not _AGENT_NAME_RE.fullmatch(value):
        raise CAError(
            ErrorCode.INVALID_NAME,
            f"agent name {_show(value)} must start with a letter or digit and use only "
            "A-Z a-z 0-9 . _ -",
        )
    return value


def validate_officer(s: object) -> str:
    """Validate the officer of record: an ASCII e-mail address ``local@domain.tld``, <= 254."""
    value = _require_str(s, "officer of record", ErrorCode.INVALID_NAME)
    if not 3 <= len(value) <= MAX_OFFICER_LEN:
        raise CAError(
            ErrorCode.INVALID_NAME,
            f"officer of record must be an e-mail address of at most {MAX_OFFICER_LEN} "
            f"characters: {_show(value)}",
        )
    if not value.isascii():
        raise CAError(
            ErrorCode.INVALID_NAME, f"officer of record must be ASCII (IA5String): {_show(value)}"
        )
    local, sep, domain = value.rpartition("@")
    if (
        not sep
        or len(local) > 64
        or not _EMAIL_LOCAL_RE.fullmatch(local)
        or not _EMAIL_DOMAIN_RE.fullmatch(domain)
    ):
        raise CAError(
            ErrorCode.INVALID_NAME,
            f"officer of record {_show(value)} is not an e-mail address local@domain.tld",
        )
    return value


def _validate_printable(value: str, what: str, limit: int) -> str:
    if not 1 <= len(value) <= limit:
        raise CAError(ErrorCode.INVALID_NAME, f"{what} must be 1..{limit} characters")
    if not value.isprintable():
        raise CAError(
            ErrorCode.INVALID_NAME, f"{what} contains control or non-printable characters"
        )
    if value != value.strip():
        raise CAError(ErrorCode.INVALID_NAME, f"{what} has leading or trailing whitespace")
    return value


def validate_environment(s: object) -> str:
    """Validate an environment label such as ``prod-eu``: 1..64 printable characters."""
    value = _require_str(s, "environment", ErrorCode.INVALID_NAME)
    return _validate_printable(value, "environment", MAX_ENVIRONMENT_LEN)


def validate_organization(s: object) -> str:
    """Validate an owner organisation name: 1..128 printable characters."""
    value = _require_str(s, "organization", ErrorCode.INVALID_NAME)
    return _validate_printable(value, "organization", MAX_ORGANIZATION_LEN)


def validate_model_type(s: object) -> str:
    """Validate a model type such as ``gpt-4o-2024-08-06``: 1..128 printable characters."""
    value = _require_str(s, "model type", ErrorCode.INVALID_NAME)
    return _validate_printable(value, "model type", MAX_MODEL_TYPE_LEN)


def parse_sha256_hex(s: object) -> bytes:
    """Parse a SHA-256 digest written as 64 hex digits, optionally prefixed ``sha256:``."""
    value = _require_str(s, "SHA-256 digest", ErrorCode.INVALID_DIGEST)
    text = value[7:] if value[:7].lower() == "sha256:" else value
    if not _HEX64_RE.fullmatch(text):
        raise CAError(
            ErrorCode.INVALID_DIGEST,
            f"a SHA-256 digest is exactly 64 hex digits (optionally 'sha256:'-prefixed), "
            f"got {_show(value, 80)}",
        )
    return bytes.fromhex(text)


def validate_trust_domain(s: object) -> str:
    """Validate a SPIFFE trust domain: lowercase letters, digits, ``.``, ``-``, ``_``."""
    value = _require_str(s, "trust domain", ErrorCode.INVALID_NAME)
    if not 1 <= len(value) <= MAX_TRUST_DOMAIN_LEN:
        raise CAError(
            ErrorCode.INVALID_NAME, f"trust domain must be 1..{MAX_TRUST_DOMAIN_LEN} characters"
        )
    if not _TRUST_DOMAIN_RE.fullmatch(value):
        raise CAError(
            ErrorCode.INVALID_NAME,
            f"trust domain {_show(value)} may use only lowercase letters, digits, '.', '-', '_'",
        )
    return value
