"""The WIMSE profile of request signing (draft-ietf-wimse-http-signature-07, section 3) and the
Workload Identity Token request (docs/wimse.md).

A WIMSE-profile signature covers ``@method``, ``@path``, ``@query`` (-07 replaced
``@request-target`` with them, WGLC #297) and, when present,
``content-type``, ``content-digest``, ``authorization``, ``txn-token`` and
``workload-identity-token``; agentca adds its identity headers (``client-cert``,
``client-cert-chain``, ``agentca-ocsp``, ``agentca-provenance``). Parameters: ``created``,
``expires``, ``nonce``, ``tag="wimse-workload-to-workload"``, ``wimse-aud``; never ``keyid``
or ``alg``. The label is ``wimse``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

from agent import httpsig
from wire.renewal import WIT_REQUEST_CONTEXT, wit_request_statement

__all__ = [
    "IF_PRESENT",
    "LABEL",
    "TAG",
    "WIT_HEADER",
    "WIT_REQUEST_CONTEXT",
    "audience_of",
    "covered_components",
    "wit_request_statement",
]

TAG: Final = "wimse-workload-to-workload"
LABEL: Final = "wimse"
WIT_HEADER: Final = "Workload-Identity-Token"
#: Headers the draft requires to be covered when the request has them (lower case).
IF_PRESENT: Final = (
    "content-type",
    "content-digest",
    "authorization",
    "txn-token",
    "workload-identity-token",
)


def audience_of(url: str) -> str:
    """The draft's default ``wimse-aud``: the target URI without query or fragment
    (scheme and host lower case, default port left out): the origin the agentca profile
    uses (:func:`agent.httpsig.audience_of`) followed by the path."""
    return httpsig.audience_of(url) + (urlsplit(url).path or "/")


def covered_components(headers: Mapping[str, str], identity_headers: list[str]) -> list[str]:
    """The covered components for a request whose (lower-case) headers are ``headers``."""
    covered = ["@method", "@path", "@query"]
    covered += [h for h in IF_PRESENT if h in headers]
    covered += [h for h in identity_headers if h in headers and h not in covered]
    return covered
