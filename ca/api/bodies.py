"""Strict JSON request parsing (before any model sees a body) and JSON renderings.

Members and types are checked by the typed models of ``ca.api.schemas`` through
``ca.api.validation``; this module imports no pydantic, so the CLI can use its renderings.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import request

from ca.errors import CAError, ErrorCode
from ca.policy import InventoryModel, Registration
from ca.registry import registration_body

MAX_JSON_DEPTH = 16  # our bodies nest at most three levels; generous, and far from recursion
_SPECIAL = re.compile(rb'[\[\]{}"]')
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # after an opening quote


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a ``BAD_REQUEST`` / ``UNSUPPORTED_MEDIA`` error.

    Strict: UTF-8 only (no UTF-16/32 guessing), nesting bounded before parsing, no duplicate
    keys, no ``NaN``/``Infinity``, no NUL and no lone surrogate (``"\\ud800"``) in any string;
    the body size is bounded by ``MAX_CONTENT_LENGTH``.
    """
    if request.mimetype != "application/json":
        raise CAError(ErrorCode.UNSUPPORTED_MEDIA, "send the body as application/json")
    charset = request.mimetype_params.get("charset")
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise CAError(ErrorCode.UNSUPPORTED_MEDIA, "JSON bodies must be UTF-8")
    data = parse_json_object(request.get_data(cache=True))
    _refuse_unstorable(data)
    return data


def parse_json_object(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """Parse ``raw`` as one JSON object under the rules of :func:`json_body` (pure)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CAError(ErrorCode.BAD_REQUEST, "the body is not valid UTF-8") from exc
    if json_depth(raw) > max_depth:
        raise CAError(ErrorCode.BAD_REQUEST, f"the JSON body nests deeper than {max_depth} levels")
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # RecursionError: defensive, depth is bounded
        raise CAError(ErrorCode.BAD_REQUEST, "the body must be a JSON object") from exc
    if not isinstance(data, dict):
        raise CAError(ErrorCode.BAD_REQUEST, "the body must be a JSON object")
    return data


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays/objects in ``raw`` (brackets inside strings ignored).

    One left-to-right pass without recursion: the next bracket or quote is found by a
    regular expression, and each string is skipped by one match anchored at its opening
    quote (its alternatives are disjoint, so a failed match costs linear time); an
    unterminated string ends the scan (the parser then refuses the body).
    """
    depth = deepest = pos = 0
    while True:
        m = _SPECIAL.search(raw, pos)
        if m is None:
            return deepest
        char = m.group()
        if char == b'"':
            end = _STRING_REST.match(raw, m.end())
            if end is None:
                return deepest
            pos = end.end()
            continue
        pos = m.end()
        if char in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise CAError(ErrorCode.BAD_REQUEST, f"the key '{key[:64]}' appears twice")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise CAError(ErrorCode.BAD_REQUEST, f"'{name}' is not JSON")


def _refuse_unstorable(value: Any) -> None:
    """NUL characters are never meaningful in our fields, and PostgreSQL cannot store them;
    a lone surrogate (JSON allows ``"\\ud800"``) is no Unicode text at all: it cannot be
    encoded as UTF-8, so it would fail later as an internal error (a 500 and a traceback per
    request, before authentication on ``/v1/renew``)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise CAError(ErrorCode.BAD_REQUEST, "strings in the body must not contain NUL")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise CAError(
                    ErrorCode.BAD_REQUEST,
                    "strings in the body must be Unicode text"
                    " (a lone surrogate such as \\ud800 is not)",
                ) from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _refuse_unstorable(k)
            _refuse_unstorable(v)
    elif isinstance(value, list):
        for v in value:
            _refuse_unstorable(v)


def registration_json(r: Registration) -> dict[str, Any]:
    """The registration as JSON (the same shape the ledger records)."""
    return registration_body(r)


def model_json(m: InventoryModel) -> dict[str, Any]:
    """An inventory model as JSON."""
    return {
        "digest": m.digest,
        "model_type": m.model_type,
        "environment": m.environment,
        "status": "active" if m.active else "retired",
        "digest_scheme": m.digest_scheme,
        "signed": m.signed_by is not None,
        "signed_by": m.signed_by,
        "signature_method": m.signature_method,
        "signer": m.signer,
        "signature_sha256": m.signature_sha256,
    }
