"""Ledger reads over the API stay bounded: exports stream in bounded memory and proofs do not
rebuild the tree from every leaf (SQLite and PostgreSQL)."""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from ca.api.app import create_app
from ca.ledger.entries import LedgerEntry, format_time
from ca.ledger.verify import verify_export
from ca.store.models import LedgerEntryRow, LedgerHead
from ca.wiring import Runtime, open_runtime
from tests.integration.conftest import settings_for
from wire.canonical import canonical
from wire.merkle import MerkleTree, leaf_hash, verify_consistency

ENTRIES = 20_000
PADDING = "x" * 400  # about 0.5 kB per exported line: the export is ~10 MB


def _fill(rt: Runtime, count: int) -> None:
    """Append ``count`` entries in one statement, exactly as ``append`` would record them."""
    time = format_time(datetime.now(UTC))
    with rt.sessions.begin() as s:
        start = int(s.scalar(sa.select(LedgerHead.size)) or 0)
        rows = []
        for seq in range(start, start + count):
            body = {"agent": "bulk-agent", "i": seq, "pad": PADDING}
            entry = LedgerEntry(seq, time, "test", "test.bulk", body)
            rows.append(
                {
                    "seq": seq,
                    "time": time,
                    "actor": "test",
                    "event": "test.bulk",
                    "agent": "bulk-agent",
                    "officer": None,
                    "body": canonical(body).decode(),
                    "leaf_hash": leaf_hash(entry.canonical_bytes()),
                }
            )
        s.execute(sa.insert(LedgerEntryRow), rows)
        s.execute(sa.update(LedgerHead).values(size=start + count))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def big_ledger(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, hsm_config: Any
) -> Iterator[tuple[Runtime, str, Any]]:
    work = tmp_path_factory.mktemp(f"ledger-bounds-{request.param}")
    url = (
        f"sqlite:///{work}/ca.sqlite3"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_module_url")
    )
    settings = settings_for(work, url, hsm_config)
    rt = open_runtime(settings, create=True)
    rt.authority.initialise("ec-p256", "ec-p256")
    _fill(rt, ENTRIES)
    cp = rt.checkpoints.checkpoint()
    token = rt.api_tokens.create("auditor", "auditor")[0]
    app = create_app(settings, runtime_factory=lambda: rt)
    yield rt, token, (app, cp)
    rt.engine.dispose()


def _stream(app: Any, path: str, token: str) -> tuple[int, int, bytes]:
    """(bytes received, peak traced memory while streaming, the first 64 KiB)."""
    client = app.test_client()
    tracemalloc.start()
    try:
        resp = client.get(path, headers={"Authorization": f"Bearer {token}"}, buffered=False)
        assert resp.status_code == 200, resp.get_data()
        total, head = 0, b""
        for chunk in resp.response:
            total += len(chunk)
            if len(head) < 65536:
                head += chunk[:65536]
        resp.close()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return total, peak, head


@pytest.mark.parametrize("query", ["", "?agent=bulk-agent", "?format=csv"])
def test_export_streams_in_bounded_memory(big_ledger: tuple[Runtime, str, Any], query: str) -> None:
    """The export was built in a StringIO and sent as one string: memory grew with the ledger."""
    _rt, token, (app, _cp) = big_ledger
    total, peak, head = _stream(app, "/v1/ledger/export" + query, token)
    assert total > 10_000_000
    assert peak < 4_000_000, f"peak {peak} bytes for a {total}-byte export"
    assert head.lstrip(b"#").startswith(b"{")


def test_streamed_filtered_export_verifies(big_ledger: tuple[Runtime, str, Any]) -> None:
    _rt, token, (app, cp) = big_ledger
    client = app.test_client()
    resp = client.get(
        "/v1/ledger/export?agent=bulk-agent", headers={"Authorization": f"Bearer {token}"}
    )
    from cryptography import x509

    trust = x509.load_pem_x509_certificate(cp.to_json()["certificate_pem"].encode())
    report = verify_export(io.StringIO(resp.get_data(as_text=True)), trust)
    assert report.ok, report.message


def test_consistency_proofs_read_only_the_blocks_they_need(
    big_ledger: tuple[Runtime, str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each consistency request read every leaf of the ledger to rebuild the tree."""
    rt, token, (app, _cp) = big_ledger
    size = rt.ledger.size()
    reference = MerkleTree(list(rt.ledger.leaf_hashes(size)))
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert (
        client.get(f"/v1/ledger/consistency?from=1&to={size}", headers=headers).status_code == 200
    )
    read: list[int] = []
    original = type(rt.ledger).leaf_hashes

    def counting(self: Any, size_: int, start: int = 0) -> Any:
        for h in original(self, size_, start):
            read.append(1)
            yield h

    monkeypatch.setattr(type(rt.ledger), "leaf_hashes", counting)
    for old in (1, 1000, 4097, size // 2, size - 1):
        reply = client.get(f"/v1/ledger/consistency?from={old}&to={size}", headers=headers)
        assert reply.status_code == 200, reply.get_data()
        proof = [bytes.fromhex(h) for h in reply.get_json()["proof"]]
        assert verify_consistency(old, size, reference.root(old), reference.root(size), proof)
    assert len(read) <= 5 * 2 * 1024, len(read)  # at most two blocks per proof, not 5 x 20,000
