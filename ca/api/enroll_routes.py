"""Agent-facing endpoints: enrollment with a one-time token, renewal with the current key."""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives import serialization
from flask import Blueprint, Response, current_app, jsonify, request

from ca.api.auth import bearer_token
from ca.api.ratelimit import TokenBucket
from ca.api.schemas import EnrollJson, RenewJson
from ca.api.state import runtime
from ca.api.validation import query_seconds, read_body, timedelta_or_none
from ca.enrollment import RenewalRequest
from ca.errors import CAError, ErrorCode
from ca.records import CertificateRecord

enroll = Blueprint("enroll", __name__)

PKCS10 = "application/pkcs10"
PEM_CHAIN = "application/pem-certificate-chain"
PKIX_CERT = "application/pkix-cert"
#: the runtime attestation of an ``application/pkcs10`` enrollment (JSON: ``attestation``)
ATTESTATION_HEADER = "Agentca-Attestation"


def rate_limit() -> None:
    """The per-client enrollment rate limit (also taken by ``POST /v1/wit``): 429 when spent."""
    bucket: TokenBucket = current_app.extensions["agentca.enroll_bucket"]
    wait = bucket.take(request.remote_addr or "unknown")
    if wait > 0:
        raise CAError(
            ErrorCode.RATE_LIMITED,
            f"too many enrollment requests; retry in {wait:.1f} s",
            retry_after=max(1, round(wait)),
        )


def _issued(record: CertificateRecord) -> Response:
    """The new certificate in the representation the client asked for (201 Created)."""
    cert = record.certificate
    assert cert is not None
    chain = runtime().authority.chain()
    wanted = request.accept_mimetypes.best_match(
        ["application/json", PEM_CHAIN, PKIX_CERT], default="application/json"
    )
    if wanted == PKIX_CERT:
        resp = Response(cert.public_bytes(serialization.Encoding.DER), 201, mimetype=PKIX_CERT)
    elif wanted == PEM_CHAIN:
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [cert, *chain])
        resp = Response(pem, 201, mimetype=PEM_CHAIN)
    else:
        body = record.to_dict()
        body["certificate_pem"] = cert.public_bytes(serialization.Encoding.PEM).decode()
        body["chain_pem"] = [c.public_bytes(serialization.Encoding.PEM).decode() for c in chain]
        resp = jsonify(body)
        resp.status_code = 201
    resp.headers["Location"] = f"/certificates/{record.serial_hex}"
    return resp


@enroll.post("/v1/enroll")
def enroll_agent() -> Response:
    """Enroll: a PKCS#10 CSR (PEM or DER) with a one-time enrollment token.

    Body: ``application/pkcs10`` (DER or PEM; ``?scopes=a,b&validity_seconds=N``) or
    ``application/json`` ``{"csr": PEM, "scopes": [...], "validity_seconds": N}``.
    """
    rate_limit()
    token = bearer_token()
    scopes: list[str] | None
    attestation: str | None
    if request.mimetype == "application/json":
        body = read_body(EnrollJson)
        csr = body.csr.encode()
        scopes = body.scopes
        validity = timedelta_or_none(body.validity_seconds)
        attestation = body.attestation
    elif request.mimetype in (PKCS10, "application/x-pem-file"):
        csr = request.get_data()
        raw = request.args.get("scopes")
        scopes = [s for s in raw.split(",") if s] if raw else None
        validity = query_seconds("validity_seconds")
        attestation = request.headers.get(ATTESTATION_HEADER)
    else:
        raise CAError(ErrorCode.UNSUPPORTED_MEDIA, "send application/pkcs10 or application/json")
    record = runtime().enrollment.enroll(
        token,
        csr,
        tuple(scopes) if scopes is not None else None,
        validity,
        _evidence(attestation),
    )
    return _issued(record)


@enroll.post("/v1/renew")
def renew_agent() -> Response:
    """Renew: the current certificate, a new CSR, and a proof signed with the current key."""
    rate_limit()
    body = read_body(RenewJson)
    try:
        proof = base64.b64decode(body.proof, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CAError(ErrorCode.BAD_REQUEST, "'proof' must be base64") from exc
    req = RenewalRequest(
        certificate_pem=body.certificate.encode(),
        csr=body.csr.encode(),
        created=body.created,
        proof=proof,
        scopes=tuple(body.scopes) if body.scopes is not None else None,
        validity=timedelta_or_none(body.validity_seconds),
        attestation=_evidence(body.attestation),
    )
    return _issued(runtime().enrollment.renew(req))


def _evidence(text: str | None) -> bytes | None:
    """The attestation as bytes (a compact JWS and an SEV-SNP JSON envelope are ASCII;
    anything else is refused here)."""
    if text is None:
        return None
    try:
        return text.encode("ascii")
    except UnicodeEncodeError:
        raise CAError(
            ErrorCode.BAD_REQUEST,
            "'attestation' must be a compact JWS or an SEV-SNP envelope (ASCII)",
        ) from None
