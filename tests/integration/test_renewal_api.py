"""Renewal over real HTTP (issue 9 item 6), on SQLite and PostgreSQL with SoftHSM2.

Each test is a regression for one defect of the wave-1 renewal: a replayed body gave a second
certificate; a proof ``created`` 290 s in the future was accepted; the proof did not cover
``scopes`` or ``validity_seconds``; renewals of a certificate revoked for keyCompromise stayed
valid. Renewal now records the lineage, supersedes the old certificate and ledgers all of it.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from sqlalchemy import func, select

from ca.api.app import create_app
from ca.extensions import Digest, Provenance, build_agent_csr, read_agent_extensions
from ca.proof import renewal_statement
from ca.responder_certs import ensure_responder_certs
from ca.store.models import Certificate, LedgerEntryRow
from ca.wiring import Runtime, open_runtime
from ocsp.options import OcspOptions
from ocsp.wiring import open_responder
from tests.integration.conftest import settings_for
from tests.integration.http import Reply, call, serve_in_thread

MODEL = "a1" * 32
PROMPT = "c3" * 32
SCOPES = ["query_order_book", "submit_limit_order"]


class Env:
    def __init__(self, base: str, rt: Runtime, backend: str) -> None:
        self.base, self.rt, self.backend = base, rt, backend
        self.op = rt.api_tokens.create("ops", "operator")[0]

    def call(self, method: str, path: str, body: Any = None) -> Reply:
        return call(self.base, method, path, body, token=self.op)

    def rows(self) -> int:
        with self.rt.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(Certificate)) or 0)

    def ledger_size(self) -> int:
        with self.rt.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(LedgerEntryRow)) or 0)

    def ledger_after(self, size: int) -> list[tuple[str, dict[str, Any]]]:
        with self.rt.sessions() as s:
            rows = s.scalars(
                select(LedgerEntryRow)
                .where(LedgerEntryRow.seq >= size)
                .order_by(LedgerEntryRow.seq)
            ).all()
            # certificate events only
            return [(r.event, json.loads(r.body)) for r in rows if r.event.startswith("cert")]

    def row(self, cert: x509.Certificate) -> Certificate:
        with self.rt.sessions() as s:
            row = s.scalar(
                select(Certificate).where(Certificate.serial_hex == f"{cert.serial_number:x}")
            )
            assert row is not None
            s.expunge(row)
            return row

    def ocsp_status(self, cert: x509.Certificate) -> ocsp.OCSPResponse:
        issuing = self.rt.authority.chain()[0]
        der = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(cert, issuing, hashes.SHA256())
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        responder = open_responder(self.rt.settings, OcspOptions())
        try:
            return ocsp.load_der_ocsp_response(responder.responder.respond(der).der)
        finally:
            responder.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, hsm_config: Any
) -> Iterator[Env]:
    work: Path = tmp_path_factory.mktemp(f"renew-{request.param}")
    url = (
        f"sqlite:///{work}/ca.sqlite3"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_module_url")
    )
    settings = settings_for(
        work, url, hsm_config, enroll_rate_per_second=1000, enroll_burst=1000, max_validity_hours=48
    )
    rt = open_runtime(settings, create=True)
    rt.authority.initialise("ec-p384", "ec-p256")
    ensure_responder_certs(settings, rt.sessions, rt.keys)  # the CA side publishes signers
    app = create_app(settings, runtime_factory=lambda: rt)
    with serve_in_thread(app) as base:
        e = Env(base, rt, request.param)
        for name in [*SCOPES, "withdraw_funds"]:
            assert e.call("POST", "/v1/scopes", {"name": name}).status == 201
        r = e.call(
            "POST",
            "/v1/models",
            {"digest": MODEL, "model_type": "claude-x", "environment": "prod"},
        )
        assert r.status == 201, r.body
        r = e.call(
            "POST",
            "/v1/agents",
            {
                "name": "renew-agent",
                "officer": "officer@bank.example",
                "environment": "prod",
                "model_type": "claude-x",
                "scopes": SCOPES,
                "model_digests": [MODEL],
                "prompt_digests": [PROMPT],
                "key_types": ["ec-p256"],
                "max_validity_seconds": 6 * 3600,
            },
        )
        assert r.status == 201, r.body
        yield e
    rt.engine.dispose()


def _csr() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = build_agent_csr(
        key,
        "renew-agent",
        Provenance("claude-x", Digest.sha256_hex(MODEL), Digest.sha256_hex(PROMPT)),
    )
    return key, csr.public_bytes(serialization.Encoding.PEM)


def _enroll(env: Env) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    r = env.call("POST", "/v1/agents/renew-agent/enrollment-tokens")
    assert r.status == 201, r.body
    key, csr = _csr()
    r = call(env.base, "POST", "/v1/enroll", {"csr": csr.decode()}, token=r.json["token"])
    assert r.status == 201, r.body
    return key, x509.load_pem_x509_certificate(r.json["certificate_pem"].encode())


def _body(
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    csr_pem: bytes,
    created: int | None = None,
    signed: dict[str, Any] | None = None,
    sent: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A renewal body; ``signed`` are the scopes/validity the proof covers, ``sent`` those sent
    (the same unless a test tampers)."""
    created = int(time.time()) if created is None else created
    signed = signed or {}
    sent = signed if sent is None else sent
    statement = renewal_statement(
        created,
        x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER),
        cert.public_bytes(serialization.Encoding.DER),
        signed.get("scopes"),
        signed.get("validity_seconds"),
    )
    return {
        "certificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
        "csr": csr_pem.decode(),
        "created": created,
        "proof": base64.b64encode(key.sign(statement, ec.ECDSA(hashes.SHA256()))).decode(),
        **sent,
    }


def _renew(env: Env, body: dict[str, Any]) -> Reply:
    return call(env.base, "POST", "/v1/renew", body)


def _renewed(
    env: Env, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    new_key, csr = _csr()
    r = _renew(env, _body(cert, key, csr))
    assert r.status == 201, r.body
    return new_key, x509.load_pem_x509_certificate(r.json["certificate_pem"].encode())


def _problem(r: Reply, status: int, slug: str) -> str:
    assert r.status == status, (r.status, r.body)
    assert r.content_type == "application/problem+json"
    assert r.json["type"].endswith("/" + slug), r.json
    return str(r.json["detail"])


# -- single use ---------------------------------------------------------------------------------
def test_replaying_the_same_body_is_refused_and_writes_nothing(env: Env) -> None:
    key, cert = _enroll(env)
    body = _body(cert, key, _csr()[1])
    assert _renew(env, body).status == 201
    rows, size = env.rows(), env.ledger_size()
    detail = _problem(_renew(env, body), 409, "conflict")
    assert "already renewed" in detail
    assert (env.rows(), env.ledger_size()) == (rows, size)


def test_concurrent_replays_yield_one_certificate(env: Env) -> None:
    key, cert = _enroll(env)
    body = _body(cert, key, _csr()[1])
    rows = env.rows()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: _renew(env, body), range(4)))
    statuses = sorted(r.status for r in replies)
    assert statuses.count(201) == 1, [(r.status, r.body) for r in replies]
    assert all(s in (201, 409) for s in statuses), [(r.status, r.body) for r in replies]
    assert env.rows() == rows + 1


def test_a_second_renewal_of_a_renewed_certificate_is_refused(env: Env) -> None:
    key, cert = _enroll(env)
    _renewed(env, cert, key)
    rows = env.rows()
    again = _renew(env, _body(cert, key, _csr()[1]))  # a fresh, valid proof by the old key
    assert "already renewed" in _problem(again, 409, "conflict")
    assert env.rows() == rows


# -- freshness ----------------------------------------------------------------------------------
def test_created_in_the_future_is_bounded_to_30_seconds(env: Env) -> None:
    key, cert = _enroll(env)
    rows = env.rows()
    future = _renew(env, _body(cert, key, _csr()[1], created=int(time.time()) + 290))
    assert "future" in _problem(future, 401, "unauthenticated")
    stale = _renew(env, _body(cert, key, _csr()[1], created=int(time.time()) - 301))
    assert "stale" in _problem(stale, 401, "unauthenticated")
    assert env.rows() == rows
    near = _renew(env, _body(cert, key, _csr()[1], created=int(time.time()) + 20))
    assert near.status == 201, near.body


# -- the proof covers every member ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("signed", "sent"),
    [
        ({}, {"scopes": ["query_order_book"]}),
        ({"scopes": ["query_order_book"]}, {"scopes": SCOPES}),
        ({"scopes": ["query_order_book"]}, {}),
        ({}, {"validity_seconds": 3600}),
        ({"validity_seconds": 600}, {"validity_seconds": 3600}),
        ({"validity_seconds": 600}, {}),
    ],
    ids=[
        "scopes-added",
        "scopes-widened",
        "scopes-dropped",
        "vs-added",
        "vs-changed",
        "vs-dropped",
    ],
)
def test_scopes_and_validity_cannot_be_changed_after_signing(
    env: Env, signed: dict[str, Any], sent: dict[str, Any]
) -> None:
    key, cert = _enroll(env)
    rows = env.rows()
    r = _renew(env, _body(cert, key, _csr()[1], signed=signed, sent=sent))
    assert "does not verify" in _problem(r, 401, "unauthenticated")
    assert env.rows() == rows


def test_signed_scopes_and_validity_are_honoured(env: Env) -> None:
    key, cert = _enroll(env)
    asked = {"scopes": ["query_order_book"], "validity_seconds": 600}
    r = _renew(env, _body(cert, key, _csr()[1], signed=asked))
    assert r.status == 201, r.body
    new = x509.load_pem_x509_certificate(r.json["certificate_pem"].encode())
    assert read_agent_extensions(new).authorization.scopes == ("query_order_book",)
    assert new.not_valid_after_utc - cert.not_valid_before_utc < cert.not_valid_after_utc - (
        cert.not_valid_before_utc
    )


def test_a_proof_for_another_certificate_is_refused(env: Env) -> None:
    key, cert = _enroll(env)
    _other_key, other = _enroll(env)
    body = _body(other, key, _csr()[1])  # signed over the other certificate's fingerprint
    body["certificate"] = cert.public_bytes(serialization.Encoding.PEM).decode()
    _problem(_renew(env, body), 401, "unauthenticated")


# -- lineage and supersession -------------------------------------------------------------------
def test_renewal_records_lineage_and_supersedes_the_old_certificate(env: Env) -> None:
    key_a, a = _enroll(env)
    size = env.ledger_size()
    key_b, b = _renewed(env, a, key_a)
    _key_c, c = _renewed(env, b, key_b)
    row_a, row_b, row_c = env.row(a), env.row(b), env.row(c)
    assert row_a.renewed_from_id is None and row_a.lineage_id is None
    assert (row_b.renewed_from_id, row_b.lineage_id) == (row_a.id, row_a.id)
    assert (row_c.renewed_from_id, row_c.lineage_id) == (row_b.id, row_a.id)
    assert row_b.renewal_proof_sha256 and row_c.renewal_proof_sha256
    for old in (row_a, row_b):
        assert (old.status, old.revocation_reason) == ("revoked", 4)
    assert row_c.status == "issued"
    for old in (a, b):
        answer = env.ocsp_status(old)
        assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED
        assert answer.revocation_reason is x509.ReasonFlags.superseded
    assert env.ocsp_status(c).certificate_status is ocsp.OCSPCertStatus.GOOD

    sa, sb, sc = (f"{x.serial_number:x}" for x in (a, b, c))
    entries = env.ledger_after(size)
    assert [e for e, _ in entries] == [
        "certificate.reserved",
        "certificate.issued",
        "certificate.revoked",
    ] * 2
    reserved_b, issued_b, revoked_a = (body for _, body in entries[:3])
    assert reserved_b["renewed_from"] == sa and reserved_b["serial"] == sb
    assert (issued_b["serial"], issued_b["renewed_from"], issued_b["lineage_root"]) == (sb, sa, sa)
    assert (revoked_a["serial"], revoked_a["reason"], revoked_a["superseded_by"]) == (
        sa,
        "superseded",
        sb,
    )
    issued_c, revoked_b = entries[4][1], entries[5][1]
    assert (issued_c["renewed_from"], issued_c["lineage_root"]) == (sb, sa)
    assert (revoked_b["serial"], revoked_b["superseded_by"]) == (sb, sc)


def test_key_compromise_of_the_first_certificate_revokes_the_lineage(env: Env) -> None:
    key_a, a = _enroll(env)
    key_b, b = _renewed(env, a, key_a)
    key_c, c = _renewed(env, b, key_b)
    _key_x, unrelated = _enroll(env)
    size = env.ledger_size()
    r = env.call(
        "POST", f"/v1/certificates/{a.serial_number:x}/revoke", {"reason": "keyCompromise"}
    )
    assert r.status == 200, r.body
    assert r.json["revocation_reason"] == "keyCompromise"  # escalated from superseded
    for cert in (a, b, c):
        assert env.ocsp_status(cert).certificate_status is ocsp.OCSPCertStatus.REVOKED, cert
    answer = env.ocsp_status(c)
    assert answer.revocation_reason is x509.ReasonFlags.key_compromise
    assert env.row(b).revocation_reason == 4  # superseded stays: b's own key is not known lost
    assert env.ocsp_status(unrelated).certificate_status is ocsp.OCSPCertStatus.GOOD
    entries = env.ledger_after(size)
    assert [(e, body["serial"], body["reason"]) for e, body in entries] == [
        ("certificate.revoked", f"{a.serial_number:x}", "keyCompromise"),
        ("certificate.revoked", f"{c.serial_number:x}", "keyCompromise"),
    ]
    assert entries[0][1]["previous_reason"] == "superseded"
    assert entries[1][1]["lineage_of"] == f"{a.serial_number:x}"
    # the compromised lineage cannot be renewed any further
    after = _renew(env, _body(c, key_c, _csr()[1]))
    assert "revoked" in _problem(after, 401, "unauthenticated")


def test_key_compromise_in_the_middle_revokes_the_live_descendant(env: Env) -> None:
    key_a, a = _enroll(env)
    key_b, b = _renewed(env, a, key_a)
    _key_c, c = _renewed(env, b, key_b)
    r = env.call(
        "POST", f"/v1/certificates/{b.serial_number:x}/revoke", {"reason": "keyCompromise"}
    )
    assert r.status == 200, r.body
    assert (env.row(c).status, env.row(c).revocation_reason) == ("revoked", 1)
    assert env.row(a).revocation_reason == 4
    again = env.call(
        "POST", f"/v1/certificates/{b.serial_number:x}/revoke", {"reason": "keyCompromise"}
    )
    _problem(again, 409, "already-revoked")


def test_revoking_the_live_certificate_for_another_reason_leaves_it_alone(env: Env) -> None:
    key_a, a = _enroll(env)
    _key_b, b = _renewed(env, a, key_a)
    r = env.call(
        "POST", f"/v1/certificates/{b.serial_number:x}/revoke", {"reason": "cessationOfOperation"}
    )
    assert r.status == 200, r.body
    assert env.row(a).revocation_reason == 4 and env.row(b).revocation_reason == 5
    # a superseded certificate cannot be revoked again for another reason than keyCompromise
    r = env.call("POST", f"/v1/certificates/{a.serial_number:x}/revoke", {"reason": "unspecified"})
    _problem(r, 409, "already-revoked")


# -- races while the renewal is being signed (found by review) ----------------------------------
@pytest.fixture
def while_signing(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``while_signing(fn)``: run ``fn`` (once) while the next certificate is being signed:
    the window between the reservation and the transaction that stores it."""
    import ca.issuance

    real = ca.issuance.sign_agent_certificate
    pending: list[Any] = []

    def build(*args: Any, **kwargs: Any) -> Any:
        if pending:
            pending.pop()()
        return real(*args, **kwargs)

    monkeypatch.setattr(ca.issuance, "sign_agent_certificate", build)
    return pending.append


def _status_of(env: Env, serial: int) -> tuple[str, int | None]:
    row = env.rt.authority.get(f"{serial:x}")
    return row.status, row.revocation_reason


def _children(env: Env, parent: x509.Certificate) -> list[str]:
    with env.rt.sessions() as s:
        pid = s.scalar(
            select(Certificate.id).where(Certificate.serial_hex == f"{parent.serial_number:x}")
        )
        return sorted(
            s.scalars(select(Certificate.status).where(Certificate.renewed_from_id == pid)).all()
        )


def test_two_different_proofs_for_one_certificate_yield_one_live_renewal(
    env: Env, while_signing: Any
) -> None:
    """A second renewal sent while the first is being signed is refused (its reservation sees
    the pending child). The opposite interleaving, both reserving before either stores, is
    what the compare-and-set supersession in the storing transaction closes; the hold and
    keyCompromise tests below go through that same check."""
    key, cert = _enroll(env)
    second = _body(cert, key, _csr()[1])
    replies: list[Reply] = []
    while_signing(lambda: replies.append(_renew(env, second)))
    first = _renew(env, _body(cert, key, _csr()[1]))
    statuses = sorted([first.status, *(r.status for r in replies)])
    assert statuses == [201, 409], [
        (first.status, first.body),
        *((r.status, r.body) for r in replies),
    ]
    assert _children(env, cert).count("issued") == 1


def test_a_hold_placed_while_the_renewal_is_signed_cancels_it(env: Env, while_signing: Any) -> None:
    from ca.revocation import RevocationReason

    key, cert = _enroll(env)
    serial = f"{cert.serial_number:x}"
    while_signing(
        lambda: env.rt.authority.revoke(serial, RevocationReason.CERTIFICATE_HOLD, "test")
    )
    r = _renew(env, _body(cert, key, _csr()[1]))
    assert "put on hold" in _problem(r, 409, "conflict")
    env.rt.authority.release_hold(serial, "test")
    assert _status_of(env, cert.serial_number)[0] == "issued"
    assert _children(env, cert) == ["failed"]  # one live credential, not two


def test_key_compromise_while_the_renewal_is_signed_is_a_conflict_not_a_500(
    env: Env, while_signing: Any
) -> None:
    """A -> B, then B -> C is being signed when A is revoked for keyCompromise."""
    from ca.revocation import RevocationReason

    key_a, a = _enroll(env)
    key_b, b = _renewed(env, a, key_a)
    while_signing(
        lambda: env.rt.authority.revoke(
            f"{a.serial_number:x}", RevocationReason.KEY_COMPROMISE, "test"
        )
    )
    r = _renew(env, _body(b, key_b, _csr()[1]))
    _problem(r, 409, "conflict")
    assert _status_of(env, b.serial_number) == ("revoked", 1)
    assert _children(env, b) == ["failed"]


@pytest.mark.parametrize("created", [10**400, -(10**400), -1, 2**63])
def test_an_absurd_created_is_a_bad_request(env: Env, created: int) -> None:
    key, cert = _enroll(env)
    body = _body(cert, key, _csr()[1])
    body["created"] = created
    r = _renew(env, body)
    assert r.status == 400, r.body
    assert r.content_type == "application/problem+json"


def test_a_registration_disabled_after_the_decision_refuses_the_issuance(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registration is decided on in one transaction and the serial reserved in the
    next: a disable committed in between used to be ignored (the renewal was issued)."""
    key, cert = _enroll(env)
    real = type(env.rt.authority.issuance)._reserve
    disabled: list[bool] = []

    def reserve(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not disabled:
            env.rt.registry.update_agent("renew-agent", active=False, actor="test")
            disabled.append(True)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(env.rt.authority.issuance), "_reserve", reserve)
    rows = env.rows()
    try:
        r = _renew(env, _body(cert, key, _csr()[1]))
    finally:
        monkeypatch.undo()
        env.rt.registry.update_agent("renew-agent", active=True, actor="test")
    assert "disabled" in _problem(r, 403, "policy-refused")
    assert env.rows() == rows and _status_of(env, cert.serial_number)[0] == "issued"
