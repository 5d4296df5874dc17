"""The CA HTTP API under gunicorn (``agentca serve``), exercised over real HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.conftest import register_for_issue, run_cli
from tests.integration.servers import agentca_server

MODEL = "8f39b1a2cf93e8201a756b1f2304918e7e1f4094a9a01f92e8c21a4f028bde44"
PROMPT = "4e1fa0c31ab456de90123f112ab8e89cf12a023b1ab4c089ee21ff34e098df12"


def _get(url: str, accept: str | None = None) -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    data_dir = tmp_path_factory.mktemp("api") / "data"
    with agentca_server(["serve", "--workers", "2"], data_dir, "/health") as (base, _proc):
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
            .sign(key, hashes.SHA256())
        )
        csr_path = data_dir.parent / "a.csr"
        csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
        register_for_issue(
            data_dir, "api-agent", MODEL, PROMPT, officer="officer@example.com", environment="test"
        )
        issued = run_cli(
            "issue",
            "--csr",
            str(csr_path),
            "--agent",
            "api-agent",
            "--scope",
            "read_book",
            "--model-type",
            "m",
            "--model-digest",
            MODEL,
            "--prompt-digest",
            PROMPT,
            "--officer",
            "officer@example.com",
            "--environment",
            "test",
            data_dir=data_dir,
        )
        assert issued.returncode == 0, issued.stderr
        yield base, data_dir, x509.load_pem_x509_certificate(issued.stdout.encode())


def test_health(served) -> None:
    status, _ctype, body = _get(served[0] + "/health")
    assert status == 200 and json.loads(body) == {
        "hsm": "ok",
        "initialised": True,
        "status": "ok",
    }
    status, _ctype, body = _get(served[0] + "/ready")
    ready = json.loads(body)
    assert status == 200 and ready["status"] == "ready", ready
    assert ready["hsm"]["status"] == "ok" and ready["database"]["status"] == "ok"
    assert ready["clock"]["reference"].startswith("not measured")  # SQLite: no server clock


def test_chain_and_ca_certificates(served) -> None:
    base, _data, cert = served
    status, ctype, body = _get(base + "/ca/chain.pem")
    assert status == 200 and ctype.startswith("application/pem-certificate-chain")
    chain = x509.load_pem_x509_certificates(body)
    assert [c.subject.rfc4514_string() for c in chain] == [
        "CN=agentca Issuing CA,O=agentca development",
        "CN=agentca Root CA,O=agentca development",
    ]
    assert cert.issuer == chain[0].subject
    # the caIssuers URL in the certificate resolves to the issuing CA (DER)
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    ca_issuers = next(
        d.access_location.value
        for d in aia
        if d.access_method == x509.AuthorityInformationAccessOID.CA_ISSUERS
    )
    assert ca_issuers.endswith("/ca/issuing.der")
    status, ctype, der = _get(base + "/ca/issuing.der")
    assert status == 200 and ctype == "application/pkix-cert"
    assert x509.load_der_x509_certificate(der) == chain[0]


def test_certificate_by_serial(served) -> None:
    base, _data, cert = served
    serial = format(cert.serial_number, "x")
    status, ctype, body = _get(f"{base}/certificates/{serial}")
    assert status == 200 and ctype == "application/json"
    record = json.loads(body)
    assert record["serial"] == serial and record["status"] == "issued"
    assert record["scopes"] == ["read_book"]
    assert x509.load_pem_x509_certificate(record["certificate_pem"].encode()) == cert
    status, ctype, der = _get(f"{base}/certificates/{serial}", accept="application/pkix-cert")
    assert status == 200 and x509.load_der_x509_certificate(der) == cert
    status, _ctype, pem = _get(f"{base}/certificates/{serial}?format=pem")
    assert x509.load_pem_x509_certificate(pem) == cert


@pytest.mark.parametrize(
    ("path", "status", "slug"),
    [
        ("/certificates/abcdef", 404, "not-found"),
        ("/certificates/not-hex", 400, "bad-request"),
        ("/ca/nosuch.der", 404, "not-found"),
        ("/nothing-here", 404, "not-found"),
    ],
)
def test_errors_are_problem_json(served, path: str, status: int, slug: str) -> None:
    got, ctype, body = _get(served[0] + path)
    assert got == status
    assert ctype == "application/problem+json"
    problem = json.loads(body)
    assert problem["status"] == status and problem["type"].endswith("/" + slug)
    assert "Traceback" not in body.decode()


def test_second_serve_reuses_the_data_dir(served) -> None:
    _base, data_dir, cert = served
    with agentca_server(["serve", "--workers", "1"], data_dir, "/health") as (base2, _p):
        _s, _c, body = _get(f"{base2}/certificates/{cert.serial_number:x}")
        assert json.loads(body)["serial"] == format(cert.serial_number, "x")
    assert Path(data_dir / "agentca.sqlite3").exists()
