"""RFC 5280 revocation reason codes (section 5.3.1) and their text names."""

from __future__ import annotations

import enum

from cryptography import x509

from ca.errors import CAError, ErrorCode


class RevocationReason(enum.IntEnum):
    """CRLReason values; 7 is unused by RFC 5280."""

    UNSPECIFIED = 0
    KEY_COMPROMISE = 1
    CA_COMPROMISE = 2
    AFFILIATION_CHANGED = 3
    SUPERSEDED = 4
    CESSATION_OF_OPERATION = 5
    CERTIFICATE_HOLD = 6
    REMOVE_FROM_CRL = 8
    PRIVILEGE_WITHDRAWN = 9
    AA_COMPROMISE = 10

    @property
    def text(self) -> str:
        """The RFC name, e.g. ``keyCompromise``."""
        head, *rest = self.name.lower().split("_")
        return head + "".join(w.capitalize() for w in rest)

    @property
    def x509_flag(self) -> x509.ReasonFlags:
        return _FLAGS[self]

    @classmethod
    def parse(cls, text: str) -> RevocationReason:
        """Accept ``keyCompromise``, ``key-compromise``, ``key_compromise`` or ``1``."""
        key = text.strip().replace("-", "").replace("_", "").lower()
        for reason in cls:
            if key in {reason.text.lower(), str(reason.value)}:
                if reason is cls.REMOVE_FROM_CRL:
                    break
                return reason
        choices = ", ".join(r.text for r in cls if r is not cls.REMOVE_FROM_CRL)
        raise CAError(
            ErrorCode.BAD_REQUEST, f"unknown revocation reason '{text}' (one of: {choices})"
        )


_FLAGS = {
    RevocationReason.UNSPECIFIED: x509.ReasonFlags.unspecified,
    RevocationReason.KEY_COMPROMISE: x509.ReasonFlags.key_compromise,
    RevocationReason.CA_COMPROMISE: x509.ReasonFlags.ca_compromise,
    RevocationReason.AFFILIATION_CHANGED: x509.ReasonFlags.affiliation_changed,
    RevocationReason.SUPERSEDED: x509.ReasonFlags.superseded,
    RevocationReason.CESSATION_OF_OPERATION: x509.ReasonFlags.cessation_of_operation,
    RevocationReason.CERTIFICATE_HOLD: x509.ReasonFlags.certificate_hold,
    RevocationReason.REMOVE_FROM_CRL: x509.ReasonFlags.remove_from_crl,
    RevocationReason.PRIVILEGE_WITHDRAWN: x509.ReasonFlags.privilege_withdrawn,
    RevocationReason.AA_COMPROMISE: x509.ReasonFlags.aa_compromise,
}
