"""Attested agent certificates are read by verifiers outside the OpenSSL family (issue 17).

The real CA runtime (SoftHSM2 keys, SQLite) issues three agent certificates: one attested by
an orchestrator's JWS statement, one by SEV-SNP evidence (the AMD firmware is the test double
``tests/support/snp_double.py``: no SEV-SNP hardware here) whose provenance is an
``AgentProvenance`` v2 with the OMS model digest (``oms-v1``), and one self-declared v2 (OMS)
certificate. Each is then read by:

- Go's ``crypto/x509`` (the stdlib program ``tests/interop/go``): root, issuing CA and leaf
  parse, no extension is left unhandled-critical, and ``Verify`` with ``ClientAuth`` builds
  leaf, issuing CA, root;
- GnuTLS: ``certtool -i`` lists every agent extension as an unknown non-critical extension and
  ``certtool --verify --verify-profile=high`` accepts the chain for TLS client authentication
  (and refuses it for serverAuth);
- ``openssl asn1parse`` of the ``AgentAttestation`` value: method, attestor and key id;
- our decoder ``read_agent_extensions``: exactly the marker the statement implied.

The chain files are the runtime's own (``rt.authority.chain()``), not certificates made here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca.extensions import Digest, Provenance, build_agent_csr, read_agent_extensions
from ca.wiring import Runtime, open_runtime
from hsm import TokenConfig
from tests.integration import test_go_x509
from tests.integration.conftest import settings_for
from tests.integration.test_go_x509 import go_verify
from tests.support import snp_double as double
from tests.support.attestor import Orchestrator, write_attestors
from tests.support.oms_reference import oms_root
from wire.extensions import Attestation, ModelDigestScheme
from wire.oids import DEFAULT_ARC
from wire.oms import model_digest

pytestmark = pytest.mark.integration

ENV = "prod"
MODEL, PROMPT = "a1" * 32, "c3" * 32
ORCH = Orchestrator("orchestrator.prod", "orch-prod-1")
CLIENT_AUTH = "1.3.6.1.5.5.7.3.2"
SERVER_AUTH = "1.3.6.1.5.5.7.3.1"
KINDS = ("jws", "snp", "oms")


def bounded(*args: str) -> subprocess.CompletedProcess[str]:
    """Run one external client, bounded."""
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)


def attestors_file(directory: Path) -> Path:
    """One attestors file with the orchestrator key and a ``[[sev_snp]]`` entry, both ``prod``."""
    jws = write_attestors(directory / "jws", [(ORCH, [ENV])])
    snp = double.write_snp_toml(
        directory / "snp" / "attestors.toml", double.roots(), {ENV: [double.MEASUREMENT]}
    )
    both = directory / "attestors.toml"
    both.write_text(jws.read_text() + "\n" + snp.read_text())
    return both


def oms_digest(directory: Path) -> str:
    """The OMS root digest of a small model directory made here, as ``model-signing`` has it."""
    (directory / "weights").mkdir(parents=True)
    (directory / "config.json").write_text('{"architecture":"demo"}\n')
    (directory / "weights" / "shard-1.bin").write_bytes(bytes(range(256)) * 64)
    ours = model_digest(directory).root
    assert ours == oms_root(directory)
    return ours.hex()


def register(rt: Runtime, name: str, prov: Provenance, attested: bool) -> None:
    rt.registry.register_agent(
        name, "o@example.com", ENV, prov.model_type, ["read_book"], [prov.model_digest.hex],
        [prov.prompt_digest.hex], require_attestation=attested,
    )  # fmt: skip


def csr_for(key: Any, name: str, prov: Provenance) -> bytes:
    return build_agent_csr(key, name, prov).public_bytes(serialization.Encoding.PEM)


def token(rt: Runtime, name: str) -> str:
    return rt.enrollment_tokens.create(name, timedelta(hours=1), "test")[0]


@dataclass(frozen=True)
class Leaf:
    """One issued agent certificate, its file and the marker its statement implies."""

    pem: Path
    certificate: x509.Certificate
    expected: Attestation | None
    scheme: ModelDigestScheme


@dataclass(frozen=True)
class World:
    work: Path
    leaves: dict[str, Leaf]

    @property
    def root(self) -> Path:
        return self.work / "root.pem"

    @property
    def issuing(self) -> Path:
        return self.work / "issuing.pem"

    def chain(self, leaf: Leaf) -> Path:
        """The leaf followed by the issuing CA, as a TLS client presents them."""
        out = leaf.pem.with_suffix(".chain.pem")
        out.write_text(leaf.pem.read_text() + self.issuing.read_text())
        return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, hsm_config: TokenConfig) -> Iterator[World]:
    work = tmp_path_factory.mktemp("attested-interop")
    settings = settings_for(
        work, f"sqlite:///{work}/agentca.sqlite3", hsm_config,
        attestors_file=str(attestors_file(work / "attestors")),
    )  # fmt: skip
    rt = open_runtime(settings, create=True)
    try:
        rt.authority.initialise("ec-p384", "ec-p256")
        rt.registry.add_scope("read_book")
        rt.registry.add_model(MODEL, "m", ENV)
        oms = oms_digest(work / "model")
        rt.registry.add_model(oms, "m", ENV, digest_scheme="oms-v1")
        manifest_prov = Provenance("m", Digest.sha256_hex(MODEL), Digest.sha256_hex(PROMPT))
        oms_prov = Provenance(
            "m", Digest.sha256_hex(oms), Digest.sha256_hex(PROMPT),
            model_digest_scheme=ModelDigestScheme.OMS,
        )  # fmt: skip
        leaves: dict[str, Leaf] = {}

        def issue(
            kind: str, prov: Provenance, key: Any, statement: bytes | None
        ) -> x509.Certificate:
            name = f"{kind}-agent"
            record = rt.enrollment.enroll(
                token(rt, name), csr_for(key, name, prov), attestation=statement
            )
            assert record.status == "issued" and record.certificate_der is not None
            return x509.load_der_x509_certificate(record.certificate_der)

        # 1. an orchestrator's JWS statement (AgentProvenance v1)
        register(rt, "jws-agent", manifest_prov, attested=True)
        key = ec.generate_private_key(ec.SECP256R1())
        jws = ORCH.attest("jws-agent", ENV, key.public_key(), manifest_prov)
        payload = base64.urlsafe_b64decode(jws.split(".")[1] + "==")
        expected = Attestation(
            "orchestrator-jws-v1", ORCH.attestor, ORCH.key_id, json.loads(payload)["iat"],
            Digest(hashlib.sha256(payload).digest()),
        )  # fmt: skip
        cert = issue("jws", manifest_prov, key, jws.encode())
        leaves["jws"] = Leaf(work / "jws.pem", cert, expected, ModelDigestScheme.AGENTCA_MANIFEST)

        # 2. SEV-SNP evidence, the provenance an OMS digest (AgentProvenance v2)
        register(rt, "snp-agent", oms_prov, attested=True)
        key = ec.generate_private_key(ec.SECP256R1())
        iat = int(time.time())
        claims = double.claims_bytes("snp-agent", ENV, oms_prov, now=iat)
        evidence = double.evidence(double.Chip(double.roots()), key.public_key(), claims)
        report = base64.b64decode(json.loads(evidence)["report"])
        expected = Attestation(
            "sev-snp-v1", "amd-sev-snp", "snp-genoa", iat,
            Digest(hashlib.sha256(report[:0x2A0]).digest()),
        )  # fmt: skip
        cert = issue("snp", oms_prov, key, evidence)
        leaves["snp"] = Leaf(work / "snp.pem", cert, expected, ModelDigestScheme.OMS)

        # 3. self-declared, AgentProvenance v2 (OMS)
        register(rt, "oms-agent", oms_prov, attested=False)
        cert = issue("oms", oms_prov, ec.generate_private_key(ec.SECP256R1()), None)
        leaves["oms"] = Leaf(work / "oms.pem", cert, None, ModelDigestScheme.OMS)

        for leaf in leaves.values():
            leaf.pem.write_bytes(leaf.certificate.public_bytes(serialization.Encoding.PEM))
        issuing, root = rt.authority.chain()
        (work / "issuing.pem").write_bytes(issuing.public_bytes(serialization.Encoding.PEM))
        (work / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    finally:
        rt.engine.dispose()
    yield World(work, leaves)


x509check = test_go_x509.x509check  # the Go verifier, built once per session


def agent_oids(leaf: Leaf) -> list[str]:
    oids = [o.dotted_string for o in DEFAULT_ARC.agent_extension_oids]
    return oids + ([DEFAULT_ARC.attestation.dotted_string] if leaf.expected else [])


# ---------------------------------------------------------------------------------- our decoder
@pytest.mark.parametrize("kind", KINDS)
def test_our_decoder_gives_back_the_marker_the_statement_implied(world: World, kind: str) -> None:
    leaf = world.leaves[kind]
    ext = read_agent_extensions(leaf.certificate)
    assert ext.attestation == leaf.expected
    assert ext.provenance.model_digest_scheme is leaf.scheme
    has_marker = DEFAULT_ARC.attestation in [e.oid for e in leaf.certificate.extensions]
    assert has_marker is (leaf.expected is not None)
    for e in leaf.certificate.extensions:
        if e.oid.dotted_string in agent_oids(leaf):
            assert not e.critical, e


# ---------------------------------------------------------------------------------- Go
@pytest.mark.parametrize("kind", KINDS)
def test_go_parses_and_verifies_for_client_auth(world: World, x509check: Path, kind: str) -> None:
    leaf = world.leaves[kind]
    verdict = go_verify(
        x509check, "-roots", str(world.root), "-intermediates", str(world.issuing),
        "-leaf", str(leaf.pem), "-eku", "client",
    )  # fmt: skip
    certs = verdict["certificates"]
    assert [c.get("error") for c in certs] == [None, None, None], certs
    agent = certs[2]
    for oid in agent_oids(leaf):
        assert oid in agent["extension_oids"], (oid, agent["extension_oids"])
    assert (DEFAULT_ARC.attestation.dotted_string in agent["extension_oids"]) is bool(leaf.expected)
    assert agent["unhandled_critical"] == []
    assert agent["ekus"] == ["clientAuth"] and not agent["is_ca"]
    assert verdict["verified"], verdict["verify_error"]
    root, issuing = (
        x509.load_pem_x509_certificate(p.read_bytes()) for p in (world.root, world.issuing)
    )
    assert verdict["chains"] == [
        [
            leaf.certificate.subject.rfc4514_string(),
            issuing.subject.rfc4514_string(),
            root.subject.rfc4514_string(),
        ]
    ], verdict["chains"]


# ---------------------------------------------------------------------------------- GnuTLS
@pytest.mark.parametrize("kind", KINDS)
def test_certtool_shows_the_extensions_as_unknown_non_critical(world: World, kind: str) -> None:
    leaf = world.leaves[kind]
    out = bounded("certtool", "-i", "--infile", str(leaf.pem))
    assert out.returncode == 0, out.stderr
    assert "X.509 Certificate Information:" in out.stdout
    for oid in agent_oids(leaf):
        assert f"Unknown extension {oid} (not critical):" in out.stdout, out.stdout
        # and GnuTLS extracted exactly the value we encoded
        value = leaf.certificate.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid))
        assert isinstance(value.value, x509.UnrecognizedExtension)
        shown = out.stdout.split(f"Unknown extension {oid} (not critical):", 1)[1]
        assert f"Hexdump: {value.value.value.hex()}\n" in shown.split("Unknown extension")[0]
    if leaf.expected is None:
        assert DEFAULT_ARC.attestation.dotted_string not in out.stdout
    for pem in (world.root, world.issuing):
        assert bounded("certtool", "-i", "--infile", str(pem)).returncode == 0


@pytest.mark.parametrize("kind", KINDS)
def test_certtool_verifies_the_chain_for_client_auth_only(world: World, kind: str) -> None:
    chain = world.chain(world.leaves[kind])

    def verify(purpose: str) -> subprocess.CompletedProcess[str]:
        return bounded(
            "certtool", "--verify", "--verify-profile=high", "--load-ca-certificate",
            str(world.root), "--infile", str(chain), "--verify-purpose", purpose,
        )  # fmt: skip

    out = verify(CLIENT_AUTH)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Chain verification output: Verified. The certificate is trusted." in out.stdout
    out = verify(SERVER_AUTH)  # the control: the same chain, not for a TLS server
    assert out.returncode != 0 and "does not match the intended purpose" in out.stdout


# ---------------------------------------------------------------------------------- openssl
@pytest.mark.parametrize("kind", ["jws", "snp"])
def test_openssl_asn1parse_shows_method_attestor_and_key_id(
    world: World, kind: str, tmp_path: Path
) -> None:
    leaf = world.leaves[kind]
    assert leaf.expected is not None
    ext = leaf.certificate.extensions.get_extension_for_oid(DEFAULT_ARC.attestation)
    value = tmp_path / "attestation.der"
    assert isinstance(ext.value, x509.UnrecognizedExtension) and not ext.critical
    value.write_bytes(ext.value.value)
    out = bounded("openssl", "asn1parse", "-inform", "DER", "-in", str(value))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    utf8 = [line.split(":", 3)[-1] for line in lines if "UTF8STRING" in line]
    marker = leaf.expected
    assert utf8 == [marker.method, marker.attestor, marker.key_id], out.stdout
    when = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(marker.attested_at))
    assert any("GENERALIZEDTIME" in line and line.endswith(":" + when) for line in lines)
    assert any(":sha256" in line for line in lines), out.stdout
    digest = marker.statement_digest.value.hex().upper()
    assert any(line.endswith(":" + digest) for line in lines), out.stdout
