"""The delegated signers a responder process answers with, loaded and never made here.

``CurrentSigners`` reads the published ``ocsp_signers`` rows (the CA side writes them, see
``ca.responder_certs``) and loads their keys from the responder's own token. Per issuer it uses
the newest signer that is valid now and whose key the token holds; an issuer without one gets
``tryLater`` (``NOT_INITIALISED``) until the CA side publishes one.

A row is used only if it is fit to sign: its certificate is a delegated responder certificate
(id-kp-OCSPSigning, id-pkix-ocsp-nocheck, not a CA) issued by that issuer's certificate, and the
token's key under its label is the certificate's key. Otherwise every answer would fail
verification at the client (RFC 6960 4.2.2.2), or worse, be signed by a key the certificate
does not name; such a row is logged once and skipped like a missing key.

Pre-signed answers (decision 0047) are trusted from every signer an issuer still has, not only
the one this process signs with: ``accepted_for`` lists the published rows that are within
their validity, not retired, and whose certificate is fit (the checks above but the key, which
this token need not hold: the answer was signed elsewhere). So a rotation does not make every
stored answer unusable at once; a retired or expired signer's answers are never served.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID

from ca.errors import CAError, ErrorCode
from hsm import KeyManager, KeyNotFound, SigningKey
from ocsp.response import Signer
from ocsp.status import IssuerInfo, SignerInfo, StatusSource

log = logging.getLogger("agentca.ocsp")


class StaticSigners:
    """A fixed signer per issuer (tests, and tools that sign with software keys)."""

    def __init__(self, signers: dict[int, Signer]) -> None:
        self.signers = signers

    def signer_for(self, issuer_id: int) -> Signer:
        try:
            return self.signers[issuer_id]
        except KeyError:
            raise CAError(ErrorCode.NOT_INITIALISED, "no OCSP signer for this issuer") from None

    def accepted_for(self, issuer_id: int) -> Mapping[int, float]:
        signer = self.signers.get(issuer_id)
        return {} if signer is None else {signer.row_id: signer.not_after.timestamp()}

    def reload(self) -> None:
        pass

    def check(self) -> bool:
        return False


def _spki(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def unfit_reason(info: SignerInfo, key: SigningKey, issuer: IssuerInfo | None) -> str | None:
    """Why the row ``info`` with the token's ``key`` must not sign for its issuer (None: fit)."""
    return certificate_unfit_reason(info, issuer, key)


def certificate_unfit_reason(
    info: SignerInfo, issuer: IssuerInfo | None, key: SigningKey | None = None
) -> str | None:
    """Why answers signed under the row ``info`` must not be trusted for its issuer (None:
    fit): issued by that issuer, id-kp-OCSPSigning, id-pkix-ocsp-nocheck, not a CA; with
    ``key``, also that the key is the certificate's."""
    if issuer is None:
        return "its issuer is unknown"
    try:
        cert = x509.load_der_x509_certificate(info.certificate_der)
        issuer_cert = x509.load_der_x509_certificate(issuer.certificate_der)
        try:
            cert.verify_directly_issued_by(issuer_cert)
        except (ValueError, TypeError, InvalidSignature):
            return f"its certificate is not issued by {issuer.name}"
        if key is not None and _spki(key.public_key()) != _spki(cert.public_key()):
            return "the token's key under its label is not its certificate's key"
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            cert.extensions.get_extension_for_class(x509.OCSPNoCheck)
        except x509.ExtensionNotFound:
            return "its certificate lacks id-kp-OCSPSigning or id-pkix-ocsp-nocheck"
        if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            return "its certificate lacks id-kp-OCSPSigning or id-pkix-ocsp-nocheck"
        try:
            if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                return "its certificate is a CA certificate"
        except x509.ExtensionNotFound:
            pass
    except ValueError as exc:
        return f"its certificate cannot be read ({exc})"
    return None


class CurrentSigners:
    """The newest valid, loadable signer per issuer (see the module docstring)."""

    def __init__(
        self, source: StatusSource, keys: KeyManager, clock: Callable[[], datetime]
    ) -> None:
        self.source = source
        self.keys = keys
        self.clock = clock
        self._signers: dict[int, Signer] = {}
        self._missing: set[str] = set()  # labels already reported as not in the token
        self._unfit: set[int] = set()  # rows already reported as unfit to sign
        self._accepted: dict[int, dict[int, float]] = {}  # issuer -> signer row -> not_after
        self._certificate_fit: dict[int, bool] = {}  # row -> certificate_unfit_reason is None
        self._issuers: dict[int, IssuerInfo] | None = None  # read once per reload, if needed

    def _issuer(self, issuer_id: int) -> IssuerInfo | None:
        if self._issuers is None:
            self._issuers = {i.id: i for i in self.source.issuers()}
        return self._issuers.get(issuer_id)

    def _load(self, info: SignerInfo, held: Signer | None) -> Signer | None:
        if held is not None and held.row_id == info.id:
            return held
        if info.id in self._unfit:
            return None
        try:
            key = self.keys.get(info.key_label)
        except KeyNotFound:
            if info.key_label not in self._missing:
                self._missing.add(info.key_label)
                log.warning(
                    "OCSP signer %s: its key is not in the responder token; skipped (run "
                    "'agentca ocsp rotate-signer' on the CA side)",
                    info.key_label,
                )
            return None
        why = unfit_reason(info, key, self._issuer(info.issuer_id))
        if why is not None:
            self._unfit.add(info.id)
            log.error(
                "OCSP signer %s (row %d) not used: %s (run 'agentca ocsp rotate-signer' on "
                "the CA side)",
                info.key_label,
                info.id,
                why,
            )
            return None
        return Signer(info.certificate_der, key, info.not_after, info.id)

    def reload(self) -> None:
        """Re-read the published signers and pick, per issuer, the newest usable one."""
        now = self.clock()
        self._issuers = None
        chosen: dict[int, Signer] = {}
        accepted: dict[int, dict[int, float]] = {}
        for info in self.source.signers(now):  # newest first, not expired, not retired
            if info.not_before > now:
                continue
            if self._trusted(info):
                accepted.setdefault(info.issuer_id, {})[info.id] = info.not_after.timestamp()
            if info.issuer_id in chosen:
                continue
            signer = self._load(info, self._signers.get(info.issuer_id))
            if signer is not None:
                chosen[info.issuer_id] = signer
        self._signers = chosen
        self._accepted = accepted

    def _trusted(self, info: SignerInfo) -> bool:
        fit = self._certificate_fit.get(info.id)
        if fit is None:
            fit = certificate_unfit_reason(info, self._issuer(info.issuer_id)) is None
            self._certificate_fit[info.id] = fit
        return fit

    def accepted_for(self, issuer_id: int) -> Mapping[int, float]:
        """The signers whose pre-signed answers may be served for ``issuer_id``: row id ->
        the end of its certificate's validity (epoch seconds), as of the last reload."""
        return self._accepted.get(issuer_id, {})

    def signer_for(self, issuer_id: int) -> Signer:
        signer = self._signers.get(issuer_id)
        if signer is None:
            raise CAError(ErrorCode.NOT_INITIALISED, "no OCSP signer for this issuer")
        return signer

    def check(self) -> bool:
        """Re-pick the signers (one expired, or a newer one became usable); True if any
        changed, or the signers whose answers are trusted did, so that the answers signed by
        the old one are dropped."""
        before = ({i: s.row_id for i, s in self._signers.items()}, self._accepted)
        self.reload()
        return before != ({i: s.row_id for i, s in self._signers.items()}, self._accepted)
