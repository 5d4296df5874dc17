"""Moving a CA to a new OID arc (decision 0022), with real SoftHSM2 keys and a real database:
certificates issued under arc A, the CA moved to arc B, certificates issued under B; the
metadata endpoint lists both arcs during the overlap and only B after it; a gateway that takes
its arcs from the metadata accepts both, one configured for B alone refuses the A certificate
with a clear CHAIN denial."""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from ca.api.app import create_app
from ca.api.schemas import CAMetadata
from ca.clock import utcnow
from ca.extensions import read_agent_extensions
from ca.oids import OidArc
from ca.requests import IssuanceRequest
from ca.store.models import LedgerEntryRow
from ca.wiring import Runtime, open_runtime
from gateway.chain import ChainVerifier
from gateway.problems import Check, Denied
from gateway.verifier import oid_arcs_from_metadata
from hsm import TokenConfig
from tests.integration.conftest import settings_for
from tests.unit.helpers import sample_extensions
from wire.extensions import found_arcs

pytestmark = pytest.mark.integration

ARC_A = OidArc("1.3.6.1.4.1.99999.7")
ARC_B = OidArc("1.3.6.1.4.1.99999.8.1")
TRUST_DOMAIN = "agents.example"


@pytest.fixture
def arc_runtime(tmp_path: Path, db_url: str, hsm_config: TokenConfig) -> Iterator[Runtime]:
    settings = settings_for(
        tmp_path, db_url, hsm_config, oid_arc=ARC_A.dotted, trust_domain=TRUST_DOMAIN
    )
    rt = open_runtime(settings, create=True)
    rt.authority.initialise("ec-p384", "ec-p256")
    try:
        yield rt
    finally:
        rt.engine.dispose()


def _issue(rt: Runtime) -> x509.Certificate:
    record = rt.authority.issue(
        IssuanceRequest(
            public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
            agent_name="ExecutionAgent-ETH-01",
            extensions=sample_extensions(),
            validity=timedelta(hours=2),
        ),
        actor="test",
    )
    assert record.certificate is not None
    return record.certificate


def _header(cert: x509.Certificate) -> str:
    return ":" + base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode() + ":"


def _gateway(rt: Runtime, arcs: object) -> ChainVerifier:
    issuing, root = rt.authority.chain()
    return ChainVerifier([root], [issuing], trust_domains=[TRUST_DOMAIN], oid_arcs=arcs)  # type: ignore[arg-type]


def _metadata(rt: Runtime) -> dict[str, object]:
    app = create_app(rt.settings, runtime_factory=lambda: rt)
    resp = app.test_client().get("/ca/metadata.json")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    assert resp.headers["Cache-Control"] == "public, max-age=60"
    body: dict[str, object] = resp.get_json()
    CAMetadata.model_validate(body)  # the documented schema
    return body


def test_move_the_ca_to_a_new_arc_and_verify_across_the_overlap(arc_runtime: Runtime) -> None:
    rt = arc_runtime
    hierarchy = rt.authority.hierarchy
    assert hierarchy.arc_state().current == ARC_A
    cert_a = _issue(rt)
    assert found_arcs(cert_a) == (ARC_A.dotted,)
    eku = cert_a.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ARC_A.kp_agent_request_signing in list(eku)

    state = hierarchy.set_oid_arc(ARC_B, "test")
    now = utcnow()
    assert state.current == ARC_B and state.accepted(now) == (ARC_B, ARC_A)
    assert hierarchy.accepted_arcs() == (ARC_B, ARC_A)
    with rt.sessions() as s:
        entry = s.scalars(
            select(LedgerEntryRow).where(LedgerEntryRow.event == "ca.oid_arc_changed")
        ).one()
        assert json.loads(entry.body)["to"] == ARC_B.dotted
    cert_b = _issue(rt)  # the arc is read per issuance: no restart needed
    assert found_arcs(cert_b) == (ARC_B.dotted,)
    policies = cert_b.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert [p.policy_identifier for p in policies] == [ARC_B.policy_agent_v1]
    assert read_agent_extensions(cert_b, (ARC_B,)) == sample_extensions()

    body = _metadata(rt)
    assert body["trust_domain"] == TRUST_DOMAIN
    assert body["oid_arc"] == ARC_B.dotted
    assert body["accepted_oid_arcs"] == [ARC_B.dotted, ARC_A.dotted]
    issuers = body["issuers"]
    assert isinstance(issuers, list)
    assert [(i["name"], i["role"], i["oid_arc"]) for i in issuers] == [
        ("root", "root", ARC_B.dotted),
        ("issuing", "issuing", ARC_B.dotted),
    ]
    assert all(i["crl_url"].endswith(f"/{i['name']}.crl") for i in issuers)
    assert body["ocsp_url"] == rt.settings.effective_ocsp_url

    both = _gateway(rt, oid_arcs_from_metadata(json.dumps(body)))
    t = now.timestamp()
    assert both.lookup(_header(cert_a), "", t).extensions.arc == ARC_A
    assert both.lookup(_header(cert_b), "", t).extensions.arc == ARC_B

    only_b = _gateway(rt, [ARC_B.dotted])
    assert only_b.lookup(_header(cert_b), "", t).identity.name == "ExecutionAgent-ETH-01"
    with pytest.raises(Denied) as info:
        only_b.lookup(_header(cert_a), "", t)
    assert info.value.check is Check.CHAIN
    assert f"found under: {ARC_A}" in info.value.detail
    assert f"accepted: {ARC_B}" in info.value.detail

    # after the longest agent certificate lifetime, A is no longer advertised
    later = now + rt.settings.max_validity + timedelta(seconds=1)
    rt.authority.clock = lambda: later
    after = _metadata(rt)
    assert after["accepted_oid_arcs"] == [ARC_B.dotted]
    assert after["previous_oid_arcs"] == []


def test_issuing_under_an_arc_go_and_gnutls_refuse_logs_a_warning(
    arc_runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    from ca import issuance
    from ca.oids import LEGACY_ARC

    issuance._warned_arcs.discard(LEGACY_ARC)
    arc_runtime.authority.hierarchy.set_oid_arc(LEGACY_ARC, "test")
    with caplog.at_level(logging.WARNING, logger="agentca.issuance"):
        cert = _issue(arc_runtime)
        _issue(arc_runtime)
    assert found_arcs(cert) == (LEGACY_ARC.dotted,)
    warnings = [r.getMessage() for r in caplog.records if r.name == "agentca.issuance"]
    assert len(warnings) == 1  # once per arc and process
    assert "Go crypto/x509" in warnings[0] and "GnuTLS" in warnings[0]


GO_PARSE = """package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
)

func main() {
	data, _ := os.ReadFile(os.Args[1])
	block, _ := pem.Decode(data)
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println("ok")
}
"""


@pytest.mark.skipif(
    shutil.which("go") is None or shutil.which("certtool") is None, reason="needs go and certtool"
)
def test_go_and_gnutls_parse_a_pen_arc_and_refuse_the_legacy_arc(
    arc_runtime: Runtime, tmp_path: Path
) -> None:
    """What the warning says, with the real verifiers: a certificate under the CA's PEN arc
    parses in Go's crypto/x509 and GnuTLS; one under the legacy arc is refused by both."""
    from ca.oids import LEGACY_ARC

    (tmp_path / "parse.go").write_text(GO_PARSE)
    env = {**os.environ, "GOCACHE": str(tmp_path / "gocache"), "GO111MODULE": "off"}
    built = subprocess.run(
        ["go", "build", "-o", str(tmp_path / "parse"), str(tmp_path / "parse.go")],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert built.returncode == 0, built.stderr

    def parse(cert: x509.Certificate) -> tuple[subprocess.CompletedProcess[str], ...]:
        path = tmp_path / f"{cert.serial_number:x}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        go = subprocess.run(
            [str(tmp_path / "parse"), str(path)], capture_output=True, text=True, timeout=30
        )
        gnutls = subprocess.run(
            ["certtool", "--certificate-info", "--infile", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return go, gnutls

    go, gnutls = parse(_issue(arc_runtime))  # under ARC_A, a PEN arc
    assert go.returncode == 0 and go.stdout.strip() == "ok", go.stdout + go.stderr
    assert gnutls.returncode == 0 and ARC_A.provenance.dotted_string in gnutls.stdout
    arc_runtime.authority.hierarchy.set_oid_arc(LEGACY_ARC, "test")
    go, gnutls = parse(_issue(arc_runtime))
    assert go.returncode == 1 and "malformed extension OID" in go.stdout, go.stdout
    assert gnutls.returncode != 0, gnutls.stdout
