"""The renewal statement (``agentca-renew-v2``): what an agent's current key signs to renew.

It covers every member of the renewal request, so nothing in the body can be changed after
signing. It is a sequence of fields, each written as a 4-byte big-endian length followed by
that many bytes::

    field(b"agentca-renew-v2")                 context (domain separation)
    field(ASCII decimal of created)            Unix time, e.g. b"1795690000"
    field(SHA-256(new CSR DER))                32 bytes
    field(SHA-256(current certificate DER))    32 bytes: the certificate's fingerprint
    field(scopes)        b"\\x00" when absent, else b"\\x01" + uint32 count + field(UTF-8 scope)...
    field(validity)      b"\\x00" when absent, else b"\\x01" + ASCII decimal of validity_seconds

Scopes are covered in the order the request lists them, each as UTF-8 with lone surrogates
passed through (``surrogatepass``): the encoding stays injective and the function total, so a
request whose JSON holds ``"\\ud800"`` gets a proof that does not verify, not a crash (the CA
builds this statement before it checks anything about the scopes). The agent SDK builds it and
the CA (``ca/proof.py``) verifies it, both with this one function.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

RENEW_CONTEXT: Final = b"agentca-renew-v2"
#: What goes in the CSR slot of the statement for a Workload Identity Token request
#: (``POST /v1/wit``, docs/wimse.md): it is no CSR's SHA-256 input (a DER CSR starts with
#: 0x30), so a WIT proof can never renew, nor a renewal proof mint a WIT.
WIT_REQUEST_CONTEXT: Final = b"agentca-wit-request-v1"


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def renewal_statement(
    created: int,
    csr_der: bytes,
    certificate_der: bytes,
    scopes: Sequence[str] | None = None,
    validity_seconds: int | None = None,
) -> bytes:
    """The exact bytes the current key signs to renew ``certificate_der`` with ``csr_der``."""
    if scopes is None:
        scope_part = b"\x00"
    else:
        scope_part = (
            b"\x01"
            + len(scopes).to_bytes(4, "big")
            + b"".join(_field(s.encode("utf-8", "surrogatepass")) for s in scopes)
        )
    validity_part = (
        b"\x00" if validity_seconds is None else b"\x01" + str(int(validity_seconds)).encode()
    )
    return b"".join(
        _field(part)
        for part in (
            RENEW_CONTEXT,
            str(int(created)).encode(),
            hashlib.sha256(csr_der).digest(),
            hashlib.sha256(certificate_der).digest(),
            scope_part,
            validity_part,
        )
    )


def wit_request_statement(created: int, certificate_der: bytes, lifetime: int | None) -> bytes:
    """What the certificate key signs to ask the CA for a WIT: the renewal statement with
    :data:`WIT_REQUEST_CONTEXT` in the CSR slot, no scopes and the lifetime in the validity
    slot. The agent SDK signs it and the CA (``ca/wit.py``) verifies it."""
    return renewal_statement(created, WIT_REQUEST_CONTEXT, certificate_der, None, lifetime)
