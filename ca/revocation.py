"""RFC 5280 revocation reason codes (section 5.3.1) and their text names."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from ca.errors import CAError, ErrorCode

if TYPE_CHECKING:  # loaded by x509_flag: reading records (`agentca list`) needs none
    from cryptography import x509


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
        """cryptography's flag for this reason."""
        from cryptography import x509

        return getattr(x509.ReasonFlags, _FLAG_NAMES[self])  # type: ignore[no-any-return]

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


_FLAG_NAMES = {  # cryptography's ReasonFlags member names
    RevocationReason.UNSPECIFIED: "unspecified",
    RevocationReason.KEY_COMPROMISE: "key_compromise",
    RevocationReason.CA_COMPROMISE: "ca_compromise",
    RevocationReason.AFFILIATION_CHANGED: "affiliation_changed",
    RevocationReason.SUPERSEDED: "superseded",
    RevocationReason.CESSATION_OF_OPERATION: "cessation_of_operation",
    RevocationReason.CERTIFICATE_HOLD: "certificate_hold",
    RevocationReason.REMOVE_FROM_CRL: "remove_from_crl",
    RevocationReason.PRIVILEGE_WITHDRAWN: "privilege_withdrawn",
    RevocationReason.AA_COMPROMISE: "aa_compromise",
}
