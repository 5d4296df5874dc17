"""Where the gateway finds the TLS client certificate, whom it believes, and channel binding
(pure: environ dicts, a software PKI, a fake clock)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from flask import Flask, g, jsonify

from gateway import (
    AgentGatewayMiddleware,
    ClientCertSource,
    Denied,
    StaticInventory,
    StatusChecker,
    TlsClientCert,
    Verifier,
)
from gateway.client_cert import check_binding, parse_networks
from gateway.flask_ext import AgentGateway, requires_scope, requires_tls_client_cert
from tests.support.gateway_pki import Clock, Pki, make_agent, model_digest, signed_view
from wire.client_cert import encode_client_cert, encode_client_cert_chain

SCOPE = "submit_limit_order"
DER = serialization.Encoding.DER
PEM = serialization.Encoding.PEM


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create()


@pytest.fixture(scope="module")
def certs(pki: Pki) -> tuple[x509.Certificate, x509.Certificate]:
    return pki.issue()[1], pki.issue(name="OtherAgent")[1]


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(DER)


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(PEM).decode()


# --------------------------------------------------------------------------- trusted peers
@pytest.mark.parametrize(
    "networks, peer, trusted",
    [
        (["10.0.0.0/8"], "10.1.2.3", True),
        (["10.0.0.0/8"], "11.0.0.1", False),
        (["192.168.1.7"], "192.168.1.7", True),
        (["192.168.1.7"], "192.168.1.8", False),
        (["10.0.0.0/8"], "::ffff:10.9.9.9", True),  # IPv4-mapped, as dual-stack sockets say
        (["::ffff:10.0.0.10"], "::ffff:10.0.0.10", True),  # a mapped entry, as the log says
        (["::ffff:10.0.0.10"], "10.0.0.10", True),
        (["::ffff:10.0.0.0/104"], "10.0.0.7", True),
        (["::ffff:10.0.0.0/104"], "11.0.0.7", False),
        (["::1"], "::1", True),
        (["::1"], "[::1]", True),
        (["fd00::/8"], "fd12:3456::1", True),
        (["fd00::/8"], "fe80::1", False),
        (["fe80::/10"], "fe80::1%eth0", True),
        (["2001:db8::/32", "127.0.0.1"], "2001:db8:1::5", True),
        (["127.0.0.1"], "", False),
        (["127.0.0.1"], "unix:/run/gw.sock", False),
        (["0.0.0.0/0"], "not-an-address", False),
        ([], "127.0.0.1", False),  # the default trusts no proxy
    ],
)
def test_trusted_proxies_are_ip_addresses_and_networks(
    networks: list[str], peer: str, trusted: bool
) -> None:
    assert ClientCertSource(networks).trusts(peer) is trusted


def test_bad_trusted_proxy_entries_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match=re.escape("'10.0.0.0/33'")):
        parse_networks(["127.0.0.1", "10.0.0.0/33"])
    with pytest.raises(ValueError, match=re.escape("'proxy.local'")):
        ClientCertSource(["proxy.local"])
    with pytest.raises(TypeError):
        ClientCertSource("127.0.0.1")
    with pytest.raises(ValueError):
        ClientCertSource(proxy_header_format="xfcc")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- where it comes from
def test_header_from_a_trusted_proxy_is_the_tls_certificate(
    pki: Pki, certs: tuple[x509.Certificate, x509.Certificate]
) -> None:
    leaf, _ = certs
    environ = {
        "REMOTE_ADDR": "10.0.0.5",
        "HTTP_CLIENT_CERT": encode_client_cert(der(leaf)),
        "HTTP_CLIENT_CERT_CHAIN": encode_client_cert_chain([der(pki.issuing)]),
    }
    found = ClientCertSource(["10.0.0.0/24"]).from_environ(environ)
    assert found == TlsClientCert(der(leaf), (der(pki.issuing),), "proxy", "10.0.0.5")


def test_spoofed_header_from_an_untrusted_peer_never_counts(
    certs: tuple[x509.Certificate, x509.Certificate],
) -> None:
    leaf, other = certs
    spoofed = {"REMOTE_ADDR": "203.0.113.9", "HTTP_CLIENT_CERT": encode_client_cert(der(leaf))}
    assert ClientCertSource(["10.0.0.0/8"]).from_environ(spoofed) is None
    assert ClientCertSource().from_environ(spoofed) is None
    nginx_style = {"REMOTE_ADDR": "203.0.113.9", "HTTP_X_CLIENT_CERT": quote(pem(leaf))}
    escaped = ClientCertSource(
        ["10.0.0.0/8"], proxy_header="X-Client-Cert", proxy_header_format="escaped-pem"
    )
    assert escaped.from_environ(nginx_style) is None
    # an untrusted peer's own TLS handshake still counts (the server set SSL_CLIENT_CERT)
    direct = {**spoofed, "SSL_CLIENT_CERT": pem(other)}
    found = ClientCertSource(["10.0.0.0/8"]).from_environ(direct)
    assert found is not None and found.der == der(other) and found.source == "tls"


def test_a_trusted_proxys_own_tls_certificate_is_not_the_agents(
    pki: Pki, certs: tuple[x509.Certificate, x509.Certificate]
) -> None:
    leaf, _ = certs
    environ = {
        "REMOTE_ADDR": "10.0.0.5",
        "SSL_CLIENT_CERT": pem(pki.issuing),  # the proxy authenticating itself to us
        "HTTP_CLIENT_CERT": encode_client_cert(der(leaf)),
    }
    found = ClientCertSource(["10.0.0.5"]).from_environ(environ)
    assert found is not None and found.der == der(leaf) and found.source == "proxy"
    assert ClientCertSource(["10.0.0.5"]).from_environ({"REMOTE_ADDR": "10.0.0.5"}) is None


def test_proxy_fix_does_not_make_a_client_a_trusted_proxy(
    certs: tuple[x509.Certificate, x509.Certificate],
) -> None:
    leaf, _ = certs
    environ = {
        "REMOTE_ADDR": "10.0.0.5",  # what ProxyFix copied from X-Forwarded-For
        "werkzeug.proxy_fix.orig": {"REMOTE_ADDR": "203.0.113.9"},
        "HTTP_CLIENT_CERT": encode_client_cert(der(leaf)),
    }
    assert ClientCertSource(["10.0.0.0/8"]).from_environ(environ) is None
    environ["werkzeug.proxy_fix.orig"] = {"REMOTE_ADDR": "10.0.0.1"}
    assert ClientCertSource(["10.0.0.0/8"]).from_environ(environ) is not None


def test_server_environ_pem_forms(
    pki: Pki, certs: tuple[x509.Certificate, x509.Certificate]
) -> None:
    leaf, _ = certs
    source = ClientCertSource()
    # nginx's $ssl_client_cert indents continuation lines with a tab
    tabbed = pem(leaf).replace("\n", "\n\t").rstrip("\t")
    environ = {
        "REMOTE_ADDR": "127.0.0.1",
        "SSL_CLIENT_CERT": tabbed,
        "SSL_CLIENT_VERIFY": "SUCCESS",
        "SSL_CLIENT_CERT_CHAIN_0": pem(pki.issuing),
    }
    found = source.from_environ(environ)
    assert found == TlsClientCert(der(leaf), (der(pki.issuing),), "tls", "127.0.0.1")
    assert ClientCertSource(use_tls_environ=False).from_environ(environ) is None
    with pytest.raises(Denied) as refused:
        source.from_environ({**environ, "SSL_CLIENT_VERIFY": "FAILED:certificate revoked"})
    assert refused.value.check.value == "chain-invalid"
    assert "certificate revoked" in refused.value.detail


@pytest.mark.parametrize(
    "environ",
    [
        {"REMOTE_ADDR": "10.0.0.5", "HTTP_CLIENT_CERT": "not-sf-binary"},
        {"REMOTE_ADDR": "10.0.0.5", "HTTP_CLIENT_CERT": ":AAAA:;a=1"},
        {"REMOTE_ADDR": "10.0.0.5", "HTTP_CLIENT_CERT": ":AAAA:", "HTTP_CLIENT_CERT_CHAIN": "1"},
        {"REMOTE_ADDR": "10.0.0.5", "HTTP_CLIENT_CERT": ":" + "A" * 40000 + ":"},
        {"REMOTE_ADDR": "127.0.0.1", "SSL_CLIENT_CERT": "-----BEGIN CERTIFICATE-----\nAAAA"},
        {
            "REMOTE_ADDR": "127.0.0.1",
            "SSL_CLIENT_CERT": "-----BEGIN CERTIFICATE-----" + "A" * 60000,
        },
    ],
)
def test_garbage_from_a_trusted_source_is_malformed(environ: dict[str, str]) -> None:
    with pytest.raises(Denied) as refused:
        ClientCertSource(["10.0.0.5"]).from_environ(environ)
    assert refused.value.check.value == "malformed-credentials"


def test_escaped_pem_from_a_trusted_proxy(
    certs: tuple[x509.Certificate, x509.Certificate],
) -> None:
    leaf, _ = certs
    source = ClientCertSource(
        ["10.0.0.5"], proxy_header="X-Client-Cert", proxy_header_format="escaped-pem"
    )
    environ = {"REMOTE_ADDR": "10.0.0.5", "HTTP_X_CLIENT_CERT": quote(pem(leaf), safe="")}
    found = source.from_environ(environ)
    assert found is not None and found.der == der(leaf) and found.source == "proxy"
    # in this mode the agent's own (signed) Client-Cert is not taken for the TLS one
    assert (
        source.from_environ(
            {"REMOTE_ADDR": "10.0.0.5", "HTTP_CLIENT_CERT": encode_client_cert(der(leaf))}
        )
        is None
    )


# ---------------------------------------------------------------------------- the binding
def test_check_binding(certs: tuple[x509.Certificate, x509.Certificate]) -> None:
    leaf, other = certs
    tls = TlsClientCert(der(leaf), (), "tls", "127.0.0.1")
    check_binding(tls, tls.fingerprint)
    with pytest.raises(Denied) as missing:
        check_binding(None, tls.fingerprint)
    assert missing.value.check.value == "tls-client-cert-missing"
    assert missing.value.check.status == 401
    with pytest.raises(Denied) as mismatch:
        check_binding(TlsClientCert(der(other), (), "tls", "127.0.0.1"), tls.fingerprint)
    assert mismatch.value.check.value == "tls-client-cert-mismatch"
    assert "channel binding" in mismatch.value.detail


class Env:
    def __init__(self, pki: Pki, tmp: Path) -> None:
        self.pki, self.clock = pki, Clock()
        self.agent = make_agent(tmp, pki, self.clock)
        self.verifier = Verifier(
            [pki.root],
            StaticInventory([model_digest().hex()]),
            StatusChecker(fetch=False, refresh=False, clock=self.clock),
            clock=self.clock,
            audience="http://gw.local",
            trust_domain="agentca.local",
        )

    def signed(self) -> tuple[Any, dict[str, str]]:
        staple = self.pki.ocsp_response(self.agent.credential.certificate, this_update=self.clock())
        return signed_view(self.agent, staple=staple)

    def tls(self, cert: x509.Certificate | None = None) -> TlsClientCert:
        cert = cert or self.agent.credential.certificate
        return TlsClientCert(der(cert), (), "tls", "127.0.0.1")


def test_verifier_requires_the_signing_certificate_in_tls(
    pki: Pki, tmp_path: Path, certs: tuple[x509.Certificate, x509.Certificate]
) -> None:
    env = Env(pki, tmp_path)
    _, other = certs

    def check(tls: TlsClientCert | None, require: bool = True) -> str | None:
        req, _ = env.signed()
        d = env.verifier.evaluate(req, SCOPE, tls_client_cert=tls, require_tls_client_cert=require)
        return None if d.allowed else d.denial.check.value  # type: ignore[union-attr]

    assert check(env.tls()) is None
    assert check(env.tls(other)) == "tls-client-cert-mismatch"
    assert check(None) == "tls-client-cert-missing"
    # not required: the signature alone decides, whatever TLS carried
    assert check(None, require=False) is None
    assert check(env.tls(other), require=False) is None


# ----------------------------------------------------------------------- WSGI and Flask shells
def _wsgi_environ(headers: dict[str, str], body: bytes, **extra: str) -> dict[str, Any]:
    import io

    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/orders",
        "QUERY_STRING": "venue=x",
        "HTTP_HOST": "gw.local",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
        **extra,
    }
    for name, value in headers.items():
        if name.lower() == "content-type":
            environ["CONTENT_TYPE"] = value
        else:
            environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


def _call(app: Any, environ: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], body


def test_wsgi_middleware_trusts_only_configured_proxies(pki: Pki, tmp_path: Path) -> None:
    env = Env(pki, tmp_path)

    def inner(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("201 Created", [("Content-Type", "text/plain")])
        return [environ["agentca.agent"].name.encode()]

    app = AgentGatewayMiddleware(
        inner,
        env.verifier,
        routes={"POST /orders": SCOPE},
        client_certs=ClientCertSource(["10.0.0.0/8", "fd00::/8"]),
        require_tls_client_cert=True,
    )
    for peer in ("10.20.30.40", "fd00::7"):
        req, headers = env.signed()
        status, _, body = _call(app, _wsgi_environ(headers, req.body, REMOTE_ADDR=peer))
        assert status.startswith("201") and body == b"ExecutionAgent-ETH-01", (peer, body)
    req, headers = env.signed()
    status, hdrs, body = _call(app, _wsgi_environ(headers, req.body, REMOTE_ADDR="192.0.2.1"))
    assert status.startswith("401") and hdrs["Content-Type"] == "application/problem+json"
    assert json.loads(body)["check"] == "tls-client-cert-missing"
    req, headers = env.signed()
    headers["Client-Cert"] = "garbage"
    status, _, body = _call(app, _wsgi_environ(headers, req.body, REMOTE_ADDR="10.0.0.1"))
    assert status.startswith("401") and json.loads(body)["check"] == "malformed-credentials"


def test_flask_requires_tls_client_cert_per_view(
    pki: Pki, tmp_path: Path, certs: tuple[x509.Certificate, x509.Certificate]
) -> None:
    env = Env(pki, tmp_path)
    _, other = certs
    app = Flask(__name__)
    AgentGateway(app, env.verifier)

    @app.post("/orders")
    @requires_scope(SCOPE)
    @requires_tls_client_cert
    def orders() -> Any:
        return jsonify(agent=g.agent.name), 201

    client = app.test_client()

    def post(tls_pem: str | None) -> Any:
        req, headers = env.signed()
        base = {"REMOTE_ADDR": "127.0.0.1"}
        if tls_pem is not None:
            base["SSL_CLIENT_CERT"] = tls_pem
        return client.post(
            "/orders?venue=x",
            data=req.body,
            headers={**headers, "Host": "gw.local"},
            environ_base=base,
        )

    assert post(pem(env.agent.credential.certificate)).status_code == 201
    mismatch = post(pem(other))
    assert mismatch.status_code == 401 and mismatch.json["check"] == "tls-client-cert-mismatch"
    assert mismatch.headers["Content-Type"] == "application/problem+json"
    missing = post(None)
    assert missing.status_code == 401 and missing.json["check"] == "tls-client-cert-missing"
