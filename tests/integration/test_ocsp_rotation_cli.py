"""``agentca ocsp rotate-signer --every`` (what ``agentca run`` starts): it publishes a new
responder certificate for each CA whose newest one is due, ahead of its expiry, and leaves
current ones alone; the old one stays valid (overlap). Also ``--json`` and ``--help``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from tests.integration.conftest import AGENTCA, run_cli


def _signers(db: Path) -> list[tuple[int, str, datetime]]:
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, key_label, not_after FROM ocsp_signers"))
            return [(r[0], r[1], datetime.fromisoformat(str(r[2]))) for r in rows]
    finally:
        engine.dispose()


def test_every_rotates_what_is_due_ahead_of_expiry(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert run_cli("init", data_dir=data).returncode == 0
    db = data / "agentca.sqlite3"
    first = _signers(db)
    assert len(first) == 2  # init published one per CA
    current = run_cli("ocsp", "rotate-signer", "--if-needed", "--json", data_dir=data)
    assert current.returncode == 0, current.stderr
    assert [json.loads(line)["created"] for line in current.stdout.splitlines()] == [False] * 2
    # Make the issuing CA's signer due: less than half of its (recorded) lifetime left.
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        long_ago = (datetime.now(UTC) - timedelta(hours=200)).strftime("%Y-%m-%d %H:%M:%S.%f")
        conn.execute(
            sa.text(
                "UPDATE ocsp_signers SET not_before = :t WHERE issuer_id ="
                " (SELECT id FROM issuers WHERE role = 'issuing')"
            ),
            {"t": long_ago},
        )
    engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCA_")}
    env.pop("SOFTHSM2_CONF", None)
    env["AGENTCA_DATA_DIR"] = str(data)
    proc = subprocess.Popen(
        [AGENTCA, "ocsp", "rotate-signer", "--every", "1", "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(_signers(db)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.5)  # two more rounds: nothing else is due
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    created = [json.loads(line) for line in out.splitlines()]
    assert [c["issuer"] for c in created] == ["issuing"], out
    after = _signers(db)
    assert len(after) == 3
    old_issuing = next(s for s in first if s[0] == 2)
    assert old_issuing[2] > datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=40)


def test_rotate_signer_help() -> None:
    out = subprocess.run([AGENTCA, "ocsp", "rotate-signer", "--help"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    assert "--every" in out and "--json" in out and "--if-needed" in out


def test_rotation_covers_every_issuer_after_a_rollover(tmp_path: Path) -> None:
    """After ``agentca ca rollover`` the new issuing CA has its responder certificate, and a
    rotation renews the root's, the retired issuing CA's and the new one's; the previous
    signers stay on record and valid (overlap: their answers keep verifying)."""
    data = tmp_path / "data"
    assert run_cli("init", data_dir=data).returncode == 0
    rolled = run_cli("ca", "rollover", "--yes", "--json", data_dir=data)
    assert rolled.returncode == 0, rolled.stderr
    assert json.loads(rolled.stdout)["responder_certificates"] == ["issuing-2"]
    db = data / "agentca.sqlite3"
    before = _signers(db)
    assert len(before) == 3
    forced = run_cli("ocsp", "rotate-signer", "--json", data_dir=data)
    assert forced.returncode == 0, forced.stderr
    rows = [json.loads(line) for line in forced.stdout.splitlines()]
    assert [r["issuer"] for r in rows] == ["root", "issuing", "issuing-2"]
    assert all(r["created"] for r in rows)
    after = _signers(db)
    assert len(after) == 6
    now = datetime.now(UTC).replace(tzinfo=None)
    assert all(not_after > now + timedelta(hours=40) for _id, _label, not_after in before)


def test_presign_once_fills_the_store_and_says_so_in_json(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert run_cli("init", data_dir=data).returncode == 0
    first = run_cli("ocsp", "presign", "--once", "--json", data_dir=data)
    assert first.returncode == 0, first.stderr
    got = json.loads(first.stdout)
    # a fresh CA has no agent certificate yet: nothing to sign, nothing stored
    assert got["signed"] == 0 and got["stored"] == 0
    bad = run_cli("ocsp", "presign", "--json", data_dir=data)
    assert bad.returncode != 0 and "--json goes with --once" in bad.stderr
    helped = run_cli("ocsp", "presign", "--help", data_dir=data)
    assert helped.returncode == 0 and "--rate" in helped.stdout


def test_retire_previous_retires_the_older_signers_and_is_recorded(tmp_path: Path) -> None:
    """``--retire-previous`` (decision 0047): the new signers are published and every older
    one is marked retired in the same transaction (responders stop serving its answers); the
    ledger entry names what it retired. It is refused with --if-needed or --every."""
    data = tmp_path / "data"
    assert run_cli("init", data_dir=data).returncode == 0
    db = data / "agentca.sqlite3"
    before = {label for _id, label, _na in _signers(db)}
    done = run_cli("ocsp", "rotate-signer", "--retire-previous", "--json", data_dir=data)
    assert done.returncode == 0, done.stderr
    assert all(json.loads(line)["created"] for line in done.stdout.splitlines())
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT key_label, retired_at FROM ocsp_signers"))
            retired = {label for label, at in rows if at is not None}
            bodies = conn.execute(
                sa.text("SELECT body FROM ledger_entries WHERE event = 'ocsp.signer.rotated'")
            ).scalars()
            recorded = {label for body in bodies for label in json.loads(body).get("retired", [])}
    finally:
        engine.dispose()
    assert retired == before == recorded
    for extra in (["--if-needed"], ["--every", "5"]):
        bad = run_cli("ocsp", "rotate-signer", "--retire-previous", *extra, data_dir=data)
        assert bad.returncode != 0 and "--retire-previous" in bad.stderr
