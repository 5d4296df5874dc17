"""Build OCSP responses (RFC 6960 section 4.2) with asn1crypto, signed through the key seam.

``build_basic_response`` is a function of its inputs: the answers, the delegated signer (its
certificate and a cryptography private key, in production an HSM key), the times and the
nonce. Error responses carry no signature and are constants.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import core
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from asn1crypto.crl import CRLReason
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from ocsp.decision import CertState, SerialStatus


class ResponseStatus(enum.IntEnum):
    """OCSPResponseStatus (RFC 6960 section 4.2.1)."""

    SUCCESSFUL = 0
    MALFORMED_REQUEST = 1
    INTERNAL_ERROR = 2
    TRY_LATER = 3
    SIG_REQUIRED = 5
    UNAUTHORIZED = 6


def error_response(status: ResponseStatus) -> bytes:
    """The unsigned ``OCSPResponse`` for a non-successful status: SEQUENCE { ENUMERATED }."""
    return bytes((0x30, 0x03, 0x0A, 0x01, int(status)))


MALFORMED = error_response(ResponseStatus.MALFORMED_REQUEST)
INTERNAL_ERROR = error_response(ResponseStatus.INTERNAL_ERROR)
TRY_LATER = error_response(ResponseStatus.TRY_LATER)
UNAUTHORIZED = error_response(ResponseStatus.UNAUTHORIZED)


class Signer:
    """A delegated responder: its certificate and its private key (an HSM key in production)."""

    def __init__(
        self,
        certificate_der: bytes,
        key: CertificateIssuerPrivateKeyTypes,
        not_after: datetime,
        row_id: int = 0,
    ) -> None:
        self.certificate_der = certificate_der
        self.key = key
        self.not_after = not_after
        self.row_id = row_id
        self.asn1_certificate = asn1_x509.Certificate.load(certificate_der)
        self.key_hash: bytes = self.asn1_certificate.public_key.sha1
        """SHA-1 of the signer's subjectPublicKey: the ResponderID ``byKey``."""


@dataclass(frozen=True)
class SingleAnswer:
    """The answer for one CertID (``cert_id_der`` echoes the request's CertID)."""

    cert_id_der: bytes
    status: SerialStatus


def sign_data(key: CertificateIssuerPrivateKeyTypes, data: bytes) -> tuple[str, bytes]:
    """Sign ``data``; return the asn1crypto signature algorithm name and the signature."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.key_size >= 384:
            return "sha384_ecdsa", key.sign(data, ec.ECDSA(hashes.SHA384()))
        return "sha256_ecdsa", key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return "sha256_rsa", key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519", key.sign(data)
    raise TypeError(f"cannot sign OCSP responses with a {type(key).__name__}")


def _single(
    answer: SingleAnswer, this_update: datetime, next_update: datetime
) -> dict[str, object]:
    status = answer.status
    cert_status: asn1_ocsp.CertStatus
    if status.state is CertState.GOOD:
        cert_status = asn1_ocsp.CertStatus(name="good", value=asn1_ocsp.StatusGood())
    else:
        info: dict[str, object] = {"revocation_time": status.answer_time}
        if status.answer_reason is not None:
            info["revocation_reason"] = CRLReason(status.answer_reason)
        cert_status = asn1_ocsp.CertStatus(name="revoked", value=asn1_ocsp.RevokedInfo(info))
    return {
        "cert_id": asn1_ocsp.CertId.load(answer.cert_id_der),
        "cert_status": cert_status,
        "this_update": this_update,
        "next_update": next_update,
    }


def build_basic_response(
    answers: Sequence[SingleAnswer],
    signer: Signer,
    produced_at: datetime,
    this_update: datetime,
    next_update: datetime,
    nonce: bytes | None = None,
) -> bytes:
    """A successful ``OCSPResponse`` holding a signed ``BasicOCSPResponse``.

    Times must be whole seconds in UTC. The extended-revoke extension (RFC 6960 section 2.2)
    is added when any answer is the "revoked" reply for a serial that was never issued; the
    nonce (RFC 8954) is echoed when given. ``certs`` carries the signer certificate only.
    """
    extensions = []
    if nonce is not None:
        extensions.append({"extn_id": "nonce", "extn_value": core.OctetString(nonce)})
    if any(a.status.state is CertState.UNISSUED for a in answers):
        extensions.append({"extn_id": "extended_revoke", "extn_value": core.Null()})
    data: dict[str, object] = {
        "responder_id": asn1_ocsp.ResponderId(name="by_key", value=signer.key_hash),
        "produced_at": produced_at,
        "responses": [_single(a, this_update, next_update) for a in answers],
    }
    if extensions:
        data["response_extensions"] = extensions
    tbs = asn1_ocsp.ResponseData(data)
    algorithm, signature = sign_data(signer.key, tbs.dump())
    basic = asn1_ocsp.BasicOCSPResponse(
        {
            "tbs_response_data": tbs,
            "signature_algorithm": {"algorithm": algorithm},
            "signature": signature,
            "certs": [signer.asn1_certificate],
        }
    )
    response = asn1_ocsp.OCSPResponse(
        {
            "response_status": "successful",
            "response_bytes": {"response_type": "basic_ocsp_response", "response": basic},
        }
    )
    return bytes(response.dump())
