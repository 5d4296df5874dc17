"""The certificate the agent presented in TLS (mutual TLS), and the channel binding check.

Where it comes from (:class:`ClientCertSource`, docs/mtls.md, decision 0024):

* **A trusted TLS-terminating proxy**: when the immediate peer (``REMOTE_ADDR`` as the WSGI
  server set it; the original one if werkzeug's ``ProxyFix`` rewrote it) is in
  ``trusted_proxies`` (IP addresses or CIDR networks, IPv4 and IPv6; empty by default, so no
  proxy is trusted), its RFC 9440 ``Client-Cert`` (and ``Client-Cert-Chain``) header is the
  certificate the proxy verified in TLS. With ``proxy_header_format="escaped-pem"`` the proxy
  sends the URL-escaped PEM of nginx's ``$ssl_client_escaped_cert`` in ``proxy_header``
  instead. Headers from any other peer never count as TLS-verified.
* **The WSGI server's own TLS**: the ``SSL_CLIENT_CERT`` environ key (PEM), which Apache
  mod_wsgi (with mod_ssl ``SSLOptions +ExportCertData``), uWSGI behind nginx
  (``uwsgi_param SSL_CLIENT_CERT $ssl_client_raw_cert``) and werkzeug's development server
  set. gunicorn verifies client certificates (``cert_reqs``) but exposes none in the environ.
  ``SSL_CLIENT_VERIFY`` (mod_ssl, nginx), when present, must not say ``FAILED``.

Channel binding (:func:`check_binding`): a route that requires a TLS client certificate is
served only when one was presented and it is byte-identical (SHA-256 of the DER) to the
certificate whose key signed the request, so a signed request replayed over another TLS
connection (another client certificate, or none) is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.problems import Check, Denied
from wire.client_cert import (
    MAX_CERT_BYTES,
    ClientCertError,
    decode_client_cert,
    decode_client_cert_chain,
)

ENVIRON_CERT: Final = "SSL_CLIENT_CERT"
ENVIRON_CHAIN_PREFIX: Final = "SSL_CLIENT_CERT_CHAIN_"  # mod_ssl: _0, _1, ...
ENVIRON_VERIFY: Final = "SSL_CLIENT_VERIFY"
MAX_ENVIRON_CHAIN: Final = 8
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class TlsClientCert:
    """A certificate presented in TLS: ``source`` is ``"tls"`` (the WSGI server's own
    handshake) or ``"proxy"`` (a trusted proxy's header); ``peer`` the immediate peer."""

    der: bytes
    chain: tuple[bytes, ...]
    source: str
    peer: str

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of the DER certificate (what :func:`check_binding` compares)."""
        return hashlib.sha256(self.der).digest()


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """IP addresses and CIDR networks (``10.0.0.5``, ``10.0.0.0/8``, ``::1``, ``fd00::/8``);
    ``ValueError`` names the entry that is neither."""
    out: list[Network] = []
    for entry in entries:
        try:
            out.append(_unmapped(ipaddress.ip_network(entry.strip(), strict=False)))
        except ValueError:
            raise ValueError(f"trusted proxy {entry!r} is not an IP address or network") from None
    return tuple(out)


_MAPPED: Final = ipaddress.IPv6Network("::ffff:0:0/96")


def _unmapped(net: Network) -> Network:
    """An IPv4-mapped IPv6 network as the IPv4 network it maps (peers are compared as IPv4)."""
    if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(_MAPPED):
        mapped = net.network_address.ipv4_mapped
        assert mapped is not None
        return ipaddress.IPv4Network((mapped, net.prefixlen - 96))
    return net


def peer_address(environ: Mapping[str, Any]) -> str:
    """The immediate peer: ``REMOTE_ADDR`` as the server set it (before ``ProxyFix``)."""
    orig = environ.get("werkzeug.proxy_fix.orig")
    if isinstance(orig, Mapping) and orig.get("REMOTE_ADDR"):
        return str(orig["REMOTE_ADDR"])
    return str(environ.get("REMOTE_ADDR") or "")


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(text.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _pem_to_der(text: str, what: str) -> bytes:
    if len(text) > MAX_CERT_BYTES * 3:  # PEM (+ escaping, tabs) of the largest certificate
        raise Denied(Check.MALFORMED, f"{what} is too large")
    # nginx's (deprecated) $ssl_client_cert indents continuation lines with a tab.
    pem = "\n".join(line.strip() for line in text.strip().splitlines()).encode("ascii", "replace")
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise Denied(Check.MALFORMED, f"{what} is not a PEM certificate") from None
    return cert.public_bytes(serialization.Encoding.DER)


class ClientCertSource:
    """Finds the TLS client certificate of a WSGI request (see the module doc).

    ``trusted_proxies``: peers whose ``proxy_header`` is believed (default none);
    ``proxy_header_format``: ``"rfc9440"`` (``Client-Cert`` + ``Client-Cert-Chain``) or
    ``"escaped-pem"`` (nginx ``$ssl_client_escaped_cert``); ``use_tls_environ``: believe the
    WSGI server's ``SSL_CLIENT_CERT`` for peers that are not trusted proxies.
    """

    def __init__(
        self,
        trusted_proxies: Iterable[str] = (),
        *,
        proxy_header: str = "Client-Cert",
        proxy_header_format: Literal["rfc9440", "escaped-pem"] = "rfc9440",
        use_tls_environ: bool = True,
    ) -> None:
        if isinstance(trusted_proxies, str):
            raise TypeError("trusted_proxies is a list of addresses, not one string")
        if proxy_header_format not in ("rfc9440", "escaped-pem"):
            raise ValueError("proxy_header_format must be 'rfc9440' or 'escaped-pem'")
        self.trusted_proxies = parse_networks(trusted_proxies)
        self.proxy_header_format = proxy_header_format
        self._header_key = "HTTP_" + proxy_header.strip().upper().replace("-", "_")
        self.use_tls_environ = use_tls_environ

    def trusts(self, peer: str) -> bool:
        """True if ``peer`` (an IP address text) is one of the trusted proxies."""
        addr = _address(peer)
        return addr is not None and any(addr in net for net in self.trusted_proxies)

    def from_environ(self, environ: Mapping[str, Any]) -> TlsClientCert | None:
        """The TLS client certificate of this request, or None if none was presented
        (or only an untrusted peer claims one); :class:`Denied` if a trusted source sends
        something that is not a certificate."""
        peer = peer_address(environ)
        if self.trusted_proxies and self.trusts(peer):
            return self._from_proxy(environ, peer)
        if not self.use_tls_environ:
            return None
        return self._from_server(environ, peer)

    def _from_proxy(self, environ: Mapping[str, Any], peer: str) -> TlsClientCert | None:
        value = environ.get(self._header_key)
        if not value:
            return None
        if self.proxy_header_format == "escaped-pem":
            der = _pem_to_der(unquote(value), "the proxy's certificate")
            return TlsClientCert(der, (), "proxy", peer)
        try:
            der = decode_client_cert(value)
            chain_value = environ.get("HTTP_CLIENT_CERT_CHAIN")
            chain = decode_client_cert_chain(chain_value) if chain_value else []
        except ClientCertError as exc:
            raise Denied(Check.MALFORMED, f"from the trusted proxy: {exc}") from None
        return TlsClientCert(der, tuple(chain), "proxy", peer)

    @staticmethod
    def _from_server(environ: Mapping[str, Any], peer: str) -> TlsClientCert | None:
        pem = environ.get(ENVIRON_CERT)
        if not pem or not isinstance(pem, str):
            return None
        verify = str(environ.get(ENVIRON_VERIFY, ""))
        if verify.upper().startswith("FAILED"):
            detail = f"the TLS server did not verify the client certificate ({verify[:120]})"
            raise Denied(Check.CHAIN, detail)
        der = _pem_to_der(pem, ENVIRON_CERT)
        chain = []
        for i in range(MAX_ENVIRON_CHAIN):
            member = environ.get(f"{ENVIRON_CHAIN_PREFIX}{i}")
            if not member:
                break
            chain.append(_pem_to_der(str(member), f"{ENVIRON_CHAIN_PREFIX}{i}"))
        return TlsClientCert(der, tuple(chain), "tls", peer)


def check_binding(tls: TlsClientCert | None, leaf_fingerprint: bytes) -> None:
    """Refuse unless a TLS client certificate was presented and it is the certificate
    (SHA-256 of its DER: ``leaf_fingerprint``) whose key signed the request."""
    if tls is None:
        raise Denied(
            Check.TLS_CLIENT_CERT_MISSING,
            "this route requires the agent certificate in TLS (mutual TLS): none was presented",
        )
    if not hmac.compare_digest(tls.fingerprint, leaf_fingerprint):
        raise Denied(
            Check.TLS_CLIENT_CERT_MISMATCH,
            "the request is signed with another certificate than the one presented in TLS "
            "(channel binding)",
        )
