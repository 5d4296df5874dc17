"""The CA API's access logger leaves 304 answers out unless told otherwise."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ca.api.access_log import QuietPollLogger, VerbosePollLogger, logs_answer


@pytest.mark.parametrize(
    ("status", "not_modified", "logged"),
    [(200, False, True), (304, False, False), (304, True, True), (401, False, True),
     (500, False, True), (None, False, True)],
)  # fmt: skip
def test_logs_answer(status: int | None, not_modified: bool, logged: bool) -> None:
    assert logs_answer(status, not_modified) is logged


@pytest.mark.parametrize(
    ("cls", "status", "logged"),
    [(QuietPollLogger, "304 Not Modified", False), (QuietPollLogger, "200 OK", True),
     (VerbosePollLogger, "304 Not Modified", True), (QuietPollLogger, 304, False)],
)  # fmt: skip
def test_gunicorn_logger_drops_only_304(
    cls: type[QuietPollLogger], status: object, logged: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[object] = []
    monkeypatch.setattr("gunicorn.glogging.Logger.access", lambda self, resp, *a: seen.append(resp))
    logger = cls.__new__(cls)  # no gunicorn config needed to route the call
    resp = SimpleNamespace(status=status)
    logger.access(resp, None, {}, None)
    assert (seen == [resp]) is logged
