"""The root key on its own token, attached only for the ceremony (decision 0034), on
PostgreSQL and SoftHSM2 through the real CLI, checked with openssl: with the root token's
directory moved away, issuance, OCSP and the issuing CA's CRLs work and every root-signed
command fails in one line; moved back, the ceremony signs a long root CRL and responder
certificate, and ``ca revoke-issuer`` makes chains under the revoked issuing CA fail."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.integration.conftest import run_cli
from tests.integration.test_ocsp_interop import init_ca, issue, openssl_ocsp, serve

pytestmark = pytest.mark.integration  # about 60 s: one CA through every step, in make test

ROOT_LABEL = "agentca-root"
DAYS = 60


def _root_token_dir(data: Path) -> Path:
    """The SoftHSM2 token directory whose token object carries the root token's label."""
    found = [
        d for d in (data / "hsm" / "tokens").iterdir()
        if ROOT_LABEL.encode() in (d / "token.object").read_bytes()
    ]  # fmt: skip
    assert len(found) == 1, found
    return found[0]


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", *args], capture_output=True, text=True, timeout=30, check=False
    )


def _one_line_absent(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 11, result.stderr  # hsm-unavailable
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"(root_token_label={ROOT_LABEL}) is not attached" in lines[0], lines
    assert "[hsm-unavailable]" in lines[0]


def _ocsp_status(base: str, work: Path, issuer: Path, cert: Path, want: str) -> str:
    deadline = time.monotonic() + 15
    while True:
        out = openssl_ocsp(base + "/ocsp", work, "-issuer", str(issuer), "-cert", str(cert))
        if ("Response verify OK" in out.stderr and f"{cert}: {want}" in out.stdout) or (
            time.monotonic() > deadline
        ):
            return out.stdout + out.stderr
        time.sleep(0.3)


def _pem_crl(data: Path, work: Path, name: str) -> Path:
    out = work / f"{name}.crl.pem"
    crl = x509.load_der_x509_crl((data / "crl" / f"{name}.crl").read_bytes())
    out.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return out


def test_root_token_attached_only_for_the_ceremony(tmp_path: Path, pg_url: str) -> None:
    data, work, safe = tmp_path / "data", tmp_path / "work", tmp_path / "safe"
    work.mkdir()
    env = {
        "AGENTCA_DATABASE_URL": pg_url,
        "AGENTCA_ROOT_TOKEN_LABEL": ROOT_LABEL,
        "AGENTCA_ROOT_CRL_VALIDITY_DAYS": str(DAYS),
    }
    init_ca(data, env, work)
    assert (data / "secrets" / "root-user.pin").exists()
    root_crl = x509.load_der_x509_crl((data / "crl" / "root.crl").read_bytes())
    assert root_crl.next_update_utc is not None
    assert root_crl.next_update_utc - datetime.now(UTC) > timedelta(days=DAYS - 1)

    # detach: the root token's directory leaves the host
    token_dir = _root_token_dir(data)
    shutil.move(str(token_dir), str(safe))
    pem, _serial = issue(data, env, work, "while-offline")
    published = run_cli("crl", "publish", "--json", data_dir=data, env=env)
    assert published.returncode == 0, published.stderr
    assert {json.loads(line)["issuer"] for line in published.stdout.splitlines()} == {"issuing"}
    assert published.stderr.count("skipping root") == 1, published.stderr
    with serve(data, env) as (base, _proc):
        assert ": good" in _ocsp_status(base, work, work / "issuing.pem", pem, "good")
    for argv in (
        ("ca", "rollover", "--yes"),
        ("ca", "ceremony", "--json"),
        ("ca", "revoke-issuer", "issuing", "--yes"),
    ):
        _one_line_absent(run_cli(*argv, data_dir=data, env=env))
    by_name = run_cli("crl", "publish", "--issuer", "root", data_dir=data, env=env)
    assert by_name.returncode == 2 and "agentca ca ceremony" in by_name.stderr, by_name.stderr
    rotated = run_cli("ocsp", "rotate-signer", "--json", data_dir=data, env=env)
    assert rotated.returncode == 0, rotated.stderr
    assert [json.loads(line)["issuer"] for line in rotated.stdout.splitlines()] == ["issuing"]

    # attach again: the ceremony
    shutil.move(str(safe), str(token_dir))
    done = run_cli("ca", "ceremony", "--json", data_dir=data, env=env)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert [c["kind"] for c in doc["crls"]] == ["full", "delta"]
    text = _openssl("crl", "-inform", "DER", "-in", str(data / "crl" / "root.crl"), "-text",
                    "-noout", "-CAfile", str(work / "root.pem"))  # fmt: skip
    assert "verify OK" in text.stderr + text.stdout, text.stderr
    crl = x509.load_der_x509_crl((data / "crl" / "root.crl").read_bytes())
    assert crl.next_update_utc is not None and crl.last_update_utc is not None
    assert crl.next_update_utc - crl.last_update_utc == timedelta(days=DAYS)
    assert crl.next_update_utc.strftime("%b %e %H:%M:%S %Y") in text.stdout
    signer_end = datetime.fromisoformat(doc["responder_certificate"]["not_after"])
    assert signer_end - datetime.now(UTC) > timedelta(days=DAYS - 1)
    due = datetime.fromisoformat(doc["next_ceremony_due"])
    assert due == min(crl.next_update_utc, signer_end) - timedelta(days=14)

    # with the root attached: roll over, then revoke the old issuing CA in the root CRL
    rolled = run_cli("ca", "rollover", "--yes", "--json", data_dir=data, env=env)
    assert rolled.returncode == 0, rolled.stderr
    revoked = run_cli(
        "ca", "revoke-issuer", "issuing", "--reason", "keyCompromise", "--yes", "--json",
        data_dir=data, env=env,
    )  # fmt: skip
    assert revoked.returncode == 0, revoked.stderr
    rdoc = json.loads(revoked.stdout)
    assert rdoc["changed"] is True and rdoc["reason"] == "keyCompromise"
    text = _openssl("crl", "-inform", "DER", "-in", str(data / "crl" / "root.crl"), "-text",
                    "-noout")  # fmt: skip
    assert f"Serial Number: {rdoc['serial']}" in text.stdout, text.stdout
    assert "Key Compromise" in text.stdout
    again = run_cli("ca", "revoke-issuer", "issuing", "--reason", "keyCompromise", "--yes",
                    "--json", data_dir=data, env=env)  # fmt: skip
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False, again.stderr
    active = run_cli("ca", "revoke-issuer", "issuing-2", "--yes", data_dir=data, env=env)
    assert active.returncode == 7 and "ca rollover" in active.stderr, active.stderr

    # an end entity under the revoked issuing CA now fails chain validation
    assert run_cli("crl", "publish", "--full", data_dir=data, env=env).returncode == 0
    crls = [_pem_crl(data, work, "root"), _pem_crl(data, work, "issuing")]
    argv = ["verify", "-CAfile", str(work / "root.pem"), "-untrusted", str(work / "issuing.pem")]
    for path in crls:
        argv += ["-CRLfile", str(path)]
    plain = _openssl(*argv[:5], str(pem))
    assert plain.returncode == 0, plain.stdout + plain.stderr  # without CRLs it still chains
    checked = _openssl(*argv, "-crl_check_all", str(pem))
    assert checked.returncode != 0, checked.stdout
    assert "certificate revoked" in checked.stdout + checked.stderr
    with serve(data, env) as (base, _proc):
        answer = _ocsp_status(base, work, work / "root.pem", work / "issuing.pem", "revoked")
        assert ": revoked" in answer and "Reason: keyCompromise" in answer, answer
    checks = _doctor(data, env)
    assert checks["crl root.crl"]["status"] == "ok", checks["crl root.crl"]
    # a ceremony that signs for 10 days only: doctor warns that the next one is due
    short = env | {"AGENTCA_ROOT_CRL_VALIDITY_DAYS": "10"}
    assert run_cli("ca", "ceremony", data_dir=data, env=short).returncode == 0
    checks = _doctor(data, env)
    assert checks["crl root.crl"]["status"] == "warn", checks["crl root.crl"]
    assert "agentca ca ceremony" in checks["crl root.crl"]["fix"]


def _doctor(data: Path, env: dict[str, str]) -> dict[str, dict[str, str]]:
    health = run_cli("doctor", "--json", data_dir=data, env=env)
    return {c["check"]: c for c in json.loads(health.stdout)["checks"]}
