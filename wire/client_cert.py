"""RFC 9440 ``Client-Cert`` / ``Client-Cert-Chain`` header fields, shared by agent and gateway.

``Client-Cert`` is one sf-binary item holding a DER certificate; ``Client-Cert-Chain`` is an
sf-list of sf-binary items, the intermediates in TLS order (leaf's issuer first, no trust
anchor). A TLS-terminating proxy sets them for the gateway (the proxy must be trusted: see
``gateway.client_cert``); a WIMSE-profile agent sends its own certificate in them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from wire import sf

CLIENT_CERT: Final = "Client-Cert"
CLIENT_CERT_CHAIN: Final = "Client-Cert-Chain"
#: Bounds: one certificate and the whole chain field, before base64 (a proxy that sends more
#: is misconfigured or hostile).
MAX_CERT_BYTES: Final = 16 * 1024
MAX_CHAIN_CERTS: Final = 8


class ClientCertError(ValueError):
    """A ``Client-Cert`` or ``Client-Cert-Chain`` field that is not RFC 9440."""


def encode_client_cert(der: bytes) -> str:
    """The ``Client-Cert`` field value for one DER certificate."""
    return sf.serialize_bare(bytes(der))


def encode_client_cert_chain(ders: Sequence[bytes]) -> str:
    """The ``Client-Cert-Chain`` field value for DER certificates in TLS order."""
    return ", ".join(sf.serialize_bare(bytes(d)) for d in ders)


def decode_client_cert(value: str) -> bytes:
    """The DER certificate in a ``Client-Cert`` field value (no parameters allowed)."""
    if len(value) > MAX_CERT_BYTES * 4 // 3 + 8:
        raise ClientCertError("Client-Cert is too large")
    try:
        item = sf.parse_item(value)
    except sf.SFError as exc:
        raise ClientCertError(f"Client-Cert is not an sf-binary item: {exc}") from None
    if not isinstance(item.value, bytes) or item.params or not item.value:
        raise ClientCertError("Client-Cert must be one non-empty sf-binary item")
    return item.value


def decode_client_cert_chain(value: str) -> list[bytes]:
    """The DER certificates in a ``Client-Cert-Chain`` field value, in order."""
    if len(value) > MAX_CHAIN_CERTS * (MAX_CERT_BYTES * 4 // 3 + 8):
        raise ClientCertError("Client-Cert-Chain is too large")
    try:
        members = sf.parse_list(value)
    except sf.SFError as exc:
        raise ClientCertError(f"Client-Cert-Chain is not an sf-list: {exc}") from None
    if len(members) > MAX_CHAIN_CERTS:
        raise ClientCertError(f"Client-Cert-Chain has more than {MAX_CHAIN_CERTS} certificates")
    out: list[bytes] = []
    for member in members:
        item = member.value if isinstance(member, sf.Item) else None
        if not isinstance(item, bytes) or not item or member.params:
            raise ClientCertError("Client-Cert-Chain members must be non-empty sf-binary items")
        if len(item) > MAX_CERT_BYTES:
            raise ClientCertError("a Client-Cert-Chain certificate is too large")
        out.append(item)
    return out
