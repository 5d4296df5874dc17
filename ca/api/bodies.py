"""Reading request bodies and rendering values as JSON, with clear errors."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import request

from ca.errors import CAError, ErrorCode
from ca.policy import InventoryModel, Registration
from ca.registry import registration_body


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a ``BAD_REQUEST`` / ``UNSUPPORTED_MEDIA`` error."""
    if request.mimetype != "application/json":
        raise CAError(ErrorCode.UNSUPPORTED_MEDIA, "send the body as application/json")
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise CAError(ErrorCode.BAD_REQUEST, "the body must be a JSON object")
    _refuse_nul(data)
    return data


def _refuse_nul(value: Any) -> None:
    """NUL characters are never meaningful in our fields, and PostgreSQL cannot store them."""
    if isinstance(value, str):
        if "\x00" in value:
            raise CAError(ErrorCode.BAD_REQUEST, "strings in the body must not contain NUL")
    elif isinstance(value, dict):
        for k, v in value.items():
            _refuse_nul(k)
            _refuse_nul(v)
    elif isinstance(value, list):
        for v in value:
            _refuse_nul(v)


def field(data: dict[str, Any], name: str, kind: type, required: bool = True) -> Any:
    """One typed field of a JSON object."""
    if name not in data or data[name] is None:
        if required:
            raise CAError(ErrorCode.BAD_REQUEST, f"'{name}' is required")
        return None
    value = data[name]
    if kind is int and isinstance(value, bool):
        raise CAError(ErrorCode.BAD_REQUEST, f"'{name}' must be an integer")
    if not isinstance(value, kind):
        raise CAError(ErrorCode.BAD_REQUEST, f"'{name}' must be of type {kind.__name__}")
    return value


def string_list(data: dict[str, Any], name: str, required: bool = True) -> list[str] | None:
    """A list of strings, e.g. scopes or digests."""
    value = field(data, name, list, required)
    if value is None:
        return None
    if not all(isinstance(v, str) for v in value):
        raise CAError(ErrorCode.BAD_REQUEST, f"'{name}' must be a list of strings")
    return list(value)


def seconds(data: dict[str, Any], name: str) -> timedelta | None:
    """An optional positive number of seconds."""
    value = field(data, name, int, required=False)
    if value is None:
        return None
    if value <= 0 or value > 10 * 365 * 86400:
        raise CAError(ErrorCode.INVALID_VALIDITY, f"'{name}' must be a positive number of seconds")
    return timedelta(seconds=value)


def registration_json(r: Registration) -> dict[str, Any]:
    """The registration as JSON (the same shape the ledger records)."""
    return registration_body(r)


def model_json(m: InventoryModel) -> dict[str, Any]:
    return {
        "digest": m.digest,
        "model_type": m.model_type,
        "environment": m.environment,
        "status": "active" if m.active else "retired",
    }
