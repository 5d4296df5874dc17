"""The SoftHSM2 token disappears (its directory moved away) and comes back (issue 10, item 2).

Before the fix the key store treated CKR_GENERAL_ERROR from C_GetTokenInfo as final and never
re-initialised the module, so signing failed until the services were restarted, and /health
kept saying "ok". Now: during the loss every signature fails fast with ``HSMUnavailable`` (the
CA API answers 503 ``hsm-unavailable`` with Retry-After, never 500), readiness says not ready,
and signing comes back by itself, without a restart, within the backoff bound (5 s).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.faults import FULL
from tests.faults.helpers import agent_csr, prepare_ca
from tests.integration.conftest_hsm import run_python
from tests.integration.http import Reply, call
from tests.integration.servers import agentca_server

pytestmark = [pytest.mark.faults, pytest.mark.integration]

LOSS_SECONDS = 10.0 if FULL else 2.0
RECOVERY_BOUND = 6.0  # backoff maximum (5 s) + one reopen attempt + slack
FAST_FAIL_BOUND = 1.0  # no request waits longer than this for an unavailable HSM

_KEYSTORE_SCRIPT = r"""
import json, os, sys, tempfile, threading, time
from pathlib import Path
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hsm import KeyStore, KeyType, ensure_softhsm_token

loss = float(sys.argv[1])
data = Path(tempfile.mkdtemp(dir=sys.argv[2]))
store = KeyStore(ensure_softhsm_token(data))
key = store.generate("fault-key", KeyType.EC_P256)
tokens = data / "hsm" / "tokens"
events = []
stop = threading.Event()
t0 = time.monotonic()

def signer():
    while not stop.is_set():
        start = time.monotonic()
        try:
            key.sign(b"payload", ec.ECDSA(hashes.SHA256()))
            events.append((start - t0, time.monotonic() - start, "ok"))
        except Exception as exc:
            events.append((start - t0, time.monotonic() - start, type(exc).__name__))
        time.sleep(0.01)

thread = threading.Thread(target=signer)
thread.start()
time.sleep(0.5)
status_before = store.status().ok
os.rename(tokens, str(tokens) + ".away")
lost_at = time.monotonic() - t0
time.sleep(loss / 2)
status_during = store.status().to_dict()
time.sleep(loss / 2)
os.rename(str(tokens) + ".away", tokens)
back_at = time.monotonic() - t0
deadline = time.monotonic() + 15
while time.monotonic() < deadline:
    if any(e[0] >= back_at and e[2] == "ok" for e in events):
        break
    time.sleep(0.02)
time.sleep(0.3)
stop.set()
thread.join(10)
print(json.dumps({"events": events, "lost_at": lost_at, "back_at": back_at,
                  "status_before": status_before, "status_during": status_during,
                  "status_after": store.status().ok}))
"""


def test_key_store_fails_fast_during_the_loss_and_recovers_by_itself(tmp_path: Path) -> None:
    result = run_python(_KEYSTORE_SCRIPT, str(LOSS_SECONDS), str(tmp_path), timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    events, lost_at, back_at = out["events"], out["lost_at"], out["back_at"]
    assert out["status_before"] is True
    assert out["status_during"]["status"] == "unavailable", out["status_during"]
    assert out["status_after"] is True
    failures = [e for e in events if e[2] != "ok"]
    assert failures, "signing never failed while the token was gone"
    assert {e[2] for e in failures} == {"HSMUnavailable"}, {e[2] for e in failures}
    assert max(e[1] for e in failures) < FAST_FAIL_BOUND, max(e[1] for e in failures)
    assert all(lost_at - 0.05 <= e[0] <= back_at + RECOVERY_BOUND for e in failures)
    recovered = min(e[0] + e[1] for e in events if e[0] >= back_at and e[2] == "ok")
    recovery = recovered - back_at
    print(
        f"\nkey store: {len(failures)} fast failures during a {LOSS_SECONDS:g} s loss, "
        f"slowest {max(e[1] for e in failures) * 1000:.0f} ms; recovered {recovery:.2f} s "
        "after the token returned"
    )
    assert recovery < RECOVERY_BOUND, recovery


def _issue(base: str, token: str) -> tuple[Reply, float]:
    start = time.monotonic()
    reply = call(
        base, "POST", "/v1/certificates", {"csr": agent_csr(), "agent": "fault-agent"}, token=token
    )
    return reply, time.monotonic() - start


def test_served_ca_answers_503_hsm_unavailable_and_recovers_without_restart(
    tmp_path: Path, pg_url: str
) -> None:
    ca = prepare_ca(tmp_path / "data", pg_url)
    tokens = ca.data_dir / "hsm" / "tokens"
    with agentca_server(["serve", "--workers", "2"], ca.data_dir, "/health", env=ca.env) as (
        base,
        proc,
    ):
        for _ in range(4):  # both workers have their session open
            reply, _ = _issue(base, ca.api_token)
            assert reply.status == 201, reply.body
        assert call(base, "GET", "/ready").status == 200
        statuses: list[tuple[float, int, str, float]] = []
        os.rename(tokens, str(tokens) + ".away")
        lost = time.monotonic()
        not_ready = []
        try:
            while time.monotonic() - lost < LOSS_SECONDS:
                reply, took = _issue(base, ca.api_token)
                slug = reply.json.get("type", "").rsplit("/", 1)[-1] if reply.status >= 400 else ""
                statuses.append((time.monotonic() - lost, reply.status, slug, took))
                if reply.status == 503:
                    assert reply.headers.get("retry-after"), reply.headers
                ready = call(base, "GET", "/ready")
                if ready.status == 503:
                    not_ready.append(ready.json)
                time.sleep(0.05)
        finally:
            os.rename(str(tokens) + ".away", tokens)
        back = time.monotonic()
        recovered_at = None
        while time.monotonic() - back < 15:
            reply, took = _issue(base, ca.api_token)
            statuses.append((time.monotonic() - lost, reply.status, "", took))
            # one success is not one per worker: a few more must succeed too
            if reply.status == 201 and all(
                _issue(base, ca.api_token)[0].status == 201 for _ in range(4)
            ):
                recovered_at = time.monotonic()
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the server exited"
        # readiness is per worker: one still inside its reopen backoff says "not-ready" with a
        # retry_after, so a probe that polls sees 200 once that backoff has run out
        ready_after = call(base, "GET", "/ready")
        while ready_after.status != 200 and time.monotonic() - back < RECOVERY_BOUND + 5:
            assert ready_after.json["hsm"].get("retry_after_seconds") is not None, ready_after
            time.sleep(0.2)
            ready_after = call(base, "GET", "/ready")
        assert not (tokens.parent / "tokens.away").exists()
    during = [s for s in statuses if s[0] <= LOSS_SECONDS]
    failed = [s for s in during if s[1] != 201]
    assert failed, "no request failed while the token was gone"
    assert all(s[1] != 500 for s in statuses), statuses
    assert {(s[1], s[2]) for s in failed} == {(503, "hsm-unavailable")}, failed
    assert max(s[3] for s in failed) < FAST_FAIL_BOUND + 0.5, failed
    assert not_ready and all(r["hsm"]["status"] == "unavailable" for r in not_ready), not_ready
    assert recovered_at is not None, statuses[-5:]
    recovery = recovered_at - back
    print(
        f"\nserved CA: {len(failed)} of {len(during)} requests 503 hsm-unavailable during a "
        f"{LOSS_SECONDS:g} s loss (slowest {max(s[3] for s in failed) * 1000:.0f} ms), 0 x 500; "
        f"issuing again {recovery:.2f} s after the token returned"
    )
    assert recovery < RECOVERY_BOUND, recovery
    assert ready_after.status == 200, ready_after.body
