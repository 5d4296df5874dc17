"""Pure parts of decision 0031: request IDs, JSON log lines, /metrics access, answer tally."""

from __future__ import annotations

import json
import logging

import pytest

from ca.api.access_log import access_line, logger_class
from ca.logs import JsonFormatter, current_request_id, request_id, utc_timestamp, valid_request_id
from ca.metrics import may_scrape, parse_networks
from ocsp.tally import AnswerTally


@pytest.mark.parametrize(
    ("value", "ok"),
    [("abc-123", True), ("a" * 128, True), ("a" * 129, False), ("", False), (None, False),
     ("x y", False), ("id\nforged", False), ("é", False), ("ok.:_-", True)],
)  # fmt: skip
def test_request_id_validation(value: str | None, ok: bool) -> None:
    assert valid_request_id(value) is ok
    rid = request_id(value)
    assert (rid == value) is ok
    assert valid_request_id(rid)


def test_generated_request_ids_differ() -> None:
    assert request_id(None) != request_id(None)


def test_utc_timestamp() -> None:
    assert utc_timestamp(0.5) == "1970-01-01T00:00:00.500Z"


def test_json_formatter_has_the_fields_and_the_context_request_id() -> None:
    record = logging.LogRecord("agentca.api", logging.WARNING, "f", 1, "hi %s", ("x",), None)
    token = current_request_id.set("rid-1")
    try:
        line = JsonFormatter().format(record)
    finally:
        current_request_id.reset(token)
    body = json.loads(line)
    assert body["msg"] == "hi x" and body["level"] == "warning"
    assert body["logger"] == "agentca.api" and body["request_id"] == "rid-1"
    assert body["ts"].endswith("Z") and "\n" not in line


def test_access_line_leaves_out_query_and_headers() -> None:
    class Resp:
        status = "201 Created"
        headers = [("X-Request-ID", "r-9"), ("Content-Type", "application/json")]

    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/v1/enroll",
        "QUERY_STRING": "token=secret",
        "HTTP_AUTHORIZATION": "Bearer aca_enroll_secret",
        "REMOTE_ADDR": "127.0.0.1",
    }
    line = access_line(Resp(), environ, 0.0125, 0.0)
    assert "secret" not in line
    body = json.loads(line)
    assert body == {
        "ts": "1970-01-01T00:00:00.000Z", "level": "info", "logger": "agentca.access",
        "msg": "POST /v1/enroll 201", "request_id": "r-9", "method": "POST",
        "path": "/v1/enroll", "status": 201, "duration_ms": 12.5, "client": "127.0.0.1",
    }  # fmt: skip


def test_logger_class_per_setting() -> None:
    assert logger_class(False, False).log_json is False
    assert logger_class(True, True).log_json and logger_class(True, True).log_not_modified


def test_metrics_access_by_network() -> None:
    loopback = parse_networks(["127.0.0.1/32", "::1/128"])
    assert may_scrape("127.0.0.1", loopback) and may_scrape("::1", loopback)
    assert may_scrape("::ffff:127.0.0.1", loopback)
    assert not may_scrape("10.0.0.1", loopback)
    assert not may_scrape("127.0.0.1", ())
    assert not may_scrape("not-an-ip", loopback) and not may_scrape(None, loopback)


def test_tally_take_restarts_from_zero() -> None:
    tally = AnswerTally()
    tally.add("good", "hit")
    tally.add("good", "hit")
    tally.add("tryLater", "none")
    assert tally.take() == {("good", "hit"): 2, ("tryLater", "none"): 1}
    assert tally.take() == {}
