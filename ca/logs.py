"""Log lines of the CA API and the OCSP responder: text, or one JSON object per line, with a
request ID (decision 0031). Standard library only; the gunicorn logger classes that use it are
in ``ca.api.access_log``.

A JSON line has ``ts`` (UTC, milliseconds, ``Z``), ``level``, ``logger``, ``msg`` and, inside a
request, ``request_id``; access lines add ``method``, ``path`` (never the query string),
``status``, ``duration_ms`` and ``client``. Nothing else of a request is logged: no header, so
no ``Authorization``, token or cookie ever reaches a log.

Request IDs: an incoming ``X-Request-ID`` of 1 to 128 characters from ``[A-Za-z0-9._:-]`` is
kept (a proxy's or a client's, so that one ID follows a request across hops); anything else is
replaced by a fresh random one. Either way it is echoed as ``X-Request-ID``.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
import time
from contextvars import ContextVar
from typing import Any

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_ENVIRON = "HTTP_X_REQUEST_ID"
MAX_REQUEST_ID = 128
_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID}}}")
#: fields an access line carries besides the common ones, in this order
ACCESS_FIELDS = ("method", "path", "status", "duration_ms", "client")
APP_LOGGER = "agentca"

#: the ID of the request this thread or context is serving (None outside a request)
current_request_id: ContextVar[str | None] = ContextVar("agentca_request_id", default=None)


def valid_request_id(value: str | None) -> bool:
    """Whether ``value`` may be kept as a request ID (bounded length, safe characters)."""
    return value is not None and _REQUEST_ID.fullmatch(value) is not None


def new_request_id() -> str:
    """A fresh random request ID (128 bits, hex)."""
    return secrets.token_hex(16)


def request_id(incoming: str | None) -> str:
    """The ID of a request whose ``X-Request-ID`` header is ``incoming`` (None: absent)."""
    return incoming if incoming is not None and valid_request_id(incoming) else new_request_id()


def utc_timestamp(epoch: float) -> str:
    """``epoch`` as RFC 3339 UTC with milliseconds: ``2026-12-06T13:02:19.123Z``."""
    whole = int(epoch)
    millis = int((epoch - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def json_line(
    level: str, logger: str, msg: str, ts: float, request_id: str | None = None, **fields: Any
) -> str:
    """One JSON log line (no newline); ``fields`` with None values are left out."""
    body: dict[str, Any] = {
        "ts": utc_timestamp(ts),
        "level": level.lower(),
        "logger": logger,
        "msg": msg,
    }
    if request_id is not None:
        body["request_id"] = request_id
    for key, value in fields.items():
        if value is not None:
            body[key] = value
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str)


class JsonFormatter(logging.Formatter):
    """Formats a log record as one JSON object (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {name: getattr(record, name, None) for name in ACCESS_FIELDS}
        rid = getattr(record, "request_id", None) or current_request_id.get()
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        fields["pid"] = record.process
        return json_line(
            record.levelname, record.name, record.getMessage(), record.created, rid, **fields
        )


def configure_app_logs(log_format: str) -> None:
    """Send the ``agentca.*`` loggers' lines (INFO and up) to stderr in ``log_format``.

    ``text`` leaves Python's defaults alone (warnings and errors, as they were); ``json``
    formats them one JSON object per line, like gunicorn's own lines."""
    if log_format != "json":
        return
    logger = logging.getLogger(APP_LOGGER)
    for handler in list(logger.handlers):
        if getattr(handler, "_agentca_json", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._agentca_json = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
