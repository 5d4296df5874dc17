"""The gunicorn loggers of the CA API and the OCSP responder: text or JSON lines (``log_format``,
``ca.logs``), and conditional polls that found nothing new stay out of the access log.

Gateways poll the model inventory every few seconds, and CRL and SPIFFE bundle fetchers poll
their documents; with ETags almost every poll is a ``304 Not Modified``. Logging each would
bury the requests that changed something, so the CA API leaves 304 answers out of its access
log unless ``access_log_not_modified`` is set. Every other answer, errors included, is logged.

With ``log_format = "json"`` gunicorn's error lines, the access lines and the ``agentca.*``
loggers' lines are each one JSON object per line (``ca.logs``); an access line carries the
request ID the app echoed as ``X-Request-ID`` and never a header or the query string.
"""

from __future__ import annotations

import time
from typing import Any

from gunicorn.glogging import Logger

from ca.logs import REQUEST_ID_HEADER, JsonFormatter, configure_app_logs, json_line

_RID = REQUEST_ID_HEADER.lower()


def _status_code(resp: Any) -> int | None:
    status = getattr(resp, "status_code", None) or getattr(resp, "status", None)
    if isinstance(status, int):
        return status
    if isinstance(status, str) and status[:3].isdigit():
        return int(status[:3])
    return None


def logs_answer(status: int | None, not_modified: bool) -> bool:
    """Whether an answer with HTTP ``status`` goes into the access log."""
    return not_modified or status != 304


def _response_header(resp: Any, lower_name: str) -> str | None:
    for name, value in getattr(resp, "headers", None) or ():
        if isinstance(name, str) and name.lower() == lower_name:
            return str(value)
    return None


def access_line(resp: Any, environ: dict[str, Any], request_time: Any, now: float) -> str:
    """The JSON access line of one answer (``request_time`` a ``timedelta`` or seconds)."""
    seconds = (
        request_time.total_seconds()
        if hasattr(request_time, "total_seconds")
        else float(request_time or 0.0)
    )
    method = str(environ.get("REQUEST_METHOD", "-"))
    path = str(environ.get("PATH_INFO", "-"))
    status = _status_code(resp)
    return json_line(
        "info",
        "agentca.access",
        f"{method} {path} {status}",
        now,
        _response_header(resp, _RID),
        method=method,
        path=path,
        status=status,
        duration_ms=round(seconds * 1000, 3),
        client=environ.get("REMOTE_ADDR"),
    )


class QuietPollLogger(Logger):  # type: ignore[misc]  # gunicorn ships no types
    """gunicorn's logger, without access lines for 304 Not Modified answers."""

    log_not_modified = False
    log_json = False

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        if self.log_json:
            for handler in self.error_log.handlers:
                handler.setFormatter(JsonFormatter())
            configure_app_logs("json")

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        if not logs_answer(_status_code(resp), self.log_not_modified):
            return
        if not self.log_json:
            super().access(resp, req, environ, request_time)
        elif self.access_log_enabled:
            self.access_log.info("%s", access_line(resp, environ, request_time, time.time()))


class VerbosePollLogger(QuietPollLogger):
    """gunicorn's logger with every access line (``access_log_not_modified = true``)."""

    log_not_modified = True


class JsonQuietPollLogger(QuietPollLogger):
    """``QuietPollLogger`` writing JSON lines (``log_format = "json"``)."""

    log_json = True


class JsonVerbosePollLogger(VerbosePollLogger):
    """``VerbosePollLogger`` writing JSON lines."""

    log_json = True


def logger_class(not_modified: bool, json: bool) -> type[QuietPollLogger]:
    """The gunicorn ``logger_class`` for these settings."""
    if json:
        return JsonVerbosePollLogger if not_modified else JsonQuietPollLogger
    return VerbosePollLogger if not_modified else QuietPollLogger
