"""Mutual TLS with real agent certificates from a real agentca CA (SoftHSM2 keys, PostgreSQL).

Two TLS servers require a client certificate chaining to the agentca root and check the CA's
real CRL: Python's ``ssl`` (OpenSSL, ``VERIFY_CRL_CHECK_LEAF``) and ``gnutls-serv``. The agent
connects with ``agent.tls``. For each: a good agent is accepted, an agent revoked through the
CA (CRL published again) is refused, and a look-alike certificate from another CA is refused,
judged by what the server itself reports. Then the gateway's channel binding through the
real WSGI middleware: over the WSGI server's own TLS (``SSL_CLIENT_CERT``) and behind a
simulated TLS-terminating proxy (trusted peer 127.0.0.1 vs untrusted 127.0.0.2).
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import logging
import queue
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from werkzeug.serving import make_server

from agent import Agent, Credential, RuntimeProvenance
from agent.client import HttpReply, send
from agent.tls import client_tls_context
from ca.crl_publisher import CrlPublisher
from ca.extensions import Accountability, AgentExtensions, Authorization, Digest, Provenance
from ca.profile import AgentCertificateSpec, CertificateUrls, build_agent_certificate
from ca.requests import IssuanceRequest
from ca.revocation import RevocationReason
from ca.wiring import Runtime, open_runtime
from gateway import (
    AgentGatewayMiddleware,
    ClientCertSource,
    CrlSet,
    StaticInventory,
    StatusChecker,
    Verifier,
    decision_log,
)
from hsm import TokenConfig
from tests.integration.conftest import settings_for
from tests.support.gateway_pki import MODEL_FILE, PROMPT, model_digest
from tests.unit.helpers import software_hierarchy
from wire.client_cert import encode_client_cert

pytestmark = pytest.mark.integration

MODEL_TYPE = "claude-3.5-sonnet-v2"
SCOPE = "submit_limit_order"
TIMEOUT = 10.0
PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(PEM)


@dataclass
class Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...]

    @property
    def name(self) -> str:
        cn = self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        return str(cn)


@dataclass
class Pki:
    """The real CA's files, its agents, a look-alike from another CA, a server certificate."""

    work: Path
    rt: Runtime
    publisher: CrlPublisher
    root: x509.Certificate
    issuing: x509.Certificate
    good: Issued
    second: Issued
    other: Issued
    server_cert: Path
    server_key: Path
    server_ca_pem: str

    def publish_crl(self) -> tuple[bytes, Path]:
        """Publish the CA's CRLs now; the issuing CA's CRL (DER) and a PEM copy of it."""
        self.publisher.publish_all(mode="full")
        der = (self.publisher.publish_dir / "issuing.crl").read_bytes()
        out = self.work / f"issuing-{time.monotonic_ns()}.crl.pem"
        out.write_bytes(x509.load_der_x509_crl(der).public_bytes(PEM))
        return der, out

    def context(self, who: Issued) -> ssl.SSLContext:
        """The agent SDK's mutual-TLS context for ``who``, trusting the server's CA."""
        return client_tls_context(who.key, who.cert, who.chain, cadata=self.server_ca_pem)


def _extensions() -> AgentExtensions:
    return AgentExtensions(
        Provenance(MODEL_TYPE, Digest(model_digest()), Digest(hashlib.sha256(PROMPT).digest())),
        Authorization((SCOPE,)),
        Accountability("compliance-officer@enterprise.io", "production", "Enterprise Inc"),
    )


def _issue(rt: Runtime, name: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    record = rt.authority.issue(
        IssuanceRequest(key.public_key(), name, _extensions(), timedelta(hours=1)), actor="test"
    )
    assert record.certificate is not None
    issuing, root = rt.authority.chain()
    return Issued(key, record.certificate, (issuing, root))


def _look_alike(name: str) -> Issued:
    """The same-looking agent certificate, from a second (software) CA."""
    _, root, issuing_key, issuing = software_hierarchy()
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    spec = AgentCertificateSpec(
        (1 << 100) + 5,
        name,
        "Enterprise Inc",
        "agentca.local",
        key.public_key(),
        _extensions(),
        now - timedelta(minutes=5),
        now + timedelta(hours=1),
    )
    urls = CertificateUrls("http://127.0.0.1:9/ocsp", "http://127.0.0.1:9/i.der", "http://x/c")
    cert = build_agent_certificate(spec, issuing, issuing_key, urls)
    return Issued(key, cert, (issuing, root))


def _server_credential(work: Path) -> tuple[Path, Path, str]:
    """A throwaway self-signed server certificate for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mtls test server")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = work / "server.pem", work / "server.key"
    cert_path.write_bytes(pem(cert))
    key_path.write_bytes(
        key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path, pem(cert).decode()


@pytest.fixture(scope="module")
def pki(
    tmp_path_factory: pytest.TempPathFactory, pg_module_url: str, hsm_config: TokenConfig
) -> Iterator[Pki]:
    work = tmp_path_factory.mktemp("mtls")
    # The AIA OCSP URL points at the discard port: status comes from the CRL only.
    settings = settings_for(
        work / "ca", pg_module_url, hsm_config, ocsp_url="http://127.0.0.1:9/ocsp"
    )
    rt = open_runtime(settings, create=True)
    try:
        rt.authority.initialise("ec-p384", "ec-p256")
        issuing, root = rt.authority.chain()
        (work / "root.pem").write_bytes(pem(root))
        (work / "root+issuing.pem").write_bytes(pem(root) + pem(issuing))
        cert, key, server_pem = _server_credential(work)
        yield Pki(
            work,
            rt,
            CrlPublisher.from_runtime(rt),
            root,
            issuing,
            _issue(rt, "GoodAgent"),
            _issue(rt, "SecondAgent"),
            _look_alike("GoodAgent"),
            cert,
            key,
            server_pem,
        )
    finally:
        rt.engine.dispose()


def _revoke(pki: Pki, who: Issued) -> None:
    serial = format(who.cert.serial_number, "x")
    pki.rt.authority.revoke(serial, RevocationReason.KEY_COMPROMISE, actor="test")


def _get(port: int, context: ssl.SSLContext) -> tuple[str, str]:
    """One HTTPS GET; ("ok", body) or ("error", what the client saw)."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=TIMEOUT)
    try:
        conn.request("GET", "/")
        reply = conn.getresponse()
        return "ok", f"{reply.status} " + reply.read().decode("utf-8", "replace")
    except (ssl.SSLError, OSError, http.client.HTTPException) as exc:
        return "error", repr(exc)
    finally:
        conn.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------- (a) OpenSSL: Python's ssl server
class OpenSslServer:
    """A TLS server (Python ``ssl``) requiring a client certificate from the agentca root,
    checking the leaf against the CA's CRL; it records each handshake's outcome."""

    def __init__(self, pki: Pki, crl_pem: Path) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.server_cert, pki.server_key)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=pki.work / "root.pem")  # the only trust anchor
        ctx.load_verify_locations(cafile=crl_pem)
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        self.ctx = ctx
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.outcomes: queue.Queue[tuple[str, str]] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> OpenSslServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except TimeoutError:
                continue
            raw.settimeout(TIMEOUT)
            try:
                with self.ctx.wrap_socket(raw, server_side=True) as tls:
                    der = tls.getpeercert(binary_form=True)
                    assert der is not None
                    cert = x509.load_der_x509_certificate(der)
                    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
                    self.outcomes.put(("accepted", str(cn)))
                    buf = b""
                    while b"\r\n\r\n" not in buf:
                        chunk = tls.recv(4096)
                        if not chunk:
                            break
                        buf += chunk
                    body = f"hello {cn}".encode()
                    tls.sendall(
                        b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
            except ssl.SSLCertVerificationError as exc:
                self.outcomes.put(("refused", exc.verify_message))
            except (ssl.SSLError, OSError) as exc:
                self.outcomes.put(("refused", repr(exc)))
            finally:
                raw.close()

    def outcome(self) -> tuple[str, str]:
        return self.outcomes.get(timeout=TIMEOUT)


def test_openssl_server_accepts_good_refuses_revoked_and_foreign(pki: Pki) -> None:
    doomed = _issue(pki.rt, "DoomedAgent")
    _, crl = pki.publish_crl()
    with OpenSslServer(pki, crl) as server:
        client = _get(server.port, pki.context(pki.good))
        assert client == ("ok", "200 hello GoodAgent")
        assert server.outcome() == ("accepted", "GoodAgent")
        # not revoked yet: accepted too (so the refusal below is the revocation's doing)
        assert _get(server.port, pki.context(doomed))[0] == "ok"
        assert server.outcome() == ("accepted", "DoomedAgent")
        # a look-alike from another CA: same subject and SAN, other issuer
        assert _get(server.port, pki.context(pki.other))[0] == "error"
        assert server.outcome() == ("refused", "unable to get local issuer certificate")
    _revoke(pki, doomed)
    _, crl = pki.publish_crl()
    with OpenSslServer(pki, crl) as server:
        assert _get(server.port, pki.context(doomed))[0] == "error"
        assert server.outcome() == ("refused", "certificate revoked")
        assert _get(server.port, pki.context(pki.good)) == ("ok", "200 hello GoodAgent")
        assert server.outcome() == ("accepted", "GoodAgent")


# ------------------------------------------------------------------- (b) GnuTLS: gnutls-serv
TRUSTED = "The certificate is trusted."  # gnutls-serv's log line for a verified client
REFUSED = "Error in handshake: Error in the certificate."  # ... and for a refused one


@contextmanager
def gnutls_server(pki: Pki, crl_pem: Path) -> Iterator[tuple[int, Path]]:
    """``gnutls-serv --http`` requiring and verifying client certificates against the
    agentca root + issuing CA and the CRL; yields its port and log (complete once closed)."""
    port = _free_port()
    log_path = pki.work / f"gnutls-serv-{port}.log"
    # line-buffered, so each connection's outcome is in the log as soon as it is decided
    args = [
        "stdbuf",
        "-oL",
        "-eL",
        "gnutls-serv",
        "--http",
        "--port",
        str(port),
        "--require-client-cert",
    ]
    args += ["--verify-client-cert", "--x509cafile", str(pki.work / "root+issuing.pem")]
    args += ["--x509crlfile", str(crl_pem), "--x509certfile", str(pki.server_cert)]
    args += ["--x509keyfile", str(pki.server_key)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + TIMEOUT
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(log_path.read_text()[-2000:]) from None
                    time.sleep(0.05)
            yield port, log_path
        finally:
            proc.terminate()
            try:
                proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(TIMEOUT)


def _gnutls_once(pki: Pki, crl: Path, who: Issued) -> tuple[tuple[str, str], str]:
    """One connection to a fresh gnutls-serv: what the client saw and the server's log."""
    with gnutls_server(pki, crl) as (port, log_path):
        client = _get(port, pki.context(who))
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:  # the server decides, then logs: wait for it
            text = log_path.read_text()
            if TRUSTED in text or REFUSED in text:
                break
            time.sleep(0.05)
    return client, log_path.read_text()


def test_gnutls_server_accepts_good_refuses_revoked_and_foreign(pki: Pki) -> None:
    doomed = _issue(pki.rt, "DoomedAgent")
    _, crl = pki.publish_crl()
    client, log = _gnutls_once(pki, crl, pki.good)
    assert client[0] == "ok" and client[1].startswith("200 "), client
    # the server's page shows the certificate it verified
    assert "Subject: CN=GoodAgent," in client[1]
    assert TRUSTED in log and REFUSED not in log, log
    client, log = _gnutls_once(pki, crl, doomed)
    assert client[0] == "ok" and "CN=DoomedAgent" in client[1], client  # before revocation
    assert TRUSTED in log
    client, log = _gnutls_once(pki, crl, pki.other)
    assert client[0] == "error", client
    assert REFUSED in log, log
    assert TRUSTED not in log
    _revoke(pki, doomed)
    _, crl = pki.publish_crl()
    client, log = _gnutls_once(pki, crl, doomed)
    assert client[0] == "error", client
    assert REFUSED in log, log
    assert TRUSTED not in log
    client, log = _gnutls_once(pki, crl, pki.good)  # the same CRL still accepts the good one
    assert client[0] == "ok" and TRUSTED in log


# --------------------------------------------------- the gateway: channel binding over WSGI
def _order_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    ident = environ["agentca.agent"]
    body = json.dumps({"agent": ident.name, "serial": ident.serial}).encode()
    start_response("201 Created", [("Content-Type", "application/json")])
    return [body]


def _verifier(pki: Pki, audience: str) -> Verifier:
    crls = CrlSet()
    crls.add(pki.publish_crl()[0], pki.issuing)
    return Verifier(
        [pki.root],
        StaticInventory([model_digest().hex()]),
        StatusChecker(fetch=False, refresh=False, crls=crls),
        intermediates=[pki.issuing],
        audience=audience,
        trust_domain="agentca.local",
    )


class LateApp:
    """A WSGI app whose middleware is set once the port (hence the audience) is known."""

    def __init__(self) -> None:
        self.app: AgentGatewayMiddleware | None = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        assert self.app is not None
        return self.app(environ, start_response)


@contextmanager
def wsgi_server(app: Any, tls: ssl.SSLContext | None = None) -> Iterator[int]:
    """werkzeug's WSGI server on 127.0.0.1 (with ``tls``: it sets ``SSL_CLIENT_CERT``)."""
    server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=tls)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_port)
    finally:
        server.shutdown()
        thread.join(TIMEOUT)
        server.server_close()


def _agent(pki: Pki, who: Issued, tmp: Path) -> Agent:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "model.bin").write_bytes(MODEL_FILE)
    return Agent(
        who.name,
        who.key,
        RuntimeProvenance(MODEL_TYPE, tmp / "model.bin", prompt_bytes=PROMPT),
        "http://127.0.0.1:9",
        credential=Credential(who.cert, who.chain),
    )


def _signed(agent: Agent, url: str, body: bytes) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    headers.update(
        agent.sign("POST", url, headers, body, auto_staple=False, auto_renew=False).headers
    )
    return headers


def _problem(reply: Any) -> dict[str, Any]:
    assert reply.headers["content-type"] == "application/problem+json", reply.body
    doc: dict[str, Any] = json.loads(reply.body)
    return doc


def _decisions(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    assert decision_log.flush()
    return [
        json.loads(r.getMessage()) for r in caplog.records if r.name == "agentca.gateway.decisions"
    ]


def _wsgi_tls_context(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    ctx.verify_mode = ssl.CERT_OPTIONAL  # so a request without a certificate reaches the gateway
    ctx.load_verify_locations(cafile=pki.work / "root.pem")
    return ctx


def test_gateway_binds_the_signature_to_the_tls_client_certificate(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agentca.gateway.decisions")
    body = b'{"side":"buy","qty":"1"}'
    app = LateApp()
    with wsgi_server(app, _wsgi_tls_context(pki)) as port:
        base = f"https://127.0.0.1:{port}"
        app.app = AgentGatewayMiddleware(
            _order_app,
            _verifier(pki, base),
            routes={"POST /orders": SCOPE, "POST /open": SCOPE},
            require_tls_client_cert=lambda method, path: path == "/orders",
        )
        good = _agent(pki, pki.good, tmp_path / "good")
        plain_tls = ssl.create_default_context(cadata=pki.server_ca_pem)
        # 1. signed by GoodAgent, GoodAgent's certificate in TLS: allowed
        headers = _signed(good, base + "/orders", body)
        reply = send("POST", base + "/orders", headers, body, TIMEOUT, pki.context(pki.good))
        assert reply.status == 201, reply.body
        assert json.loads(reply.body)["agent"] == "GoodAgent"
        assert _decisions(caplog)[-1]["tls_client_cert"] == "tls"
        # 2. GoodAgent's signed request replayed over a TLS connection of another agent
        headers = _signed(good, base + "/orders", body)
        reply = send("POST", base + "/orders", headers, body, TIMEOUT, pki.context(pki.second))
        doc = _problem(reply)
        assert reply.status == 401 and doc["check"] == "tls-client-cert-mismatch", doc
        assert "channel binding" in doc["detail"]
        # 3. ... and over TLS without a client certificate
        reply = send("POST", base + "/orders", headers, body, TIMEOUT, plain_tls)
        doc = _problem(reply)
        assert reply.status == 401 and doc["check"] == "tls-client-cert-missing", doc
        assert "mutual TLS" in doc["detail"]
        # 4. a route that does not require mutual TLS takes the signature alone
        headers = _signed(good, base + "/open", body)
        reply = send("POST", base + "/open", headers, body, TIMEOUT, plain_tls)
        assert reply.status == 201, reply.body
        assert _decisions(caplog)[-1]["tls_client_cert"] is None


def _post(port: int, source: str, path: str, headers: dict[str, str], body: bytes) -> HttpReply:
    """A plain HTTP POST from ``source`` (a loopback address) to 127.0.0.1:port."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=TIMEOUT, source_address=(source, 0)
    )
    try:
        conn.request("POST", path, body=body, headers=headers)
        reply = conn.getresponse()
        hdrs = {k.lower(): v for k, v in reply.getheaders()}
        return HttpReply(reply.status, hdrs, reply.read())
    finally:
        conn.close()


@pytest.mark.parametrize("header_format", ["rfc9440", "escaped-pem"])
def test_gateway_believes_proxy_headers_only_from_trusted_peers(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture, header_format: str
) -> None:
    caplog.set_level(logging.INFO, logger="agentca.gateway.decisions")
    body = b'{"side":"sell","qty":"3"}'
    app = LateApp()
    if header_format == "rfc9440":
        source = ClientCertSource(["127.0.0.1/32", "::1"])
    else:
        source = ClientCertSource(
            ["127.0.0.0/31"], proxy_header="X-Client-Cert", proxy_header_format="escaped-pem"
        )
    with wsgi_server(app) as port:
        base = f"http://127.0.0.1:{port}"
        app.app = AgentGatewayMiddleware(
            _order_app,
            _verifier(pki, base),
            routes={"POST /orders": SCOPE},
            client_certs=source,
            require_tls_client_cert=True,
        )
        good = _agent(pki, pki.good, tmp_path / "good")

        def as_proxy(cert: x509.Certificate) -> dict[str, str]:
            headers = _signed(good, base + "/orders", body)
            if header_format == "escaped-pem":  # nginx: $ssl_client_escaped_cert
                headers["X-Client-Cert"] = quote(pem(cert).decode(), safe="")
            elif cert != pki.good.cert:  # the proxy replaces Client-Cert with the TLS one
                headers["Client-Cert"] = encode_client_cert(cert.public_bytes(DER))
            return headers

        # from the trusted proxy (127.0.0.1): the forwarded certificate counts as TLS-verified
        reply = _post(port, "127.0.0.1", "/orders", as_proxy(pki.good.cert), body)
        assert reply.status == 201, reply.body
        assert _decisions(caplog)[-1]["tls_client_cert"] == "proxy"
        # the same request from 127.0.0.2 (not a trusted proxy): its headers count for nothing
        reply = _post(port, "127.0.0.2", "/orders", as_proxy(pki.good.cert), body)
        doc = json.loads(reply.body)
        assert reply.status == 401 and doc["check"] == "tls-client-cert-missing", doc
        assert reply.headers["content-type"] == "application/problem+json"
        # the trusted proxy says the TLS client presented another agent's certificate
        reply = _post(port, "127.0.0.1", "/orders", as_proxy(pki.second.cert), body)
        doc = json.loads(reply.body)
        # escaped-pem: the agent's own signed Client-Cert reaches the gateway and the TLS
        # certificate differs (channel binding); rfc9440: the proxy replaced the signed
        # Client-Cert, so the signature itself no longer verifies
        expected = (
            "tls-client-cert-mismatch" if header_format == "escaped-pem" else ("signature-invalid")
        )
        assert reply.status == 401 and doc["check"] == expected, doc
        if header_format == "escaped-pem":  # rfc9440: Client-Cert is signed, so it fails earlier
            assert "channel binding" in doc["detail"]


# ----------------------------------------------------- agent.tls: how the key reaches OpenSSL
def test_key_file_fallback_is_private_and_removed(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import stat

    from agent import tls

    seen: list[tuple[int, int]] = []
    real = tls._private_file

    @contextmanager
    def spy(data: bytes) -> Iterator[str]:
        with real(data) as path:
            seen.append(
                (
                    stat.S_IMODE(os.stat(path).st_mode),
                    stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode),
                )
            )
            assert b"ENCRYPTED PRIVATE KEY" in Path(path).read_bytes()
            yield path
        assert not os.path.exists(os.path.dirname(path))

    def no_disk(data: bytes) -> Iterator[str]:
        raise AssertionError("the key went to a file although memfd_create exists")

    monkeypatch.setattr(tls, "_private_file", no_disk)
    pki.context(pki.good)  # Linux: in memory only
    monkeypatch.delattr(os, "memfd_create")
    monkeypatch.setattr(tls, "_private_file", spy)
    ctx = pki.context(pki.good)
    assert seen == [(0o600, 0o700)]
    _, crl = pki.publish_crl()
    with OpenSslServer(pki, crl) as server:  # the context loaded this way works
        assert _get(server.port, ctx) == ("ok", "200 hello GoodAgent")
        assert server.outcome() == ("accepted", "GoodAgent")


def test_requests_presents_the_agent_certificate_through_an_adapter(pki: Pki) -> None:
    import requests
    from requests.adapters import HTTPAdapter

    class TlsAdapter(HTTPAdapter):  # the adapter docs/mtls.md shows
        def __init__(self, context: ssl.SSLContext) -> None:
            self.context = context
            super().__init__()

        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["ssl_context"] = self.context
            super().init_poolmanager(*args, **kwargs)

    _, crl = pki.publish_crl()
    server_ca = pki.work / "server-ca.pem"
    server_ca.write_text(pki.server_ca_pem)
    with OpenSslServer(pki, crl) as server, requests.Session() as session:
        session.mount("https://", TlsAdapter(pki.context(pki.good)))
        session.verify = str(server_ca)
        reply = session.get(f"https://127.0.0.1:{server.port}/", timeout=TIMEOUT)
        assert (reply.status_code, reply.text) == (200, "hello GoodAgent")
        assert server.outcome() == ("accepted", "GoodAgent")
