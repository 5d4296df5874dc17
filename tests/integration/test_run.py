"""``agentca run`` (what ``make run`` starts): CA API, OCSP responder, CRL publisher and ledger
checkpoints together, exercised with real clients, then stopped by one signal."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.integration.conftest import (
    AGENTCA,
    issue_args,
    register_for_issue,
    run_cli,
    write_agent_csr,
)
from tests.integration.http import call
from tests.integration.servers import free_port, wait_http

MODEL, PROMPT = "a1" * 32, "c3" * 32


def _until(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def _stored_status(data: Path, serial_hex: str) -> str | None:
    """The status the shared store's pre-signed answer for ``serial_hex`` was signed for."""
    engine = sa.create_engine(f"sqlite:///{data / 'agentca.sqlite3'}")
    try:
        with engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT cert_status FROM ocsp_responses WHERE serial_hex = :s"),
                {"s": serial_hex},
            ).scalar()
    finally:
        engine.dispose()


def test_run_starts_everything_and_stops_on_one_signal(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ca_port, ocsp_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCA_")}
    env.update(
        {
            "AGENTCA_DATA_DIR": str(data),
            "AGENTCA_LISTEN_PORT": str(ca_port),
            "AGENTCA_OCSP_LISTEN_PORT": str(ocsp_port),
            "AGENTCA_PUBLIC_BASE_URL": f"http://127.0.0.1:{ca_port}",
            "AGENTCA_WORKERS": "1",
        }
    )
    log = open(tmp_path / "run.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [AGENTCA, "run", "--checkpoint-every", "1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{ca_port}/health", 60)
        base = f"http://127.0.0.1:{ca_port}"
        cli_env = {k: env[k] for k in env if k.startswith("AGENTCA_")}
        csr = tmp_path / "a.csr"
        write_agent_csr(csr, "runner", MODEL, PROMPT)
        register_for_issue(data, "runner", MODEL, PROMPT, env=cli_env)
        issued = run_cli(
            *issue_args(csr, "runner", MODEL, PROMPT),
            "--out",
            str(tmp_path / "agent.pem"),
            data_dir=data,
            env=cli_env,
        )
        assert issued.returncode == 0, issued.stderr
        cert = x509.load_pem_x509_certificate((tmp_path / "agent.pem").read_bytes())
        chain = call(base, "GET", "/ca/chain.pem").body
        certs = x509.load_pem_x509_certificates(chain)
        (tmp_path / "issuing.pem").write_bytes(certs[0].public_bytes(serialization.Encoding.PEM))
        (tmp_path / "root.pem").write_bytes(certs[1].public_bytes(serialization.Encoding.PEM))

        def ocsp_status() -> str:
            r = subprocess.run(
                [
                    "openssl",
                    "ocsp",
                    "-issuer",
                    str(tmp_path / "issuing.pem"),
                    "-cert",
                    str(tmp_path / "agent.pem"),
                    "-url",
                    f"http://127.0.0.1:{ocsp_port}/ocsp",
                    "-CAfile",
                    str(tmp_path / "root.pem"),
                    "-no_nonce",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            return r.stdout + r.stderr

        assert _until(lambda: ": good" in ocsp_status()), ocsp_status()
        # the presigner (decision 0038) signed its answer into the shared store
        serial_hex = format(cert.serial_number, "x")
        assert _until(lambda: _stored_status(data, serial_hex) == "issued", 15)
        revoked = run_cli(
            "revoke",
            format(cert.serial_number, "x"),
            "--reason",
            "keyCompromise",
            data_dir=data,
            env=cli_env,
        )
        assert revoked.returncode == 0, revoked.stderr
        assert _until(lambda: ": revoked" in ocsp_status(), 5), ocsp_status()
        assert _until(lambda: _stored_status(data, serial_hex) == "revoked", 15)

        def crl_lists_it() -> bool:
            r = call(base, "GET", "/crl/issuing.crl")
            if r.status != 200:
                return False
            crl = x509.load_der_x509_crl(r.body)
            return crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None

        assert _until(crl_lists_it, 30), "the CRL publisher did not publish the revocation"
        assert _until(lambda: call(base, "GET", "/v1/ledger/checkpoint").status == 200, 30)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            log.close()
    assert proc.returncode == 0, (tmp_path / "run.log").read_text()[-3000:]
    leftovers = subprocess.run(["pgrep", "-f", str(data)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", "child processes survived the stop"
