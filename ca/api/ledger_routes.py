"""Ledger endpoints: the latest signed checkpoint (public) and exports (auditor tokens)."""

from __future__ import annotations

import io
import json

from flask import Blueprint, Response, request

from ca.api.auth import WRITERS, require
from ca.api.state import runtime
from ca.errors import CAError, ErrorCode
from ca.ledger.store import ExportFilter
from ca.registry import Role

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
    return _json(runtime().auditor.checkpoint().to_json(), 201)


@ledger_api.get("/v1/ledger/consistency")
def consistency_proof() -> Response:
    """RFC 9162 consistency proof between two tree sizes (``from`` and ``to``)."""
    rt = runtime()
    try:
        old, new = int(request.args["from"]), int(request.args["to"])
    except (KeyError, ValueError) as exc:
        raise CAError(ErrorCode.BAD_REQUEST, "give integer 'from' and 'to' tree sizes") from exc
    size = rt.ledger.size()
    if not 0 < old <= new <= size:
        raise CAError(ErrorCode.BAD_REQUEST, f"need 0 < from <= to <= {size}")
    proof = rt.ledger.tree(new).consistency_proof(old, new)
    return _json({"from_size": old, "to_size": new, "proof": [h.hex() for h in proof]})


@ledger_api.get("/v1/ledger/export")
@require(AUDIT_READERS)
def export() -> Response:
    """An export (JSON Lines or CSV) with a fresh checkpoint; filters as in the CLI."""
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
    cp = rt.auditor.checkpoint()
    buf = io.StringIO()
    rt.ledger.export(buf, cp, flt, fmt)
    mimetype = "text/csv" if fmt == "csv" else "application/jsonl"
    resp = Response(buf.getvalue(), mimetype=mimetype)
    resp.headers["Content-Disposition"] = f'attachment; filename="agentca-ledger.{fmt}"'
    return resp
