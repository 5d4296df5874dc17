"""The action shipper over real HTTP, against a small CA stand-in in a thread that implements
the ``POST /v1/actions`` contract (decision 0055): CA outages, a conflict, a gap, a restart,
a refused token and an over-large batch; nothing lost, nothing stored twice."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.action_log import ActionLog, keygen
from gateway.action_record import Pending
from gateway.action_shipper import ActionShipper, ShippingStopped, batch_body
from gateway.chain import AgentIdentity
from gateway.httpsig import RequestView
from gateway.problems import Check, Denied
from gateway.verifier import Decision, _LogLine
from tests.support.action_ca import GATEWAY, TOKEN, CaStandIn, FakeLedger, free_port
from wire.actions import ActionBatch, ActionRecord


@pytest.fixture
def ca() -> Iterator[CaStandIn]:
    stand_in = CaStandIn(FakeLedger(), free_port())
    stand_in.start()
    try:
        yield stand_in
    finally:
        stand_in.stop()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    keygen(tmp_path / "key.pem")
    return tmp_path / "key.pem"


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.token"
    path.write_text(TOKEN + "\n")
    return path


AGENT = AgentIdentity(
    name="ExecutionAgent-ETH-01",
    spiffe_id="spiffe://agentca.test/agent/ExecutionAgent-ETH-01",
    scopes=("read_book",),
    officer="o@example.com",
    environment="test",
    organization=None,
    serial="1a2b",
    fingerprint="00" * 32,
    model_type="llm",
    model_digest="sha256:" + "11" * 32,
    prompt_digest="sha256:" + "22" * 32,
    config_digest=None,
    not_after="2030-01-01T00:00:00Z",
)


def decision(n: int, anonymous: bool = False) -> Pending:
    """A logged decision (real Decision and _LogLine, no network needed to make one): an
    agent's allowed request, or (``anonymous``) a refusal of one without credentials."""
    req = RequestView("GET", "/book", "", {"x-request-id": f"r-{n}"})
    if anonymous:
        d = Decision(False, denial=Denied(Check.CREDENTIALS_MISSING, "no Client-Cert header"))
        return _LogLine(d, req, 1_800_000_000.0 + n, 401, "/book")
    d = Decision(True, identity=AGENT, scope="read_book")
    return _LogLine(d, req, 1_800_000_000.0 + n, 200, "/book")


def append(actions: ActionLog, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        actions.append(decision(i))
    assert actions.flush()


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def on_disk(directory: Path) -> dict[int, bytes]:
    lines = (directory / "actions.log").read_bytes().splitlines()
    return dict(enumerate(lines))


def shipper(actions: ActionLog, url: str, token_file: Path, **kw: Any) -> ActionShipper:
    kw.setdefault("interval", 0.02)
    kw.setdefault("backoff_min", 0.02)
    kw.setdefault("backoff_max", 0.2)
    kw.setdefault("timeout", 2.0)
    return ActionShipper(actions, url, token_file, **kw)


def test_the_body_is_the_batch_codecs(tmp_path: Path, key_file: Path) -> None:
    with ActionLog(tmp_path / "log", GATEWAY, key_file) as actions:
        append(actions, 3)
        cp = actions.checkpoint_now()
        body = batch_body(GATEWAY, actions.read(0, 10), cp)
    records = tuple(
        ActionRecord.from_json(json.loads(x)) for x in on_disk(tmp_path / "log").values()
    )
    assert json.loads(body) == ActionBatch(GATEWAY, records, cp).to_json()


def test_an_outage_loses_nothing_and_stores_nothing_twice(
    tmp_path: Path, key_file: Path, token_file: Path, ca: CaStandIn
) -> None:
    with ActionLog(tmp_path / "log", GATEWAY, key_file, checkpoint_records=50) as actions:
        s = shipper(actions, ca.url, token_file, batch=40).start()
        try:
            append(actions, 100)
            wait_until(lambda: actions.shipped == 100)
            ca.stop()  # the CA goes away; the gateway keeps recording
            append(actions, 150, start=100)
            wait_until(lambda: s.state == "retrying")
            time.sleep(0.3)  # several failed rounds
            assert actions.shipped == 100 and actions.refusing is None
            ca.ledger.fail_next = 2  # it comes back answering 503 at first
            ca.start()
            wait_until(lambda: actions.shipped == 250)
        finally:
            s.stop()
    assert ca.ledger.records == on_disk(tmp_path / "log")  # every record, each once, same bytes
    assert ca.ledger.checkpoints_ok >= 1
    assert s.state == "stopped"


def test_a_conflict_stops_shipping_and_overwrites_nothing(
    tmp_path: Path,
    key_file: Path,
    token_file: Path,
    ca: CaStandIn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ca.ledger.records[2] = b'{"something":"else"}'
    with ActionLog(tmp_path / "log", GATEWAY, key_file) as actions:
        append(actions, 5)
        before = (tmp_path / "log" / "actions.log").read_bytes()
        s = shipper(actions, ca.url, token_file).start()
        try:
            wait_until(lambda: s.state == "conflict")
        finally:
            s.stop()
        assert actions.shipped == 0
        with pytest.raises(ShippingStopped, match="other bytes"):
            s.ship_once()
    assert (tmp_path / "log" / "actions.log").read_bytes() == before
    assert ca.ledger.records[2] == b'{"something":"else"}'
    assert any(r.levelname == "CRITICAL" and "stopped" in r.getMessage() for r in caplog.records)


def test_a_gap_resumes_from_the_cas_next_seq(
    tmp_path: Path, key_file: Path, token_file: Path, ca: CaStandIn
) -> None:
    with ActionLog(tmp_path / "log", GATEWAY, key_file) as actions:
        append(actions, 8)
        actions.mark_shipped(5)  # the cursor says 5, but this CA has nothing (a restored CA)
        s = shipper(actions, ca.url, token_file)
        result = s.ship_once()
        assert result.status == 422 and actions.shipped == 0
        while actions.shipped < 8:
            s.ship_once()
    assert ca.ledger.posts[0] == (5, 3) and ca.ledger.posts[1][0] == 0
    assert ca.ledger.records == on_disk(tmp_path / "log")


def test_a_restarted_gateway_resumes_from_its_cursor(
    tmp_path: Path, key_file: Path, token_file: Path, ca: CaStandIn
) -> None:
    directory = tmp_path / "log"
    with ActionLog(directory, GATEWAY, key_file) as actions:
        append(actions, 10)
        s = shipper(actions, ca.url, token_file, batch=4)
        s.ship_once()
        s.ship_once()
        assert actions.shipped == 8
    with ActionLog(directory, GATEWAY, key_file) as actions:  # the gateway restarts
        assert actions.shipped == 8
        append(actions, 3, start=10)
        s = shipper(actions, ca.url, token_file, batch=4).start()
        try:
            wait_until(lambda: actions.shipped == 13)
        finally:
            s.stop()
    assert [first for first, _ in ca.ledger.posts] == [0, 4, 8, 12]  # nothing sent twice
    assert ca.ledger.records == on_disk(directory)


def test_a_refused_token_is_retried_once_replaced(
    tmp_path: Path, key_file: Path, token_file: Path, ca: CaStandIn
) -> None:
    token_file.write_text("not-the-token")
    with ActionLog(tmp_path / "log", GATEWAY, key_file) as actions:
        append(actions, 2)
        s = shipper(actions, ca.url, token_file)
        result = s.ship_once()
        assert result.status == 401 and result.retry and s.state == "unauthorised"
        assert actions.shipped == 0
        token_file.write_text(TOKEN)
        assert s.ship_once().status == 200 and actions.shipped == 2


def test_an_over_large_batch_is_halved(
    tmp_path: Path, key_file: Path, token_file: Path, ca: CaStandIn
) -> None:
    ca.ledger.max_records = 3
    with ActionLog(tmp_path / "log", GATEWAY, key_file) as actions:
        append(actions, 10)
        s = shipper(actions, ca.url, token_file, batch=10)
        for _ in range(20):
            if actions.shipped == 10:
                break
            s.ship_once()
        assert actions.shipped == 10 and s.batch <= 3
    assert ca.ledger.records == on_disk(tmp_path / "log")


def test_a_ca_that_claims_more_than_the_log_holds_stops_shipping(
    tmp_path: Path, key_file: Path, token_file: Path, ca: CaStandIn
) -> None:
    ca.ledger.claim_next = 20  # another gateway's log under this ID, say
    with ActionLog(tmp_path / "log", GATEWAY, key_file) as actions:
        append(actions, 3)
        s = shipper(actions, ca.url, token_file)
        with pytest.raises(ShippingStopped, match="next_seq 20"):
            s.ship_once()  # never a cursor beyond the log
        assert actions.shipped == 0


def test_the_spool_bound_refuses_while_the_ca_is_away_and_clears_after(
    tmp_path: Path, key_file: Path, token_file: Path
) -> None:
    stand_in = CaStandIn(FakeLedger(), free_port())  # not started: the CA is down
    with ActionLog(tmp_path / "log", GATEWAY, key_file, max_unshipped_records=20) as actions:
        s = shipper(actions, stand_in.url, token_file).start()
        try:
            append(actions, 20)
            assert actions.refusing is not None
            stand_in.start()
            wait_until(lambda: actions.refusing is None)
            assert actions.shipped == 20
        finally:
            s.stop()
            stand_in.stop()
    assert stand_in.ledger.records == on_disk(tmp_path / "log")


def test_a_refused_checkpoint_is_logged_and_the_records_still_ship(
    tmp_path: Path, key_file: Path, token_file: Path, ca: CaStandIn, caplog: Any
) -> None:
    """The CA answers 422 checkpoint-invalid (no next_seq) to a checkpoint of a key it does
    not have registered: not a gap, not a stop; the records go on without that checkpoint."""
    ca.ledger.registered_key_id = "0" * 64  # the CA knows another key for this gateway
    with ActionLog(tmp_path / "log", GATEWAY, key_file, checkpoint_records=2) as actions:
        append(actions, 3)
        s = shipper(actions, ca.url, token_file)
        with caplog.at_level("ERROR", logger="agentca.gateway.actions.shipper"):
            result = s.ship_once()
        assert result.status == 200 and actions.shipped == 3
        assert "refused gateway orders-1's checkpoint" in caplog.text
        assert s.checkpoints_refused == 1 and ca.ledger.checkpoints_refused == 1
        append(actions, 3, start=3)
        actions.checkpoint_now()
        assert s.ship_once().status == 200 and actions.shipped == 6
        assert ca.ledger.checkpoints_refused == 1  # that key's checkpoints are not sent again
    assert ca.ledger.records == on_disk(tmp_path / "log")
    assert ca.ledger.checkpoints_ok == 0


def test_a_422_without_next_seq_is_retried_not_a_gap(
    tmp_path: Path, key_file: Path, token_file: Path, ca: CaStandIn
) -> None:
    ca.ledger.unprocessable_next = 1  # a 422 of a kind the shipper does not know
    with ActionLog(tmp_path / "log", GATEWAY, key_file) as actions:
        append(actions, 2)
        s = shipper(actions, ca.url, token_file)
        result = s.ship_once()
        assert result.status == 422 and result.retry and actions.shipped == 0
        assert s.last_error is not None and "422" in s.last_error
        assert s.ship_once().status == 200 and actions.shipped == 2
    assert ca.ledger.records == on_disk(tmp_path / "log")
