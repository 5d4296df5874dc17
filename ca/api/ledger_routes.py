"""Ledger endpoints: the latest signed checkpoint (public) and exports (auditor tokens)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from flask import Blueprint, Response, request

from ca.api.auth import WRITERS, require
from ca.api.state import runtime
from ca.apitokens import Role
from ca.errors import CAError, ErrorCode
from ca.ledger.store import ExportFilter

ledger_api = Blueprint("ledger", __name__)
AUDIT_READERS = frozenset({Role.OPERATOR, Role.AUDITOR})


def _json(data: object, status: int = 200) -> Response:
    resp = Response(json.dumps(data, sort_keys=True), status, mimetype="application/json")
    resp.headers["Cache-Control"] = "no-cache"
    return resp


@ledger_api.get("/v1/ledger/checkpoint")
def latest_checkpoint() -> Response:
    """The newest signed checkpoint with the audit certificate (public: it proves nothing
    but what the ledger says, and lets anyone pin it)."""
    cp = runtime().ledger.latest_checkpoint()
    if cp is None:
        raise CAError(ErrorCode.NOT_FOUND, "no checkpoint has been signed yet")
    return _json(cp.to_json())


@ledger_api.post("/v1/ledger/checkpoints")
@require(WRITERS)
def create_checkpoint() -> Response:
    """Sign a checkpoint now (on demand); the scheduler does the same periodically."""
    return _json(runtime().checkpoints.checkpoint().to_json(), 201)


_SIZE = re.compile(r"^[0-9]{1,18}$")
EXPORT_CHUNK = 64 * 1024  # characters per streamed chunk: few writes, bounded memory


def _tree_size(name: str) -> int:
    raw = request.args.get(name, "")
    if not _SIZE.match(raw):
        raise CAError(ErrorCode.BAD_REQUEST, "give integer 'from' and 'to' tree sizes")
    return int(raw)


@ledger_api.get("/v1/ledger/consistency")
@require(AUDIT_READERS)
def consistency_proof() -> Response:
    """RFC 9162 consistency proof between two tree sizes (``from`` and ``to``).

    Auditor or operator token; answered from the cached block hashes (O(log n) per call).
    """
    rt = runtime()
    old, new = _tree_size("from"), _tree_size("to")
    size = rt.ledger.size()
    if not 0 < old <= new <= size:
        raise CAError(ErrorCode.BAD_REQUEST, f"need 0 < from <= to <= {size}")
    proof = rt.ledger.consistency_proof(old, new)
    return _json({"from_size": old, "to_size": new, "proof": [h.hex() for h in proof]})


@ledger_api.get("/v1/ledger/export")
@require(AUDIT_READERS)
def export() -> Response:
    """An export (JSON Lines or CSV) covering the newest signed checkpoint, streamed.

    A read never writes: no checkpoint is signed here (operators sign them on schedule or
    with ``POST /v1/ledger/checkpoints``). Filters as in the CLI.
    """
    args = request.args
    fmt = args.get("format", "jsonl")
    if fmt not in ("jsonl", "csv"):
        raise CAError(ErrorCode.BAD_REQUEST, "format must be jsonl or csv")
    flt = ExportFilter(
        since=args.get("since"),
        until=args.get("until"),
        agent=args.get("agent"),
        officer=args.get("officer"),
        event=args.get("event"),
    )
    rt = runtime()
    cp = rt.ledger.latest_checkpoint()
    if cp is None:
        raise CAError(
            ErrorCode.NOT_FOUND,
            "no checkpoint has been signed yet; an operator signs one with "
            "POST /v1/ledger/checkpoints or 'agentca ledger checkpoint'",
        )
    lines = rt.ledger.export_lines(cp, flt, fmt)
    first = next(lines)  # filter and checkpoint errors become problems before streaming starts
    mimetype = "text/csv" if fmt == "csv" else "application/jsonl"
    resp = Response(_chunks(first, lines), mimetype=mimetype)
    resp.headers["Content-Disposition"] = f'attachment; filename="agentca-ledger.{fmt}"'
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _chunks(first: str, lines: Iterator[str]) -> Iterator[bytes]:
    """Join lines into chunks of about ``EXPORT_CHUNK`` characters."""
    parts, length = [first], len(first)
    try:
        for line in lines:
            parts.append(line)
            length += len(line)
            if length >= EXPORT_CHUNK:
                yield "".join(parts).encode()
                parts, length = [], 0
        if parts:
            yield "".join(parts).encode()
    finally:
        close = getattr(lines, "close", None)
        if close is not None:
            close()
