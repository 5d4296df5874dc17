"""The real ``openssl ocsp`` client against ``agentca ocsp serve`` (gunicorn, 2 workers) on
PostgreSQL: good / revoked with reason / never issued / unauthorized, with and without nonce,
SHA-1 and SHA-256 CertIDs; GET with RFC 5019 headers and 304; malformed input over a real
socket; signer rotation picked up by the running workers; a revocation reaching every worker
within one second of its commit."""

from __future__ import annotations

import base64
import concurrent.futures
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from ca.authority import CertificateAuthority
from ca.config import Settings
from ca.revocation import RevocationReason
from ca.store.db import make_engine, make_session_factory
from tests.integration.conftest import register_for_issue, run_cli
from tests.integration.servers import agentca_server

MODEL = "8f39b1a2cf93e8201a756b1f2304918e7e1f4094a9a01f92e8c21a4f028bde44"
PROMPT = "4e1fa0c31ab456de90123f112ab8e89cf12a023b1ab4c089ee21ff34e098df12"
OCSP_REQ = {"Content-Type": "application/ocsp-request"}


# ---------------------------------------------------------------------------------- helpers
def init_ca(data_dir: Path, env: dict[str, str], work: Path) -> None:
    """``agentca init`` in ``data_dir``; writes root.pem and issuing.pem into ``work``."""
    result = run_cli("init", data_dir=data_dir, env=env)
    assert result.returncode == 0, result.stderr
    run_cli("chain", "--root-only", "--out", str(work / "root.pem"), data_dir=data_dir, env=env)
    chain = run_cli("chain", data_dir=data_dir, env=env).stdout
    (work / "issuing.pem").write_text(chain[: chain.index("-----END CERTIFICATE-----") + 26])


def issue(data_dir: Path, env: dict[str, str], work: Path, name: str) -> tuple[Path, str]:
    """Issue an agent certificate through the CLI; returns (PEM path, serial hex)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    csr_path = work / f"{name}.csr"
    csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    out = work / f"{name}.pem"
    register_for_issue(
        data_dir, name, MODEL, PROMPT, officer="officer@enterprise.io", environment="test",
        scopes=("submit_limit_order",), model_type="claude-3.5-sonnet-v2", env=env,
    )  # fmt: skip
    result = run_cli(
        "issue", "--csr", str(csr_path), "--agent", name, "--scope", "submit_limit_order",
        "--model-type", "claude-3.5-sonnet-v2", "--model-digest", MODEL,
        "--prompt-digest", PROMPT, "--officer", "officer@enterprise.io",
        "--environment", "test", "--validity", "2h", "--out", str(out),
        data_dir=data_dir, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    return out, format(cert.serial_number, "x")


def openssl_ocsp(url: str, work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "ocsp", "-url", url, "-CAfile", str(work / "root.pem"), *args],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def der_request(issuer: Path, cert: Path, algorithm: Any = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        x509.load_pem_x509_certificate(cert.read_bytes()),
        x509.load_pem_x509_certificate(issuer.read_bytes()),
        algorithm or hashes.SHA1(),
    )
    return builder.build().public_bytes(serialization.Encoding.DER)


def post(base: str, der: bytes, path: str = "/ocsp") -> tuple[ocsp.OCSPResponse, Any]:
    req = urllib.request.Request(base + path, data=der, headers=OCSP_REQ, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return ocsp.load_der_ocsp_response(resp.read()), resp.headers


def get(base: str, der: bytes, headers: dict[str, str] | None = None) -> Any:
    path = "/ocsp/" + urllib.parse.quote(base64.b64encode(der).decode(), safe="")
    return urllib.request.urlopen(
        urllib.request.Request(base + path, headers=headers or {}), timeout=10
    )


def serve(data_dir: Path, env: dict[str, str], *extra: str) -> Any:
    return agentca_server(["ocsp", "serve", "--workers", "2", *extra], data_dir, "/health", env)


def pids_answering(base: str, der: bytes, rounds: int = 40) -> dict[str, set[str]]:
    """Fire concurrent POSTs (fresh connections) and collect each worker's answers."""
    seen: dict[str, set[str]] = {}

    def one(_: int) -> tuple[str, str]:
        response, headers = post(base, der)
        return headers["X-Agentca-Worker"], response.certificate_status.name

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for pid, status in pool.map(one, range(rounds)):
            seen.setdefault(pid, set()).add(status)
    return seen


# ---------------------------------------------------------------------------------- fixture
@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory, pg_module_url: str) -> Iterator[dict[str, Any]]:
    data_dir = tmp_path_factory.mktemp("ocsp-ca")
    work = tmp_path_factory.mktemp("ocsp-work")
    env = {"AGENTCA_DATABASE_URL": pg_module_url}
    init_ca(data_dir, env, work)
    certs = {n: issue(data_dir, env, work, n) for n in ("good", "revoke-cli", "every-worker")}
    with serve(data_dir, env) as (base, _proc):
        yield {"data_dir": data_dir, "env": env, "work": work, "base": base, "certs": certs,
               "db": pg_module_url}  # fmt: skip


def _cert(ca: dict[str, Any], name: str) -> Path:
    path: Path = ca["certs"][name][0]
    return path


# ---------------------------------------------------------------------------------- openssl
@pytest.mark.parametrize(
    "args",
    [[], ["-no_nonce"], ["-sha256"], ["-sha256", "-no_nonce"]],
    ids=["sha1-nonce", "sha1", "sha256-nonce", "sha256"],
)
def test_openssl_verifies_good(ca: dict[str, Any], args: list[str]) -> None:
    work = ca["work"]
    out = openssl_ocsp(
        ca["base"] + "/ocsp", work, "-issuer", str(work / "issuing.pem"), *args,
        "-cert", str(_cert(ca, "good")),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Response verify OK" in out.stderr, out.stderr
    assert f"{_cert(ca, 'good')}: good" in out.stdout
    assert "WARNING" not in out.stdout + out.stderr


def test_openssl_good_for_the_issuing_ca_under_the_root(ca: dict[str, Any]) -> None:
    work = ca["work"]
    out = openssl_ocsp(
        ca["base"] + "/ocsp", work, "-issuer", str(work / "root.pem"),
        "-cert", str(work / "issuing.pem"),
    )  # fmt: skip
    assert "Response verify OK" in out.stderr and ": good" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("digest", [[], ["-sha256"]])
def test_openssl_never_issued_serial_is_revoked_certificate_hold(
    ca: dict[str, Any], digest: list[str]
) -> None:
    work = ca["work"]
    out = openssl_ocsp(
        ca["base"] + "/ocsp", work, "-issuer", str(work / "issuing.pem"), *digest,
        "-serial", "0x1234567890abcdef", "-resp_text",
    )  # fmt: skip
    assert "Response verify OK" in out.stderr, out.stderr
    assert "0x1234567890abcdef: revoked" in out.stdout
    assert "Reason: certificateHold" in out.stdout
    assert "Revocation Time: Jan  1 00:00:00 1970 GMT" in out.stdout
    assert "1.3.6.1.5.5.7.48.1.9" in out.stdout or "valid:" in out.stdout  # extended revoke


def test_openssl_revoked_after_cli_revoke(ca: dict[str, Any]) -> None:
    work, (pem, serial) = ca["work"], ca["certs"]["revoke-cli"]
    args = ["-issuer", str(work / "issuing.pem"), "-cert", str(pem)]
    assert ": good" in openssl_ocsp(ca["base"] + "/ocsp", work, *args).stdout
    result = run_cli(
        "revoke", serial, "--reason", "keyCompromise", data_dir=ca["data_dir"], env=ca["env"]
    )
    assert result.returncode == 0, result.stderr
    time.sleep(0.5)
    for extra in ([], ["-sha256", "-no_nonce"]):
        out = openssl_ocsp(ca["base"] + "/ocsp", work, *extra, *args)
        assert "Response verify OK" in out.stderr, out.stderr
        assert f"{pem}: revoked" in out.stdout and "Reason: keyCompromise" in out.stdout


def test_openssl_foreign_issuer_is_unauthorized(ca: dict[str, Any], tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Foreign CA")])
    now = datetime.now(UTC)
    foreign = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(77)
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (tmp_path / "foreign.pem").write_bytes(foreign.public_bytes(serialization.Encoding.PEM))
    out = openssl_ocsp(
        ca["base"] + "/ocsp", ca["work"], "-issuer", str(tmp_path / "foreign.pem"),
        "-serial", "0x4d",
    )  # fmt: skip
    assert "Responder Error: unauthorized (6)" in out.stdout + out.stderr


# ---------------------------------------------------------------------------------- GET
def test_get_with_cache_headers_and_304(ca: dict[str, Any]) -> None:
    work = ca["work"]
    der = der_request(work / "issuing.pem", _cert(ca, "good"), hashes.SHA256())
    with get(ca["base"], der) as resp:
        body, headers = resp.read(), resp.headers
    parsed = ocsp.load_der_ocsp_response(body)
    assert parsed.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert isinstance(parsed.hash_algorithm, hashes.SHA256)
    assert headers["Content-Type"] == "application/ocsp-response"
    cache = headers["Cache-Control"]
    assert "public" in cache and "no-transform" in cache and "must-revalidate" in cache
    assert 0 < int(cache.split(",")[0].removeprefix("max-age=")) <= 3600
    assert headers["Expires"] and headers["Last-Modified"] and headers["ETag"]
    # Each worker signs its own copy, so the ETag names one worker's bytes: revalidating it
    # gives 304 from that worker, and a fresh 200 (other bytes, other ETag) from another.
    statuses: set[int] = set()
    for _ in range(200):
        if 304 in statuses:
            break
        try:
            with get(ca["base"], der, {"If-None-Match": headers["ETag"]}) as again:
                assert again.headers["X-Agentca-Worker"] != headers["X-Agentca-Worker"]
                assert again.headers["ETag"] != headers["ETag"]
                statuses.add(again.status)
        except urllib.error.HTTPError as not_modified:
            assert not_modified.code == 304
            assert not_modified.headers["ETag"] == headers["ETag"]
            assert not_modified.headers["X-Agentca-Worker"] == headers["X-Agentca-Worker"]
            assert not_modified.read() == b""
            statuses.add(304)
    assert 304 in statuses


# ---------------------------------------------------------------------------------- bad input
def _raw_http(base: str, payload: bytes) -> bytes:
    import socket

    host, port = urllib.parse.urlsplit(base).hostname, urllib.parse.urlsplit(base).port
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(payload)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (b"garbage", "application/ocsp-request"),
        (b"\x30\x82\x01\x00\x30", "application/ocsp-request"),  # truncated DER
        (b"\x30" * 20_000, "application/ocsp-request"),  # oversized
        (b"\x30\x03\x30\x01\x00", "text/plain"),  # wrong content type
    ],
)
def test_bad_bodies_over_http_get_malformed(ca: dict[str, Any], body: bytes, ctype: str) -> None:
    req = urllib.request.Request(
        ca["base"] + "/ocsp", data=body, headers={"Content-Type": ctype}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
        answer = ocsp.load_der_ocsp_response(resp.read())
    assert answer.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_http_edge_never_500_or_html(ca: dict[str, Any]) -> None:
    base = ca["base"]
    for payload in (
        b"GET /ocsp/%%%%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /ocsp/!!notbase64!! HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Type: application/ocsp-request\r\n"
        b"Content-Length: 99999999\r\nConnection: close\r\n\r\n0000",
        b"POST /ocsp HTTP/1.0\r\nContent-Type: application/ocsp-request\r\n"
        b"Content-Length: 3\r\n\r\nabc",
        b"PUT /ocsp HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        b"BROKEN\r\n\r\n",
    ):
        answer = _raw_http(base, payload)
        head = answer.split(b"\r\n", 1)[0]
        assert not head.startswith(b"HTTP/1.1 5"), answer
        assert b"Traceback" not in answer and b"<html" not in answer.lower()
        if payload.startswith((b"GET", b"POST")):
            assert head == b"HTTP/1.1 200 OK", answer
            assert answer.endswith(b"\x30\x03\x0a\x01\x01")  # malformedRequest


def test_keep_alive_serves_several_requests_on_one_connection(ca: dict[str, Any]) -> None:
    der = der_request(ca["work"] / "issuing.pem", _cert(ca, "good"))
    one = (
        b"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Type: application/ocsp-request\r\n"
        + b"Content-Length: %d\r\n\r\n" % len(der)
        + der
    )
    last = one.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n")
    answer = _raw_http(ca["base"], one + one + last)
    assert answer.count(b"HTTP/1.1 200 OK") == 3


# ---------------------------------------------------------------------------------- freshness
def test_revocation_reaches_every_worker_within_one_second(ca: dict[str, Any]) -> None:
    work, (pem, serial) = ca["work"], ca["certs"]["every-worker"]
    der = der_request(work / "issuing.pem", pem)
    deadline = time.monotonic() + 30
    seen: dict[str, set[str]] = {}
    while len(seen) < 2 and time.monotonic() < deadline:  # warm both workers' caches
        for pid, states in pids_answering(ca["base"], der).items():
            seen.setdefault(pid, set()).update(states)
    assert len(seen) == 2 and all(s == {"GOOD"} for s in seen.values()), seen

    engine = make_engine(ca["db"])
    try:
        authority = CertificateAuthority(
            Settings(data_dir=ca["data_dir"]),
            make_session_factory(engine),
            keys=None,  # type: ignore[arg-type]
        )
        authority.revoke(serial, RevocationReason.KEY_COMPROMISE, "test")
        committed = time.monotonic()  # revoke() returns right after its commit
    finally:
        engine.dispose()

    # Every request sent later than one second after the commit must say "revoked", on every
    # worker; earlier ones may still say "good". (Send times, so a slow answer under load
    # does not count against the responder.)
    samples: list[tuple[float, str, str]] = []

    def one(_: int) -> tuple[float, str, str]:
        sent = time.monotonic() - committed
        response, headers = post(ca["base"], der)
        return sent, headers["X-Agentca-Worker"], response.certificate_status.name

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        while time.monotonic() - committed < 1.6 or not {
            pid for sent, pid, state in samples if sent > 1.0
        } >= set(seen):
            samples += pool.map(one, range(16))
            assert time.monotonic() - committed < 30, "workers did not all answer"
    late = [(sent, pid, state) for sent, pid, state in samples if sent > 1.0]
    assert all(state == "REVOKED" for _, _, state in late), late
    assert {pid for _, pid, _ in late} == set(seen)
    first = {
        pid: min(sent for sent, p, state in samples if p == pid and state == "REVOKED")
        for pid in seen
    }
    print(f"revoked on every worker from {max(first.values()):.3f} s after the commit")


def test_rotate_signer_is_picked_up_by_running_workers(ca: dict[str, Any]) -> None:
    work = ca["work"]
    der = der_request(work / "issuing.pem", _cert(ca, "good"))
    before, _ = post(ca["base"], der)
    result = run_cli("ocsp", "rotate-signer", data_dir=ca["data_dir"], env=ca["env"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("created") == 2, result.stdout
    time.sleep(1.0)
    issuing = x509.load_pem_x509_certificate((work / "issuing.pem").read_bytes())
    for states in range(6):
        after, _ = post(ca["base"], der)
        assert after.responder_key_hash != before.responder_key_hash, states
        (signer,) = after.certificates
        signer.verify_directly_issued_by(issuing)
        key = signer.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(after.signature, after.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))
        assert after.certificate_status is ocsp.OCSPCertStatus.GOOD
    # a relying party holding an answer signed before the rotation still accepts it, and one
    # signed after: openssl checks each against the root with the signer it embeds
    for label, response in (("before", before), ("after", after)):
        path = work / f"rotation-{label}.der"
        path.write_bytes(response.public_bytes(serialization.Encoding.DER))
        checked = subprocess.run(
            ["openssl", "ocsp", "-respin", str(path), "-CAfile", str(work / "root.pem"),
             "-issuer", str(work / "issuing.pem"), "-cert", str(_cert(ca, "good"))],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert checked.returncode == 0, (label, checked.stderr)
        assert "Response verify OK" in checked.stderr, (label, checked.stderr)
        assert ": good" in checked.stdout, (label, checked.stdout)
    (old_signer,) = before.certificates
    assert old_signer.not_valid_after_utc > datetime.now(UTC) + timedelta(hours=1)
