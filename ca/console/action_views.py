"""Auditor pages of the action ledger (decision 0056): every gateway decision as a timeline
filtered like ``agentca ledger export --actions``, a record's page with its inclusion proof
against the newest signed action checkpoint, and the export download.

Records hold strings a gateway wrote (up to 1,024 characters, any Unicode): they are shown
through ``ca.console.web.visible``, which spells out control, format and other invisible characters
(bidirectional overrides included) so a record cannot disguise itself on the page; Jinja's
autoescaping then escapes the markup. The proof and the export are the issuance ledger's code
paths (:func:`ca.console.audit_views.prove`, :meth:`ca.ledger.store.LedgerStore.stream_export`)
over the action ledger's tables.
"""

from __future__ import annotations

from flask import Response, redirect, request
from werkzeug.wrappers import Response as WerkzeugResponse

from ca.api.auth import WRITERS
from ca.api.ledger_routes import _chunks
from ca.api.state import runtime
from ca.console import guard
from ca.console.audit_views import prove
from ca.console.operator_views import cursor
from ca.console.web import console, render
from ca.errors import CAError, ErrorCode
from ca.ledger.actions import ActionFilter, ActionRow, action_page
from ca.ledger.store import _iso
from wire.merkle import leaf_hash

PAGE_SIZE = 50
OUTCOMES = ("allow", "deny")
MAX_FILTER = 1024  # the longest string a record member holds
_FILTERS = ("agent", "officer", "route", "outcome", "gateway", "since", "until")
SHOWN_IN_LIST = 120  # characters of a long member shown in the timeline (the record page: all)


def action_filter() -> ActionFilter:
    """The timeline's and the export's filters from the query string; a bad value is a 400
    page naming it (never a database error)."""
    values: dict[str, str | None] = {}
    for name in _FILTERS:
        raw = request.args.get(name, "").strip()
        if len(raw) > MAX_FILTER:
            raise CAError(ErrorCode.BAD_REQUEST, f"'{name}' is longer than {MAX_FILTER} characters")
        if "\x00" in raw:
            raise CAError(ErrorCode.BAD_REQUEST, f"'{name}' must not contain NUL")
        values[name] = raw or None
    if values["outcome"] is not None and values["outcome"] not in OUTCOMES:
        raise CAError(ErrorCode.BAD_REQUEST, "'outcome' is 'allow' or 'deny'")
    for name in ("since", "until"):
        value = values[name]
        if value is not None:
            _iso(value)  # BAD_REQUEST naming the value when it is not an ISO time with a zone
    return ActionFilter(**values)


@console.get("/actions")
@guard.page(guard.AUDIT_READERS)
def actions() -> Response:
    """Gateway decisions, newest first, filtered like an action export; keyset pages by
    sequence number."""
    rt = runtime()
    flt = action_filter()
    before = cursor()
    size = rt.actions.size()
    rows = action_page(rt.actions, size, flt, before, PAGE_SIZE + 1)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return render(
        "actions.html",
        title="Action ledger",
        records=rows,
        next_cursor=rows[-1].seq if more and rows else None,
        query=flt.to_json(),
        size=size,
        checkpoint=rt.actions.latest_checkpoint(),
        outcomes=OUTCOMES,
        clip=SHOWN_IN_LIST,
    )


@console.get("/actions/<int:seq>")
@guard.page(guard.AUDIT_READERS)
def action(seq: int) -> Response:
    """One record, every member; with ``?proof=1`` its inclusion proof, checked here."""
    rt = runtime()
    size = rt.actions.size()
    found = action_page(rt.actions, size, ActionFilter(), seq + 1, 1) if seq < size else []
    if not found or found[0].seq != seq:
        raise CAError(ErrorCode.NOT_FOUND, f"no action record {seq}")
    row: ActionRow = found[0]
    cp = rt.actions.latest_checkpoint()
    covered = cp is not None and seq < cp.tree_size
    proof = None
    if request.args.get("proof") == "1" and cp is not None and covered:
        proof = prove(rt.actions, seq, cp, leaf_hash(row.record.encode()))
    return render(
        "action.html",
        title=f"Action record {seq}",
        row=row,
        members=sorted(row.members().items()),
        proof=proof,
        covered=covered,
        checkpoint=cp,
    )


@console.get("/actions/export")
@guard.page(guard.AUDIT_READERS)
def action_export() -> Response:
    """The action export ``agentca ledger verify`` checks (what ``agentca ledger export
    --actions`` writes), full or filtered as the timeline's filters say."""
    rt = runtime()
    flt = action_filter()
    cp = rt.actions.latest_checkpoint()
    if cp is None:
        raise CAError(
            ErrorCode.NOT_FOUND,
            "no checkpoint of the action ledger has been signed yet "
            "('agentca ledger checkpoint --actions', or the button on the action ledger page)",
        )
    lines = rt.actions.export_actions(cp, flt, "jsonl")
    first = next(lines)
    resp = Response(_chunks(first, lines), mimetype="application/jsonl")
    resp.headers["Content-Disposition"] = 'attachment; filename="agentca-actions.jsonl"'
    return resp


@console.post("/actions/checkpoints")
@guard.action(WRITERS)
def sign_action_checkpoint() -> WerkzeugResponse:
    """Sign an action checkpoint now (operators; ``agentca ledger checkpoint --actions``)."""
    runtime().action_checkpoints.checkpoint()
    return redirect(f"{guard.PATH}/actions", 303)
