"""A CA whose clock is off by an hour (libfaketime) against PostgreSQL's correct clock (issue 10,
item 9).

Before the fix a CA 1 h ahead issued certificates not valid for 59 min and OCSP answers whose
thisUpdate lay in the future; 1 h behind, answers older than the responder certificate. Now
every process measures its offset from the database server's clock at start (and every
``clock_check_interval_seconds``) and refuses to sign beyond ``max_clock_skew_seconds``: the
CA API answers 503 ``clock-skew``, the OCSP responder ``tryLater``, and ``/ready`` on both says
not ready and shows the offset.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from tests.faults.helpers import agent_csr, faketime_env, prepare_ca
from tests.integration.conftest import run_cli
from tests.integration.http import call
from tests.integration.servers import agentca_server

pytestmark = [pytest.mark.faults, pytest.mark.integration]


@pytest.mark.parametrize("offset", ["+1h", "-1h"])
def test_ca_refuses_to_sign_with_a_skewed_clock(tmp_path: Path, pg_url: str, offset: str) -> None:
    ca = prepare_ca(tmp_path / "data", pg_url)
    env = {**ca.env, **faketime_env(offset)}
    body = {"csr": agent_csr(), "agent": "fault-agent"}
    with agentca_server(["serve", "--workers", "1"], ca.data_dir, "/health", env=env) as (
        base,
        _proc,
    ):
        reply = call(base, "POST", "/v1/certificates", body, token=ca.api_token)
        assert reply.status == 503, reply.body
        problem = reply.json
        assert problem["type"].endswith("/clock-skew"), problem
        assert "max_clock_skew_seconds" in problem["detail"]
        assert ("ahead of" if offset == "+1h" else "behind") in problem["detail"]
        assert abs(abs(problem["clock_offset_seconds"]) - 3600) < 60, problem
        assert reply.headers.get("retry-after") == "30"
        ready = call(base, "GET", "/ready")
        assert ready.status == 503, ready.body
        clock = ready.json["clock"]
        assert clock["status"] == "skewed" and clock["max_skew_seconds"] == 5, clock
        assert abs(abs(clock["offset_seconds"]) - 3600) < 60, clock
        assert ready.json["hsm"]["status"] == "ok" and ready.json["database"]["status"] == "ok"
        health = call(base, "GET", "/health")  # liveness does not fail on skew
        assert health.status == 200
    # the same CA with a correct clock issues (the refusal was the clock, nothing else)
    with agentca_server(["serve", "--workers", "1"], ca.data_dir, "/health", env=ca.env) as (
        base,
        _proc,
    ):
        reply = call(base, "POST", "/v1/certificates", body, token=ca.api_token)
        assert reply.status == 201, reply.body
        ready = call(base, "GET", "/ready")
        assert ready.status == 200, ready.body
        assert abs(ready.json["clock"]["offset_seconds"]) < 5


def test_ocsp_answers_try_later_not_a_future_this_update(tmp_path: Path, pg_url: str) -> None:
    ca = prepare_ca(tmp_path / "data", pg_url)
    reply_cert = None
    with agentca_server(["serve", "--workers", "1"], ca.data_dir, "/health", env=ca.env) as (
        base,
        _proc,
    ):
        issued = call(
            base,
            "POST",
            "/v1/certificates",
            {"csr": agent_csr(), "agent": "fault-agent"},
            token=ca.api_token,
        )
        assert issued.status == 201, issued.body
        reply_cert = issued.json
    rotated = run_cli("ocsp", "rotate-signer", data_dir=ca.data_dir, env=ca.env)
    assert rotated.returncode == 0, rotated.stderr
    chain = run_cli("chain", data_dir=ca.data_dir, env=ca.env)
    issuer = x509.load_pem_x509_certificates(chain.stdout.encode())[0]
    pem = next(v for k, v in reply_cert.items() if k.endswith("pem") and isinstance(v, str))
    cert = x509.load_pem_x509_certificate(pem.encode())
    der = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(cert, issuer, hashes.SHA1())
        .add_extension(x509.OCSPNonce(b"0123456789abcdef"), critical=False)
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    env = {**ca.env, **faketime_env("+1h")}
    with agentca_server(["ocsp", "serve", "--workers", "1"], ca.data_dir, "/health", env=env) as (
        base,
        _proc,
    ):
        answer = call(base, "POST", "/ocsp", der, content_type="application/ocsp-request")
        assert answer.status == 200
        parsed = ocsp.load_der_ocsp_response(answer.body)
        assert parsed.response_status is ocsp.OCSPResponseStatus.TRY_LATER, parsed.response_status
        ready = call(base, "GET", "/ready")
        assert ready.status == 503, ready.body
        assert ready.json["clock"]["status"] == "skewed", ready.json
        assert abs(ready.json["clock"]["offset_seconds"] - 3600) < 60
