"""Enrollment tokens can be listed and revoked (issue 13): through the core on both
databases with a real SoftHSM2 CA, and through the CLI."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from ca.errors import CAError, ErrorCode
from ca.extensions import Digest, Provenance, build_agent_csr
from ca.roles import token_hash
from ca.store.models import LedgerEntryRow
from ca.wiring import Runtime
from tests.integration.conftest import register_for_issue, run_cli

pytestmark = pytest.mark.integration

MODEL, PROMPT = "a1" * 32, "c3" * 32


def _register(rt: Runtime, name: str) -> None:
    rt.registry.add_scope("read_book")
    rt.registry.add_model(MODEL, "m", "prod")
    rt.registry.register_agent(name, "o@example.com", "prod", "m", ["read_book"], [MODEL], [PROMPT])


def _csr(name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = build_agent_csr(
        key, name, Provenance("m", Digest.sha256_hex(MODEL), Digest.sha256_hex(PROMPT))
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def _events(rt: Runtime, event: str) -> list[dict[str, Any]]:
    with rt.sessions() as s:
        rows = s.scalars(select(LedgerEntryRow).where(LedgerEntryRow.event == event)).all()
        return [json.loads(r.body) for r in rows]


def test_a_revoked_token_never_enrolls(ca_runtime: Runtime) -> None:
    rt = ca_runtime
    _register(rt, "tok-agent")
    tokens = rt.enrollment_tokens
    kept, _ = tokens.create("tok-agent", timedelta(hours=1), "op")
    leaked, _ = tokens.create("tok-agent", timedelta(hours=1), "op")
    listed = tokens.list_tokens("tok-agent")
    assert {t.token_sha256 for t in listed} == {token_hash(kept), token_hash(leaked)}
    assert all(t.status(rt.authority.clock()) == "usable" for t in listed)
    handle = token_hash(leaked)[:8]
    revoked = tokens.revoke(handle, "op:alice")
    assert revoked.revoked_by == "op:alice" and revoked.agent == "tok-agent"
    with pytest.raises(CAError) as refused:
        rt.enrollment.enroll(leaked, _csr("tok-agent"))
    assert refused.value.code is ErrorCode.UNAUTHENTICATED
    assert "revoked" in refused.value.detail
    # nothing was reserved for the refused request, and the other token still works
    record = rt.enrollment.enroll(kept, _csr("tok-agent"))
    assert record.agent_name == "tok-agent"
    assert [t.token_sha256 for t in tokens.list_tokens("tok-agent")] == []  # none usable
    every = {t.token_sha256: t.status(rt.authority.clock()) for t in tokens.list_tokens(every=True)}
    assert every == {token_hash(kept): "used", token_hash(leaked): "revoked"}
    assert _events(rt, "enrollment_token.revoked") == [
        {"agent": "tok-agent", "token_sha256": token_hash(leaked)}
    ]
    with pytest.raises(CAError) as twice:
        tokens.revoke(handle, "op")
    assert twice.value.code is ErrorCode.CONFLICT and "already revoked" in twice.value.detail
    with pytest.raises(CAError) as used:
        tokens.revoke(token_hash(kept), "op")
    assert used.value.code is ErrorCode.CONFLICT and "already used" in used.value.detail
    for bad in ("abc", "zz" * 8, "'; drop table x; --"):
        with pytest.raises(CAError) as wrong:
            tokens.revoke(bad, "op")
        assert wrong.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(CAError) as nobody:
        tokens.list_tokens("nobody")
    assert nobody.value.code is ErrorCode.NOT_FOUND


def test_cli_token_create_list_revoke(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert run_cli("init", data_dir=data_dir).returncode == 0
    register_for_issue(data_dir, "cli-tok", MODEL, PROMPT)
    made = run_cli("token", "create", "cli-tok", "--ttl", "10m", "--json", data_dir=data_dir)
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["token"].startswith("aca_enroll_")
    assert created["token_sha256"] == token_hash(created["token"])
    listed = run_cli("token", "list", "--json", data_dir=data_dir)
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["id"] for r in rows] == [created["id"]] and rows[0]["status"] == "usable"
    assert created["token"] not in listed.stdout  # the secret is never shown again
    table = run_cli("token", "list", data_dir=data_dir)
    assert table.stdout.splitlines()[0].split()[:3] == ["ID", "AGENT", "STATUS"]
    gone = run_cli("token", "revoke", created["id"], "--json", data_dir=data_dir)
    assert gone.returncode == 0 and json.loads(gone.stdout)["status"] == "revoked"
    assert run_cli("token", "list", "--json", data_dir=data_dir).stdout == ""
    every = run_cli("token", "list", "--all", "--json", data_dir=data_dir)
    assert json.loads(every.stdout)["revoked_by"].startswith("cli:")
    # the repeat rule (docs/cli.md): the same end state is success, with one note
    again = run_cli("token", "revoke", created["id"], data_dir=data_dir)
    assert again.returncode == 0 and len(again.stderr.strip().splitlines()) == 1
    assert "already revoked" in again.stderr and again.stdout == ""
