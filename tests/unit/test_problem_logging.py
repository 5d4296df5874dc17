"""Expected failures log one line, not a traceback each (issue 10 item 8)."""

from __future__ import annotations

import logging

import pytest
from flask import Flask
from sqlalchemy.exc import OperationalError

from ca.api.problems import ExpectedFailureLog, install_problem_handlers
from ca.errors import CAError, ErrorCode


class _Down(Exception):
    sqlstate = "08006"


def _app() -> Flask:
    app = Flask("t")
    install_problem_handlers(app)

    @app.get("/db")
    def db() -> str:
        raise OperationalError("SELECT 1", {}, _Down("connection refused"))

    @app.get("/hsm")
    def hsm() -> str:
        raise CAError(ErrorCode.HSM_FAILURE, "the HSM did not answer")

    @app.get("/bug")
    def bug() -> str:
        raise RuntimeError("a bug")

    return app


def test_a_flood_of_database_outage_503s_logs_a_line_a_second_without_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = _app().test_client()
    caplog.set_level(logging.INFO, logger="agentca.api")
    for _ in range(500):
        resp = client.get("/db")
        assert resp.status_code == 503
        assert resp.get_json()["type"].endswith("/database-unavailable")
    for _ in range(50):
        assert client.get("/hsm").status_code == 503
    records = [r for r in caplog.records if r.name == "agentca.api"]
    assert all(r.exc_info is None and r.levelno == logging.WARNING for r in records)
    assert "Traceback" not in caplog.text
    db_lines = [r.getMessage() for r in records if "database-unavailable" in r.getMessage()]
    hsm_lines = [r.getMessage() for r in records if "hsm-failure" in r.getMessage()]
    # the loop takes well under the 1 s window on this machine; allow one window boundary
    assert 1 <= len(db_lines) <= 2, db_lines
    assert 1 <= len(hsm_lines) <= 2, hsm_lines
    assert db_lines[0] == "503 database-unavailable on GET /db: the database cannot be reached"


def test_unexpected_errors_still_log_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    client = _app().test_client()
    caplog.set_level(logging.INFO, logger="agentca.api")
    resp = client.get("/bug")
    assert resp.status_code == 500 and "a bug" not in resp.get_data(as_text=True)
    (record,) = [r for r in caplog.records if r.name == "agentca.api"]
    assert record.exc_info is not None and "unhandled error on GET /bug" in record.getMessage()


def test_suppressed_lines_are_counted_on_the_next_one() -> None:
    logger = logging.getLogger("agentca.test.expected")
    lines: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger.addHandler(_Keep())
    logger.propagate = False
    expected = ExpectedFailureLog(logger, interval=0.0)
    error = CAError(ErrorCode.DB_UNAVAILABLE, "down")
    expected(error, "GET", "/a")
    expected(error, "GET", "/a")
    assert len(lines) == 2  # interval 0: every one is logged
    slow = ExpectedFailureLog(logger, interval=3600.0)
    for _ in range(5):
        slow(error, "GET", "/a")
    slow._last.clear()  # the window has passed
    slow(error, "GET", "/a")
    assert lines[-1].endswith("(and 4 more in the last 3600 s)")
    assert len(lines) == 4
