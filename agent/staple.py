"""Fetch the agent's own OCSP response (to staple it on every request)."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID

from agent.errors import StapleError


@dataclass(frozen=True)
class Staple:
    """One OCSP response for the agent's certificate."""

    der: bytes
    status: str  # "good", "revoked" or "unknown"
    this_update: datetime
    next_update: datetime | None
    fetched_at: float  # local time.time() when the request was sent


def ocsp_url(cert: x509.Certificate) -> str:
    """The first http(s) OCSP URL of ``cert``'s AIA extension."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        raise StapleError("the certificate has no AIA extension") from None
    for desc in aia:
        if desc.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
            desc.access_location, x509.UniformResourceIdentifier
        ):
            url = desc.access_location.value
            if url.startswith(("http://", "https://")):
                return url
    raise StapleError("the certificate names no http OCSP URL")


def fetch_staple(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    now: float,
    url: str | None = None,
    timeout: float = 5.0,
) -> Staple:
    """POST a nonce-carrying OCSP request for ``cert`` and return the checked answer.

    The nonce makes the responder sign a fresh answer (``thisUpdate`` = now), which is what
    gateways with a short freshness window want.
    """
    nonce = os.urandom(16)
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(cert, issuer, hashes.SHA256())
        .add_extension(x509.OCSPNonce(nonce), critical=False)
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    target = url or ocsp_url(cert)
    req = urllib.request.Request(
        target,
        data=request,
        method="POST",
        headers={"Content-Type": "application/ocsp-request", "Accept": "application/ocsp-response"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            der = resp.read(64 * 1024)
    except (urllib.error.URLError, OSError) as exc:
        raise StapleError(f"OCSP request to {target} failed: {exc}") from None
    try:
        parsed = ocsp.load_der_ocsp_response(der)
    except ValueError as exc:
        raise StapleError(f"OCSP answer is not DER: {exc}") from None
    if parsed.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise StapleError(f"OCSP responder answered {parsed.response_status.name}")
    try:
        echoed = parsed.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        echoed = None
    if echoed != nonce:
        raise StapleError("OCSP answer does not echo our nonce")
    for single in parsed.responses:
        if single.serial_number == cert.serial_number:
            return Staple(
                der,
                single.certificate_status.name.lower(),
                single.this_update_utc,
                single.next_update_utc,
                now,
            )
    raise StapleError("OCSP answer is not about our certificate")
