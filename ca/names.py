"""Validators for the names and strings agentca puts into certificates (pure functions).

Every validator returns the accepted value (possibly normalised) or raises
:class:`~ca.errors.CAError` with a one-line detail; nothing else escapes.
"""

from __future__ import annotations

import re
import unicodedata
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


# -- the admission profile (UTS #39): what a registration, inventory entry or scope may use ----
#
# The validators above define the *syntax* of what a certificate may carry (they also parse
# certificates issued before this profile existed). What the registry admits is stricter:
# identifiers are ASCII, human text is one script, and two identifiers that a person cannot
# tell apart (case, look-alike characters) are the same identifier. See
# docs/decisions/0010-identifiers-and-config-digests.md.

# UTS #39 confusables (confusables.txt) restricted to the repertoire the profile admits, plus
# the Cyrillic and Greek letters that look like Latin ones (whole-script confusables), so a
# label kept from before the profile still collides with its Latin twin. Applied before case
# folding where case matters ("I" looks like "l", "i" does not).
_CONFUSABLE_BEFORE_FOLD: Final = {"0": "o", "1": "l", "I": "l", "|": "l"}
_CONFUSABLE_AFTER_FOLD: Final = {
    "m": "rn",
    # Cyrillic
    "\u0430": "a", "\u0435": "e", "\u043e": "o", "\u0440": "p", "\u0441": "c",
    "\u0443": "y", "\u0445": "x", "\u0456": "i", "\u0458": "j", "\u0455": "s",
    "\u0501": "d", "\u04bb": "h", "\u04cf": "l", "\u0461": "w", "\u051b": "q",
    "\u043c": "rn", "\u0442": "t", "\u043a": "k", "\u043d": "h", "\u0432": "b",
    # Greek
    "\u03bf": "o", "\u03b1": "a", "\u03bd": "v", "\u03b9": "i", "\u03ba": "k",
    "\u03c1": "p", "\u03c4": "t", "\u03c5": "u", "\u03c7": "x", "\u03b5": "e",
}  # fmt: skip

# Scripts a letter may belong to, from its Unicode character name (Python's unicodedata has
# no Script property; for letters and marks the name starts with the script's name).
_SCRIPT_PREFIXES: Final = (
    "LATIN", "GREEK", "CYRILLIC", "ARMENIAN", "HEBREW", "ARABIC", "DEVANAGARI", "BENGALI",
    "GURMUKHI", "GUJARATI", "TAMIL", "TELUGU", "KANNADA", "MALAYALAM", "THAI", "GEORGIAN",
    "HANGUL", "HIRAGANA", "KATAKANA", "BOPOMOFO", "CJK", "ETHIOPIC", "SINHALA", "KHMER", "LAO",
)  # fmt: skip
# UTS #39 "Highly Restrictive": one script, or Latin with the scripts of one CJK writing system.
_ALLOWED_COMBINATIONS: Final = (
    frozenset({"LATIN", "CJK", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "CJK", "BOPOMOFO"}),
    frozenset({"LATIN", "CJK", "HANGUL"}),
)
_PRINTABLE_ASCII_RE: Final = re.compile(r"[\x20-\x7e]+")


def identifier_key(value: str) -> str:
    """The skeleton two identifiers collide on: NFKC, UTS #39 confusables, case folding.

    ``identifier_key("AgentA") == identifier_key("agenta")`` and ``identifier_key("agent-1")
    == identifier_key("agent-l")``; the registry refuses a second identifier with the key of
    an existing one.
    """
    text = unicodedata.normalize("NFKC", value)
    text = "".join(_CONFUSABLE_BEFORE_FOLD.get(c, c) for c in text).casefold()
    text = "".join(_CONFUSABLE_AFTER_FOLD.get(c, c) for c in text)
    return unicodedata.normalize("NFKC", text)


def admit_identifier(s: object, what: str) -> str:
    """An environment or model type as the registry admits it: printable ASCII only.

    The certificate syntax (:func:`validate_environment`, :func:`validate_model_type`) allows
    any printable text; a registration does not, so ``prod`` and ``pr\u043ed`` (Cyrillic o)
    cannot both exist.
    """
    value = _require_str(s, what, ErrorCode.INVALID_NAME)
    if not _PRINTABLE_ASCII_RE.fullmatch(value):
        raise CAError(
            ErrorCode.INVALID_NAME,
            f"{what} {value[:40]!a} must use printable ASCII only (look-alike letters from "
            "other scripts are refused)",
        )
    return value


def scripts_of(value: str) -> frozenset[str]:
    """The scripts of the letters in ``value`` (digits, punctuation and marks are neutral)."""
    found: set[str] = set()
    for c in value:
        if unicodedata.category(c)[0] != "L":
            continue
        name = unicodedata.name(c, "")
        script = next((p for p in _SCRIPT_PREFIXES if name.startswith(p + " ")), None)
        found.add(script or f"U+{ord(c):04X}")
    return frozenset(found)


def admit_text(s: object, what: str, limit: int) -> str:
    """Human text (an organisation name) as the registry admits it (UTS #39, §5.2).

    NFC; letters from one script (UTS #39 "Highly Restrictive": Latin may join Han with
    Hiragana/Katakana, Bopomofo or Hangul); combining marks only after a letter; everything
    else printable ASCII, so no invisible, format, bidirectional or control characters.
    """
    value = _require_str(s, what, ErrorCode.INVALID_NAME)
    _validate_printable(value, what, limit)
    if unicodedata.normalize("NFC", value) != value:
        raise CAError(ErrorCode.INVALID_NAME, f"{what} {value[:40]!a} is not in Unicode NFC")
    previous = ""
    for c in value:
        category = unicodedata.category(c)
        if category[0] == "M" and previous and unicodedata.category(previous)[0] in "LM":
            pass
        elif category[0] != "L" and not _PRINTABLE_ASCII_RE.fullmatch(c):
            raise CAError(
                ErrorCode.INVALID_NAME,
                f"{what} {value[:40]!a} contains U+{ord(c):04X} ({category}); outside "
                "letters, only printable ASCII is allowed",
            )
        previous = c
    scripts = scripts_of(value)
    unknown = sorted(x for x in scripts if x.startswith("U+"))
    if unknown:
        raise CAError(
            ErrorCode.INVALID_NAME,
            f"{what} {value[:40]!a} uses letters of an unsupported script ({unknown[0]})",
        )
    if len(scripts) > 1 and not any(scripts <= combo for combo in _ALLOWED_COMBINATIONS):
        raise CAError(
            ErrorCode.INVALID_NAME,
            f"{what} {value[:40]!a} mixes scripts ({', '.join(sorted(scripts))}); use one script",
        )
    return value
