"""The CRL publisher with real SoftHSM2 CA keys, SQLite and PostgreSQL, checked by `openssl`."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import insert, select

from ca.api.app import create_app
from ca.config import Settings
from ca.crl import read_crl_info, revoked_serials
from ca.crl_publisher import CrlPublisher, installed_number
from ca.records import CertificateRecord
from ca.requests import IssuanceRequest
from ca.revocation import RevocationReason
from ca.store.models import Certificate, CertStatus, CrlState, Issuer
from ca.wiring import Runtime, open_runtime
from tests.integration.conftest import REPO_ROOT
from tests.unit.helpers import sample_extensions


def _issue(rt: Runtime, name: str = "ExecutionAgent-ETH-01") -> CertificateRecord:
    request = IssuanceRequest(
        public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
        agent_name=name,
        extensions=sample_extensions(),
        validity=timedelta(hours=2),
    )
    return rt.authority.issue(request, actor="test")


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)


def _pem(der_path: Path) -> Path:
    """A PEM copy of a DER CRL, written outside the publish directory."""
    out = der_path.parent.parent / f"{der_path.stem}-{der_path.stat().st_mtime_ns}.crl.pem"
    result = _openssl("crl", "-inform", "DER", "-in", str(der_path), "-outform", "PEM")
    assert result.returncode == 0, result.stderr
    out.write_text(result.stdout)
    return out


@pytest.fixture
def work(ca_runtime: Runtime, tmp_path: Path) -> Path:
    """root.pem, issuing.pem and chain.pem of the CA under test."""
    issuing, root = ca_runtime.authority.chain()
    d = tmp_path / "work"
    d.mkdir()
    (d / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    (d / "issuing.pem").write_bytes(issuing.public_bytes(serialization.Encoding.PEM))
    (d / "chain.pem").write_bytes((d / "issuing.pem").read_bytes() + (d / "root.pem").read_bytes())
    return d


@pytest.fixture
def publisher(ca_runtime: Runtime) -> CrlPublisher:
    return CrlPublisher.from_runtime(ca_runtime)


def _write_cert(work: Path, record: CertificateRecord, name: str) -> Path:
    path = work / f"{name}.pem"
    assert record.certificate is not None
    path.write_bytes(record.certificate.public_bytes(serialization.Encoding.PEM))
    return path


def _verify(work: Path, cert: Path, *crl_args: str) -> subprocess.CompletedProcess[str]:
    """``openssl verify`` with the CA files of ``work``; output merged into ``stdout``."""
    result = _openssl(
        "verify",
        *crl_args,
        "-CAfile",
        str(work / "root.pem"),
        "-untrusted",
        str(work / "issuing.pem"),
        str(cert),
    )
    result.stdout += result.stderr
    return result


def test_openssl_verifies_crls_and_rejects_revoked_certificate(
    ca_runtime: Runtime, publisher: CrlPublisher, work: Path
) -> None:
    good = _issue(ca_runtime, "GoodAgent")
    bad = _issue(ca_runtime, "BadAgent")
    ca_runtime.authority.revoke(bad.serial_hex, RevocationReason.KEY_COMPROMISE, actor="t")
    results = publisher.publish_all(mode="full")
    assert {(p.issuer, p.kind) for p in results} == {
        ("root", "full"),
        ("root", "delta"),
        ("issuing", "full"),
        ("issuing", "delta"),
    }
    crl_dir = publisher.publish_dir
    for name, ca_file in (("issuing", "chain.pem"), ("root", "root.pem")):
        for suffix in (".crl", "-delta.crl"):
            checked = _openssl(
                "crl",
                "-in",
                str(crl_dir / f"{name}{suffix}"),
                "-inform",
                "DER",
                "-CAfile",
                str(work / ca_file),
                "-noout",
            )
            assert checked.returncode == 0 and "verify OK" in checked.stderr, checked.stderr
    text = _openssl("crl", "-in", str(crl_dir / "issuing.crl"), "-inform", "DER", "-noout", "-text")
    assert f"Serial Number: {bad.serial_hex.upper()}" in text.stdout.replace(" 0", " ")
    assert "Key Compromise" in text.stdout
    assert "X509v3 Freshest CRL" in text.stdout and "issuing-delta.crl" in text.stdout
    assert "X509v3 CRL Number" in text.stdout and "X509v3 Authority Key Identifier" in text.stdout

    issuing_crl, root_crl = _pem(crl_dir / "issuing.crl"), _pem(crl_dir / "root.crl")
    good_pem, bad_pem = _write_cert(work, good, "good"), _write_cert(work, bad, "bad")
    ok = _verify(work, good_pem, "-crl_check", "-CRLfile", str(issuing_crl))
    assert ok.returncode == 0 and ok.stdout.strip().endswith("OK"), ok.stdout + ok.stderr
    refused = _verify(work, bad_pem, "-crl_check", "-CRLfile", str(issuing_crl))
    assert refused.returncode != 0 and "certificate revoked" in refused.stdout + refused.stderr
    both = ("-crl_check_all", "-CRLfile", str(issuing_crl), "-CRLfile", str(root_crl))
    ok_all = _verify(work, good_pem, *both)
    assert ok_all.returncode == 0, ok_all.stdout + ok_all.stderr
    refused_all = _verify(work, bad_pem, *both)
    assert "certificate revoked" in refused_all.stdout + refused_all.stderr
    # Without the root's CRL, -crl_check_all cannot check the issuing CA: the root CRL matters.
    missing = _verify(work, good_pem, "-crl_check_all", "-CRLfile", str(issuing_crl))
    assert missing.returncode != 0 and "unable to get certificate CRL" in missing.stdout + (
        missing.stderr
    )


def test_hold_release_and_deltas(ca_runtime: Runtime, publisher: CrlPublisher, work: Path) -> None:
    ca = ca_runtime.authority
    held = _issue(ca_runtime, "HeldAgent")
    later = _issue(ca_runtime, "LaterAgent")
    held_pem, later_pem = _write_cert(work, held, "held"), _write_cert(work, later, "later")
    ca.revoke(held.serial_hex, RevocationReason.CERTIFICATE_HOLD, actor="t")
    full1, delta1 = publisher.publish("issuing")  # no CRL yet: auto publishes a complete CRL
    assert (full1.kind, delta1.kind, delta1.base_number) == ("full", "delta", full1.number)
    crl_dir = publisher.publish_dir
    text = _openssl("crl", "-in", str(crl_dir / "issuing.crl"), "-inform", "DER", "-noout", "-text")
    assert "Certificate Hold" in text.stdout
    full_pem = _pem(crl_dir / "issuing.crl")
    assert (
        "certificate revoked"
        in _verify(work, held_pem, "-crl_check", "-CRLfile", str(full_pem)).stdout
    )

    ca.release_hold(held.serial_hex, actor="t")
    ca.revoke(later.serial_hex, RevocationReason.SUPERSEDED, actor="t")
    (delta2,) = publisher.publish("issuing")  # the complete CRL is not due: a delta
    assert delta2.kind == "delta" and delta2.base_number == full1.number
    assert delta2.number > delta1.number and delta2.entries == 2
    delta_der = (crl_dir / "issuing-delta.crl").read_bytes()
    delta = x509.load_der_x509_crl(delta_der)
    assert delta.is_signature_valid(ca.chain()[0].public_key())  # type: ignore[arg-type]
    indicator = delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    assert indicator.critical and indicator.value.crl_number == full1.number
    reasons = {
        format(e.serial_number, "x"): e.extensions.get_extension_for_class(
            x509.CRLReason
        ).value.reason
        for e in delta
    }
    assert reasons == {
        held.serial_hex: x509.ReasonFlags.remove_from_crl,
        later.serial_hex: x509.ReasonFlags.superseded,
    }
    text = _openssl(
        "crl", "-in", str(crl_dir / "issuing-delta.crl"), "-inform", "DER", "-noout", "-text"
    )
    assert (
        "Remove From CRL" in text.stdout and "X509v3 Delta CRL Indicator: critical" in text.stdout
    )
    delta_pem = _pem(crl_dir / "issuing-delta.crl")
    deltas = ("-crl_check", "-use_deltas", "-CRLfile", str(full_pem), "-CRLfile", str(delta_pem))
    released = _verify(work, held_pem, *deltas)  # held in the base, removed by the delta
    assert released.returncode == 0, released.stdout + released.stderr
    assert "certificate revoked" in _verify(work, later_pem, *deltas).stdout
    assert _verify(work, later_pem, "-crl_check", "-CRLfile", str(full_pem)).returncode == 0

    full3, delta3 = publisher.publish("issuing", "full")
    assert full3.number > delta2.number and delta3.number > full3.number
    complete = x509.load_der_x509_crl((crl_dir / "issuing.crl").read_bytes())
    listed = {format(e.serial_number, "x"): e for e in complete}
    assert held.serial_hex not in listed  # released: absent from the next complete CRL
    assert later.serial_hex in listed
    assert len(x509.load_der_x509_crl((crl_dir / "issuing-delta.crl").read_bytes())) == 0


def test_delta_without_base_publishes_complete_crl_and_state_is_kept(
    ca_runtime: Runtime, publisher: CrlPublisher
) -> None:
    results = publisher.publish("issuing", "delta")
    assert [p.kind for p in results] == ["full", "delta"]
    with ca_runtime.sessions() as s:
        issuer_id = s.scalar(select(Issuer.id).where(Issuer.name == "issuing"))
        state = s.get(CrlState, issuer_id)
        assert state is not None
        assert state.crl_number == 2 and state.last_full_number == 1
        assert state.last_full_at == results[0].this_update
    assert not publisher.full_due("issuing")
    later = CrlPublisher.from_runtime(ca_runtime, interval=timedelta(seconds=1))
    later.clock = lambda: results[0].this_update + timedelta(seconds=1)
    assert later.full_due("issuing")


def test_expired_revoked_certificates_leave_after_one_crl_past_expiry(
    ca_runtime: Runtime, publisher: CrlPublisher
) -> None:
    record = _issue(ca_runtime)
    ca_runtime.authority.revoke(record.serial_hex, RevocationReason.KEY_COMPROMISE, actor="t")
    serial = int(record.serial_hex, 16)
    start = ca_runtime.authority.clock()
    clock = {"now": start}
    publisher.clock = lambda: clock["now"]
    read = lambda: revoked_serials((publisher.publish_dir / "issuing.crl").read_bytes())  # noqa: E731
    publisher.publish("issuing", "full")
    assert serial in read()
    clock["now"] = start + timedelta(hours=3)  # expired (validity 2 h)
    publisher.publish("issuing", "full")  # first complete CRL after expiry: still listed
    assert serial in read()
    clock["now"] = start + timedelta(hours=4)
    publisher.publish("issuing", "full")  # its predecessor was issued after expiry: dropped
    assert serial not in read()


def test_lower_numbered_crl_never_replaces_newer_file(
    ca_runtime: Runtime, publisher: CrlPublisher
) -> None:
    publisher.publish("issuing", "full")
    path = publisher.publish_dir / "issuing.crl"
    number = installed_number(path)
    assert number is not None
    ca = publisher._issuer("issuing")
    from ca.crl import CrlSpec

    now = publisher.clock()
    stale = CrlSpec(now, now + timedelta(hours=1), number - 1 if number > 1 else 0)
    _, replaced = publisher._install(ca, "issuing.crl", stale, iter(()))
    assert not replaced and installed_number(path) == number
    assert [p.name for p in publisher.publish_dir.iterdir() if p.name.endswith(".tmp")] == []


def _bulk_revoked(rt: Runtime, count: int) -> None:
    """Insert ``count`` revoked certificate rows straight into the store."""
    now = rt.authority.clock()
    with rt.sessions.begin() as s:
        issuer_id = s.scalar(select(Issuer.id).where(Issuer.name == "issuing"))
        rows = [
            {
                "issuer_id": issuer_id,
                "serial_hex": secrets.token_hex(19).lstrip("0") or "1",
                "status": CertStatus.REVOKED.value,
                "agent_name": "bulk",
                "subject": "CN=bulk",
                "public_key_sha256": b"\0" * 32,
                "model_type": "m",
                "model_digest": "0" * 64,
                "prompt_digest": "0" * 64,
                "scopes": "s",
                "officer": "o@example.org",
                "environment": "e",
                "not_before": now - timedelta(hours=1),
                "not_after": now + timedelta(hours=10),
                "requested_by": "bulk",
                "created_at": now,
                "revoked_at": now - timedelta(seconds=i % 3600),
                "revocation_reason": (1, 4, 6, 0)[i % 4],
            }
            for i in range(count)
        ]
        s.execute(insert(Certificate), rows)


def test_files_are_replaced_atomically(ca_runtime: Runtime, publisher: CrlPublisher) -> None:
    _bulk_revoked(ca_runtime, 20_000)
    publisher.publish("issuing", "full")
    path = publisher.publish_dir / "issuing.crl"
    public_key = ca_runtime.authority.chain()[0].public_key()
    stop = threading.Event()
    seen: list[int] = []
    errors: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            data = path.read_bytes()
            try:
                crl = x509.load_der_x509_crl(data)
                assert crl.is_signature_valid(public_key)  # type: ignore[arg-type]
                assert len(revoked_serials(data)) == 20_000
                seen.append(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
            except Exception as exc:  # a torn file would land here
                errors.append(repr(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(6):
            publisher.publish("issuing", "full")
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert len(seen) > 3 and seen == sorted(seen)
    assert len(set(seen)) > 1  # the reader saw several generations
    assert not [p for p in publisher.publish_dir.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("on_change", ["full", "delta"])
def test_loop_publishes_after_revocation_settles(
    ca_runtime: Runtime, publisher: CrlPublisher, on_change: str
) -> None:
    record = _issue(ca_runtime)
    stop = threading.Event()
    published: list[tuple[str, str, int]] = []
    errors: list[BaseException] = []
    thread = threading.Thread(
        target=publisher.run,
        args=(stop,),
        kwargs={
            "names": ["issuing"],
            "poll": 0.1,
            "settle": 0.3,
            "on_publish": lambda p: published.append((p.issuer, p.kind, p.number)),
            "on_error": lambda e, _delay: errors.append(e),
            "on_change": on_change,
        },
    )
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while len(published) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [k for _, k, _ in published] == ["full", "delta"]
        revoked_at = time.monotonic()
        ca_runtime.authority.revoke(record.serial_hex, RevocationReason.KEY_COMPROMISE, "t")
        name = "issuing-delta.crl" if on_change == "delta" else "issuing.crl"
        path = publisher.publish_dir / name
        while time.monotonic() < deadline:
            if int(record.serial_hex, 16) in revoked_serials(path.read_bytes()):
                break
            time.sleep(0.05)
        took = time.monotonic() - revoked_at
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert int(record.serial_hex, 16) in revoked_serials(path.read_bytes())
    assert took < 5, took
    assert published[-1][1] == "delta"  # a complete CRL is always followed by its delta
    if on_change == "full":
        assert [k for _, k, _ in published[-2:]] == ["full", "delta"]
    numbers = [n for _, _, n in published]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)


def test_http_endpoint_serves_the_cdp_url_with_cache_headers(
    ca_runtime: Runtime, publisher: CrlPublisher
) -> None:
    record = _issue(ca_runtime)
    publisher.publish_all(mode="full")
    app = create_app(ca_runtime.settings, runtime_factory=lambda: ca_runtime)
    client = app.test_client()
    assert record.certificate is not None
    cdp = record.certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    url = cdp.value[0].full_name[0].value
    assert url == f"{ca_runtime.settings.effective_crl_base_url}/issuing.crl"
    resp = client.get(urlparse(url).path)
    assert resp.status_code == 200
    assert resp.mimetype == "application/pkix-crl"
    assert resp.data == (publisher.publish_dir / "issuing.crl").read_bytes()
    cache = resp.headers["Cache-Control"]
    assert cache.startswith("public, max-age=")
    assert 0 < int(cache.split("max-age=")[1].split(",")[0]) <= 300
    assert resp.headers["Last-Modified"] and resp.headers["Expires"] and resp.headers["ETag"]
    again = client.get(urlparse(url).path, headers={"If-None-Match": resp.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""
    assert again.headers["ETag"] == resp.headers["ETag"]
    freshest = x509.load_der_x509_crl(resp.data).extensions.get_extension_for_class(
        x509.FreshestCRL
    )
    delta_url = freshest.value[0].full_name[0].value
    delta = client.get(urlparse(delta_url).path)
    assert (
        delta.status_code == 200
        and delta.data == (publisher.publish_dir / "issuing-delta.crl").read_bytes()
    )
    assert int(delta.headers["Cache-Control"].split("max-age=")[1].split(",")[0]) <= 60
    # the issuing CA certificate's CDP is the root CRL
    issuing_cdp = ca_runtime.authority.chain()[0].extensions.get_extension_for_class(
        x509.CRLDistributionPoints
    )
    root_url = issuing_cdp.value[0].full_name[0].value
    assert client.get(urlparse(root_url).path).status_code == 200
    publisher.publish("issuing", "full")
    changed = client.get(urlparse(url).path, headers={"If-None-Match": resp.headers["ETag"]})
    assert changed.status_code == 200 and changed.headers["ETag"] != resp.headers["ETag"]
    for missing in ("/crl/nobody.crl", "/crl/.issuing.lock", "/crl/..%2Fagentca.sqlite3"):
        nope = client.get(missing)
        assert nope.status_code == 404, missing
        assert nope.mimetype == "application/problem+json"
        assert json.loads(nope.data)["status"] == 404


_CONCURRENT = """
import json, sys
from ca.config import load_settings
from ca.crl_publisher import CrlPublisher
from ca.wiring import open_runtime
import time, pathlib
rt = open_runtime(load_settings())
pub = CrlPublisher.from_runtime(rt)
go = pathlib.Path(sys.argv[1])
while not go.exists():
    time.sleep(0.01)
out = []
for i in range(int(sys.argv[2])):
    for p in pub.publish("issuing", "full" if i % 2 == 0 else "delta"):
        out.append([p.kind, p.number, p.base_number, p.replaced])
print(json.dumps(out))
rt.close()
"""


def test_crl_numbers_unique_across_concurrent_publishers(pg_url: str, tmp_path: Path) -> None:
    """Four publisher processes on one PostgreSQL database: no number twice, none going back.

    The CA lives on its own managed SoftHSM2 token (created by ``agentca init`` in a
    subprocess), so the publishers do not depend on the test process's shared token.
    """
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCA_")}
    env.pop("SOFTHSM2_CONF", None)
    env.update(
        {
            "AGENTCA_DATA_DIR": str(data_dir),
            "AGENTCA_DATABASE_URL": pg_url,
            "PYTHONPATH": str(REPO_ROOT),
        }
    )
    init = subprocess.run(
        [sys.executable, "-m", "cli.main", "init"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
    )
    assert init.returncode == 0, init.stderr
    ca_settings = Settings(data_dir=data_dir, database_url=pg_url)
    ca_runtime = open_runtime(ca_settings)  # database only here: the HSM is never touched
    request_close = ca_runtime.engine.dispose
    _bulk_revoked(ca_runtime, 2000)
    go = tmp_path / "go"
    rounds = 6
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONCURRENT, str(go), str(rounds)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    time.sleep(1.5)  # let every process open its runtime
    go.touch()
    runs = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        runs.append(json.loads(out))
    numbers = [n for run in runs for _, n, _, _ in run]
    assert len(numbers) == len(set(numbers))  # unique across publishers
    for run in runs:  # strictly increasing within each publisher
        mine = [n for _, n, _, _ in run]
        assert mine == sorted(mine)
        for kind, number, base, _ in run:
            if kind == "delta":
                assert base is not None and base < number
    with ca_runtime.sessions() as s:
        issuer_id = s.scalar(select(Issuer.id).where(Issuer.name == "issuing"))
        state = s.get(CrlState, issuer_id)
        assert state is not None and state.crl_number == max(numbers) == len(numbers)
    crl_dir = ca_settings.effective_crl_publish_dir
    fulls = [n for run in runs for kind, n, _, ok in run if kind == "full" and ok]
    deltas = [n for run in runs for kind, n, _, ok in run if kind == "delta" and ok]
    assert installed_number(crl_dir / "issuing.crl") == max(fulls)
    assert installed_number(crl_dir / "issuing-delta.crl") == max(deltas)
    with (crl_dir / "issuing.crl").open("rb") as fh:
        assert read_crl_info(fh).number == max(fulls)
    crl = x509.load_der_x509_crl((crl_dir / "issuing.crl").read_bytes())
    request_close()
    assert len(crl) == 2000 and crl.is_signature_valid(
        ca_runtime.authority.chain()[0].public_key()  # type: ignore[arg-type]
    )
