"""The CA API's gunicorn access logger: conditional polls that found nothing new stay out.

Gateways poll the model inventory every few seconds, and CRL and SPIFFE bundle fetchers poll
their documents; with ETags almost every poll is a ``304 Not Modified``. Logging each would
bury the requests that changed something, so the CA API leaves 304 answers out of its access
log unless ``access_log_not_modified`` is set. Every other answer, errors included, is logged.
"""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger


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


class QuietPollLogger(Logger):  # type: ignore[misc]  # gunicorn ships no types
    """gunicorn's logger, without access lines for 304 Not Modified answers."""

    log_not_modified = False

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        if logs_answer(_status_code(resp), self.log_not_modified):
            super().access(resp, req, environ, request_time)


class VerbosePollLogger(QuietPollLogger):
    """gunicorn's logger with every access line (``access_log_not_modified = true``)."""

    log_not_modified = True
