"""The responder as deployed read-only (decision 0018): ``agentca ocsp serve`` (2 workers)
connected to PostgreSQL as the SELECT-only role of ``deploy/ocsp-readonly-role.sql`` and holding
a responder token without any CA key. ``openssl ocsp`` interop (good / revoked / never issued /
unauthorized), a CA-side revocation reaching every worker within the freshness bound, and a
database outage answered tryLater, then recovered, all still hold."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.x509 import ocsp
from sqlalchemy.engine import make_url

from ca.authority import CertificateAuthority
from ca.config import Settings
from ca.revocation import RevocationReason
from ca.store.db import make_engine, make_session_factory
from tests.conftest import PgServer
from tests.integration.conftest import REPO_ROOT, run_cli
from tests.integration.test_ocsp_interop import (
    der_request,
    init_ca,
    issue,
    openssl_ocsp,
    pids_answering,
    post,
    serve,
)

ROLE = "agentca_ocsp"
GRANTS = REPO_ROOT / "deploy" / "ocsp-readonly-role.sql"
BOUND = 1.0  # OcspOptions.status_freshness


def _reader_url(admin_url: str) -> str:
    return make_url(admin_url).set(username=ROLE, password=None).render_as_string(False)


def _create_role(admin_url: str) -> None:
    """Run the operator's SQL file as the schema owner (the psql meta-commands are comments)."""
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(GRANTS.read_text())
    finally:
        engine.dispose()


def _responder_labels(data_dir: Path) -> list[str]:
    """The responder token's key labels, as the responder would open it (own process)."""
    code = (
        "from ca.config import load_settings\n"
        "from ca.responder_token import responder_token_config\n"
        "from hsm import KeyStore\n"
        "import json\n"
        "store = KeyStore(responder_token_config(load_settings()))\n"
        "print(json.dumps(store.labels()))\n"
        "store.close()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCA_")}
    env.pop("SOFTHSM2_CONF", None)
    env.update(AGENTCA_DATA_DIR=str(data_dir), PYTHONPATH=str(REPO_ROOT))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    labels: list[str] = json.loads(out.stdout)
    return labels


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory, pg_module_url: str) -> Iterator[dict[str, Any]]:
    data_dir = tmp_path_factory.mktemp("ro-ca")
    work = tmp_path_factory.mktemp("ro-work")
    admin = {"AGENTCA_DATABASE_URL": pg_module_url}
    init_ca(data_dir, admin, work)  # also publishes the first responder certificates
    certs = {n: issue(data_dir, admin, work, n) for n in ("good", "revoked", "propagate")}
    assert run_cli("revoke", certs["revoked"][1], "--reason", "keyCompromise",
                   data_dir=data_dir, env=admin).returncode == 0  # fmt: skip
    _create_role(pg_module_url)
    reader = _reader_url(pg_module_url)
    # Everything the responder process is told is the SELECT-only role, and the CA token's
    # PIN is not even there while it runs: the responder never opens the CA token.
    responder_env = {"AGENTCA_DATABASE_URL": reader, "AGENTCA_OCSP_DATABASE_URL": reader}
    ca_pin = data_dir / "secrets" / "user.pin"
    away = ca_pin.with_name("user.pin.away")
    ca_pin.rename(away)
    try:
        with serve(data_dir, responder_env) as (base, _proc):
            yield {"data_dir": data_dir, "work": work, "base": base, "certs": certs,
                   "admin": pg_module_url, "reader": reader, "admin_env": admin}  # fmt: skip
    finally:
        away.rename(ca_pin)


def test_the_role_can_only_select(ca: dict[str, Any]) -> None:
    engine = sa.create_engine(ca["reader"])
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM ocsp_signers")).scalar_one() == 2
            assert conn.execute(sa.text("SHOW default_transaction_read_only")).scalar() == "on"
        for statement in (
            "UPDATE certificates SET status = 'issued'",
            "DELETE FROM status_changes",
            "INSERT INTO status_changes (issuer_id, serial_hex) VALUES (1, '01')",
            "UPDATE ocsp_signers SET key_label = 'x'",
            "SELECT count(*) FROM ledger_entries",
            "SELECT count(*) FROM api_tokens",
            "CREATE TABLE mine (i int)",
            "CREATE TEMP TABLE mine (i int)",
        ):
            with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError) as err:
                conn.execute(sa.text(statement))
            message = str(err.value)
            assert "permission denied" in message or "read-only transaction" in message, statement
    finally:
        engine.dispose()


def test_the_responder_token_holds_no_ca_key(ca: dict[str, Any]) -> None:
    labels = _responder_labels(ca["data_dir"])
    engine = make_engine(ca["admin"])
    try:
        with engine.connect() as conn:
            ca_labels = set(conn.execute(sa.text("SELECT key_label FROM issuers")).scalars())
            ca_labels |= set(conn.execute(sa.text("SELECT key_label FROM audit_signers")).scalars())
            signer_labels = set(
                conn.execute(sa.text("SELECT key_label FROM ocsp_signers")).scalars()
            )
    finally:
        engine.dispose()
    assert len(ca_labels) >= 2 and not ca_labels & set(labels), labels
    assert signer_labels <= set(labels)
    assert all(label.startswith("agentca-ocsp-") for label in labels), labels


@pytest.mark.parametrize("args", [[], ["-sha256", "-no_nonce"]], ids=["sha1-nonce", "sha256"])
def test_openssl_good_revoked_and_never_issued(ca: dict[str, Any], args: list[str]) -> None:
    work, url = ca["work"], ca["base"] + "/ocsp"
    issuer = ["-issuer", str(work / "issuing.pem"), *args]
    good, revoked = ca["certs"]["good"][0], ca["certs"]["revoked"][0]
    out = openssl_ocsp(url, work, *issuer, "-cert", str(good))
    assert "Response verify OK" in out.stderr and f"{good}: good" in out.stdout, out
    out = openssl_ocsp(url, work, *issuer, "-cert", str(revoked))
    assert "Response verify OK" in out.stderr, out.stderr
    assert f"{revoked}: revoked" in out.stdout and "Reason: keyCompromise" in out.stdout
    out = openssl_ocsp(url, work, *issuer, "-serial", "0x1234567890abcdef", "-resp_text")
    assert "Response verify OK" in out.stderr, out.stderr
    assert "0x1234567890abcdef: revoked" in out.stdout and "certificateHold" in out.stdout
    out = openssl_ocsp(url, work, "-issuer", str(work / "root.pem"), "-serial", "0x4d")
    assert "Response verify OK" in out.stderr, out.stderr  # the root's own delegated signer


def test_ca_side_revocation_reaches_every_worker_within_the_bound(ca: dict[str, Any]) -> None:
    pem, serial = ca["certs"]["propagate"]
    der = der_request(ca["work"] / "issuing.pem", pem)
    seen: dict[str, set[str]] = {}
    deadline = time.monotonic() + 30
    while len(seen) < 2 and time.monotonic() < deadline:  # warm both workers' caches
        for pid, states in pids_answering(ca["base"], der).items():
            seen.setdefault(pid, set()).update(states)
    assert len(seen) == 2 and all(s == {"GOOD"} for s in seen.values()), seen
    engine = make_engine(ca["admin"])
    try:
        authority = CertificateAuthority(
            Settings(data_dir=ca["data_dir"]),
            make_session_factory(engine),
            keys=None,  # type: ignore[arg-type]
        )
        authority.revoke(serial, RevocationReason.KEY_COMPROMISE, "test")
        committed = time.monotonic()
    finally:
        engine.dispose()
    samples: list[tuple[float, str, str]] = []

    def one(_: int) -> tuple[float, str, str]:
        sent = time.monotonic() - committed
        response, headers = post(ca["base"], der)
        return sent, headers["X-Agentca-Worker"], response.certificate_status.name

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        while time.monotonic() - committed < 1.6 or not {
            pid for sent, pid, _ in samples if sent > BOUND
        } >= set(seen):
            samples += pool.map(one, range(16))
            assert time.monotonic() - committed < 30, "workers did not all answer"
    late = [(sent, pid, state) for sent, pid, state in samples if sent > BOUND]
    assert late and all(state == "REVOKED" for _, _, state in late), late


def _answers(base: str, der: bytes) -> set[str]:
    def one(_: int) -> str:
        response, _headers = post(base, der)
        if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
            return str(response.response_status.name)
        return str(response.certificate_status.name)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return set(pool.map(one, range(16)))


def test_database_outage_is_try_later_then_recovers(
    ca: dict[str, Any], pg_server: PgServer
) -> None:
    der = der_request(ca["work"] / "issuing.pem", ca["certs"]["good"][0])
    assert _answers(ca["base"], der) == {"GOOD"}
    pg_server.stop()
    try:
        time.sleep(BOUND + 0.2)
        for _ in range(3):
            assert _answers(ca["base"], der) == {"TRY_LATER"}
            time.sleep(0.3)
    finally:
        pg_server.start()
    deadline = time.monotonic() + 20
    answers: set[str] = set()
    while time.monotonic() < deadline:
        answers = _answers(ca["base"], der)
        if answers == {"GOOD"}:
            break
        assert answers <= {"GOOD", "TRY_LATER"}, answers
        time.sleep(0.3)
    assert answers == {"GOOD"}, answers
