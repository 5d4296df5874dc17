"""``agentca ca rollover`` on PostgreSQL and SoftHSM2, checked with real openssl: after the
rollover new certificates chain to the new issuing key, old ones still verify under root +
old issuing CA, the running OCSP responder answers good for both, and a revocation of either
reaches OCSP and its own issuer's CRL (decision 0033)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from cryptography import x509

from tests.integration.conftest import run_cli
from tests.integration.test_ocsp_interop import init_ca, issue, openssl_ocsp, serve


def _verify(work: Path, cert: Path, untrusted: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(work / "root.pem"), "-untrusted", str(untrusted),
         str(cert)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def _status(base: str, work: Path, issuer: Path, cert: Path, want: str) -> str:
    """``openssl ocsp`` until it says ``want`` (a revocation reaches the workers within 1 s)."""
    deadline = time.monotonic() + 15
    while True:
        out = openssl_ocsp(base + "/ocsp", work, "-issuer", str(issuer), "-cert", str(cert))
        text = out.stdout + out.stderr
        if ("Response verify OK" in out.stderr and f"{cert}: {want}" in out.stdout) or (
            time.monotonic() > deadline
        ):
            return text
        time.sleep(0.3)


def _crl(
    data_dir: Path, env: dict[str, str], work: Path, issuer: str
) -> x509.CertificateRevocationList:
    """Publish now, check the CRL's signature with openssl against root + all issuing CAs,
    and return it."""
    published = run_cli("crl", "publish", "--full", "--json", data_dir=data_dir, env=env)
    assert published.returncode == 0, published.stderr
    path = data_dir / "crl" / f"{issuer}.crl"
    check = subprocess.run(
        ["openssl", "crl", "-inform", "DER", "-in", str(path), "-CAfile", str(work / "all.pem"),
         "-noout"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert "verify OK" in check.stderr + check.stdout, check.stderr
    return x509.load_der_x509_crl(path.read_bytes())


def _revoked(crl: x509.CertificateRevocationList, serial: str) -> bool:
    return crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None


def test_rollover_with_overlap(tmp_path: Path, pg_url: str) -> None:
    data, work = tmp_path / "data", tmp_path / "work"
    work.mkdir()
    env = {"AGENTCA_DATABASE_URL": pg_url}
    init_ca(data, env, work)
    old_issuing = work / "issuing.pem"
    old = {n: issue(data, env, work, n) for n in ("old-a", "old-b")}
    with serve(data, env) as (base, _proc):
        for pem, _serial in old.values():
            assert ": good" in _status(base, work, old_issuing, pem, "good")
        dry = run_cli("ca", "rollover", "--dry-run", "--json", data_dir=data, env=env)
        assert dry.returncode == 0, dry.stderr
        plan = json.loads(dry.stdout)
        assert plan["changed"] is False and plan["issuer"] == "issuing-2"

        rolled = run_cli("ca", "rollover", "--yes", "--json", data_dir=data, env=env)
        assert rolled.returncode == 0, rolled.stderr
        doc: dict[str, Any] = json.loads(rolled.stdout)
        assert doc["issuer"] == "issuing-2" and doc["retiring"] == "issuing", doc
        assert doc["responder_certificates"] == ["issuing-2"]

        chain = run_cli("chain", data_dir=data, env=env).stdout
        new_issuing = work / "issuing-2.pem"
        new_issuing.write_text(chain[: chain.index("-----END CERTIFICATE-----") + 26])
        every = run_cli("chain", "--all-issuing", "--json", data_dir=data, env=env)
        certs = json.loads(every.stdout)["certificates"]
        assert len(certs) == 3  # new issuing, old issuing, root
        (work / "all.pem").write_text("".join(certs))
        new_ca = x509.load_pem_x509_certificate(new_issuing.read_bytes())
        old_ca = x509.load_pem_x509_certificate(old_issuing.read_bytes())
        assert new_ca.subject != old_ca.subject
        assert new_ca.public_key() != old_ca.public_key()

        new = {n: issue(data, env, work, n) for n in ("new-a", "new-b")}
        for pem, _serial in new.values():
            cert = x509.load_pem_x509_certificate(pem.read_bytes())
            assert cert.issuer == new_ca.subject
            assert _verify(work, pem, new_issuing).returncode == 0
            assert _verify(work, pem, old_issuing).returncode != 0  # not under the old key
            assert ": good" in _status(base, work, new_issuing, pem, "good")
        for pem, _serial in old.values():
            result = _verify(work, pem, old_issuing)
            assert result.returncode == 0, result.stdout + result.stderr
            assert ": good" in _status(base, work, old_issuing, pem, "good")

        # revoke one of each: OCSP (running responder) and each issuer's own CRL
        for name in ("old-a", "new-a"):
            serial = (old | new)[name][1]
            r = run_cli("revoke", serial, "--reason", "keyCompromise", data_dir=data, env=env)
            assert r.returncode == 0, r.stderr
        assert ": revoked" in _status(base, work, old_issuing, old["old-a"][0], "revoked")
        assert ": revoked" in _status(base, work, new_issuing, new["new-a"][0], "revoked")
        assert ": good" in _status(base, work, old_issuing, old["old-b"][0], "good")
        assert ": good" in _status(base, work, new_issuing, new["new-b"][0], "good")

    old_crl = _crl(data, env, work, "issuing")
    new_crl = _crl(data, env, work, "issuing-2")
    assert old_crl.issuer == old_ca.subject and new_crl.issuer == new_ca.subject
    assert _revoked(old_crl, old["old-a"][1]) and not _revoked(old_crl, new["new-a"][1])
    assert _revoked(new_crl, new["new-a"][1]) and not _revoked(new_crl, old["old-a"][1])
    assert not _revoked(old_crl, old["old-b"][1]) and not _revoked(new_crl, new["new-b"][1])

    export = work / "ledger.jsonl"
    ledger = run_cli(
        "ledger", "export", "--sign-checkpoint", "--out", str(export), data_dir=data, env=env
    )
    assert ledger.returncode == 0, ledger.stderr
    assert export.read_text().count('"ca.issuing_rolled_over"') == 1
    verified = run_cli(
        "ledger", "verify", str(export), "--trust", str(work / "root.pem"), data_dir=data, env=env
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_rollover_help_and_refusals(tmp_path: Path) -> None:
    out = run_cli("ca", "rollover", "--help", data_dir=tmp_path / "none")
    assert "--dry-run" in out.stdout and "--key-type" in out.stdout and "--json" in out.stdout
    both = run_cli("ca", "rollover", "--dry-run", "--yes", data_dir=tmp_path / "none")
    assert both.returncode != 0 and len(both.stderr.strip().splitlines()) == 1, both.stderr
    none = run_cli("ca", "rollover", "--dry-run", data_dir=tmp_path / "none")
    assert none.returncode != 0 and "agentca init" in none.stderr
    assert "Traceback" not in none.stderr
