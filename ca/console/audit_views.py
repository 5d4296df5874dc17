"""Auditor pages: the issuance ledger timeline, an entry's inclusion proof, checkpoints with
their signature status, a server-side verification of the whole ledger, and the export.

The verification runs the offline verifier (``ca.ledger.verify.verify_export``, what
``agentca ledger verify`` runs) over the export the export endpoint streams, anchored at the
CA root: the server checks exactly what an auditor would check with the downloaded file. It
runs in a background thread with a self-refreshing progress page (``ca.console.verify_jobs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from flask import Response, current_app, redirect, request
from sqlalchemy import select
from werkzeug.wrappers import Response as WerkzeugResponse

from ca.api.auth import WRITERS
from ca.api.ledger_routes import _chunks
from ca.api.state import runtime
from ca.console import guard
from ca.console.operator_views import cursor
from ca.console.verify_jobs import RUNNING, VerifyJobs, stalled
from ca.console.web import console, render
from ca.errors import CAError, ErrorCode
from ca.ledger.actions import ActionFilter
from ca.ledger.entries import ACTIONS_LEDGER_NAME, Checkpoint
from ca.ledger.store import ExportFilter, LedgerStore
from ca.ledger.trust import LedgerTrust, checkpoint_problem
from ca.store.models import AuditSigner, LedgerCheckpointRow
from wire.merkle import verify_inclusion

PAGE_SIZE = 50
#: the largest ledger the console verifies synchronously; beyond, download and verify offline
VERIFY_BOUND = 2_000_000


def _filter() -> ExportFilter:
    a = request.args
    return ExportFilter(
        since=a.get("since", "").strip() or None,
        until=a.get("until", "").strip() or None,
        agent=a.get("agent", "").strip() or None,
        officer=a.get("officer", "").strip() or None,
        event=a.get("event", "").strip() or None,
    )


def _trust() -> LedgerTrust:
    chain = runtime().authority.chain()
    return LedgerTrust((chain[-1],), tuple(chain[:-1]))


@console.get("/ledger")
@guard.page(guard.AUDIT_READERS)
def ledger() -> Response:
    """The timeline, newest first, filtered like an export; keyset pages by sequence number."""
    rt = runtime()
    flt = _filter()
    size = rt.ledger.size()
    entries = rt.ledger.page(size, flt, cursor(), PAGE_SIZE + 1)
    more = len(entries) > PAGE_SIZE
    entries = entries[:PAGE_SIZE]
    return render(
        "ledger.html",
        title="Issuance ledger",
        entries=entries,
        next_cursor=entries[-1].seq if more and entries else None,
        query=flt.to_json(),
        size=size,
    )


@dataclass(frozen=True)
class Proof:
    """An entry's inclusion proof against the newest checkpoint, and what was checked."""

    checkpoint: Checkpoint
    leaf_hash: str
    path: list[str]
    included: bool
    leaf_matches: bool
    signature_problem: str | None


def prove(store: LedgerStore, seq: int, cp: Checkpoint, content_leaf: bytes) -> Proof:
    """Entry ``seq`` of ``store`` (either ledger) against ``cp``: its stored leaf hash, the
    RFC 9162 inclusion proof from the block cache, checked here, and whether the leaf
    recomputed from the entry's content (``content_leaf``) is the stored one."""
    stored = next(store.leaf_hashes(seq + 1, seq))
    path = store.tree(cp.tree_size).inclusion_proof(seq, cp.tree_size)
    return Proof(
        checkpoint=cp,
        leaf_hash=stored.hex(),
        path=[h.hex() for h in path],
        included=verify_inclusion(stored, seq, cp.tree_size, path, cp.root_hash),
        leaf_matches=content_leaf == stored,
        signature_problem=checkpoint_problem(cp, _trust()),
    )


@console.get("/ledger/<int:seq>")
@guard.page(guard.AUDIT_READERS)
def entry(seq: int) -> Response:
    """One entry; with ``?proof=1`` its RFC 9162 inclusion proof, checked here."""
    rt = runtime()
    size = rt.ledger.size()
    found = rt.ledger.page(size, ExportFilter(), seq + 1, 1) if seq < size else []
    if not found or found[0].seq != seq:
        raise CAError(ErrorCode.NOT_FOUND, f"no ledger entry {seq}")
    e = found[0]
    proof = None
    cp = rt.ledger.latest_checkpoint()
    covered = cp is not None and seq < cp.tree_size
    if request.args.get("proof") == "1" and cp is not None and covered:
        proof = prove(rt.ledger, seq, cp, e.leaf_hash())
    return render(
        "entry.html",
        title=f"Ledger entry {seq}",
        entry=e,
        proof=proof,
        covered=covered,
        checkpoint=cp,
    )


@console.get("/ledger/checkpoints")
@guard.page(guard.AUDIT_READERS)
def checkpoints() -> Response:
    """Signed checkpoints, newest first, each with its signature checked against the root."""
    before = cursor()
    query = (
        select(LedgerCheckpointRow, AuditSigner.certificate_der)
        .join(AuditSigner, AuditSigner.id == LedgerCheckpointRow.signer_id)
        .order_by(LedgerCheckpointRow.id.desc())
        .limit(PAGE_SIZE + 1)
    )
    if before is not None:
        query = query.where(LedgerCheckpointRow.id < before)
    with guard.read_session() as s:
        rows = s.execute(query).all()
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    trust = _trust()
    shown = []
    for row, der in rows:
        cp = Checkpoint(row.tree_size, row.root_hash, row.timestamp, row.signature, der)
        shown.append((row.id, cp, checkpoint_problem(cp, trust)))
    return render(
        "checkpoints.html",
        title="Checkpoints",
        checkpoints=shown,
        next_cursor=rows[-1][0].id if more and rows else None,
    )


def jobs() -> VerifyJobs:
    """This worker's verification jobs (built on first use)."""
    found: VerifyJobs | None = current_app.extensions.get("agentca.console_verify_jobs")
    if found is None:
        rt = runtime()
        found = VerifyJobs(rt.sessions, rt.authority.clock)
        current_app.extensions["agentca.console_verify_jobs"] = found
    return found


@console.post("/ledger/verify")
@guard.action(guard.AUDIT_READERS)
def verify() -> WerkzeugResponse:
    """Start verifying the whole ledger (``ledger=actions``: the action ledger) up to its
    newest checkpoint, as ``agentca ledger verify`` does with an export, in a background
    thread; answers with the progress page's address (refused above :data:`VERIFY_BOUND`)."""
    rt = runtime()
    actions = request.form.get("ledger", "") == "actions"
    cp = rt.actions.latest_checkpoint() if actions else rt.ledger.latest_checkpoint()
    if cp is None:
        raise CAError(ErrorCode.NOT_FOUND, "no checkpoint of that ledger has been signed yet")
    if cp.tree_size > VERIFY_BOUND:
        raise CAError(
            ErrorCode.BAD_REQUEST,
            f"the ledger has {cp.tree_size} entries; above {VERIFY_BOUND} download the "
            "export and run 'agentca ledger verify' on it",
        )
    if actions:
        lines = partial(rt.actions.export_actions, cp, ActionFilter())
    else:
        lines = partial(rt.ledger.export_lines, cp, ExportFilter())
    job = jobs().start(guard.user().session_id, cp, lines, _trust())
    return redirect(f"{guard.PATH}/ledger/verify/{job}", 303)


@console.get("/ledger/verify/<job>")
@guard.page(guard.AUDIT_READERS)
def verify_progress(job: str) -> Response:
    """A verification's progress (the page refreshes itself while it runs), then its
    verdict; only the session that started it finds it."""
    found = jobs().lookup(job, guard.user().session_id)
    now = runtime().authority.clock()
    return render(
        "verified.html",
        title="Ledger verification",
        job=found,
        actions=found.ledger == ACTIONS_LEDGER_NAME,
        running=found.state == RUNNING,
        stalled=stalled(found, now),
        seconds=(found.updated_at - found.started_at).total_seconds(),
    )


@console.get("/ledger/export")
@guard.page(guard.AUDIT_READERS)
def export() -> Response:
    """The export ``agentca ledger verify`` checks (the API's export, streamed the same way),
    full or filtered as the timeline's filters say."""
    rt = runtime()
    cp = rt.ledger.latest_checkpoint()
    if cp is None:
        raise CAError(ErrorCode.NOT_FOUND, "no checkpoint has been signed yet")
    lines = rt.ledger.export_lines(cp, _filter(), "jsonl")
    first = next(lines)
    resp = Response(_chunks(first, lines), mimetype="application/jsonl")
    resp.headers["Content-Disposition"] = 'attachment; filename="agentca-ledger.jsonl"'
    return resp


@console.post("/ledger/checkpoints")
@guard.action(WRITERS)
def sign_checkpoint() -> Response:
    """Sign a checkpoint now (operators; the API's ``POST /v1/ledger/checkpoints``)."""
    cp = runtime().checkpoints.checkpoint()
    return render("signed.html", title="Checkpoint signed", checkpoint=cp)
