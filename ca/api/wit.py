"""Workload Identity Tokens over HTTP: ``POST /v1/wit`` and ``GET /ca/wit-jwks.json``."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from datetime import timedelta

from flask import Blueprint, Response, jsonify

from ca.api.enroll_routes import rate_limit
from ca.api.schemas import WitJson
from ca.api.state import runtime
from ca.api.validation import read_body
from ca.errors import CAError, ErrorCode
from ca.wit import (
    WitRequest,
    check_wit_request,
    mint_wit,
    thumbprint,
    wit_jwks,
    wit_lifetime,
)

wit = Blueprint("wit", __name__)
log = logging.getLogger("agentca.api.wit")


@wit.post("/v1/wit")
def mint() -> tuple[Response, int]:
    """Mint a WIT for the certificate whose key signed the request's proof."""
    rate_limit()
    body = read_body(WitJson)
    try:
        proof = base64.b64decode(body.proof, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CAError(ErrorCode.BAD_REQUEST, "'proof' must be base64") from exc
    lifetime = None if body.lifetime_seconds is None else timedelta(seconds=body.lifetime_seconds)
    req = WitRequest(body.certificate.encode(), body.created, proof, lifetime)
    rt = runtime()
    issuer = rt.authority.hierarchy.signing_issuer()
    now = rt.authority.clock()
    cert = check_wit_request(
        req, issuer.certificate, lambda serial: rt.authority.get(serial, issuer.name), now
    )
    granted = wit_lifetime(lifetime, cert, now)
    minted = mint_wit(issuer.key, rt.settings.effective_public_base_url, cert, now, granted)
    expires = int(minted.expires.timestamp())
    agent = minted.sub.rsplit("/", 1)[-1]
    with rt.sessions.begin() as s:  # recorded before the token is handed out
        rt.authority.journal.write(
            s,
            f"agent:{agent}",
            "wit.issued",
            {
                "agent": agent,
                "sub": minted.sub,
                "serial": format(cert.serial_number, "x"),
                "jti": minted.jti,
                "expires_at": minted.expires.isoformat(),
                "cnf_jkt": thumbprint(cert.public_key()),
            },
            now,
        )
    log.info(
        "minted WIT jti=%s sub=%s serial=%x exp=%d",
        minted.jti,
        minted.sub,
        cert.serial_number,
        expires,
    )
    answer = jsonify(
        token=minted.token,
        token_type="wit+jwt",
        sub=minted.sub,
        jti=minted.jti,
        expires_at=minted.expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        expires_at_unix=expires,
    )
    answer.headers["Cache-Control"] = "no-store"
    return answer, 201


@wit.get("/ca/wit-jwks.json")
def jwks() -> Response:
    """The JWK Set of the WIT signing key (the issuing CA key; x5c = issuing CA, root)."""
    authority = runtime().authority
    chain = authority.chain()
    resp = Response(json.dumps(wit_jwks(chain[0], chain)), mimetype="application/jwk-set+json")
    resp.headers["Cache-Control"] = "public, max-age=300"
    return resp
