"""``GET /ca/metadata.json``: what verifiers and agents configure from (decision 0022).

The trust domain, the issuers with the OID arc recorded for each, the arc new certificates are
issued under (``oid_arc``), every arc a certificate that may still be valid is under
(``accepted_oid_arcs``: current first), and the CRL and OCSP URLs. SDKs parse it with
:func:`wire.ca_metadata.arcs_from_metadata`. Public and cacheable for a minute.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, jsonify

from ca.api.state import runtime
from ca.arcs import ArcState
from ca.config import Settings
from ca.oids import OidArc
from ca.records import IssuerRecord

MAX_AGE = 60  # seconds: a move to a new arc reaches verifiers that refresh within a minute

metadata = Blueprint("metadata", __name__)


def _time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def metadata_document(
    settings: Settings,
    issuers: list[IssuerRecord],
    issuer_arcs: dict[str, OidArc],
    arcs: ArcState,
    now: datetime,
) -> dict[str, Any]:
    """The metadata document (a pure function of its inputs; ``schemas.CAMetadata``)."""
    base = settings.public_base_url.rstrip("/")
    return {
        "trust_domain": settings.trust_domain,
        "issuers": [
            {
                "name": r.name,
                "role": r.role,
                "subject": r.certificate.subject.rfc4514_string(),
                "oid_arc": issuer_arcs[r.name].dotted,
                "not_after": _time(r.certificate.not_valid_after_utc),
                "certificate_url": f"{base}/ca/{r.name}.der",
                "crl_url": f"{settings.effective_crl_base_url}/{r.name}.crl",
            }
            for r in issuers
        ],
        "oid_arc": arcs.current.dotted,
        "accepted_oid_arcs": [a.dotted for a in arcs.accepted(now)],
        "previous_oid_arcs": [
            {"oid_arc": p.arc.dotted, "accepted_until": _time(p.until)}
            for p in arcs.previous
            if p.until > now
        ],
        "ocsp_url": settings.effective_ocsp_url,
        "chain_url": f"{base}/ca/chain.pem",
    }


@metadata.get("/ca/metadata.json")
def ca_metadata() -> Response:
    """The CA metadata document."""
    rt = runtime()
    hierarchy = rt.authority.hierarchy
    body = metadata_document(
        rt.settings,
        rt.authority.issuers(),
        hierarchy.issuer_arcs(),
        hierarchy.arc_state(),
        rt.authority.clock(),
    )
    resp = jsonify(body)
    resp.headers["Cache-Control"] = f"public, max-age={MAX_AGE}"
    return resp
