"""Errors raised by the key seam.

``hsm`` sits below ``ca`` and does not import it; each error carries ``code_slug``, which
``ca.errors.as_ca_error`` maps onto the product's single error family.
"""

from __future__ import annotations


class HSMError(Exception):
    """A PKCS#11 failure, translated into a readable message."""

    code_slug = "hsm-failure"


class HSMUnavailable(HSMError):
    """The token cannot be reached now (removed, its files gone, the device failing).

    The key store reopens the session by itself with bounded backoff; until then every call
    fails fast with this error. ``retry_after`` is the whole seconds until the next attempt.
    """

    code_slug = "hsm-unavailable"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PinIncorrect(HSMError):
    code_slug = "hsm-pin-incorrect"


class TokenNotFound(HSMError):
    code_slug = "hsm-token-missing"


class KeyNotFound(HSMError):
    code_slug = "hsm-key-missing"


class MechanismUnsupported(HSMError):
    code_slug = "hsm-mechanism-unsupported"


class KeyNotExtractable(HSMError):
    """Raised when anything asks an HSM-resident private key for its private material."""

    code_slug = "hsm-failure"


class KeyExists(HSMError):
    code_slug = "conflict"


class PinFileError(HSMError):
    """A PIN file is missing, empty or unreadable (the message names the path, never the PIN)."""
